"""Issue 12, points 4, 5, 7, 8 and 10 fixed in the library: robust validation on the final epoch and in evaluate-only
runs, the task inferred from the outputs, budgets as a fraction of the data's intensity range, AMAT's adversarial
term on the clean term's scale whatever the loss reduction, and a fast default robust-validation attack with a
progress bar. Each point is shown on toy engines (fast) and, where a real bundle shows it, on the MONAI Model Zoo
bundles of ``tests/model_zoo`` with the Zoo CI's dummy data (``tests/model_zoo_bundles.py``; 32x32, 1 epoch, CPU).
"""

from __future__ import annotations

import logging
import re

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from ignite.engine import Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import ValidationHandler

from model_zoo_bundles import CLASSIFICATION, OVERRIDES, SEGMENTATION, adversarial_configs, ok, prepare_bundle, \
    run_bundle
from monai_dpaat.attacks import PGD
from monai_dpaat.attacks.base import intensity_range, with_eps_units
from monai_dpaat.evaluation import RobustnessEvaluator
from monai_dpaat.evaluation.suite import build_suite, check_task, infer_task
from monai_dpaat.handlers.robustness import RobustnessValidationHandler, default_attacks
from monai_dpaat.training import AMATIteration, DPAATIteration

TRAIN = "configs/train.json"
ROBUST = re.compile(r"\brobust_\w+_(accuracy|dice)=")


def _cnn(classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))


def _seg_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(), nn.Conv2d(4, 2, 1))


def _cls_data(n: int = 8):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 16, 16, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0.5).long()
    return [{"image": x[i], "label": y[i], "index": i} for i in range(n)]


def _seg_data(n: int = 4):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 16, 16, generator=g)
    return [{"image": x[i], "label": (x[i, :1] > 0.5).float()} for i in range(n)]


def _robust_keys(metrics) -> set[str]:
    return {k for k in metrics if k.startswith("robust_")}


def _train(net, loader, handlers, max_epochs: int, val_handlers=(), loss=None):
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=net,
                                    val_handlers=list(val_handlers))
    seen: dict[int, set[str]] = {}
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.update({e.state.epoch: _robust_keys(e.state.metrics)}))
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=max_epochs, train_data_loader=loader,
                                network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
                                loss_function=loss or nn.CrossEntropyLoss(),
                                train_handlers=[ValidationHandler(validator=evaluator, interval=1), *handlers])
    return trainer, evaluator, seen


# --- 4. robust validation on the final epoch and in evaluate-only runs --------------------------------------------


def test_handler_runs_on_the_final_epoch_when_the_interval_exceeds_the_epochs():
    net, loader = _cnn(), DataLoader(_cls_data(), batch_size=4)
    on_evaluator = RobustnessValidationHandler(interval=5, max_samples=4, progress=False)
    on_trainer = RobustnessValidationHandler(data_loader=loader, interval=5, max_samples=4, progress=False)
    trainer, _, seen = _train(net, loader, [on_trainer], max_epochs=3, val_handlers=[on_evaluator])
    epochs = {}
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epochs.update({e.state.epoch: _robust_keys(e.state.metrics)}))
    trainer.run()
    keys = {"robust_clean_accuracy", "robust_10_pgd_accuracy", "robust_worst_case_accuracy"}
    assert seen[1] == seen[2] == set() and seen[3] == keys  # the evaluator's epoch is the trainer's: final = 3
    assert epochs[1] == epochs[2] == set() and epochs[3] == keys
    # at a multiple of the interval it still runs, and final_epoch=False restores the interval-only rule
    every2 = RobustnessValidationHandler(interval=2, max_samples=4, progress=False)
    only_interval = RobustnessValidationHandler(interval=5, max_samples=4, progress=False, final_epoch=False,
                                                prefix="robust_int_")
    trainer, _, seen = _train(_cnn(), loader, [], max_epochs=3, val_handlers=[every2, only_interval])
    trainer.run()
    assert seen[1] == set() and seen[2] == keys and seen[3] == keys
    assert only_interval.last_result is None


def test_handler_runs_on_every_run_of_a_standalone_evaluator():
    """An evaluate-only run (``evaluator.run()``, no trainer driving it) is one evaluator epoch, epoch 1: the
    handler runs whatever its interval."""
    loader = DataLoader(_cls_data(), batch_size=4)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=_cnn())
    handler = RobustnessValidationHandler(interval=5, max_samples=4, progress=False)
    handler.attach(evaluator)
    for _ in range(2):
        evaluator.run()
        assert "robust_10_pgd_accuracy" in evaluator.state.metrics
        assert handler.last_result.num_samples == 4


