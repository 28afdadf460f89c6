"""Training throughput on a GPU: images per second and peak memory per method, AMP off and on (issue 15).

Real ``SupervisedTrainer`` iterations (``amp=True`` is MONAI's autocast + GradScaler for the weight update; the
attack's input-gradient passes run in float32 outside autocast) of STD, PGD-7 AT, PGD-7 DPAAT, FGSM-RS DPAAT and
N-FGSM DPAAT and Free DPAAT on random images, ``channels_last`` memory format, one model. Prints one row per (method,
AMP) with images/s (trained images per second, i.e. optimizer steps x batch: Free AT's replays count), the ratio to STD
at the same AMP setting and the peak allocated memory::

    python benchmarks/gpu_training.py                          # ResNet18, 64 x 3 x 224 x 224, cuda:0
    python benchmarks/gpu_training.py --model densenet121 --batch 32
    python benchmarks/gpu_training.py --device cpu --size 32 --batch 8 --iterations 2   # a smoke run without a GPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from monai.data import DataLoader
from monai.engines import SupervisedTrainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training import make_model  # noqa: E402

from monai_dpaat.attacks import training_adversary  # noqa: E402
from monai_dpaat.training import build_iteration  # noqa: E402

METHODS = {"STD": ("std", None), "PGD-7 AT": ("at", "pgd"), "PGD-7 DPAAT": ("dpaat", "pgd"),
           "FGSM-RS DPAAT": ("dpaat", "fgsm-rs"), "N-FGSM DPAAT": ("dpaat", "n-fgsm"), "Free DPAAT": ("dpaat", "free")}
#: Free AT's replays per batch (each an optimizer step: its images/s count every replay)
FREE_REPLAYS = 4


def trainer_for(label: str, model: str, batch: int, size: int, device: torch.device, amp: bool) -> SupervisedTrainer:
    method, adversary = METHODS[label]
    torch.manual_seed(0)
    net = make_model(model, 2).to(device).to(memory_format=torch.channels_last)
    n = 4 * batch
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.rand(3, size, size, generator=g), "label": i % 2, "index": i} for i in range(n)]
    kwargs = {}
    if adversary is not None:
        kwargs["attack"] = training_adversary(adversary, eps=8 / 255, pgd_alpha=2 / 255, pgd_steps=7,
                                              value_range=(0, 1), free_replays=FREE_REPLAYS)
    if method == "dpaat":
        kwargs["num_samples"] = n
    return SupervisedTrainer(
        device=device, max_epochs=1, train_data_loader=DataLoader(items, batch_size=batch), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=1e-3), loss_function=torch.nn.CrossEntropyLoss(),
        iteration_update=build_iteration(method, **kwargs), amp=amp,
    )


def measure(trainer: SupervisedTrainer, iterations: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """(images per second, peak allocated GiB) over ``iterations`` process-function calls after ``warmup``."""
    collated = next(iter(trainer.data_loader))
    # images per optimizer step: Free AT trains each batch `replays` times, one step each
    batch = collated["image"].shape[0] * int(getattr(getattr(trainer._process_function, "attack", None), "replays", 1))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i in range(warmup + iterations):
        if i == warmup:
            sync()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
        trainer.state.iteration += 1
        trainer._process_function(trainer, collated)
    sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return iterations * batch / seconds, peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18", choices=["small", "medium", "resnet18", "densenet121"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda:0")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device: run on a GPU machine, or pass --device cpu for a smoke run")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, {args.model}, batch {args.batch} x 3 x {args.size} x {args.size}, channels_last, "
          f"{args.iterations} iterations after {args.warmup}")
    print(f"{'method':<15}{'AMP':<5}{'img/s':>10}{'x STD':>8}{'peak GiB':>10}")
    # the first trainer of a process pays one-off costs (kernels, allocator, thread pools): a throwaway run
    measure(trainer_for("STD", args.model, args.batch, args.size, device, False), args.iterations, args.warmup, device)
    for amp in (False, True) if device.type == "cuda" else (False,):
        std = None
        for label in METHODS:
            rate, peak = measure(trainer_for(label, args.model, args.batch, args.size, device, amp), args.iterations,
                                 args.warmup, device)
            std = std or rate
            print(f"{label:<15}{'on' if amp else 'off':<5}{rate:>10.1f}{std / rate:>8.2f}{peak:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
