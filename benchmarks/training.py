"""Cost of adversarial training per iteration, relative to standard training (STD).

For one model and one batch, times real ``SupervisedTrainer`` iterations of STD, AT-PGD7, SAT-PGD7,
AMAT-PGD7 and DPAAT-PGD7 (median over ``--repeats`` iterations after ``--warmup``; wall clock and process
CPU time) and prints each method's time divided by STD's next to the floor ``1 + steps`` (forward+backward
passes: the attack's ``steps`` input-gradient passes plus one training pass; an attack pass skips weight
gradients, so a method can land below its floor). DPAAT's own floor is ``2 + steps`` (clean and
adversarial training passes). Also prints DPAAT's overhead over AT (target: under 15 %), the part of it
that is inherent to DPAAT's loss (one more training pass, L_clean: STD/AT), and DPAAT over SAT, which
has the same two passes, i.e. the cost of DPAAT's own machinery.

    python benchmarks/training.py                    # small CNN, 32 x 3 x 64 x 64
    python benchmarks/training.py --model resnet18 --size 96 --batch 16 --threads 4

``--compare DATA_DIR`` instead trains the five methods on real HAM10000 (mel vs nv, lesion-disjoint
split, 64 x 64, the small CNN, ``--per-class`` training images per class, ``--epochs``) and prints clean and
PGD-10 robust test accuracy (eps 8/255, alpha 2/255, random start) and the training CPU time:

    python benchmarks/training.py --compare ../shared/data
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from monai.data import DataLoader
from monai.engines import SupervisedTrainer

from monai_dpaat.attacks import PGD
from monai_dpaat.training import build_iteration


def small_cnn(classes: int = 2, width: int = 8) -> torch.nn.Module:
    w = width
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, w, 3, 2, 1), torch.nn.BatchNorm2d(w), torch.nn.ReLU(),
        torch.nn.Conv2d(w, 2 * w, 3, 2, 1), torch.nn.BatchNorm2d(2 * w), torch.nn.ReLU(),
        torch.nn.Conv2d(2 * w, 4 * w, 3, 2, 1), torch.nn.BatchNorm2d(4 * w), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4 * w, classes),
    )


def medium_cnn(classes: int = 2) -> torch.nn.Module:
    """A VGG-like CNN (4 stages of two 3x3 conv/BN/ReLU, 32-64-128-256 channels): compute-bound like real models."""
    layers: list[torch.nn.Module] = []
    cin = 3
    for cout in (32, 64, 128, 256):
        layers += [torch.nn.Conv2d(cin, cout, 3, 1, 1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU(),
                   torch.nn.Conv2d(cout, cout, 3, 2, 1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]
        cin = cout
    head = [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(cin, classes)]
    return torch.nn.Sequential(*layers, *head)


def make_model(name: str, classes: int) -> torch.nn.Module:
    if name == "small":
        return small_cnn(classes)
    if name == "medium":
        return medium_cnn(classes)
    if name == "resnet18":
        from monai.networks.nets import resnet18

        return resnet18(spatial_dims=2, n_input_channels=3, num_classes=classes)
    if name == "densenet121":
        from monai.networks.nets import DenseNet121

        return DenseNet121(spatial_dims=2, in_channels=3, out_channels=classes)
    raise ValueError(f"unknown model {name!r}: small, medium, resnet18, densenet121")


def build_trainer(method: str, model: str, batch: dict, steps: int) -> tuple[SupervisedTrainer, dict]:
    """A real SupervisedTrainer for ``method`` on a copy of the model (same init for every method)."""
    torch.manual_seed(0)
    net = make_model(model, int(batch["label"].max()) + 1)
    n = batch["image"].shape[0]
    kwargs = {}
    if method != "std":
        kwargs["attack"] = PGD(eps=8 / 255, alpha=2 / 255, steps=steps)
    if method in ("amat", "dpaat"):
        kwargs["num_samples"] = n
    items = [{"image": batch["image"][i], "label": int(batch["label"][i]), "index": i} for i in range(n)]
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=DataLoader(items, batch_size=n), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=1e-3), loss_function=torch.nn.CrossEntropyLoss(),
        iteration_update=build_iteration(method, **kwargs),
    )
    collated = next(iter(trainer.data_loader))
    return trainer, collated


def time_methods(methods: list[str], model: str, batch: dict, steps: int, warmup: int, repeats: int) -> dict:
    """Median (wall, cpu) seconds of one training iteration per method. Each call is the trainer's own process
    function (what ignite runs per iteration: prepare_batch, forward, loss, backward, step, IterationEvents,
    decollate); the methods take turns, round-robin, so a load change on a shared machine hits all alike."""
    trainers = {m: build_trainer(m, model, batch, steps) for m in methods}
    walls: dict[str, list[float]] = {m: [] for m in methods}
    cpus: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(warmup + repeats):
        for m, (trainer, collated) in trainers.items():
            trainer.state.iteration += 1
            wall, cpu = time.perf_counter(), time.process_time()
            trainer._process_function(trainer, collated)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if r >= warmup:
                walls[m].append(wall)
                cpus[m].append(cpu)
    return {m: (statistics.median(walls[m]), statistics.median(cpus[m])) for m in methods}


def ham_splits(data_dir: str, per_class: int, test_per_class: int, size: int, seed: int = 0):
    """HAM10000 mel vs nv, lesion-disjoint: a cached training dataset of ``per_class`` images per class and the test
    split's first ``test_per_class`` per class as ``(images, labels)`` tensors, ``size`` x ``size``."""
    from pathlib import Path

    from monai.data import CacheDataset

    from monai_dpaat.data import ham10000_datalists, ham10000_transforms
    from monai_dpaat.data.utils import reindex

    lists = ham10000_datalists(Path(data_dir) / "ham10000", classes=("mel", "nv"), val_fraction=None, seed=seed)

    def per_label(items, n):
        return reindex([x for x in items if x["label"] == 0][:n] + [x for x in items if x["label"] == 1][:n])

    tf = ham10000_transforms(size)
    train = CacheDataset(per_label(lists["train"], per_class), tf, progress=False)
    test = CacheDataset(per_label(lists["test"], test_per_class), tf, progress=False)
    return train, torch.stack([d["image"] for d in test]), torch.tensor([int(d["label"]) for d in test])


