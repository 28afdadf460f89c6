"""Unit and integration tests of ``monai_dpaat.training`` (AT, SAT, AMAT, DPAAT iterations) with real
MONAI trainers, handlers and checkpoints; classification on a few real HAM10000 images, segmentation on
real H&E nuclei tiles."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from ignite.metrics import Accuracy
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import (
    CheckpointLoader,
    CheckpointSaver,
    LrScheduleHandler,
    MeanDice,
    StatsHandler,
    TensorBoardStatsHandler,
    ValidationHandler,
    from_engine,
)
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from monai.transforms import Activationsd, AsDiscreted, Compose
from monai.utils import CommonKeys

from monai_dpaat.attacks import PGD, build_attack
from monai_dpaat.conventions import per_sample_losses
from monai_dpaat.handlers.adversarial_stats import AdversarialStatsHandler, adversarial_output_transform
from monai_dpaat.training import (
    AMATIteration,
    ATIteration,
    DPAATIteration,
    SATIteration,
    StandardIteration,
    build_iteration,
    dpaat_epsilon_update,
    symmetric_kl,
)

EPS = 4 / 255


def tiny_cnn(in_ch: int = 3, classes: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_ch, 4, 3, 2, 1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, classes),
    )


def small_attack() -> PGD:
    return PGD(eps=EPS, alpha=EPS / 4, steps=2, generator=torch.Generator().manual_seed(0))


def make_iteration(method: str, num_samples: int):
    if method == "std":
        return None
    kwargs = {"attack": small_attack()}
    if method in ("amat", "dpaat"):
        kwargs["num_samples"] = num_samples
    return build_iteration(method, **kwargs)


@pytest.fixture(scope="module")
def ham_small(data_dir: Path):
    """24 train + 8 val real HAM10000 images (mel vs nv), 32x32, decoded once."""
    from monai_dpaat.data import ham10000_datalists, ham10000_transforms

    lists = ham10000_datalists(data_dir / "ham10000", classes=("mel", "nv"), val_fraction=0.1)
    tf = ham10000_transforms(32)

    def take(items, n):
        picked = [x for x in items if x["label"] == 0][: n // 2] + [x for x in items if x["label"] == 1][: n // 2]
        return [{**tf(dict(x)), "index": i} for i, x in enumerate(picked)]

    return take(lists["train"], 24), take(lists["val"], 8)


# ---------------------------------------------------------------------------------------- sync loss
def test_sync_loss_zero_for_identical_and_symmetric():
    g = torch.Generator().manual_seed(0)
    for shape in [(5, 3), (2, 4, 6, 6), (2, 1, 5, 5, 5), (4, 1)]:
        a, b = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        assert torch.allclose(symmetric_kl(a, a), torch.zeros(shape[0]), atol=1e-7)
        if shape[1] > 1:  # softmax is shift-invariant: identical probabilities, zero loss
            assert torch.allclose(symmetric_kl(a, a + 3.0), torch.zeros(shape[0]), atol=1e-6)
        ab, ba = symmetric_kl(a, b), symmetric_kl(b, a)
        assert torch.allclose(ab, ba, atol=1e-6) and (ab > 0).all()
    # equals 0.5 * (KL(p||q) + KL(q||p)) computed independently
    p, q = torch.softmax(a := torch.randn(3, 4, generator=g), 1), torch.softmax(b := torch.randn(3, 4, generator=g), 1)
    kl = lambda x, y: (x * (x / y).log()).sum(1)  # noqa: E731
    assert torch.allclose(symmetric_kl(a, b), 0.5 * (kl(p, q) + kl(q, p)), atol=1e-6)
    # gradients reach both arguments (mutual supervision)
    a.requires_grad_(True), b.requires_grad_(True)
    symmetric_kl(a, b).mean().backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    assert symmetric_kl(a, b).shape == (3,)
    with pytest.raises(ValueError, match="shapes differ"):
        symmetric_kl(torch.zeros(2, 3), torch.zeros(2, 4))


def test_per_sample_losses_equal_the_trainer_loss_on_each_sample():
    """dL_i uses the trainer's own loss per sample: the vectorised CE/BCE path and the per-slice path
    (any MONAI loss) agree with calling the loss on one-sample slices."""
    g = torch.Generator().manual_seed(0)
    cases = [
        (torch.nn.CrossEntropyLoss(), torch.randn(6, 3, generator=g), torch.randint(0, 3, (6,), generator=g)),
        (torch.nn.CrossEntropyLoss(ignore_index=2, label_smoothing=0.1), torch.randn(4, 3, 5, 5, generator=g),
         torch.randint(0, 3, (4, 5, 5), generator=g)),
        (torch.nn.BCEWithLogitsLoss(), torch.randn(4, 1, 5, 5, generator=g),
         torch.randint(0, 2, (4, 1, 5, 5), generator=g).float()),
        (DiceCELoss(to_onehot_y=True, softmax=True), torch.randn(3, 2, 6, 6, generator=g),
         torch.randint(0, 2, (3, 1, 6, 6), generator=g)),
    ]
    for loss, pred, target in cases:
        expected = torch.stack([loss(pred[i : i + 1], target[i : i + 1]) for i in range(pred.shape[0])])
        assert torch.allclose(per_sample_losses(loss, pred, target), expected, atol=1e-6), type(loss).__name__
    ce = torch.nn.CrossEntropyLoss(reduction="none")
    pred, target = cases[0][1], cases[0][2]
    assert torch.allclose(per_sample_losses(None, pred, target, sample_loss_function=ce), ce(pred, target))


# ---------------------------------------------------------------------------------------- DPAAT rule
@settings(max_examples=80, deadline=None)
@given(
    eps=st.lists(st.floats(0.0, 0.2), min_size=1, max_size=16),
    data=st.data(),
    step=st.floats(0.0, 0.1),
    lo=st.floats(0.0, 0.05),
    width=st.floats(0.0, 0.1),
)
def test_dpaat_update_stays_in_bounds_and_moves_the_right_way(eps, data, step, lo, width):
    n = len(eps)
    dl = torch.tensor(data.draw(st.lists(st.floats(-50, 50), min_size=n, max_size=n)), dtype=torch.float64)
    eps_t = torch.tensor(eps, dtype=torch.float64).clamp(lo, lo + width)
    mu = dl.mean()
    new = dpaat_epsilon_update(eps_t, dl, mu, dl.std(unbiased=False), step, lo, lo + width)
    assert (new >= lo - 1e-12).all() and (new <= lo + width + 1e-12).all()
    assert ((new - eps_t).abs() <= step + 1e-12).all()
    assert (new[dl > mu] <= eps_t[dl > mu] + 1e-12).all()  # fragile never grow
    assert (new[dl < mu] >= eps_t[dl < mu] - 1e-12).all()  # stable never shrink


def test_dpaat_update_length_grows_with_distance_and_is_bounded():
    eps = torch.full((5,), 0.5, dtype=torch.float64)
    dl = torch.tensor([0.0, 1.0, 2.0, 4.0, 100.0], dtype=torch.float64)
    new = dpaat_epsilon_update(eps, dl, 0.0, 1.0, step_size=0.1, eps_min=0.0, eps_max=1.0)
    change = eps - new
    assert change[0] == 0 and (change[1:].diff() >= 0).all() and change[-1] <= 0.1 and change[-1] > 0.099


class _Linear1D(torch.nn.Module):
    """logits [0, k * (mean(x) - 0.5)]: samples near 0.5 sit on the boundary."""

    def __init__(self, k: float = 10.0):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(k))

    def forward(self, x):
        z = self.k * (x.mean(dim=(1, 2)) - 0.5)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def _run(net, data, iteration, epochs=1, batch_size=None, lr=1e-2, sgd=False, loss_function=None, **extra):
    """A real SupervisedTrainer (Adam, or SGD with ``sgd``; CE loss by default) over ``data``."""
    optimizer = (torch.optim.SGD if sgd else torch.optim.Adam)(net.parameters(), lr=lr)
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=epochs, train_data_loader=DataLoader(data, batch_size=batch_size or len(data)),
        network=net, optimizer=optimizer, loss_function=loss_function or torch.nn.CrossEntropyLoss(),
        iteration_update=iteration, **extra,
    )
    trainer.run()
    return trainer


def test_dpaat_one_step_fragile_shrink_stable_grow():
    """Constructed batch: samples near the decision boundary have a large adversarial loss change
    (fragile), saturated ones a tiny change (stable). One real trainer step must shrink the former's
    epsilon and grow the latter's."""
    c = torch.tensor([0.52, 0.55, 0.46, 0.95, 0.9, 0.05, 0.1, 0.97])
    labels = (c > 0.5).long()
    pattern = torch.linspace(-0.01, 0.01, 8)
    data = [{"image": (ci + pattern).reshape(1, 8), "label": y, "index": i} for i, (ci, y) in enumerate(zip(c, labels))]
    attack = PGD(eps=0.05, alpha=0.02, steps=3, value_range=(0, 1), random_start=False)
    it = DPAATIteration(num_samples=8, attack=attack)
    before = it.epsilon.clone()
    trainer = _run(_Linear1D(), data, it, lr=0.0, sgd=True)
    fragile, stable = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5, 6, 7])
    assert (it.epsilon[fragile] < before[fragile]).all(), it.epsilon
    assert (it.epsilon[stable] > before[stable]).all(), it.epsilon
    assert ((it.epsilon >= it.eps_min) & (it.epsilon <= it.eps_max)).all()
    stats = trainer.state.adversarial
    assert stats["fragile_fraction"] == pytest.approx(3 / 8)
    assert stats["loss_change_mean"] > 0 and stats["loss_sync"] > 0
    assert float(it.running_mean) == pytest.approx(stats["loss_change_mean"]) and int(it.num_updates) == 1


