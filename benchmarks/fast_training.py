"""Single-step DPAAT against PGD-7 DPAAT and PGD-7 AT: cost per epoch relative to standard training and robust accuracy.

In one run, on HAM10000 mel vs nv (lesion-disjoint split, 64 x 64), trains with real ``SupervisedTrainer`` runs:
STD, PGD-7 AT, PGD-7 DPAAT, FGSM-RS DPAAT, N-FGSM DPAAT and Free DPAAT (``monai_dpaat.attacks.training_adversary``;
Free AT replays each batch ``FREE_REPLAYS`` times and trains that fraction of the epochs, so every method takes the
same optimizer steps), per seed, and prints per method the wall time per epoch and of the whole training relative to
STD (each method's median epoch and summed epochs, measured in this run) and
clean, PGD-20 and APGD-CE accuracy on the test split (mean ± std over seeds), plus whether a run overfit
catastrophically (its FGSM accuracy more than 30 points above its PGD-20 accuracy, the signature of Wong et al.
2020). The last line::

    fast-dpaat: cost <x>x STD, robust <a> vs <b> (PGD-7 DPAAT), gap <g> points

with ``x`` N-FGSM DPAAT's epoch time over STD's, ``a`` / ``b`` the PGD-20 accuracies of N-FGSM DPAAT and PGD-7
DPAAT (mean over seeds) and ``g`` their difference in points. Targets (issue 15): cost at most 2.2x, gap within 2
points. DPAAT's loss has a clean term, so its floor is 2 training passes + the attack's passes (3 for single-step
DPAAT against 1 for STD): an input-gradient pass skips weight gradients, so it lands below that. Free DPAAT has no
attack pass (the input gradient comes from the training backward): its floor is DPAAT's 2 training passes per
optimizer step, printed on the line before the last as ``free-dpaat: cost <x>x STD (whole run), ...``.

    python benchmarks/fast_training.py --quick ../shared/data   # small CNN, 1 seed, 8/255 (under 10 min, 2 cores)
    python benchmarks/fast_training.py ../shared/data           # small CNN and ResNet18, 3 seeds, 8/255 and 16/255
    python benchmarks/fast_training.py ../shared/data --models small   # the small CNN alone (about 8 min on 2 cores)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines import SupervisedTrainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training import ham_splits, make_model  # noqa: E402  (benchmarks/training.py: the same data and small CNN)

from monai_dpaat.attacks import APGD, FGSM, PGD, training_adversary  # noqa: E402
from monai_dpaat.training import build_iteration  # noqa: E402

#: label -> (method, adversary)
METHODS = {"STD": ("std", None), "PGD-7 AT": ("at", "pgd"), "PGD-7 DPAAT": ("dpaat", "pgd"),
           "FGSM-RS DPAAT": ("dpaat", "fgsm-rs"), "N-FGSM DPAAT": ("dpaat", "n-fgsm"), "Free DPAAT": ("dpaat", "free")}
#: Free AT's replays per batch; it trains 1 / FREE_REPLAYS of the epochs (the same optimizer steps as the others)
FREE_REPLAYS = 3
#: FGSM accuracy this far above PGD-20 accuracy is catastrophic overfitting
CO_GAP = 0.30


def accuracy(net, x, y, attack=None) -> float:
    net.eval()
    if attack is not None:
        x = attack(net, x, y)
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def train_one(label: str, model: str, train, epochs: int, eps: float, seed: int):
    """The trained network, its median epoch time and its whole training time (seconds)."""
    method, adversary = METHODS[label]
    torch.manual_seed(seed)
    net = make_model(model, 2)
    kwargs = {}
    if adversary is not None:
        kwargs["attack"] = training_adversary(adversary, eps=eps, pgd_alpha=eps / 4, pgd_steps=7, value_range=(0, 1),
                                              free_replays=FREE_REPLAYS)
    if adversary == "free":
        epochs = max(1, round(epochs / FREE_REPLAYS))
    if method == "dpaat":
        kwargs.update(num_samples=len(train), eps_init=eps, eps_min=eps / 4, eps_max=2 * eps, step_size=eps / 8)
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=epochs, train_data_loader=DataLoader(train, batch_size=32, shuffle=True),
        network=net, optimizer=torch.optim.Adam(net.parameters(), 3e-3), loss_function=torch.nn.CrossEntropyLoss(),
        iteration_update=build_iteration(method, **kwargs),
    )
    epoch_times: list[float] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: setattr(e.state, "t0", time.perf_counter()))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epoch_times.append(time.perf_counter() - e.state.t0))
    trainer.run()
    return net, statistics.median(epoch_times), sum(epoch_times)


def evaluate(net, x, y, eps: float, seed: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    return {"clean": accuracy(net, x, y),
            "fgsm": accuracy(net, x, y, FGSM(eps=eps, value_range=(0, 1))),
            "pgd20": accuracy(net, x, y, PGD(eps=eps, alpha=eps / 4, steps=20, value_range=(0, 1), generator=g)),
            "apgd": accuracy(net, x, y, APGD(eps=eps, steps=20, value_range=(0, 1),
                                             generator=torch.Generator().manual_seed(seed)))}


def fmt(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")


def run(data_dir: str, models: list[str], seeds: list[int], eps_list: list[float], per_class: int,
        test_per_class: int, epochs: int, size: int) -> str:
    first = ""  # the target's line: the first model at the first budget
    splits = {seed: ham_splits(data_dir, per_class, test_per_class, size, seed) for seed in seeds}  # read once
    for model in models:
        for eps in eps_list:
            rows: dict[str, dict[str, list[float]]] = {m: {} for m in METHODS}
            for seed in seeds:
                train, x_test, y_test = splits[seed]
                for label in METHODS:
                    net, epoch_s, run_s = train_one(label, model, train, epochs, eps, seed)
                    result = {"epoch_s": epoch_s, "run_s": run_s, **evaluate(net, x_test, y_test, eps, seed)}
                    for k, v in result.items():
                        rows[label].setdefault(k, []).append(v)
                    print(f"  {model} eps {eps * 255:.0f}/255 seed {seed} {label}: " +
                          ", ".join(f"{k} {v:.3f}" for k, v in result.items()), flush=True)
            std_epoch, std_run = statistics.mean(rows["STD"]["epoch_s"]), statistics.mean(rows["STD"]["run_s"])
            print(f"\n{model}, eps {eps * 255:.0f}/255, {len(seeds)} seed(s), {epochs} epochs (Free DPAAT: "
                  f"{max(1, round(epochs / FREE_REPLAYS))} epochs x {FREE_REPLAYS} replays), {per_class}/class train, "
                  f"{test_per_class}/class test, {size}x{size}")
            print(f"{'method':<15}{'epoch/STD':>10}{'run/STD':>9}  {'clean':<15}{'PGD-20':<15}{'APGD-CE':<15}"
                  f"{'FGSM':<15}CO")
            for label, r in rows.items():
                co = sum(f - p > CO_GAP for f, p in zip(r["fgsm"], r["pgd20"]))
                print(f"{label:<15}{statistics.mean(r['epoch_s']) / std_epoch:>9.2f}x"
                      f"{statistics.mean(r['run_s']) / std_run:>8.2f}x  {fmt(r['clean']):<15}"
                      f"{fmt(r['pgd20']):<15}{fmt(r['apgd']):<15}{fmt(r['fgsm']):<15}{co}/{len(seeds)}")
            fast, slow = rows["N-FGSM DPAAT"], rows["PGD-7 DPAAT"]
            a, b = statistics.mean(fast["pgd20"]), statistics.mean(slow["pgd20"])
            last = (f"fast-dpaat: cost {statistics.mean(fast['epoch_s']) / std_epoch:.2f}x STD, robust {a:.3f} vs "
                    f"{b:.3f} (PGD-7 DPAAT), gap {100 * (b - a):+.1f} points")
            free = rows["Free DPAAT"]
            print(f"({model}, eps {eps * 255:.0f}/255) free-dpaat: cost {statistics.mean(free['run_s']) / std_run:.2f}x "
                  f"STD (whole run), robust {statistics.mean(free['pgd20']):.3f} vs {b:.3f} (PGD-7 DPAAT), gap "
                  f"{100 * (b - statistics.mean(free['pgd20'])):+.1f} points")
            print(f"({model}, eps {eps * 255:.0f}/255) {last}\n", flush=True)
            first = first or last
    return first


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", help="the sample data folder holding ham10000/")
    p.add_argument("--quick", action="store_true", help="small CNN, one seed, 8/255 (under 10 minutes on 2 cores)")
    p.add_argument("--models", default="small,resnet18", help="comma-separated: small, medium, resnet18")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--eps", default="8,16", help="comma-separated budgets in 1/255")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.quick:
        last = run(args.data_dir, ["small"], [0], [8 / 255], per_class=400, test_per_class=100, epochs=15, size=64)
    else:
        last = run(args.data_dir, args.models.split(","), list(range(args.seeds)),
                   [float(e) / 255 for e in args.eps.split(",")], per_class=400, test_per_class=100, epochs=15, size=64)
    print(f"total {time.perf_counter() - start:.0f} s")
    print(last)


if __name__ == "__main__":
    main()
