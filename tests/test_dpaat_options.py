"""DPAAT's options where the paper is silent (docs/paper_choices.md): ``update_timing`` (when an adapted epsilon is
first used), the training step size ``alpha_fraction``, and their report in ``bounds()``, ``repr`` and the first
iteration's INFO line; and the ``unet-paper`` preset's GN standard deviation ``gn_std``. Real ``SupervisedTrainer`` runs on a constructed 1-D problem (a fixed linear classifier:
with ``lr=0`` both timings see the same network, so their updates can be compared exactly)."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from monai.data import DataLoader
from monai.engines import SupervisedTrainer

from monai_dpaat.attacks import PGD, GaussianNoise
from monai_dpaat.evaluation import preset
from monai_dpaat.evaluation.presets import DEFAULT_GN_STD
from monai_dpaat.training import DPAATIteration, build_iteration
from monai_dpaat.training.dpaat import PAPER_STEP_FRACTION, UPDATE_TIMINGS

EPS, ALPHA = 0.05, 0.02


class RecordingPGD(PGD):
    """PGD that keeps the per-sample budgets of every call (the attack is not under test, the timing is)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[torch.Tensor] = []
        self.alphas: list[torch.Tensor] = []

    def __call__(self, network, images, targets, eps=None, alpha=None, **kwargs):
        self.calls.append(torch.as_tensor(eps).detach().double().reshape(-1).clone())
        self.alphas.append(torch.as_tensor(alpha).detach().double().reshape(-1).clone())
        return super().__call__(network, images, targets, eps=eps, alpha=alpha, **kwargs)


class Linear1D(torch.nn.Module):
    """logits ``[0, k * (mean(x) - 0.5)]`` after a BatchNorm (its buffers show every train-mode forward)."""

    def __init__(self, k: float = 10.0):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(k))
        self.norm = torch.nn.BatchNorm1d(1, affine=False, momentum=0.0)  # momentum 0: counts, never moves stats

    def forward(self, x):
        z = self.k * (self.norm(x).mean(dim=(1, 2)) - 0.5)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def constructed_data():
    """8 samples: three near the boundary (fragile), five saturated (stable), ids 0..7."""
    c = torch.tensor([0.52, 0.55, 0.46, 0.95, 0.9, 0.05, 0.1, 0.97])
    pattern = torch.linspace(-0.01, 0.01, 8)
    return [{"image": (ci + pattern).reshape(1, 8), "label": int(ci > 0.5), "index": i} for i, ci in enumerate(c)]


def dpaat(timing: str, **kwargs) -> DPAATIteration:
    attack = RecordingPGD(eps=EPS, alpha=ALPHA, steps=3, value_range=(0, 1), random_start=False)
    return DPAATIteration(num_samples=8, attack=attack, update_timing=timing, **kwargs)


def run(iteration, epochs=1, batch_size=8, net=None):
    net = net or Linear1D()
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=epochs, train_data_loader=DataLoader(constructed_data(), batch_size=batch_size),
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.0), loss_function=torch.nn.CrossEntropyLoss(),
        iteration_update=iteration,
    )
    trainer.run()
    return trainer, net


def test_same_iteration_attacks_again_at_the_updated_eps():
    nxt, same = dpaat("next_visit"), dpaat("same_iteration")
    start = nxt.epsilon.clone().double()
    t_next, net_next = run(nxt)
    t_same, net_same = run(same)
    # one attack per iteration vs two; the first of both at the starting budget
    assert len(nxt.attack.calls) == 1 and len(same.attack.calls) == 2
    assert torch.equal(nxt.attack.calls[0], start) and torch.equal(same.attack.calls[0], start)
    # the same network (lr 0) and deterministic attack: the same dL, hence the same update of the table
    assert torch.allclose(nxt.epsilon, same.epsilon) and not torch.allclose(same.epsilon.double(), start)
    assert float(nxt.running_mean) == pytest.approx(float(same.running_mean)) and int(same.num_updates) == 1
    # same_iteration's second attack ran at the updated budgets, and the step trained on it
    assert torch.allclose(same.attack.calls[1], same.epsilon.double())
    assert t_same.state.adversarial["eps_mean"] == pytest.approx(float(same.epsilon.mean()), rel=1e-5)
    assert t_next.state.adversarial["eps_mean"] == pytest.approx(EPS, rel=1e-5)
    # the probe's two forwards leave no trace: both timings ran exactly two train-mode forwards per iteration
    assert int(net_next.norm.num_batches_tracked) == int(net_same.norm.num_batches_tracked) == 2
    assert net_same.training  # the trainer's mode, untouched by the probe
    batch = constructed_data()
    x = torch.stack([d["image"] for d in batch])
    y = torch.tensor([d["label"] for d in batch])
    new_eps = same.epsilon.clone()
    net_same.train()
    x_adv = PGD(eps=EPS, alpha=ALPHA, steps=3, value_range=(0, 1), random_start=False)(
        net_same, x, y, eps=new_eps, alpha=(ALPHA / EPS) * new_eps)
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(net_same(x_adv), y)
    assert t_same.state.adversarial["loss_adv"] == pytest.approx(float(expected), rel=1e-5)
    assert t_same.state.adversarial["loss_adv"] != pytest.approx(t_next.state.adversarial["loss_adv"], rel=1e-3)