def test_dpaat_epsilon_stays_within_bounds_over_training(ham_small):
    train, _ = ham_small
    it = DPAATIteration(
        num_samples=len(train), attack=small_attack(), eps_min=EPS / 2, eps_max=1.5 * EPS, step_size=EPS
    )
    _run(tiny_cnn(), train, it, epochs=4, batch_size=8)
    assert (it.epsilon >= EPS / 2 - 1e-7).all() and (it.epsilon <= 1.5 * EPS + 1e-7).all()
    assert it.epsilon.unique().numel() > 2  # it did adapt
    assert (it.epsilon == EPS / 2).any() or (it.epsilon == 1.5 * EPS).any()  # large steps hit the bounds, clipped


def test_dpaat_ablation_switches(ham_small):
    train, _ = ham_small
    for method, adapts, sync in [("d-a", True, False), ("d-b", False, True), ("d-(a+b)", True, True)]:
        it = build_iteration(method, num_samples=len(train), attack=small_attack())
        assert (it.adapt_eps, it.sync_loss) == (adapts, sync)
        _run(tiny_cnn(), train, it, batch_size=12)
        assert bool((it.epsilon != EPS).any()) == adapts
        assert int(it.num_updates) == 2


# ---------------------------------------------------------------------------------------- bad input
def test_bad_batches_raise_clear_errors(ham_small):
    train, _ = ham_small
    no_index = [{k: v for k, v in d.items() if k != "index"} for d in train[:4]]
    with pytest.raises(ValueError, match="sample-id key 'index'"):
        _run(tiny_cnn(), no_index, DPAATIteration(num_samples=24, attack=small_attack()))
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        _run(tiny_cnn(), train[:4], AMATIteration(num_samples=3, attack=small_attack()))
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        DPAATIteration(num_samples=0)
    with pytest.raises(ValueError, match="unknown training method"):
        build_iteration("madry")
    with pytest.raises(ValueError, match=r"(?s)must be an Attack.*_target_"):
        build_iteration("at", attack={"eps": 0.1})


