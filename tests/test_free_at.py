"""Free adversarial training (issue 15): ``attacks.FreeAT`` as the adversary of AT / DPAAT in a real
``SupervisedTrainer``, against a transcription of the reference training loop (Shafahi et al. 2019, Alg. 1 and
their ``free_train.py``: a global perturbation, each batch replayed ``m`` times, the perturbation moved by the
input gradient of every replay's training backward)."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedTrainer

from helpers import load_ham, tiny_cnn
from monai_dpaat.attacks import FreeAT, PGD, training_adversary
from monai_dpaat.training import build_iteration

EPS = 8 / 255


def _items(x, y):
    return [{"image": x[i], "label": int(y[i]), "index": i} for i in range(len(y))]


def _trainer(net, items, iteration, batch_size=4, epochs=1, lr=0.05):
    return SupervisedTrainer(
        device="cpu", max_epochs=epochs, train_data_loader=DataLoader(items, batch_size=batch_size, shuffle=False),
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9),
        loss_function=torch.nn.CrossEntropyLoss(), iteration_update=iteration)


def _reference_free_at(net, x, y, eps, alpha, replays, batch_size, epochs=1, lr=0.05):
    """Shafahi et al.'s loop (``free_train.py``), [0, 1] images, no normalisation layer."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    noise = torch.zeros(batch_size, *x.shape[1:])
    steps = 0
    for _ in range(epochs):
        for start in range(0, len(y), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            for _ in range(replays):
                noise_batch = noise[: len(yb)].clone().requires_grad_(True)
                net.train()
                loss = torch.nn.functional.cross_entropy(net((xb + noise_batch).clamp(0, 1)), yb)
                opt.zero_grad()
                loss.backward()
                noise[: len(yb)] += alpha * noise_batch.grad.sign()
                noise.clamp_(-eps, eps)
                opt.step()
                steps += 1
    return steps


@pytest.fixture(scope="module")
def ham_small(data_dir):
    return load_ham(data_dir, 10, size=16)  # 20 real images, a last batch of 2 at batch size 6


def test_free_at_matches_the_reference_loop(ham_small):
    x, y = ham_small
    torch.manual_seed(0)
    ours, theirs = tiny_cnn(), tiny_cnn()
    theirs.load_state_dict(ours.state_dict())
    attack = FreeAT(eps=EPS, replays=3, value_range=(0, 1))
    trainer = _trainer(ours, _items(x, y), build_iteration("at", attack=attack), batch_size=6, epochs=2)
    steps = []
    trainer.optimizer.register_step_post_hook(lambda *a: steps.append(1))
    trainer.run()
    ref_steps = _reference_free_at(theirs, x, y, EPS, EPS, replays=3, batch_size=6, epochs=2)
    assert len(steps) == ref_steps == 2 * 4 * 3  # 2 epochs x 4 batches x 3 replays, each an optimizer step
    assert trainer.state.iteration == 8  # ignite counts batches
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), (a - b).abs().max()
    assert attack.delta.abs().max() == pytest.approx(EPS)  # the carried perturbation reached the budget ...
    assert attack.delta.abs().max() <= EPS + 1e-7  # ... and never left it


def test_a_free_replay_costs_one_training_pass_and_no_attack_pass(ham_small):
    x, y = ham_small
    net = tiny_cnn()
    passes = []
    net.register_forward_hook(lambda *a: passes.append(torch.is_grad_enabled()))
    _trainer(net, _items(x, y), build_iteration("at", attack=FreeAT(eps=EPS, replays=2, value_range=(0, 1))),
             batch_size=10).run()
    assert passes == [True] * (2 * 2)  # 2 batches x 2 replays, one training forward each


def test_free_dpaat_keeps_each_sample_inside_its_own_budget(ham_small):
    x, y = ham_small
    torch.manual_seed(0)
    attack = FreeAT(eps=EPS, replays=2, value_range=(0, 1))
    iteration = build_iteration("dpaat", attack=attack, num_samples=len(y), eps_init=EPS, eps_min=EPS / 4,
                                eps_max=2 * EPS, step_size=EPS / 2)
    seen = []
    original = attack.perturb

    def spy(network, xb, yb, eps, alpha, lo, hi):
        adv = original(network, xb, yb, eps, alpha, lo, hi)
        seen.append(((adv - xb).abs().flatten(1).amax(1), eps.flatten().clone()))
        return adv

    attack.perturb = spy
    _trainer(tiny_cnn(), _items(x, y), iteration, batch_size=20, epochs=3).run()
    assert iteration.alpha_fraction == pytest.approx(1.0)  # Free AT's step is the (per-sample) budget
    assert len(seen) == 3 * 2
    for size, eps in seen:
        assert bool((size <= eps + 1e-6).all())
    assert seen[-1][0].max() > 0  # the perturbation moved
    table = iteration.state_dict()["epsilon"]
    assert not torch.allclose(table, table[0])  # DPAAT adapted the budgets it projects onto


