"""Parameter count and forward time per 256x256 tile: Residual-Attention UNet++ next to MONAI's UNet and
BasicUNetPlusPlus.

    python benchmarks/networks.py [--size 256] [--repeats 10] [--device cpu] [--threads 0]

Batch 1, eval mode, ``torch.no_grad()``, 3 input channels, 2 output channels; the time is the median of
``--repeats`` forward passes after two warm-up passes (wall clock, and process CPU time). ``--threads 0``
keeps torch's default thread count.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from monai.networks.nets import BasicUNetPlusPlus, UNet

from monai_dpaat.networks import AttentionUNetPlusPlus


def networks() -> dict[str, torch.nn.Module]:
    return {
        "AttentionUNetPlusPlus (32..512, res units 2)": AttentionUNetPlusPlus(2, 3, 2),
        "AttentionUNetPlusPlus deep supervision": AttentionUNetPlusPlus(2, 3, 2, deep_supervision=True),
        "AttentionUNetPlusPlus (16..256, res units 1)": AttentionUNetPlusPlus(
            2, 3, 2, features=(16, 32, 64, 128, 256), num_res_units=1
        ),
        "monai UNet (32..512, res units 2)": UNet(
            2, 3, 2, channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2), num_res_units=2
        ),
        "monai BasicUNetPlusPlus (default)": BasicUNetPlusPlus(2, 3, 2),
    }


def forward_time(net: torch.nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median wall-clock and process-CPU seconds of one forward pass (on a shared machine the CPU time, with
    ``--threads 1``, is the steadier figure)."""
    wall, cpu = [], []
    with torch.no_grad():
        for i in range(repeats + 2):
            if x.is_cuda:
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            net(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            if i >= 2:
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(1, 3, args.size, args.size, device=device)
    print(f"device {device}, {torch.get_num_threads()} threads, input {tuple(x.shape)}, median of {args.repeats}")
    print(f"| {'network':<46} | {'parameters':>11} | {'forward ms':>10} | {'CPU ms':>8} |")
    print(f"|{'-' * 48}|{'-' * 13}|{'-' * 12}|{'-' * 10}|")
    for name, net in networks().items():
        net = net.to(device).eval()
        n_params = sum(p.numel() for p in net.parameters())
        wall, cpu = forward_time(net, x, args.repeats)
        print(f"| {name:<46} | {n_params:>11,} | {1000 * wall:>10.1f} | {1000 * cpu:>8.1f} |")


if __name__ == "__main__":
    main()