@pytest.mark.parametrize("method", ["at", "sat", "amat", "dpaat"])
def test_nan_loss_raises_before_the_optimizer_steps(ham_small, method):
    train, _ = ham_small
    net = tiny_cnn()
    before = [p.detach().clone() for p in net.parameters()]

    def nan_loss(pred, target):
        return torch.nn.functional.cross_entropy(pred, target) * float("nan")

    with pytest.raises(ValueError, match="not finite"):
        _run(net, train[:4], make_iteration(method, 24), lr=0.1, sgd=True, loss_function=nan_loss)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


# ---------------------------------------------------------------------------------------- trainer
def _trainer_with_handlers(method, train, val, tmp_path, epochs=2, amp=False):
    net = tiny_cnn()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    post = Compose([
        Activationsd(keys=CommonKeys.PRED, softmax=True),
        AsDiscreted(keys=[CommonKeys.PRED, CommonKeys.LABEL], argmax=(True, False), to_onehot=2),
    ])
    evaluator = SupervisedEvaluator(
        device="cpu", val_data_loader=DataLoader(val, batch_size=4), network=net, postprocessing=post,
        key_val_metric={"val_acc": Accuracy(output_transform=from_engine([CommonKeys.PRED, CommonKeys.LABEL]))},
    )
    it = make_iteration(method, len(train))
    tb_dir = tmp_path / f"tb_{method}"
    save_dict = {"net": net, "opt": opt, **({"method": it} if it is not None else {})}
    accuracy = {"train_acc": Accuracy(output_transform=from_engine([CommonKeys.PRED, CommonKeys.LABEL]))}
    writer = SummaryWriter(log_dir=str(tb_dir))  # shared: scalars from MONAI's handler, histogram from ours
    handlers = [
        LrScheduleHandler(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5), print_lr=False),
        ValidationHandler(validator=evaluator, interval=1, epoch_level=True),
        StatsHandler(name=f"train_{method}", tag_name="loss", output_transform=adversarial_output_transform()),
        TensorBoardStatsHandler(summary_writer=writer, output_transform=adversarial_output_transform()),
        AdversarialStatsHandler(summary_writer=writer),
        CheckpointSaver(save_dir=str(tmp_path / method), save_dict=save_dict, save_interval=1, n_saved=1),
    ]
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=epochs, train_data_loader=DataLoader(train, batch_size=8, shuffle=True),
        network=net, optimizer=opt, loss_function=torch.nn.CrossEntropyLoss(), iteration_update=it,
        postprocessing=post, key_train_metric=accuracy,
        train_handlers=handlers, amp=amp,
    )
    trainer.run()
    return trainer, evaluator, it, tb_dir