@pytest.fixture(scope="module")
def zoo_cls_robust(tmp_path_factory):
    """Their classification train.json + robust_validation.json at its default interval (5), 1 epoch (the handler's
    default attack, to keep it short)."""
    tmp_path = tmp_path_factory.mktemp("zoo_cls_robust")
    bundle, overrides = prepare_bundle(CLASSIFICATION, tmp_path)
    overrides = {**overrides, "robust_val_attacks": "$None"}
    out = ok(*run_bundle(bundle, [TRAIN, str(OVERRIDES / "robust_validation.json")], overrides))
    return bundle, overrides, out


def test_zoo_classification_robust_validation_in_a_short_training(zoo_cls_robust):
    _, _, out = zoo_cls_robust
    assert re.search(r"epoch 1 robustness: .*robust_clean_accuracy=", out), out[-3000:]


def test_zoo_classification_robust_validation_in_an_evaluate_only_run(zoo_cls_robust):
    """Their evaluate.json composed after train.json (as the Zoo does) with robust_validation.json at its default
    interval: one evaluator run, robust metrics published."""
    bundle, overrides, _ = zoo_cls_robust
    out = ok(*run_bundle(bundle, [TRAIN, "configs/evaluate.json", str(OVERRIDES / "robust_validation.json")],
                          overrides))
    assert "val_accu" in out and ROBUST.search(out), out[-3000:]


# --- robust metrics reach the handlers listed before the robustness handler ------------------------------------------


def _tb_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of the scalars in the TensorBoard event files under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


class _Lines(logging.Handler):
    """Collects the messages of a logger."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_their_stats_tensorboard_and_checkpoint_handlers_listed_first_see_the_robust_metrics(tmp_path, caplog):
    """A bundle's evaluator as robust_validation.json builds it: their StatsHandler, TensorBoardStatsHandler and a
    CheckpointSaver keyed on a robust metric attached *before* the robustness handler; all three see this epoch's
    robust_* values at EPOCH_COMPLETED (before the fix the TB events had no robust tag and the saver a KeyError)."""
    from ignite.metrics import Accuracy
    from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardStatsHandler, from_engine

    net, loader = _cnn(), DataLoader(_cls_data(), batch_size=4)
    theirs = [StatsHandler(iteration_log=False), TensorBoardStatsHandler(log_dir=str(tmp_path / "eval"),
                                                                         iteration_log=False),
              CheckpointSaver(save_dir=str(tmp_path / "models"), save_dict={"model": net}, save_key_metric=True,
                              key_metric_name="robust_worst_case_accuracy")]
    handler = RobustnessValidationHandler(max_samples=8, progress=False)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=net,
                                    key_val_metric={"val_accu": Accuracy(from_engine(["pred", "label"]))},
                                    val_handlers=[*theirs, handler])
    stats_lines = _Lines()
    stats_logger = logging.getLogger("monai.handlers.StatsHandler")  # theirs: it does not propagate to caplog
    stats_logger.addHandler(stats_lines)
    try:
        with caplog.at_level(logging.INFO):
            evaluator.run()
    finally:
        stats_logger.removeHandler(stats_lines)
    metrics = evaluator.state.metrics
    keys = {"robust_clean_accuracy", "robust_10_pgd_accuracy", "robust_worst_case_accuracy"}
    assert keys <= set(metrics)
    scalars = _tb_scalars(tmp_path / "eval")
    assert keys | {"val_accu"} <= set(scalars), sorted(scalars)
    for key in keys:
        assert scalars[key] == [(1, pytest.approx(metrics[key]))]
    (line,) = [m for m in stats_lines.messages if "Epoch[1] Metrics -- " in m]
    assert f"robust_worst_case_accuracy: {metrics['robust_worst_case_accuracy']:.4f}" in line and "val_accu" in line
    (saved,) = (tmp_path / "models").glob("*.pt")
    assert f"key_metric={metrics['robust_worst_case_accuracy']:.4f}" in saved.name
    assert any("epoch 1 robustness: " in r.getMessage() for r in caplog.records)


def test_tensorboard_listed_first_gets_the_robust_curve_on_the_due_epochs_of_training(tmp_path):
    """Driven by a trainer (ValidationHandler), interval 2 of 3 epochs: the evaluator's TB handler, listed first,
    plots the robust curve at epochs 2 and 3 (interval, final) and nothing stale at epoch 1."""
    from monai.handlers import TensorBoardStatsHandler

    net, loader = _cnn(), DataLoader(_cls_data(), batch_size=4)
    tb = TensorBoardStatsHandler(log_dir=str(tmp_path), iteration_log=False)
    handler = RobustnessValidationHandler(interval=2, max_samples=4, progress=False)
    trainer, evaluator, _ = _train(net, loader, [], max_epochs=3, val_handlers=[tb, handler])
    trainer.run()
    scalars = _tb_scalars(tmp_path)
    assert [step for step, _ in scalars["robust_10_pgd_accuracy"]] == [2, 3]
    assert scalars["robust_worst_case_accuracy"][-1][1] == pytest.approx(
        evaluator.state.metrics["robust_worst_case_accuracy"])


class _NoLength:
    """An iterable without ``len``: ignite learns the epoch length only when the first epoch's loader ends."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