def ham10000_compare(data_dir: str, methods: list[str], per_class: int, test_per_class: int, epochs: int,
                     eps: float = 8 / 255, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Train each method with a real SupervisedTrainer on HAM10000 mel vs nv; return
    ``{method: (clean accuracy, PGD-10 robust accuracy, training CPU seconds)}`` on the test split."""
    train, x_test, y_test = ham_splits(data_dir, per_class, test_per_class, 64, seed)
    results = {}
    for method in methods:
        torch.manual_seed(seed)
        net = small_cnn(2)
        kwargs = {}
        if method != "std":
            kwargs["attack"] = PGD(eps=eps, alpha=eps / 4, steps=7)
        if method in ("amat", "dpaat", "d-a", "d-b"):
            kwargs["num_samples"] = len(train)
        trainer = SupervisedTrainer(
            device="cpu", max_epochs=epochs, train_data_loader=DataLoader(train, batch_size=32, shuffle=True),
            network=net, optimizer=torch.optim.Adam(net.parameters(), 3e-3), loss_function=torch.nn.CrossEntropyLoss(),
            iteration_update=build_iteration(method, **kwargs),
        )
        cpu = time.process_time()
        trainer.run()
        cpu = time.process_time() - cpu
        net.eval()
        with torch.no_grad():
            clean = (net(x_test).argmax(1) == y_test).float().mean().item()
        adv = PGD(eps=eps, alpha=eps / 4, steps=10, generator=torch.Generator().manual_seed(seed))(net, x_test, y_test)
        with torch.no_grad():
            robust = (net(adv).argmax(1) == y_test).float().mean().item()
        results[method] = (clean, robust, cpu)
        print(f"{method:<8} clean {clean:.3f}  PGD-10 robust {robust:.3f}  train cpu {cpu:.1f} s", flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small", choices=["small", "medium", "resnet18", "densenet121"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", default="std,at,sat,amat,dpaat")
    p.add_argument("--compare", metavar="DATA_DIR", help="train the methods on real HAM10000 under DATA_DIR instead")
    p.add_argument("--per-class", type=int, default=400)
    p.add_argument("--test-per-class", type=int, default=150)
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.compare:
        methods = [m.strip() for m in args.methods.split(",")]
        print(f"HAM10000 mel vs nv, {args.per_class}/class train, {args.test_per_class}/class test, 64x64, small CNN, "
              f"{args.epochs} epochs, PGD-7 training / PGD-10 test at eps 8/255")
        ham10000_compare(args.compare, methods, args.per_class, args.test_per_class, args.epochs)
        return
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(args.batch, 3, args.size, args.size, generator=g),
             "label": torch.arange(args.batch) % 2}
    methods = [m.strip() for m in args.methods.split(",")]
    if "std" not in methods:
        methods.insert(0, "std")
    print(f"model={args.model} batch={args.batch}x3x{args.size}x{args.size} PGD steps={args.steps} "
          f"threads={args.threads} median of {args.repeats} iterations")
    times = time_methods(methods, args.model, batch, args.steps, args.warmup, args.repeats)
    std_wall, std_cpu = times["std"]
    print(f"{'method':<8}{'wall ms':>10}{'cpu ms':>10}{'wall/STD':>10}{'cpu/STD':>10}{'floor':>8}")
    for m, (wall, cpu) in times.items():
        floor = 1 if m == "std" else (2 + args.steps if m in ("sat", "amat", "dpaat") else 1 + args.steps)
        print(f"{m:<8}{wall * 1e3:>10.1f}{cpu * 1e3:>10.1f}{wall / std_wall:>10.2f}{cpu / std_cpu:>10.2f}{floor:>8}")
    if "at" in times and "dpaat" in times:
        ow = times["dpaat"][0] / times["at"][0] - 1
        oc = times["dpaat"][1] / times["at"][1] - 1
        print(f"DPAAT overhead over AT: wall {100 * ow:+.1f} %, cpu {100 * oc:+.1f} % (target < 15 %); "
              f"its inherent part, one more training pass on the clean batch (STD/AT): "
              f"cpu {100 * std_cpu / times['at'][1]:.1f} %")
    if "sat" in times and "dpaat" in times:
        oc = times["dpaat"][1] / times["sat"][1] - 1
        print(f"DPAAT over SAT (same two training passes; cost of per-sample eps, dL, sync term, all-reduce): "
              f"cpu {100 * oc:+.1f} %")


if __name__ == "__main__":
    main()