@pytest.mark.parametrize("method", ["std", "at", "sat", "amat", "dpaat"])
def test_each_method_runs_with_standard_handlers(ham_small, tmp_path, method):
    train, val = ham_small
    trainer, evaluator, it, tb_dir = _trainer_with_handlers(method, train, val, tmp_path)
    assert trainer.state.epoch == 2 and 0.0 <= trainer.state.metrics["train_acc"] <= 1.0
    assert "val_acc" in evaluator.state.metrics and evaluator.state.epoch == 2
    assert math.isfinite(float(trainer.state.output[0][CommonKeys.LOSS]))
    ckpts = list((tmp_path / method).glob("*.pt"))
    assert len(ckpts) == 1
    saved = torch.load(ckpts[0], weights_only=True)
    assert {"net", "opt"} <= set(saved)
    if method == "std":
        assert it is None and not any(k.startswith("adv_") for k in trainer.state.metrics)
        return
    expected = {
        "at": ["loss_adv"],
        "sat": ["loss_clean", "loss_adv"],
        "amat": ["loss_clean", "loss_adv", "attack_success"],
        "dpaat": ["loss_clean", "loss_adv", "loss_sync", "fragile_fraction", "loss_change_mean"],
    }[method]
    for key in expected + ["eps_mean", "eps_min", "eps_max"]:
        assert key in trainer.state.output[0], key  # per iteration, survives decollate
        assert math.isfinite(trainer.state.metrics["adv_" + key]), key  # epoch mean
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"histograms": 0, "scalars": 0}).Reload()
    assert f"adv_{expected[-1]}" in acc.Tags()["scalars"] and expected[-1] in acc.Tags()["scalars"]
    if method in ("amat", "dpaat"):
        assert torch.equal(saved["method"]["epsilon"], it.epsilon)
        assert "epsilon" in acc.Tags()["histograms"] and len(acc.Histograms("epsilon")) == 2
        assert (trainer.state.metrics["adv_table_eps_min"] >= 0) and not torch.allclose(it.epsilon, it.epsilon[0])


def test_amp_path_runs(ham_small, tmp_path):
    """``amp=True`` takes MONAI's GradScaler branch (disabled on CPU, with a warning) unchanged."""
    train, val = ham_small
    with warnings.catch_warnings():  # without CUDA, autocast("cuda")/GradScaler disable themselves with a warning
        warnings.simplefilter("ignore")
        trainer, _, it, _ = _trainer_with_handlers("dpaat", train, val, tmp_path, epochs=1, amp=True)
    assert trainer.scaler is not None and int(it.num_updates) == 3
    assert math.isfinite(trainer.state.metrics["adv_loss_sync"])