def test_without_an_epoch_length_it_falls_back_to_epoch_completed_and_says_so(caplog):
    """A plain ignite engine over an iterable without ``len``: epoch 1 runs at EPOCH_COMPLETED (after a handler
    attached before it, with one warning); from epoch 2 the length is known and that handler sees the values."""
    from ignite.engine import Engine

    loader = DataLoader(_cls_data(), batch_size=4)
    data = _NoLength(list(loader))
    engine = Engine(lambda e, batch: None)
    seen = {}

    @engine.on(Events.EPOCH_COMPLETED)  # attached before the robustness handler
    def record(e):
        seen[e.state.epoch] = _robust_keys(e.state.metrics)

    RobustnessValidationHandler(data_loader=loader, network=_cnn(), max_samples=4, progress=False).attach(engine)
    with caplog.at_level(logging.INFO, logger="monai_dpaat.handlers.robustness"):
        engine.run(data, max_epochs=2)
    keys = {"robust_clean_accuracy", "robust_10_pgd_accuracy", "robust_worst_case_accuracy"}
    assert seen == {1: set(), 2: keys} and keys <= set(engine.state.metrics)
    late = [r for r in caplog.records if r.levelno == logging.WARNING and "EPOCH_COMPLETED" in r.getMessage()]
    assert len(late) == 1
    assert [r.getMessage().split(" robustness:")[0] for r in caplog.records if "robustness:" in r.getMessage()] == \
        ["epoch 1", "epoch 2"]


# --- 5. the task inferred from the outputs --------------------------------------------------------------------------


def test_task_is_inferred_from_the_shapes_and_a_contradiction_names_them():
    assert infer_task(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)) == "classification"
    assert infer_task(torch.zeros(2, 1), torch.zeros(2, 1)) == "classification"
    assert infer_task(torch.zeros(2, 2, 8, 8), torch.zeros(2, 1, 8, 8)) == "segmentation"
    assert infer_task([torch.zeros(2, 2, 8, 8), torch.zeros(2, 2, 4, 4)], torch.zeros(2, 8, 8)) == "segmentation"
    with pytest.raises(ValueError, match=r"cannot infer the task from outputs \(2, 2, 8, 8\) and labels \(2,\)"):
        infer_task(torch.zeros(2, 2, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match=r"task='classification' needs outputs \(N, K\).*got outputs \(2, 2, 32, 32\) "
                                         r"and labels \(2, 1, 32, 32\) \(they fit segmentation"):
        check_task("classification", torch.zeros(2, 2, 32, 32), torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"task='segmentation' needs .*got outputs \(2, 3\) and labels \(2,\)"):
        check_task("segmentation", torch.zeros(2, 3), torch.zeros(2))


def test_evaluator_infers_segmentation_and_refuses_a_contradicting_task():
    loader = DataLoader(_seg_data(), batch_size=2)
    suite = {"PGD": PGD(steps=2)}
    result = RobustnessEvaluator(suite, task=None, hd95=False, progress=False)(_seg_net(), loader)
    assert result.task == "segmentation" and result.num_samples == 4 and "dice" in result.rows["PGD"]
    with pytest.raises(ValueError, match=r"task='classification' needs .*outputs \(2, 2, 16, 16\) and labels "
                                         r"\(2, 1, 16, 16\)"):
        RobustnessEvaluator(suite, task="classification", progress=False)(_seg_net(), loader)
    cls = RobustnessEvaluator(suite, task=None, progress=False)(_cnn(), DataLoader(_cls_data(), batch_size=3))
    assert cls.task == "classification" and cls.num_samples == 8  # the batch taken to infer the task is evaluated too
    handler = RobustnessValidationHandler(attacks=suite, data_loader=loader, network=_seg_net(), progress=False,
                                          hd95=False)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=_seg_net())
    handler.attach(evaluator)
    evaluator.run()
    assert {"robust_clean_dice", "robust_pgd_dice", "robust_worst_case_dice"} <= set(evaluator.state.metrics)


