"""Bad-input rows for attack and training budgets (run by ``test_reliability.py``): an epsilon or step size that
is negative, not finite, or larger than the data's value range fails with the parameter and the range named,
before any gradient work or optimizer step, and a bundle run with a huge ``epsilon`` trains and saves nothing.
Misspelled override keys (a component argument its ``_target_`` does not take; a key of ``overrides/*.json`` composed
onto another bundle) and an ``--adversarial_method`` without its method file are refused before any training."""

from __future__ import annotations

import json

import torch

from reliability_table import (BUNDLE, BUNDLE_CONFIGS, _assert_same_state, _bundle_copy, _bundle_run, _small_cnn,
                               _state, case)


def _classification_batch(n: int = 2):
    torch.manual_seed(0)
    return _small_cnn().eval(), torch.rand(n, 3, 16, 16), torch.tensor([0, 2, 1, 0][:n])


class _ForwardCounter:
    """Counts the forwards of a module (a forward hook), to show a check came before any gradient work."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(self._count)

    def _count(self, *_):
        self.calls += 1

    def assert_none(self):
        assert self.calls == 0, f"the network ran {self.calls} forward(s) before the budget check"


def _trainer(method: str, attack: dict, **kwargs):
    """A one-epoch SupervisedTrainer of ``method`` on 4 random images (ids 0..3) with a PGD of the keyword
    arguments ``attack``."""
    from monai.engines import SupervisedTrainer

    from monai_dpaat.attacks import PGD
    from monai_dpaat.training import build_iteration

    net = _small_cnn(num_classes=2)
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    data = [{"image": x[i], "label": i % 2, "index": i} for i in range(4)]
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    if method in ("amat", "dpaat"):
        kwargs["num_samples"] = 4
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=net,
                                optimizer=optimizer, loss_function=torch.nn.CrossEntropyLoss(),
                                iteration_update=build_iteration(method, attack=PGD(**attack), **kwargs))
    state = _state(net)

    def after():
        _assert_same_state(net, state, "the network's weights")
        assert not optimizer.state, "the optimizer stepped (momentum buffers exist)"

    return trainer.run, after


# ---------------------------------------------------------------------------------------------- attack budgets
@case("attack-eps-above-fixed-range", ValueError, r"PGD: eps=1e\+06 is larger than the width 1 of value_range "
      r"\(0\.0, 1\.0\)")
def _(ctx):
    from monai_dpaat.attacks import build_attack

    return lambda: build_attack("pgd", eps=1e6, value_range=(0.0, 1.0))


@case("attack-eps-above-data-range", ValueError, r"PGD: eps=5 is larger than the width 0\.9\d* of the data's "
      r"value range \(value_range='data'")
def _(ctx):
    from monai_dpaat.attacks import PGD

    net, x, y = _classification_batch()
    forwards = _ForwardCounter(net)
    return lambda: PGD(eps=5.0, steps=1)(net, x, y), forwards.assert_none


@case("attack-eps-above-l2-diameter", ValueError, r"PGDL2: eps=1e\+06 is larger than 27\.7\d* = the width 1 of "
      r"value_range \(0\.0, 1\.0\) x sqrt\(768\)")
def _(ctx):
    from monai_dpaat.attacks import PGDL2

    net, x, y = _classification_batch()
    forwards = _ForwardCounter(net)
    return lambda: PGDL2(eps=1e6, steps=1, value_range=(0.0, 1.0))(net, x, y), forwards.assert_none


@case("attack-eps-infinite", ValueError, r"eps must be a finite number >= 0.*got inf")
def _(ctx):
    from monai_dpaat.attacks import build_attack

    return lambda: build_attack("i-fgsm", eps=float("inf"), value_range=(0.0, 1.0))


@case("attack-alpha-infinite", ValueError, r"alpha must be a finite number >= 0.*got inf")
def _(ctx):
    from monai_dpaat.attacks import build_attack

    return lambda: build_attack("pgd", alpha=float("inf"))


@case("attack-call-eps-infinite", ValueError, r"eps must be a finite number >= 0.*got \[0\.01, inf\]")
def _(ctx):
    from monai_dpaat.attacks import PGD

    net, x, y = _classification_batch()
    return lambda: PGD(steps=1)(net, x, y, eps=torch.tensor([0.01, float("inf")]))


# ---------------------------------------------------------------------------------------------- training budgets
@case("train-dpaat-eps-max-above-range", ValueError, r"DPAATIteration: eps_max=1\.2 \(default 2 \* eps_init\) is "
      r"larger than the width 1 of value_range \(0\.0, 1\.0\)")
def _(ctx):
    from monai_dpaat.attacks import PGD
    from monai_dpaat.training import DPAATIteration

    return lambda: DPAATIteration(4, attack=PGD(eps=0.6, alpha=0.15, steps=1, value_range=(0.0, 1.0)))


@case("train-dpaat-eps-max-infinite", ValueError, r"DPAATIteration: eps_max must be a finite number >= 0, got inf")
def _(ctx):
    from monai_dpaat.training import DPAATIteration

    from monai_dpaat.attacks import PGD

    return lambda: DPAATIteration(4, attack=PGD(steps=1), eps_max=float("inf"))


@case("train-amat-eps-max-above-range", ValueError, r"AMATIteration: eps_max=2 is larger than the width 1 of "
      r"value_range \(0\.0, 1\.0\)")
def _(ctx):
    from monai_dpaat.training import AMATIteration

    from monai_dpaat.attacks import PGD

    return lambda: AMATIteration(4, attack=PGD(eps=0.03, steps=1, value_range=(0.0, 1.0)),
                                 eps_max=2.0)


@case("train-at-huge-eps-data-range", ValueError, r"PGD: eps=1e\+06 is larger than the width 0\.9\d* of the data's "
      r"value range")
def _(ctx):
    return _trainer("at", {"eps": 1e6, "steps": 1})


@case("train-dpaat-eps-max-above-data-range", ValueError, r"DPAATIteration: eps_max=1\.2 \(default 2 \* eps_init\) "
      r"is larger than the width 0\.9\d* of the data's value range")
def _(ctx):
    return _trainer("dpaat", {"eps": 0.6, "alpha": 0.15, "steps": 1})


# ---------------------------------------------------------------------------------------------- bundle
@case("bundle-huge-epsilon", RuntimeError, r"epsilon=1e\+06 is larger than the width 1 of value_range \(0\.0, 1\.0\)")
def _(ctx):
    root = _bundle_copy(ctx)

    def after():
        saved = sorted(str(p.relative_to(root)) for p in root.rglob("*.pt"))
        assert not saved, f"the refused run saved {saved}"

    return _bundle_run(root, "--config_file", BUNDLE_CONFIGS, "--bundle_root", str(root),
                       "--dataset_dir", str(ctx.data_dir / "ham10000"), "--epsilon", "1e6"), after


@case("bundle-huge-epsilon-names-the-key", RuntimeError, r"epsilon=1e\+06 is larger than the width 1")
def _(ctx):
    root = _bundle_copy(ctx)
    # nothing to run: the check must come from 'initialize', before any data is read or training starts
    return _bundle_run(root, "--config_file", BUNDLE_CONFIGS, "--bundle_root", str(root),
                       "--dataset_dir", str(ctx.tmp / "no_data_needed"), "--epsilon", "1e6", "--run", "[]")


@case("bundle-misspelled-component-argument", RuntimeError, r"unknown config key 'iteration_update#eps_maxx' "
      r"\(override --iteration_update#eps_maxx\): 'eps_maxx' is not an id at iteration_update \(a "
      r"monai_dpaat\.training\.DPAATIteration component\).*did you mean 'eps_max'")
def _(ctx):
    root = _bundle_copy(ctx)
    # DPAATIteration.__init__ would get eps_maxx=0.1 (a TypeError traceback); refused in 'initialize' instead
    return _bundle_run(root, "--config_file", BUNDLE_CONFIGS, "--bundle_root", str(root),
                       "--dataset_dir", str(ctx.tmp / "no_data_needed"), "--iteration_update#eps_maxx", "0.1",
                       "--run", "[]")


# ---------------------------------------------------------------------------------------------- override files
OVERRIDES = BUNDLE.parents[0] / "overrides"
#: a Model Zoo style bundle that knows nothing of monai_dpaat (no error hook, no override check of its own)
FOREIGN_BUNDLE = {
    "device": "$torch.device('cpu')",
    "network_def": {"_target_": "Classifier", "in_shape": [3, 16, 16], "classes": 2, "channels": [4], "strides": [2]},
    "network": "$@network_def.to(@device)",
    "train": {
        "dataset": {"_target_": "Dataset", "data": []},
        "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": 2},
        "trainer": {"_target_": "SupervisedTrainer", "max_epochs": 1, "device": "@device",
                    "train_data_loader": "@train#dataloader", "network": "@network",
                    "loss_function": "$torch.nn.CrossEntropyLoss()",
                    "optimizer": "$torch.optim.Adam(@network.parameters())"},
    },
    "run": ["$@train#trainer.run()"],
}


def _foreign_run(ctx, *argv: str):
    """``monai.bundle run`` of :data:`FOREIGN_BUNDLE` with ``adversarial_train.json`` composed onto it."""
    root = ctx.tmp / "their_bundle"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "train.json").write_text(json.dumps(FOREIGN_BUNDLE))
    files = [str(root / "configs" / "train.json"), str(OVERRIDES / "adversarial_train.json")]
    return _bundle_run(root, "--config_file", repr(files), *argv)


@case("override-method-without-its-file", RuntimeError, r"method 'dpaat' does not match the iteration_update "
      r"ATIteration \(method 'at'\): a --adversarial_method override does not change the training method; compose "
      r"\S*monai_dpaat/bundle_overrides/methods/dpaat\.json instead .*--config_file \"\['<their>/configs/train\.json',"
      r"'\S*monai_dpaat/bundle_overrides/adversarial_train\.json','\S*monai_dpaat/bundle_overrides/methods/dpaat\.json'\]\"")
def _(ctx):
    return _foreign_run(ctx, "--adversarial_method", "dpaat")


@case("override-misspelled-key", RuntimeError, r"unknown config key 'adversarial_epss' \(override --adversarial_epss\)"
      r".*did you mean 'adversarial_eps'")
def _(ctx):
    # without the check the run trains with the default budget and exits 0
    return _foreign_run(ctx, "--adversarial_epss", "0.1")