@pytest.mark.parametrize("method", ["sat", "amat", "dpaat", "at"])
def test_pred_is_the_clean_prediction_except_for_at(ham_small, method):
    """Train metrics see the clean prediction (SAT/AMAT/DPAAT); AT's only forward is on x_adv."""
    train, _ = ham_small
    x = torch.stack([d["image"] for d in train[:8]])
    net = tiny_cnn()
    reference = copy.deepcopy(net).train()
    trainer = _run(net, train[:8], make_iteration(method, 24), lr=0.0, sgd=True, decollate=False)
    with torch.no_grad():
        clean = reference(x)
    pred = trainer.state.output[CommonKeys.PRED]
    assert torch.allclose(pred, clean, atol=1e-5) == (method != "at")
    assert torch.equal(trainer.state.output[CommonKeys.IMAGE], x)  # IMAGE stays the clean batch


# ---------------------------------------------------------------------------------------- state
@pytest.mark.parametrize("method", ["amat", "dpaat"])
def test_state_round_trips_through_checkpoint_saver_and_loader(ham_small, tmp_path, method):
    train, _ = ham_small
    net = tiny_cnn()
    it = make_iteration(method, len(train))
    saver = CheckpointSaver(
        save_dir=str(tmp_path), save_dict={"net": net, "state": it}, save_final=True, final_filename="final.pt"
    )
    trainer = _run(net, train, it, epochs=2, batch_size=8, train_handlers=[saver])
    state = it.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert not torch.allclose(state["epsilon"], state["epsilon"][0])  # something to restore

    fresh = make_iteration(method, len(train))
    fresh.load_state_dict(state)  # in memory
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())

    restored = make_iteration(method, len(train))
    net2 = tiny_cnn()
    loader = CheckpointLoader(
        load_path=str(tmp_path / "final.pt"), load_dict={"net": net2, "state": restored}, map_location="cpu"
    )
    engine = SupervisedEvaluator(device="cpu", val_data_loader=DataLoader(train[:2], batch_size=2), network=net2)
    loader.attach(engine)
    engine.run()
    for k, v in state.items():
        assert torch.equal(restored.state_dict()[k], v), k
    assert trainer.state.epoch == 2
    with pytest.raises(ValueError, match="expected \\(5,\\)"):
        make_iteration(method, 5).load_state_dict(state)


def _calibrated_batchnorm(net: torch.nn.Module, data: list) -> torch.nn.Module:
    """``net`` with its BatchNorm running statistics set to those of ``data`` (a cumulative average over one
    no-grad train-mode pass), so its eval mode, the attack's, is not an untrained constant."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    with torch.no_grad():
        net(torch.stack([torch.as_tensor(d["image"]) for d in data]))
    for m in norms:
        m.momentum = 0.1
    return net


def test_amat_margins_follow_the_rule(ham_small):
    """Clean-correct samples whose adversarial example stays correct grow by eps_step; flipped ones move to
    a found size <= their budget; clean-wrong ones keep their margin."""
    train, _ = ham_small
    net = _calibrated_batchnorm(tiny_cnn(), train)  # flips are judged in eval mode, the attack's: real statistics
    attack = PGD(eps=EPS, alpha=EPS / 2, steps=3, generator=torch.Generator().manual_seed(0))
    # eps_max far above the margins used here, yet inside the images' value range (a larger one is an error)
    it = AMATIteration(num_samples=len(train), attack=attack, eps_max=0.5, eps_step=EPS)
    it.epsilon[::2] = 0.1  # large margins on half the samples: some adversarial examples flip
    seen = {}
    orig_finish = it.finish_step

    def finish(engine, step):
        seen.update({k: step[k].clone() for k in ("idx", "clean_ok", "flipped", "size")}, before=it.epsilon.clone())
        orig_finish(engine, step)

    it.finish_step = finish
    _run(net, train, it, lr=0.0, sgd=True)
    idx, ok, flipped = seen["idx"], seen["clean_ok"], seen["flipped"]
    before, after = seen["before"][idx], it.epsilon[idx]
    held = ok & ~flipped
    assert torch.allclose(after[held], before[held] + EPS)
    assert torch.equal(after[~ok], before[~ok])
    assert (after[flipped] <= before[flipped] + 1e-7).all() and (after[flipped] > 0).all()
    assert ok.any() and (~ok).any() and flipped.any() and held.any()


class _BatchNormThreshold(torch.nn.Module):
    """logits ``[-z, z]`` with ``z = BatchNorm(mean(x))``: eval mode thresholds at the running mean 0.6, train
    mode at the batch's mean (momentum 0: the running statistics never move)."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(1, affine=False, momentum=0.0)
        self.norm.running_mean.fill_(0.6)
        self.norm.running_var.fill_(0.01)
        self.scale = torch.nn.Parameter(torch.tensor(1.0))  # for the optimizer; lr=0 leaves it

    def forward(self, x):
        z = self.scale * self.norm(x.mean(dim=(1, 2)).unsqueeze(1))[:, 0]
        return torch.stack([-z, z], dim=1)


