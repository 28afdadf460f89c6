"""Acceptance on real data: HAM10000 melanoma vs nevus (lesion-disjoint split), 64 x 64, a small CNN, a
short CPU run of STD, AT and DPAAT with MONAI's ``SupervisedTrainer``. AT and DPAAT must be more robust to
PGD-10 (eps 8/255, the training budget) than STD, without collapsing to a constant prediction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monai.data import CacheDataset, DataLoader
from monai.engines import SupervisedTrainer

from monai_dpaat.attacks import PGD
from monai_dpaat.training import build_iteration

EPS = 8 / 255
PER_CLASS, TEST_PER_CLASS, EPOCHS = 400, 150, 6


def small_cnn() -> torch.nn.Module:
    """3 stride-2 conv/BN/ReLU blocks (8-16-32 channels), global pooling, linear: ~6k parameters."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, 2, 1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 2),
    )


@pytest.fixture(scope="module")
def ham64(data_dir: Path):
    from monai_dpaat.data import ham10000_datalists, ham10000_transforms
    from monai_dpaat.data.utils import reindex

    lists = ham10000_datalists(data_dir / "ham10000", classes=("mel", "nv"), val_fraction=None, seed=0)
    train_ids = {x["lesion_id"] for x in lists["train"]}
    assert not train_ids & {x["lesion_id"] for x in lists["test"]}  # split by lesion: no leak

    def per_label(items, n):
        return reindex([x for x in items if x["label"] == 0][:n] + [x for x in items if x["label"] == 1][:n])

    tf = ham10000_transforms(64)
    train = CacheDataset(per_label(lists["train"], PER_CLASS), tf, progress=False)  # decoded once, in memory
    test = CacheDataset(per_label(lists["test"], TEST_PER_CLASS), tf, progress=False)
    return train, torch.stack([d["image"] for d in test]), torch.tensor([int(d["label"]) for d in test])


def _train_and_evaluate(method: str, train, x_test, y_test) -> tuple[float, float, object]:
    torch.manual_seed(0)
    net = small_cnn()
    kwargs = {}
    if method != "std":
        kwargs["attack"] = PGD(eps=EPS, alpha=EPS / 4, steps=7)  # the DPAAT paper's 7-step L-inf adversary
    if method == "dpaat":
        kwargs["num_samples"] = len(train)
    iteration = build_iteration(method, **kwargs)
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=EPOCHS, train_data_loader=DataLoader(train, batch_size=32, shuffle=True), network=net,
        optimizer=torch.optim.Adam(net.parameters(), 3e-3), loss_function=torch.nn.CrossEntropyLoss(),
        iteration_update=iteration,
    )
    trainer.run()
    net.eval()
    with torch.no_grad():
        clean = (net(x_test).argmax(1) == y_test).float().mean().item()
    adv = PGD(eps=EPS, alpha=EPS / 4, steps=10, generator=torch.Generator().manual_seed(0))(net, x_test, y_test)
    with torch.no_grad():
        pred = net(adv).argmax(1)
    robust = (pred == y_test).float().mean().item()
    return clean, robust, iteration


@pytest.mark.slow
def test_at_and_dpaat_are_more_robust_than_std_on_ham10000(ham64):
    train, x_test, y_test = ham64
    res = {m: _train_and_evaluate(m, train, x_test, y_test) for m in ("std", "at", "dpaat")}
    summary = {m: (round(c, 3), round(r, 3)) for m, (c, r, _) in res.items()}
    print("HAM10000 mel vs nv, clean / PGD-10 robust accuracy:", summary)
    std_clean, std_robust, _ = res["std"]
    assert std_clean > 0.65, summary  # the model learned the task
    for method in ("at", "dpaat"):
        clean, robust, _ = res[method]
        assert clean > 0.6, summary  # not a constant predictor (that would be "robust" at 50 %)
        assert robust > std_robust + 0.1, summary
    dpaat = res["dpaat"][2]
    eps = dpaat.epsilon
    assert ((eps >= dpaat.eps_min) & (eps <= dpaat.eps_max)).all() and eps.std() > 0  # per-sample budgets spread out