def test_input_gradient_is_float32_under_autocast(ham_small):
    x, y = ham_small
    attack = FreeAT(eps=EPS, replays=1, value_range=(0, 1))
    iteration = build_iteration("at", attack=attack)
    grads = []
    original = attack.update
    attack.update = lambda adv: (grads.append(adv.grad.dtype), original(adv))
    trainer = _trainer(tiny_cnn(), _items(x, y), iteration, batch_size=10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trainer.run()
    assert grads == [torch.float32, torch.float32]
    assert torch.isfinite(attack.delta).all() and attack.delta.abs().max() > 0


def test_nan_gradient_entries_do_not_move_the_perturbation():
    attack = FreeAT(eps=0.1, value_range=None)
    x = torch.zeros(2, 1, 2, 2)
    adv = attack(torch.nn.Identity(), x, torch.zeros(2, dtype=torch.long)).requires_grad_(True)
    adv.grad = torch.tensor([1.0, float("nan"), float("inf"), -2.0]).repeat(2).reshape(2, 1, 2, 2)
    attack.update(adv)
    assert attack.delta.flatten(1)[0].tolist() == pytest.approx([0.1, 0.0, 0.1, -0.1])  # an inf still has a direction


def test_refusals():
    with pytest.raises(ValueError, match="replays must be an integer >= 1"):
        FreeAT(replays=0)
    with pytest.raises(ValueError, match="carried over"):
        FreeAT(random_start=True)
    attack = FreeAT(eps=0.1, value_range=None)
    with pytest.raises(RuntimeError, match="before any call"):
        attack.update(torch.zeros(1, 1, 2, 2))
    adv = attack(torch.nn.Identity(), torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long))
    with pytest.raises(RuntimeError, match="no input gradient"):
        attack.update(adv)


def test_training_adversary_builds_free_at():
    attack = training_adversary("free", eps=EPS, free_replays=2, value_range=(0, 1))
    assert type(attack) is FreeAT and attack.replays == 2 and attack.alpha == pytest.approx(EPS)
    assert training_adversary("free", eps=EPS, step_fraction=0.5).alpha == pytest.approx(EPS / 2)
    with pytest.raises(ValueError, match="did you mean 'free'"):
        training_adversary("fre")


def test_guard_measures_free_at_with_fgsm_rs_and_restores_free_at(data_dir, ham_small):
    """The guard's single-step accuracy under Free AT is FGSM-RS's; after a recovery the trainer gets FreeAT back."""
    from ignite.engine import Events

    from helpers import trained_ham_cnn
    from monai_dpaat.attacks import FGSMRS
    from monai_dpaat.handlers import CatastrophicOverfittingGuard

    x, y = ham_small
    attack = FreeAT(eps=EPS, replays=1, value_range=(0, 1))
    iteration = build_iteration("at", attack=attack)
    # a trained network and a 'multi-step' attack at 30x the budget: the first check is a collapse
    guard = CatastrophicOverfittingGuard(iteration, interval=3, num_samples=20, gap=0.05, recover_iterations=1,
                                         data=(x, y), multi_step=PGD(eps=0.25, alpha=0.05, steps=5, value_range=(0, 1)))
    assert type(guard.single_step) is FGSMRS and guard.single_step.eps == pytest.approx(EPS)
    trainer = _trainer(trained_ham_cnn(data_dir), _items(x, y), iteration, batch_size=5, lr=1e-4)
    guard.attach(trainer)
    attacks = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: attacks.append(type(iteration.attack).__name__))
    trainer.run()
    assert guard.history[0]["collapsed"] and guard.history[0]["single_acc"] > guard.history[0]["multi_acc"]
    assert attacks[:3] == ["FreeAT", "PGD", "FreeAT"]  # fallback for one iteration, then Free AT again