def test_amat_judges_flips_in_the_attack_mode():
    """Clean means 0.74 (class 1) and 0.2, 0.25, 0.3 (class 0): correct in both modes. The eval-mode PGD (the
    attack's default mode) moves each by 0.2 towards the other class: 0.54, 0.4, 0.45, 0.5. Eval mode (threshold
    0.6): only sample 0 flipped. Train mode (threshold = the adversarial batch's mean 0.4725): sample 0 still
    right, sample 3 wrong. The margins follow the eval-mode flips: sample 0 shrinks, sample 3 grows (on the
    training forward it was the other way round)."""
    means = [0.74, 0.2, 0.25, 0.3]
    data = [{"image": torch.full((1, 8), m), "label": int(m > 0.5), "index": i} for i, m in enumerate(means)]
    attack = PGD(eps=0.2, alpha=0.1, steps=4, value_range=(0, 1), random_start=False)
    assert attack.model_mode == "eval"
    net = _BatchNormThreshold()
    with torch.no_grad():  # the premise: the two modes disagree on the adversarial batch
        adv = torch.stack([d["image"] for d in data]) + torch.tensor([-0.2, 0.2, 0.2, 0.2]).reshape(4, 1, 1)
        labels = torch.tensor([1, 0, 0, 0])
        net.eval()
        assert (net(adv).argmax(1) == labels).tolist() == [False, True, True, True]
        net.train()
        assert (net(adv).argmax(1) == labels).tolist() == [True, True, True, False]
    it = AMATIteration(num_samples=4, attack=attack, eps_max=0.5, eps_step=0.05, alpha_fraction=0.5, refine_steps=4)
    it.epsilon[:] = 0.2
    trainer = _run(net, data, it, lr=0.0, sgd=True)
    # sample 0 flipped: its margin is the smallest t * 0.2, t in {1/4, ..., 1}, whose 0.74 - 0.2 t is below 0.6
    # (t = 3/4); samples 1-3 held: eps_step more (the training forward would grow sample 0, shrink sample 3)
    assert it.epsilon.tolist() == pytest.approx([0.15, 0.25, 0.25, 0.25])
    assert trainer.state.adversarial["attack_success"] == pytest.approx(1 / 4)
    assert net.norm.running_mean.item() == pytest.approx(0.6)  # the judging forward left the buffers alone


