"""Cost of the benchmark protocol (issue 14): the cascade against every attack on every sample, and against
torchattacks' AutoAttack on the same model and data. Prints ratios measured in this run.

1. HAM10000 mel vs nv (real images, 32 x 32), a small CNN adversarially trained here (PGD-3 AT, so many samples stay
   robust: the case where a cascade saves least): protocol v2 (the default) as a cascade and with every attack on every
   clean-correct sample (``run_cascade(cascade=False)``), and torchattacks' APGD-CE + FAB-T + Square at the same
   counts (its AutoAttack without APGD-T, which torchattacks cannot run below 4 classes).
2. A 10-class MLP on random 3 x 8 x 8 inputs: protocol v2 against torchattacks' AutoAttack at the reference's counts
   (``MultiAttack`` of its APGD, APGDT, FAB multi-targeted with 100 iterations and Square with 5000 queries, the
   cascade AutoAttack publishes) and, for the record, against ``torchattacks.AutoAttack(version="standard")`` as it
   ships (its attacks at torchattacks' default of 10 iterations, a tenth of the reference).

    python benchmarks/protocol.py ../shared/data            # standard budget (a few minutes on 2 cores)
    python benchmarks/protocol.py ../shared/data --quick    # the quick budget, under a minute

Targets: cascade / every-attack <= 0.5 on the robust model; protocol / AutoAttack <= 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import load_ham, tiny_cnn, trained_ham_cnn  # noqa: E402  (the tests' real-data loader and CNNs)

from monai_dpaat.attacks import PGD  # noqa: E402
from monai_dpaat.evaluation.protocol import classification_protocol, run_cascade  # noqa: E402

EPS = 8 / 255


def robust_ham_model(data_dir: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    net = tiny_cnn()
    x, y = load_ham(data_dir, 96)
    opt = torch.optim.Adam(net.parameters(), 5e-3)
    attack = PGD(eps=EPS, alpha=EPS / 2, steps=3, value_range=(0, 1), random_start=True)
    for _ in range(15):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 32):
            idx = perm[i:i + 32]
            adv = attack(net, x[idx], y[idx])
            net.train()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(adv), y[idx]).backward()
            opt.step()
    return net.eval()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def accuracy(net, x, y) -> float:
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def main() -> None:
    import torchattacks

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    budget = "quick" if args.quick else "standard"

    net = robust_ham_model(args.data_dir)
    x, y = load_ham(args.data_dir, 32, offset=96, size=32)  # held-out lesions
    cascade, t_cascade = timed(lambda: run_cascade(net, [(x, y)], classification_protocol(EPS, budget=budget,
                                                                                         value_range=(0, 1))))
    full, t_full = timed(lambda: run_cascade(net, [(x, y)], classification_protocol(EPS, budget=budget,
                                                                                    value_range=(0, 1)),
                                             cascade=False))
    steps = 100 if budget == "standard" else 20  # torchattacks' own default is 10
    reference = torchattacks.MultiAttack([
        torchattacks.APGD(net, eps=EPS, steps=steps, loss="ce", seed=0),
        torchattacks.FAB(net, eps=EPS, steps=steps, multi_targeted=True, n_classes=2, seed=0),
        torchattacks.Square(net, eps=EPS, n_queries=5000 if budget == "standard" else 500, seed=0)])
    adv, t_ref = timed(lambda: reference(x, y))
    print(f"HAM10000 mel vs nv, {len(y)} test images, PGD-3 AT small CNN, eps 8/255, {budget} budget")
    print(f"  clean {cascade.clean_accuracy:.3f}; robust: cascade {cascade.robust_accuracy:.3f}, every attack "
          f"{full.robust_accuracy:.3f}, torchattacks APGD-CE+FAB-T+Square {accuracy(net, adv, y):.3f}")
    print(f"  breaks {cascade.breaks}; attacked {cascade.attacked} (every attack: {full.attacked})")
    print(f"  seconds: cascade {t_cascade:.1f}, every attack {t_full:.1f}, torchattacks {t_ref:.1f}")
    print(f"  cascade / every attack: {t_cascade / t_full:.2f} (target <= 0.5); protocol / torchattacks: "
          f"{t_cascade / t_ref:.2f}")
    # the same on the standard-trained CNN, where APGD-CE breaks most images and the later attacks see few
    std = trained_ham_cnn(args.data_dir)
    std_cascade, t_std_cascade = timed(lambda: run_cascade(std, [(x, y)], classification_protocol(
        EPS, budget=budget, value_range=(0, 1))))
    _, t_std_full = timed(lambda: run_cascade(std, [(x, y)], classification_protocol(EPS, budget=budget,
                                                                                     value_range=(0, 1)),
                                              cascade=False))
    print(f"  standard-trained CNN: clean {std_cascade.clean_accuracy:.3f}, robust {std_cascade.robust_accuracy:.3f}, "
          f"attacked {std_cascade.attacked}; cascade / every attack {t_std_cascade / t_std_full:.2f}")

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 10)).eval()
    xm = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ym = mlp(xm).argmax(1)
    ours, t_ours = timed(lambda: run_cascade(mlp, [(xm, ym)], classification_protocol(0.01, budget=budget,
                                                                                      value_range=(0, 1))))
    aa_ref = torchattacks.MultiAttack([
        torchattacks.APGD(mlp, eps=0.01, steps=100, loss="ce", seed=0),
        torchattacks.APGDT(mlp, eps=0.01, steps=100, n_classes=10, seed=0),
        torchattacks.FAB(mlp, eps=0.01, steps=100, multi_targeted=True, n_classes=10, seed=0),
        torchattacks.Square(mlp, eps=0.01, n_queries=5000, seed=0)])
    adv_r, t_aa_ref = timed(lambda: aa_ref(xm, ym))
    aa = torchattacks.AutoAttack(mlp, norm="Linf", eps=0.01, version="standard", n_classes=10, seed=0)
    adv_m, t_aa = timed(lambda: aa(xm, ym))
    print(f"10-class MLP, 64 random inputs, eps 0.01: robust protocol {ours.robust_accuracy:.3f} vs AutoAttack at the "
          f"reference counts {accuracy(mlp, adv_r, ym):.3f} vs torchattacks AutoAttack as shipped (10 iterations) "
          f"{accuracy(mlp, adv_m, ym):.3f}; seconds {t_ours:.1f} vs {t_aa_ref:.1f} vs {t_aa:.1f}; per attack "
          + ", ".join(f"{k} {v:.1f}" for k, v in ours.seconds.items()))
    print(f"protocol: cascade/every-attack {t_cascade / t_full:.2f} (robust model; {t_std_cascade / t_std_full:.2f} "
          f"standard-trained), protocol/AutoAttack {t_ours / t_aa_ref:.2f} "
          f"(MLP, the reference counts; {t_ours / t_aa:.2f} against torchattacks' 10-iteration default), "
          f"{t_cascade / t_ref:.2f} (HAM, vs torchattacks without APGD-T)")


if __name__ == "__main__":
    main()
