"""Single-step training adversaries (issue 15): FGSM-RS and N-FGSM scale with each sample's budget, the bundle key
``adversary`` chooses them in the HAM10000 bundle and the overrides, and a typo is refused before any training.
(Parity with torchattacks' FFGSM and with N-FGSM's reference loop: ``test_attack_parity.py``.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monai_dpaat.attacks import FGSMRS, NFGSM, PGD, TRAINING_ADVERSARIES, build_attack, training_adversary

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ("ham10000_dpaat_classification", "nuinsseg_adversarial_segmentation", "brats_adversarial_segmentation_3d")


def _problem():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return net, x, net(x).argmax(1).detach()


def test_training_adversary_by_name():
    assert set(TRAINING_ADVERSARIES) == {"pgd", "fgsm-rs", "n-fgsm", "free"}
    pgd = training_adversary("pgd", eps=0.04, pgd_alpha=0.01, pgd_steps=3)
    assert type(pgd) is PGD and pgd.steps == 3 and pgd.alpha == 0.01 and pgd.random_start
    assert training_adversary("pgd", eps=0.04).alpha == pytest.approx(0.01)  # eps / 4 by default
    rs = training_adversary("fgsm-rs", eps=0.04, pgd_alpha=0.5, pgd_steps=9)  # PGD's keys do not apply
    assert type(rs) is FGSMRS and rs.alpha == pytest.approx(0.05) and rs.steps == 1
    n = training_adversary("N_FGSM", eps=0.04)
    assert type(n) is NFGSM and n.alpha == pytest.approx(0.04) and n.noise_magnitude == 2.0
    assert training_adversary("n-fgsm", eps=0.04, step_fraction=0.5).alpha == pytest.approx(0.02)
    assert type(build_attack("ffgsm")) is FGSMRS and type(build_attack("nfgsm")) is NFGSM
    with pytest.raises(ValueError, match="adversary must be one of .*did you mean 'n-fgsm'"):
        training_adversary("nfgsm")
    with pytest.raises(ValueError, match="step_fraction"):
        training_adversary("fgsm-rs", step_fraction=0)
    with pytest.raises(ValueError, match="noise_magnitude"):
        NFGSM(noise_magnitude=-1)


@pytest.mark.parametrize("cls", [FGSMRS, NFGSM])
def test_per_sample_budgets_scale_noise_and_step(cls):
    """AMAT/DPAAT call the adversary with a ``(N,)`` eps and ``alpha = alpha_fraction * eps``: every sample's
    perturbation is bounded by its own budget (FGSM-RS: eps_i; N-FGSM: 3 eps_i) and grows with it."""
    net, x, y = _problem()
    attack = cls(eps=0.1, value_range=None)  # no clamping, so the sizes are the method's own
    eps = torch.tensor([0.0, 0.01, 0.02, 0.04, 0.08, 0.16])
    fraction = attack.alpha / attack.eps
    adv = attack(net, x, y, eps=eps, alpha=fraction * eps)
    size = (adv - x).abs().flatten(1).amax(1)
    bound = attack.perturbation_bound(eps, fraction * eps)
    assert torch.equal(adv[0], x[0]) and bool((size <= bound + 1e-6).all())
    assert bool((size[1:] >= 0.99 * eps[1:]).all())  # every sample reaches at least its budget's scale
    assert bool((size[1:].diff() > 0).all()), size  # ... and scales with it
    if cls is NFGSM:
        assert bool((size[1:] > 1.5 * eps[1:]).all())  # the unprojected noise + step go beyond eps


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_bundle_and_the_overrides_have_the_adversary_key(bundle):
    config = json.loads((ROOT / "bundles" / bundle / "configs" / "train.json").read_text())
    assert config["adversary"] == "pgd"
    assert config["train_attack"]["_target_"] == "monai_dpaat.attacks.training_adversary"
    assert config["train_attack"]["name"] == "@adversary"
    overrides = json.loads((ROOT / "monai_dpaat" / "bundle_overrides" / "adversarial_train.json").read_text())
    assert overrides["adversarial_adversary"] == "pgd"
    assert overrides["adversarial_attack"]["attack"]["name"] == "@adversarial_adversary"


def _ham_run(data_dir: Path, tmp_path: Path, adversary: str, **extra):
    from monai_dpaat.utils import bundle_config_files, run_bundle

    bundle = ROOT / "bundles" / BUNDLES[0]
    files = bundle_config_files(bundle, ("train.json", "quick.json", "methods/dpaat.json"))
    overrides = {"bundle_root": str(bundle), "dataset_dir": str(data_dir / "ham10000"), "ckpt_dir": str(tmp_path / "m"),
                 "output_dir": str(tmp_path / "e"), "max_epochs": 1, "n_train": 8, "n_test": 2, "image_size": 32,
                 "batch_size": 8, "robust_val_max_samples": 2, "adversary": adversary, "device": "$torch.device('cpu')", **extra}
    return run_bundle(files, overrides)


def test_ham_bundle_trains_dpaat_with_n_fgsm(data_dir, tmp_path):
    workflow = _ham_run(data_dir, tmp_path, "n-fgsm")
    parsed = workflow.parser.get_parsed_content
    iteration = parsed("iteration_update")
    assert type(iteration.attack) is NFGSM and iteration.alpha_fraction == pytest.approx(1.0)
    trainer = parsed("train#trainer")
    assert trainer.state.epoch == 1 and trainer.state.iteration > 0
    assert torch.isfinite(torch.as_tensor(trainer.state.output[0]["loss"] if isinstance(trainer.state.output, list)
                                          else trainer.state.output["loss"]))
    eps = iteration.state_dict()["epsilon"]
    assert not torch.allclose(eps, eps[0])  # DPAAT adapted per-sample budgets with the single-step adversary


def test_a_misspelled_adversary_is_refused_before_training(data_dir, tmp_path):
    """MONAI wraps the factory's ValueError (the bundle's error hook prints that innermost message alone)."""
    with pytest.raises(Exception) as caught:
        _ham_run(data_dir, tmp_path, "fgsm_rss")
    chain, err = [], caught.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    assert any(isinstance(e, ValueError) and "adversary must be one of ['pgd', 'fgsm-rs', 'n-fgsm', 'free'], got 'fgsm_rss'; "
               "did you mean 'fgsm-rs'?" in str(e) for e in chain), chain
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("events.out.*"))  # nothing trained


def test_ham_bundle_trains_free_dpaat_under_the_overfitting_guard(data_dir, tmp_path):
    """``--adversary free --co_guard true``: each batch replayed ``free_replays`` times (an optimizer step each), the
    guard's checks in the trainer's metrics and TensorBoard."""
    from monai_dpaat.attacks import FreeAT

    workflow = _ham_run(data_dir, tmp_path, "free", free_replays=2, co_guard=True, co_guard_interval=1)
    parsed = workflow.parser.get_parsed_content
    iteration, trainer = parsed("iteration_update"), parsed("train#trainer")
    assert type(iteration.attack) is FreeAT and iteration.attack.replays == 2
    assert iteration.attack.delta is not None and iteration.attack.delta.abs().max() > 0
    assert trainer.optimizer.state_dict()["state"]  # it stepped
    steps = next(iter(trainer.optimizer.state_dict()["state"].values()))["step"]
    assert int(steps) == 2 * trainer.state.iteration  # two optimizer steps per batch
    assert {"co_single_acc", "co_multi_acc", "co_gap", "co_collapses"} <= set(trainer.state.metrics)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in tmp_path.rglob("events.out.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"co/single_acc", "co/multi_acc", "co/gap", "co/collapse"} <= tags, tags


def test_the_guard_is_off_by_default_in_the_ham_bundle(data_dir, tmp_path):
    from monai_dpaat.handlers import CatastrophicOverfittingGuard

    workflow = _ham_run(data_dir, tmp_path, "pgd")
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert "co_gap" not in trainer.state.metrics
    handlers = workflow.parser.get_parsed_content("train#handlers")
    assert not any(isinstance(h, CatastrophicOverfittingGuard) for h in handlers)