def test_method_budgets_must_fit_the_attack_value_range():
    """DPAAT's eps_max (2 * eps_init by default) and AMAT's margins are budgets in the attack's units: above a
    fixed value range they fail at construction, naming the parameter and where its default came from."""
    from monai_dpaat.attacks import LargeBudgetWarning

    fixed = PGD(eps=0.45, alpha=0.1, steps=1, value_range=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"DPAATIteration: eps_max=0\.9 \(default 2 \* eps_init\)"), \
            pytest.warns(LargeBudgetWarning):
        DPAATIteration(4, attack=PGD(eps=0.45, alpha=0.1, steps=1, value_range=(0.0, 0.8)))
    with pytest.warns(LargeBudgetWarning, match=r"DPAATIteration: eps_init=0\.45 is 45% of the width 1"):
        DPAATIteration(4, attack=fixed)  # legal, if unusual: one warning
    with pytest.raises(ValueError, match=r"DPAATIteration: eps_max=1\.5 is larger than the width 1"):
        DPAATIteration(4, attack=fixed, eps_max=1.5)
    with pytest.raises(ValueError, match=r"DPAATIteration: step_size must be a finite number >= 0, got inf"):
        DPAATIteration(4, attack=fixed, step_size=float("inf"))
    with pytest.raises(ValueError, match=r"AMATIteration: eps_max=1\.5 is larger than the width 1"):
        AMATIteration(4, attack=fixed, eps_max=1.5)
    with pytest.raises(ValueError, match=r"AMATIteration: eps_max must be a finite number >= 0, got inf"):
        AMATIteration(4, attack=fixed, eps_max=float("inf"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DPAATIteration(4, attack=PGD(eps=8 / 255, steps=1, value_range=(0.0, 1.0)))  # the usual budget: silent
        DPAATIteration(4, attack=PGD(eps=0.45, steps=1, value_range=None))  # no range: nothing to compare with
    with pytest.raises(ValueError, match=r"alpha_fraction must be finite"):
        DPAATIteration(4, attack=fixed, alpha_fraction=float("inf"))


def test_method_budgets_with_a_data_range_fail_before_the_first_step(ham_small):
    """With value_range="data" the bound is known at the first batch: the run fails there, before the attack
    and the optimizer step (weights unchanged), naming DPAAT's eps_max."""
    train, _ = ham_small
    net = tiny_cnn()
    weights = copy.deepcopy(net.state_dict())
    it = DPAATIteration(num_samples=len(train), attack=PGD(eps=0.6, alpha=0.15, steps=1))
    with pytest.raises(ValueError, match=r"DPAATIteration: eps_max=1\.2 \(default 2 \* eps_init\) is larger than "
                                         r"the width 0\.\d+ of the data's value range"):
        _run(net, train, it)
    assert all(torch.equal(v, weights[k]) for k, v in net.state_dict().items())


def test_attack_configuration_forms():
    a = ATIteration(attack=build_attack("pgd", eps=0.01, steps=3))
    assert isinstance(a.attack, PGD) and a.attack.steps == 3 and a.attack.eps == 0.01
    assert build_iteration("sat", attack=PGD(steps=7)).attack.steps == 7
    # names and spec dicts are refused, saying what to pass
    for old in ("7-pgd", "pgd", {"name": "pgd", "eps": 0.01, "steps": 3}):
        with pytest.raises(ValueError, match=r"(?s)must be an Attack.*build_attack\('pgd', steps=7\).*_target_"):
            ATIteration(attack=old)
    d = build_iteration("DPAAT", num_samples=3)
    assert d.attack.steps == 7 and d.eps_init == pytest.approx(8 / 255) and d.alpha_fraction == pytest.approx(0.25)
    assert d.eps_min == pytest.approx(2 / 255) and d.eps_max == pytest.approx(16 / 255)
    assert isinstance(build_iteration("std"), StandardIteration)
    assert isinstance(build_iteration("sat", weight=0.3), SATIteration)


def test_derived_bounds_are_in_the_repr_and_the_first_iterations_log(ham_small, caplog):
    """DPAAT's start, bounds and step size and AMAT's margins, defaults included, are in the repr and logged
    once at the first iteration with where each default came from."""
    import logging

    train, _ = ham_small
    d = DPAATIteration(num_samples=len(train), attack=small_attack())
    text = repr(d)
    assert "attack=PGD(" in text
    for name, value in (("eps_init", EPS), ("eps_min", EPS / 4), ("eps_max", 2 * EPS), ("step_size", EPS / 8),
                        ("alpha_fraction", 0.25)):
        assert getattr(d, name) == pytest.approx(value, rel=1e-6) and f"{name}={getattr(d, name):.6g}" in text
    a = AMATIteration(num_samples=len(train), attack=small_attack(), eps_step=EPS / 2)
    for name, value in (("eps_max", EPS), ("eps_step", EPS / 2), ("alpha_fraction", 0.25)):
        assert getattr(a, name) == pytest.approx(value, rel=1e-6) and f"{name}={getattr(a, name):.6g}" in repr(a)
    with caplog.at_level(logging.INFO, logger="monai_dpaat.training"):
        _run(tiny_cnn(), train[:8], d, epochs=2, batch_size=4)
    lines = [r.getMessage() for r in caplog.records if r.name == "monai_dpaat.training"]
    assert len(lines) == 1  # the first iteration only
    assert f"eps_min={d.eps_min:.6g} (default eps_init / 4)" in lines[0]
    assert f"eps_max={d.eps_max:.6g} (default 2 * eps_init)" in lines[0]
    assert f"step_size={d.step_size:.6g} (default eps_init / 8)" in lines[0]
    assert "eps_init" in lines[0] and "(default: the attack's eps)" in lines[0] and "PGD(" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monai_dpaat.training"):
        _run(tiny_cnn(), train[:4], a)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "monai_dpaat.training"]
    assert f"eps_max={a.eps_max:.6g} (default: the attack's eps)" in line and f"eps_step={a.eps_step:.6g}" in line


# ---------------------------------------------------------------------------------------- segmentation
@pytest.fixture(scope="module")
def nuclei_crops(data_dir: Path):
    root = data_dir / "nuclei_he" / "tcga_miccai2015"
    items = []
    for name in ("tcga_miccai2015_01.png", "tcga_miccai2015_02.png"):
        img = np.asarray(Image.open(root / "tissue images" / name).convert("RGB"), dtype=np.float32) / 255.0
        mask = np.asarray(Image.open(root / "mask binary" / name).convert("L")) > 127
        for y, x in [(0, 0), (100, 100), (200, 40)]:
            items.append({
                "image": torch.from_numpy(img[y : y + 32, x : x + 32].transpose(2, 0, 1).copy()),
                "label": torch.from_numpy(mask[None, y : y + 32, x : x + 32].astype(np.int64)),
                "index": len(items),
            })
    return items


@pytest.mark.parametrize("method", ["dpaat", "amat", "sat"])
def test_segmentation_unet_dicece(nuclei_crops, method):
    torch.manual_seed(0)
    net = UNet(spatial_dims=2, in_channels=3, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=0)
    it = make_iteration(method, len(nuclei_crops))
    post = Compose([Activationsd(keys=CommonKeys.PRED, softmax=True),
                    AsDiscreted(keys=[CommonKeys.PRED, CommonKeys.LABEL], argmax=(True, False), to_onehot=2)])
    pred_label = from_engine([CommonKeys.PRED, CommonKeys.LABEL])
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=2, train_data_loader=DataLoader(nuclei_crops, batch_size=3), network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-2), loss_function=DiceCELoss(to_onehot_y=True, softmax=True),
        iteration_update=it, postprocessing=post,
        key_train_metric={"dice": MeanDice(include_background=False, output_transform=pred_label)},
    )
    trainer.run()
    assert 0.0 <= trainer.state.metrics["dice"] <= 1.0
    out = trainer.state.output[0]
    assert out[CommonKeys.PRED].shape == (2, 32, 32)  # dense, decollated clean prediction
    assert math.isfinite(out["loss_adv"]) and out["loss_adv"] >= 0
    if method == "dpaat":
        assert out["loss_sync"] > 0  # per-pixel symmetric KL between clean and adversarial softmax
        assert not torch.allclose(it.epsilon, torch.full_like(it.epsilon, EPS))


def test_segmentation_3d_sigmoid_output(data_dir):
    """3D volumes and a one-channel (sigmoid) output: BCE-style loss, Bernoulli sync term."""
    import nibabel as nib

    path = sorted((data_dir / "tiny_nifti").glob("*.nii"))[0]
    vol = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    vol = (vol - vol.min()) / (vol.max() - vol.min())
    crop = torch.from_numpy(vol[:16, :16, :16].copy())[None]
    items = [{"image": crop.flip(i + 1) if i < 3 else crop, "label": (crop > 0.5).long(), "index": i} for i in range(4)]
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=(2, 4), strides=(2,), num_res_units=0)
    it = DPAATIteration(num_samples=4, attack=small_attack())
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=DataLoader(items, batch_size=2), network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-2), loss_function=DiceCELoss(sigmoid=True),
        iteration_update=it, decollate=False,
    )
    trainer.run()
    assert trainer.state.output[CommonKeys.PRED].shape == (2, 1, 16, 16, 16)
    assert trainer.state.output["loss_sync"] > 0 and int(it.num_updates) == 2
