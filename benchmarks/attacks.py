"""Time our PGD-10 against torchattacks' PGD-10 and against 10 bare forward+backward passes.

All three run on the same model and batch in one process, interleaved (ours, theirs, bare, ours, ...) so
that drifting machine load hits them alike; each gets warm-up runs, then the median of ``--repeats`` is
reported. "Bare" is the floor any L-inf PGD-10 must pay: 10 x (forward, CE loss, ``autograd.grad`` with
respect to the input) on the eval-mode model, with no projection, clamping or bookkeeping.

Targets (issue 2): ours <= 1.0x torchattacks and <= 1.1x the bare passes.

    python benchmarks/attacks.py                       # torchvision resnet18, 64x64, batch 16, CPU
    python benchmarks/attacks.py --model densenet121   # MONAI DenseNet121 (2D)
    python benchmarks/attacks.py --device cuda --repeats 20

torchattacks (a dev extra) is only a reference here; without it the comparison with it is skipped.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from monai_dpaat.attacks import PGD


def build_model(name: str, num_classes: int) -> torch.nn.Module:
    if name == "tiny":  # one conv: the network costs next to nothing, so the attack's own overhead shows
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, num_classes)
        )
    if name == "resnet18":
        import torchvision

        return torchvision.models.resnet18(num_classes=num_classes)
    if name == "densenet121":
        from monai.networks.nets import DenseNet121

        return DenseNet121(spatial_dims=2, in_channels=3, out_channels=num_classes)
    raise ValueError(f"--model must be 'resnet18', 'densenet121' or 'tiny', got {name!r}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_passes(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` x (forward, CE, input gradient): the cost floor of PGD-``steps``."""
    model.eval()
    grad = None
    for _ in range(steps):
        x = images.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), labels), x)
    return grad


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", choices=["resnet18", "densenet121", "tiny"])
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model, num_classes=7).to(device).train()  # attacks must switch to eval themselves
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    labels = torch.randint(0, 7, (args.batch,), device=device)
    eps, alpha = 8 / 255, 2 / 255

    ours = PGD(eps=eps, alpha=alpha, steps=args.steps, random_start=True, value_range=(0.0, 1.0))
    runners = {"ours": lambda: ours(model, images, labels)}
    try:
        import torchattacks

        theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=args.steps, random_start=True)
        runners["torchattacks"] = lambda: theirs(images, labels)
    except ImportError:
        print("torchattacks is not installed: skipping the comparison with it")
    runners["bare"] = lambda: bare_passes(model, images, labels, args.steps)

    def timed(fn) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of one call."""
        sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        return time.perf_counter() - wall, time.process_time() - cpu

    for _ in range(args.warmup):
        for fn in runners.values():
            fn()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runners}
    for _ in range(args.repeats):
        for key, fn in runners.items():
            times[key].append(timed(fn))
    wall = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
    cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
    cpu_min = {k: min(t[1] for t in v) for k, v in times.items()}

    print(f"PGD-{args.steps}, {args.model}, batch {args.batch} x 3 x {args.size} x {args.size}, {device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} (interleaved, {args.warmup} warm-up)")
    print(f"  {'':<13} {'wall ms':>10} {'CPU ms':>10}   wall min / max")
    for key in runners:
        w = [t[0] * 1e3 for t in times[key]]
        print(f"  {key:<13} {wall[key] * 1e3:10.1f} {cpu[key] * 1e3:10.1f}   {min(w):.1f} / {max(w):.1f}")
    # on a shared CPU the process CPU time is the steadier measure; on a GPU only wall time means anything
    # (the minimum is the run least disturbed by other processes)
    clocks = {"wall": wall} if device.type == "cuda" else {"wall": wall, "CPU": cpu, "CPU min": cpu_min}
    ratios: dict[str, float] = {}
    for clock, med in clocks.items():
        ratios[f"ours/bare ({clock})"] = med["ours"] / med["bare"]
        line = f"  {clock:>7}: ours / {args.steps} bare forward+backward = {ratios[f'ours/bare ({clock})']:.3f}x (target <= 1.1x)"
        if "torchattacks" in med:
            ratios[f"ours/torchattacks ({clock})"] = med["ours"] / med["torchattacks"]
            line += f";  ours / torchattacks = {ratios[f'ours/torchattacks ({clock})']:.3f}x (target <= 1.0x)"
        print(line)
    return ratios


if __name__ == "__main__":
    main()
