"""Determinism on CPU: the same seed gives bit-identical adversarial examples for every attack (random starts,
input diversity, noise), an identical DPAAT epsilon trajectory in a tiny training run, and identical robustness
metrics. Different seeds do change the randomised attacks (so the equalities are not vacuous)."""

from __future__ import annotations

import inspect

import pytest
import torch

from monai_dpaat.attacks import ATTACKS, build_attack

NAMES = sorted(ATTACKS)


def _net(dense: bool) -> torch.nn.Module:
    torch.manual_seed(123)
    if dense:
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 3, 1)).eval()
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(1), torch.nn.Linear(4, 3)).eval()


def _random_attack(name: str, generator: torch.Generator | None = None):
    """``name`` with every source of randomness it has switched on (random start where it takes one)."""
    kwargs = {"eps": 0.05, "steps": 3} if name != "fgsm" else {"eps": 0.05}
    params = inspect.signature(ATTACKS[name]).parameters
    if "random_start" in params and name != "i-fgsm":
        kwargs["random_start"] = True
    if "diversity_prob" in params:
        kwargs["diversity_prob"] = 1.0
    if generator is not None:
        kwargs["generator"] = generator
    return build_attack(name, **kwargs)


def _inputs(dense: bool):
    g = torch.Generator().manual_seed(7)
    x = torch.rand(4, 3, 12, 12, generator=g)
    y = torch.randint(0, 3, (4, 1, 12, 12), generator=g) if dense else torch.tensor([0, 1, 2, 0])
    return x, y


def _is_random(attack) -> bool:
    return bool(getattr(attack, "random_start", False)) or type(attack).__name__ == "GaussianNoise" or \
        getattr(attack, "diversity_prob", 0.0) > 0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_adversarial_examples(name):
    attack = _random_attack(name)
    dense = "classification" not in attack.tasks
    net, (x, y) = _net(dense), _inputs(dense)

    def run(seed):
        torch.manual_seed(seed)
        return attack(net, x, y)

    first, second = run(0), run(0)
    assert torch.equal(first, second), f"{name}: same seed, different adversarial examples"
    if _is_random(attack) and name.startswith("apgd"):
        # APGD returns never-fooled samples clean (as the reference), and this tiny net is never fooled: its
        # randomness (the start point) shows in the highest-loss point of a run
        eps = torch.full((x.shape[0],) + (1,) * (x.ndim - 1), float(attack.eps))

        def searched(seed):
            torch.manual_seed(seed)
            return attack.attack_single_run(net, x, y, eps, x.amin(), x.amax())[0]

        assert torch.equal(searched(0), searched(0)) and not torch.equal(searched(0), searched(1)), name
    elif _is_random(attack):
        assert not torch.equal(first, run(1)), f"{name}: a different seed changed nothing (no randomness?)"


@pytest.mark.parametrize("name", [n for n in NAMES if _is_random(_random_attack(n))])
def test_a_seeded_generator_makes_the_attack_independent_of_the_global_rng(name):
    dense = "classification" not in _random_attack(name).tasks
    net, (x, y) = _net(dense), _inputs(dense)
    results = []
    for global_seed in (0, 99):
        torch.manual_seed(global_seed)
        attack = _random_attack(name, generator=torch.Generator().manual_seed(5))
        results.append(attack(net, x, y))
    assert torch.equal(results[0], results[1])


def _dpaat_run(seed: int, steps: int = 6):
    """A few DPAAT steps of a tiny classifier; returns the epsilon table after every iteration, the losses
    and the final running statistics."""
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer
    from monai.utils import set_determinism

    from monai_dpaat.networks import build_classifier
    from monai_dpaat.training import DPAATIteration

    set_determinism(seed=seed)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 3, 12, 12, generator=g)
    data = [{"image": x[i], "label": i % 3, "index": i} for i in range(12)]
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True)
    net = build_classifier("small_cnn", num_classes=3, in_channels=3, width=4)
    method = DPAATIteration(12, attack=build_attack("pgd", eps=8 / 255, alpha=2 / 255, steps=2, value_range=(0.0, 1.0)))
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=steps // 3, train_data_loader=loader,
                                network=net, optimizer=torch.optim.Adam(net.parameters(), 1e-2),
                                loss_function=torch.nn.CrossEntropyLoss(), iteration_update=method)
    trajectory, losses = [], []

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        trajectory.append(method.epsilon.clone())
        losses.append(float(engine.state.output[0]["loss"]))

    trainer.run()
    set_determinism(seed=None)
    return torch.stack(trajectory), losses, method.state_dict()


def test_same_seed_same_dpaat_epsilon_trajectory():
    eps1, loss1, state1 = _dpaat_run(seed=0)
    eps2, loss2, state2 = _dpaat_run(seed=0)
    assert eps1.shape == (6, 12)
    assert not torch.equal(eps1[-1], torch.full((12,), 8 / 255)), "the epsilons never moved"
    assert torch.equal(eps1, eps2) and loss1 == loss2
    assert all(torch.equal(state1[k], state2[k]) for k in state1)
    eps3, _, _ = _dpaat_run(seed=1)
    assert not torch.equal(eps1, eps3)


def test_same_seed_same_robustness_metrics():
    from monai_dpaat.evaluation import RobustnessEvaluator

    net = _net(dense=False)
    g = torch.Generator().manual_seed(3)
    batches = [{"image": torch.rand(4, 3, 12, 12, generator=g), "label": torch.randint(0, 3, (4,), generator=g)}
               for _ in range(2)]
    attacks = [build_attack(name) for name in ("fgsm", "pgd", "gn", "di-fgsm")]
    evaluator = RobustnessEvaluator(attacks, eps=0.1, seed=0, progress=False)
    torch.manual_seed(0)
    first = evaluator(net, batches)
    torch.manual_seed(1)  # the evaluator's seed, not the caller's RNG state, decides
    second = evaluator(net, batches)
    assert first.rows == second.rows and first.confusion == second.confusion
    assert {"Original", "FGSM", "Worst case"} <= set(first.rows), sorted(first.rows)