def test_next_visit_uses_the_new_eps_on_the_next_epoch():
    nxt, same = dpaat("next_visit"), dpaat("same_iteration")
    run(nxt, epochs=2, batch_size=4)
    run(same, epochs=2, batch_size=4)
    assert len(nxt.attack.calls) == 4 and len(same.attack.calls) == 8  # cost: one more attack per iteration
    # next_visit: epoch 2 attacks each batch at what epoch 1 left in the table
    first_epoch_updates = [c for c in nxt.attack.calls[:2]]
    assert all(torch.allclose(c, torch.full_like(c, EPS)) for c in first_epoch_updates)
    assert not torch.allclose(torch.cat(nxt.attack.calls[2:]), torch.full((8,), EPS, dtype=torch.float64))
    # same_iteration: every second call runs at the budgets the first call's batch was just moved to
    for first, second in zip(same.attack.calls[0::2], same.attack.calls[1::2]):
        assert first.shape == second.shape and not torch.allclose(first, second)
    assert torch.allclose(torch.cat(same.attack.calls[-2:][1:]), same.epsilon[4:].double())


def test_same_iteration_without_adaptation_is_a_single_attack():
    it = dpaat("same_iteration", adapt_eps=False)
    run(it)
    assert len(it.attack.calls) == 1 and torch.allclose(it.epsilon, torch.full((8,), EPS))
    assert "update_timing='same_iteration' (no effect: adapt_eps=False)" in it.describe_bounds()


def test_options_are_in_bounds_repr_and_the_first_log_line(caplog):
    for timing in UPDATE_TIMINGS:
        it = dpaat(timing)
        bounds = it.bounds()
        assert bounds["update_timing"][0] == timing and bounds["temperature"][0] == 1.0
        assert bounds["alpha_fraction"][0] == pytest.approx(ALPHA / EPS)
        assert f"update_timing={timing!r}" in repr(it) and f"update_timing={timing!r}" in it.describe_bounds()
    assert "one more attack per iteration" in dpaat("same_iteration").describe_bounds()
    assert "'step size of 0.15'" in dpaat("next_visit").describe_bounds()  # the default says what the paper says
    paper = dpaat("next_visit", alpha_fraction=PAPER_STEP_FRACTION)
    assert paper.bounds()["alpha_fraction"] == (0.15, "the paper's 'step size of 0.15' read as a fraction of eps")
    it = dpaat("same_iteration")
    with caplog.at_level(logging.INFO, logger="monai_dpaat.training"):
        run(it)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "monai_dpaat.training"]
    assert "update_timing='same_iteration'" in line and "alpha_fraction=0.4" in line and "temperature=1" in line


def test_the_step_size_option_sets_each_attack_step():
    """The training step is ``alpha_fraction * eps_i`` per sample, at every call of both timings: by default the
    attack's alpha / eps (here 0.4), with the paper's reading 0.15."""
    for fraction in (None, PAPER_STEP_FRACTION):
        it = dpaat("same_iteration", alpha_fraction=fraction)
        run(it, epochs=2, batch_size=4)
        expected = ALPHA / EPS if fraction is None else 0.15
        for eps, alpha in zip(it.attack.calls, it.attack.alphas):
            assert torch.allclose(alpha, expected * eps, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"update_timing": "now"}, "update_timing must be one of"),
     ({"update_timing": None}, "update_timing must be one of"),
     ({"temperature": math.nan}, "temperature must be finite"),
     ({"temperature": 0.0}, "temperature must be finite"),
     ({"alpha_fraction": 0.0}, "alpha_fraction must be finite")],
)
def test_bad_option_values_name_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DPAATIteration(num_samples=4, attack=PGD(steps=1), **kwargs)
    with pytest.raises(ValueError, match=match):
        build_iteration("dpaat", num_samples=4, attack=PGD(steps=1), **kwargs)


def test_gn_std_is_an_explicit_preset_parameter_in_the_attack_config():
    assert DEFAULT_GN_STD == 0.1 and preset("unet-paper")["GN"].config()["std"] == 0.1
    strong = preset("unet-paper", gn_std="64/255", only=["GN"])["GN"]
    assert isinstance(strong, GaussianNoise) and strong.config()["std"] == pytest.approx(64 / 255)
    assert strong.config()["eps"] is None  # unbounded unless gn_eps is given
    assert preset("unet-paper", std=0.2)["GN"].std == 0.2  # the old keyword still works
    # the noise really has that spread (no clip: a value range wide enough not to clamp it)
    x = torch.zeros(1, 1, 64, 64)
    noise = preset("unet-paper", gn_std=0.3, value_range=(-100.0, 100.0),
                   generator=torch.Generator().manual_seed(0))["GN"](torch.nn.Identity(), x, None)
    assert float(noise.std()) == pytest.approx(0.3, rel=0.05)
    for kwargs, match in (({"gn_std": -0.1}, "gn_std must be >= 0"), ({"gn_std": "x"}, "gn_std must be a number"),
                          ({"gn_std": 0.2, "std": 0.3}, "gn_std=0.2 and its old name std=0.3 disagree")):
        with pytest.raises(ValueError, match=match):
            preset("unet-paper", **kwargs)
