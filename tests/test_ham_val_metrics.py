"""``val_accuracy`` / ``val_f1`` of the HAM10000 bundle are the accuracy and the macro-F1 of the robustness report.

Two traps of the usual bundle lines, both on the decollated one-hot ``pred``/``label``: ``ignite.metrics.Accuracy``
scored the one-hot entries one by one (``1 - 2 * errors / (K * N)``), and MONAI's
``ConfusionMatrix(metric_name="f1 score")`` gave the micro-F1 (always the accuracy). The references here are plain
numpy (scikit-learn is not a declared dependency): ``accuracy_score`` and ``f1_score(average="macro")``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from monai.bundle import ConfigParser
from monai.handlers import from_engine

from monai_dpaat.evaluation.metrics import scores_from_confusion
from monai_dpaat.handlers.classification_metric import ClassificationMetric

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "ham10000_dpaat_classification"


def _reference(pred: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """scikit-learn's ``accuracy_score`` and ``f1_score(average="macro")`` (classes seen in ``label`` or ``pred``;
    0/0 = 0), in numpy."""
    f1 = []
    for k in np.union1d(pred, label):
        tp = np.sum((pred == k) & (label == k))
        denominator = np.sum(pred == k) + np.sum(label == k)  # 2 tp + fp + fn
        f1.append(2 * tp / denominator)
    return float(np.mean(pred == label)), float(np.mean(f1))


def _one_hot(indices, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(indices), k).float()


def _run_metrics(batches, metrics) -> dict:
    engine = Engine(lambda e, batch: batch)
    for name, metric in metrics.items():
        metric.attach(engine, name)
    engine.run(batches)
    return engine.state.metrics


def test_metric_on_decollated_one_hot_by_hand():
    # 3 classes, 8 samples, 3 errors: accuracy 5/8; per-class F1 2/3, 2/3, 2/4 -> macro 11/18
    label = [0, 0, 0, 1, 1, 1, 2, 2]
    pred = [0, 0, 1, 1, 1, 2, 2, 0]
    batches = [[{"pred": _one_hot(p, 3), "label": _one_hot(y, 3)} for p, y in zip(pred[i:i + 4], label[i:i + 4])]
               for i in (0, 4)]  # what a SupervisedEvaluator's decollated postprocessing gives
    transform = from_engine(["pred", "label"])
    out = _run_metrics(batches, {m: ClassificationMetric(m, 3, transform) for m in ("accuracy", "f1")})
    assert out["accuracy"] == pytest.approx(5 / 8) and out["f1"] == pytest.approx(11 / 18)
    assert isinstance(out["f1"], float)


def test_metric_takes_logits_and_index_labels():
    logits = torch.tensor([[2.0, 0.1, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])  # predictions 0, 1, 2, 0
    metrics = {m: ClassificationMetric(m, 3) for m in ("accuracy", "precision", "recall", "f1")}
    out = _run_metrics([(logits, labels), (logits, labels[:, None])], metrics)
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["precision"] == pytest.approx((1 / 2 + 1 + 0) / 3) and out["recall"] == pytest.approx((1 + 1 / 2) / 3)
    assert out["f1"] == pytest.approx(_reference(np.array([0, 1, 2, 0]), labels.numpy())[1])


def test_scores_from_confusion_leave_unseen_classes_out():
    confusion = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 0, 4]])  # class 1 never true, predicted once
    pred = np.repeat([0, 1, 0, 2], [3, 1, 2, 4])
    label = np.repeat([0, 0, 2, 2], [3, 1, 2, 4])
    accuracy, f1 = _reference(pred, label)
    out = scores_from_confusion(confusion)
    assert out["accuracy"] == pytest.approx(accuracy) and out["f1"] == pytest.approx(f1)
    # a class neither true nor predicted does not count (scikit-learn's default labels)
    padded = torch.zeros(4, 4, dtype=torch.int64)
    padded[:3, :3] = confusion
    assert scores_from_confusion(padded)["f1"] == pytest.approx(f1)


@pytest.mark.parametrize("kwargs, match", [
    ({"metric": "f1 score", "num_classes": 3}, "metric must be one of"),
    ({"metric": "f1", "num_classes": 1}, "num_classes must be >= 2"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassificationMetric(**kwargs)


@pytest.mark.parametrize("y_pred, y, match", [
    (torch.zeros(2, 2), torch.tensor([0, 1]), r"y_pred must be \(B, 3\)"),
    (torch.zeros(2, 3), torch.ones(2, 3), "must be one-hot"),
    (torch.zeros(2, 3), torch.tensor([0, 1, 2]), "y must be"),
    (torch.zeros(2, 3), torch.tensor([0, 3]), r"labels must lie in \[0, 2\]"),
])
def test_bad_inputs_are_named(y_pred, y, match):
    metric = ClassificationMetric("accuracy", 3)
    with pytest.raises(ValueError, match=match):
        metric.update((y_pred, y))


def _train_briefly(parser: ConfigParser, steps: int) -> None:
    """A few Adam steps of the bundle's network on its training split (clean inputs): an untrained network
    predicts one class only."""
    network, loss, optimizer = (parser.get_parsed_content(k) for k in ("network", "loss", "optimizer"))
    network.train()
    for step, batch in enumerate(parser.get_parsed_content("train#dataloader")):
        if step == steps:
            break
        optimizer.zero_grad()
        loss(network(batch["image"]), batch["label"].long().flatten()).backward()
        optimizer.step()


@pytest.mark.slow
def test_bundle_validation_metrics_are_accuracy_and_macro_f1(tmp_path, data_dir):
    """The bundle's own validation evaluator (train.json + quick.json with all three classes, small_cnn trained
    for a few steps) on the real validation split: its val_accuracy / val_f1 against the references on the
    predictions it made."""
    parser = ConfigParser()
    parser.read_config([BUNDLE / "configs" / "train.json", BUNDLE / "configs" / "quick.json"])
    parser.update({"bundle_root": str(tmp_path), "dataset_dir": str(data_dir / "ham10000"),
                   "classes": ["mel", "bkl", "nv"], "validate#handlers": []})
    for i in range(len(parser["initialize"])):
        parser.get_parsed_content(f"initialize#{i}")
    _train_briefly(parser, steps=8)
    evaluator = parser.get_parsed_content("validate#evaluator")
    seen: dict[str, list] = {"pred": [], "label": []}

    @evaluator.on(Events.ITERATION_COMPLETED)
    def _collect(engine):
        for key in seen:
            seen[key] += [int(item[key].argmax()) for item in engine.state.output]

    evaluator.run()
    pred, label = np.array(seen["pred"]), np.array(seen["label"])
    assert len(label) == len(parser.get_parsed_content("datalists")["val"]) >= 30
    assert len(np.unique(pred)) >= 2 and len(np.unique(label)) >= 2, (np.unique(pred), np.unique(label))
    accuracy, macro_f1 = _reference(pred, label)
    assert 0 < accuracy < 1
    metrics = evaluator.state.metrics
    # 3 one-hot entries per sample: the entry-wise accuracy of ignite.metrics.Accuracy would be 1 - 2 e / (3 N)
    assert metrics["val_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert metrics["val_f1"] == pytest.approx(macro_f1, abs=1e-12)
    assert abs(metrics["val_f1"] - metrics["val_accuracy"]) > 1e-3, "val_f1 is the micro-F1 (= the accuracy)"