def test_zoo_segmentation_without_a_task_flag(tmp_path):
    """Their FlexibleUNet bundle with robust_validation.json and no task (``None``: inferred): robust Dice."""
    bundle, overrides = prepare_bundle(SEGMENTATION, tmp_path, per_class=1)
    out = ok(*run_bundle(bundle, [TRAIN, str(OVERRIDES / "robust_validation.json")],
                          {**overrides, "robust_val_task": "$None", "robust_val_attacks": "$None"}))
    assert re.search(r"robustness: robust_clean_dice=.*robust_10_pgd_dice=.*\(segmentation, ", out), out[-3000:]


def test_zoo_segmentation_with_the_classification_task_names_the_shapes(tmp_path):
    """The classification task given to their segmentation bundle: a clear ValueError naming the shapes (batch 2 of
    2-channel 32x32 outputs and masks), no reshape RuntimeError."""
    bundle, overrides = prepare_bundle(SEGMENTATION, tmp_path, per_class=1)
    rc, out = run_bundle(bundle, [TRAIN, str(OVERRIDES / "robust_validation.json")],
                         {**overrides, "robust_val_task": "classification", "robust_val_attacks": "$None"})
    assert rc != 0
    assert "task='classification' needs outputs (N, K)" in out and "outputs (2, 2, 32, 32)" in out, out[-3000:]
    assert "is invalid for input of size" not in out


# --- 7. budgets as a fraction of the intensity range ----------------------------------------------------------------


def test_range_units_scale_the_budget_per_sample_and_log_it_once(caplog):
    net = _cnn()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 16, 16, generator=g) * torch.tensor([1.0, 2.0, 4.0]).view(3, 1, 1, 1)  # z-scored-like
    y = torch.tensor([0, 1, 0])
    attack = with_eps_units(PGD(eps=0.05, alpha=0.0125, steps=5), "range")
    assert attack.eps_units == "range" and attack.config()["eps_units"] == "range"
    assert PGD().eps_units == "absolute" and "eps_units" not in PGD().config()
    with caplog.at_level(logging.INFO, logger="monai_dpaat.attacks"):
        adv = attack(net, x, y)
        attack(net, x, y)
    width = intensity_range(x).reshape(-1)
    linf = (adv - x).flatten(1).abs().amax(1)
    assert torch.allclose(linf, 0.05 * width, rtol=1e-4)  # PGD reaches the surface of each sample's ball
    lines = [r.getMessage() for r in caplog.records if "eps_units='range'" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"absolute eps {float((0.05 * width).mean()):.6g}" in lines[0]
    # the budget is checked in its units: at most the whole range
    with pytest.raises(ValueError, match=r"PGD: eps=1\.5 \(eps_units='range'.*larger than the width 1"):
        attack.with_eps(1.5)
    with pytest.raises(ValueError, match="eps_units must be one of"):
        with_eps_units(PGD(), "percent")
    # a suite in range units, and the training methods' budgets in the attack's units
    (entry,) = build_suite({"PGD": PGD()}, eps=0.02, eps_units="range")
    assert entry.attack.eps_units == "range" and entry.spec["eps_units"] == "range"
    with pytest.raises(ValueError, match=r"AMATIteration: eps_max=1\.5 .*larger than the width 1"):
        AMATIteration(4, attack=attack, eps_max=1.5)
    dpaat = DPAATIteration(4, attack=attack)
    assert dpaat.attack.eps_units == "range"


def test_zoo_adversarial_training_with_a_range_budget_logs_the_absolute_value(tmp_path):
    """Their z-scored classification bundle, AT with the attack's budget as 3% of each image's intensity range: the
    first batch's absolute budget (several units wide images, far more than 8/255) is in their log."""
    bundle, overrides = prepare_bundle(CLASSIFICATION, tmp_path)
    attack = ("$monai_dpaat.attacks.base.with_eps_units(monai_dpaat.attacks.PGD(eps=0.03, alpha=0.0075, steps=2), "
              "'range')")
    out = ok(*run_bundle(bundle, [TRAIN, *adversarial_configs("at")], {**overrides, "adversarial_attack": attack}))
    match = re.search(r"PGD: eps=0\.03 x each sample's intensity range \(eps_units='range'\): absolute eps ([0-9.e-]+)",
                      out)
    assert match, out[-3000:]
    assert float(match.group(1)) > 3 * 8 / 255


# --- 8. AMAT's adversarial term whatever the loss reduction ---------------------------------------------------------


def _amat_step(reduction: str, correct: torch.Tensor):
    data = _cls_data(6)
    net = _cnn()
    attack = PGD(eps=4 / 255, alpha=1 / 255, steps=2, generator=torch.Generator().manual_seed(0))
    iteration = AMATIteration(6, attack=attack, correct_function=lambda pred, t: correct)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, network=net,
                                train_data_loader=DataLoader(data, batch_size=6),
                                optimizer=torch.optim.SGD(net.parameters(), lr=0.0),
                                loss_function=nn.CrossEntropyLoss(reduction=reduction), iteration_update=iteration)
    trainer.run()
    return float(trainer.state.output[0]["loss"]), dict(trainer.state.adversarial)  # decollated: every item has it


@pytest.mark.parametrize("k", [1, 3, 6])
def test_amat_sum_and_mean_reductions_give_totals_n_times_apart(k):
    """6 samples, ``k`` of them clean-correct: with ``reduction="sum"`` the adversarial term is the subset's sum
    times 6 / k, so every number (and the total) is exactly 6x the mean-reduced one and beta's weighting holds."""
    correct = torch.arange(6) < k
    total_sum, s = _amat_step("sum", correct)
    total_mean, m = _amat_step("mean", correct)
    assert s["loss_clean"] == pytest.approx(6 * m["loss_clean"], rel=1e-5)
    assert s["loss_adv"] == pytest.approx(6 * m["loss_adv"], rel=1e-5)
    assert total_sum == pytest.approx(6 * total_mean, rel=1e-5)
    assert total_mean == pytest.approx(0.5 * m["loss_clean"] + 0.5 * m["loss_adv"], rel=1e-5)


# --- 10. a fast default attack with a progress bar ------------------------------------------------------------------


def test_default_attack_is_one_10_step_pgd_and_shows_progress(capsys):
    handler = RobustnessValidationHandler(data_loader=DataLoader(_cls_data(), batch_size=4), network=_cnn())
    suite = build_suite(handler.evaluator.attacks)
    assert [e.label for e in suite] == ["10-PGD"]
    assert suite[0].spec["steps"] == 10 and suite[0].spec["eps"] == pytest.approx(8 / 255)
    assert list(default_attacks(4 / 255)["10-PGD"].config().items())[:3] == [("name", "pgd"), ("eps", 4 / 255),
                                                                               ("alpha", 1 / 255)]
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=handler.data_loader, network=_cnn())
    handler.attach(evaluator)
    evaluator.run()
    err = capsys.readouterr().err
    assert "robustness (1 attacks)" in err and "10-PGD" in err and "1/2 [" in err, err  # one step per batch
    assert evaluator.state.metrics["robust_worst_case_accuracy"] <= evaluator.state.metrics["robust_clean_accuracy"]


def test_zoo_default_robust_validation_is_fast_with_progress(tmp_path):
    """Their classification bundle, robust validation with the handler's default attack: the 10-step PGD row, a
    tqdm bar while it runs and its duration in the summary line."""
    bundle, overrides = prepare_bundle(CLASSIFICATION, tmp_path)
    out = ok(*run_bundle(bundle, [TRAIN, str(OVERRIDES / "robust_validation.json")],
                          {**overrides, "robust_val_attacks": "$None"}))
    done = re.search(r"epoch 1 robustness: (.*) \(classification, 2 samples, ([0-9.]+) s\)", out)
    assert done, out[-3000:]
    assert "robust_10_pgd_accuracy" in done.group(1) and "robust_50_pgd" not in done.group(1)
    assert "robustness (1 attacks): 100%|" in out
    print(f"robust validation (default attack, 2 images 32x32, CPU): {float(done.group(2)):.1f} s")
