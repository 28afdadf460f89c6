"""Robustness evaluation: suites and presets, the worst-case row, sliding-window attacks, the MONAI handler,
and whole evaluations of real HAM10000 images and real H&E tiles that write every report format."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from monai.data import DataLoader, Dataset
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import UNet
from monai.transforms import CenterSpatialCropd, Compose

from monai_dpaat.attacks import FGSM, PGD, Attack, GaussianNoise, build_attack
from monai_dpaat.evaluation import (
    ORIGINAL,
    WORST_CASE,
    InfererNetwork,
    RobustnessEvaluator,
    build_suite,
    parse_eps,
    preset,
    write_report,
)
from monai_dpaat.handlers.robustness import RobustnessValidationHandler, metric_key

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------- suites and presets
def test_presets_match_the_papers():
    unet = preset("unet-paper")
    assert list(unet) == ["FGSM", "PGD", "MI-FGSM", "TI-FGSM", "DI-FGSM", "SI-DI-FGSM", "NI-FGSM", "GN"]
    for spec in [a.config() for a in list(unet.values())[1:-1]]:
        assert spec["eps"] == pytest.approx(8 / 255) and spec["alpha"] == pytest.approx(2 / 255) and spec["steps"] == 10
    gn = unet["GN"].config()
    assert {"name": gn["name"], "label": "GN", "std": gn["std"], "eps": gn["eps"]} == \
        {"name": "gn", "label": "GN", "std": 0.1, "eps": None}
    dpaat = build_suite("dpaat-table")
    assert [e.label for e in dpaat] == ["FGSM", "10-IFGSM", "20-IFGSM", "20-PGD", "50-PGD"]
    assert [e.attack.steps for e in dpaat] == [1, 10, 20, 20, 50]
    assert all(e.attack.eps == pytest.approx(8 / 255) for e in dpaat)
    # the budget is a parameter; the step size keeps its ratio to it
    small = build_suite("dpaat-table", eps=2 / 255)
    assert all(e.attack.eps == pytest.approx(2 / 255) for e in small)
    assert small[3].attack.alpha == pytest.approx(0.5 / 255)


def test_suite_from_attack_objects():
    suite = build_suite({"FGSM": FGSM(), "20-PGD": build_attack("pgd", steps=20),
                         "PGD-fast": PGD(steps=3, alpha=0.01), "GN": GaussianNoise(std=0.05)})
    assert [e.label for e in suite] == ["FGSM", "20-PGD", "PGD-fast", "GN"]
    assert suite[1].attack.steps == 20 and suite[2].attack.steps == 3 and suite[2].attack.alpha == 0.01
    assert suite[3].attack.std == 0.05 and not suite[3].attack.uses_gradient
    # an eps override applies to every attack; alpha scales with it (pgd default 2/255 at 8/255)
    over = build_suite([FGSM(), PGD()], eps=4 / 255)
    assert [e.attack.eps for e in over] == pytest.approx([4 / 255, 4 / 255])
    assert over[1].attack.alpha == pytest.approx(1 / 255)
    # duplicate labels are made unique
    assert [e.label for e in build_suite([PGD(), PGD()])] == ["PGD", "PGD (2)"]
    assert parse_eps("8/255") == pytest.approx(8 / 255) and parse_eps(0.1) == 0.1


def test_suite_records_and_budget_changes():
    """Every entry's spec is the attack's JSON record (the name without a step count); with_eps keeps the
    step/budget ratio, clips GN to the budget and leaves the original attack alone."""
    entry = build_suite({"20-PGD": PGD(steps=20)})[0]
    assert entry.spec["name"] == "pgd" and entry.spec["steps"] == 20 and entry.spec["eps"] == pytest.approx(8 / 255)
    json.dumps(entry.spec)
    pgd = PGD(eps=8 / 255, alpha=2 / 255)
    small = pgd.with_eps(2 / 255)
    assert small.eps == pytest.approx(2 / 255) and small.alpha == pytest.approx(0.5 / 255) and small.steps == 10
    assert pgd.eps == pytest.approx(8 / 255) and pgd.alpha == pytest.approx(2 / 255)
    gn = GaussianNoise(std=0.1).with_eps(4 / 255)
    assert gn.bounded and gn.eps == pytest.approx(4 / 255) and gn.std == 0.1
    assert PGD(eps=0.0).with_eps(0.1).alpha == pytest.approx(2 / 255)  # no ratio from a zero budget
    with pytest.raises(ValueError, match="eps"):
        pgd.with_eps(-1.0)
    # the preset arguments a bundle config uses: budget, step count, value range, a selection of labels
    chosen = preset("unet-paper", eps=4 / 255, steps=3, value_range=None, only=["PGD", "GN"])
    assert list(chosen) == ["PGD", "GN"]
    assert chosen["PGD"].steps == 3 and chosen["PGD"].eps == pytest.approx(4 / 255) and chosen["PGD"].value_range is None
    assert chosen["GN"].value_range is None
    with pytest.raises(ValueError, match="no attack labelled"):
        preset("dpaat-table", only=["30-PGD"])
    with pytest.raises(ValueError, match="step counts"):
        preset("dpaat-table", steps=3)


def test_bundle_config_forms_of_a_suite():
    """The two forms a bundle writes: ``_target_`` attack objects under labels, and a preset expression."""
    import monai_dpaat.evaluation
    from monai.bundle import ConfigParser

    parser = ConfigParser(globals={"monai_dpaat": monai_dpaat}, config={
        "robustness_eps": "$4/255",
        "validation": {"_target_": "monai_dpaat.handlers.robustness.RobustnessValidationHandler",
                       "attacks": {"10-PGD": {"_target_": "monai_dpaat.attacks.PGD", "eps": "$8/255", "steps": 10,
                                              "value_range": [0.0, 1.0]}}},
        "evaluator": {"_target_": "monai_dpaat.evaluation.RobustnessEvaluator",
                      "attacks": "$monai_dpaat.evaluation.preset('unet-paper', eps=@robustness_eps, value_range=None, "
                                 "steps=2, only=['FGSM', 'PGD'])"},
        "by_name": {"_target_": "monai_dpaat.evaluation.RobustnessEvaluator", "attacks": "dpaat-table",
                    "eps": "@robustness_eps"},
    })
    handler = parser.get_parsed_content("validation")
    (entry,) = build_suite(handler.evaluator.attacks)
    assert entry.label == "10-PGD" and entry.attack.steps == 10 and entry.attack.value_range == (0.0, 1.0)
    suite = build_suite(parser.get_parsed_content("evaluator").attacks)
    assert [e.label for e in suite] == ["FGSM", "PGD"] and suite[1].attack.steps == 2
    assert all(e.attack.eps == pytest.approx(4 / 255) and e.attack.value_range is None for e in suite)
    by_name = parser.get_parsed_content("by_name")
    assert all(e.attack.eps == pytest.approx(4 / 255) for e in build_suite(by_name.attacks, eps=by_name.eps))


@pytest.mark.parametrize("bad, message", [
    ("nope", "unknown preset 'nope'"),
    ("fgsm,unet-paperx", "unet-paperx"),
    ("20-pgd", r"(?s)unknown preset '20-pgd'.*\{label: Attack\}"),  # attack names are no suite any more
    ([{"steps": 3}], "must be an Attack"),
    ([{"name": "pgd", "bogus": 1}], r"(?s)must be an Attack.*'pgd'"),  # spec dicts are refused
    ({"PGD": {"name": "pgd"}}, r"attacks\['PGD'\] must be an Attack"),
    (PGD(), "a preset name"),
    ([], "empty"),
    ("", "unknown preset ''"),
])
def test_bad_suites_raise_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        RobustnessEvaluator(bad)


# ---------------------------------------------------------------------------------------------- worst case by hand
class _SwapFeatures(Attack):
    """Test attack: swaps the two pixels of the chosen samples (flipping a 'logits = pixels' classifier)."""

    def __init__(self, fooled):
        super().__init__(eps=1.0, value_range=None)
        self.fooled = list(fooled)

    def perturb(self, network, x, y, eps, alpha, lo, hi):
        adv = x.clone()
        adv[self.fooled] = x[self.fooled].flip(-1)
        return adv


def test_worst_case_counts_a_sample_fooled_by_any_attack():
    images = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]]).reshape(4, 1, 1, 2)
    labels = torch.tensor([0, 0, 1, 1])
    network = nn.Flatten()  # logits = the two pixels
    loader = [{"image": images, "label": labels}]
    suite = {"A": _SwapFeatures([0]), "B": _SwapFeatures([2]), "C": _SwapFeatures([0, 2])}
    result = RobustnessEvaluator(suite, progress=False, seed=None)(network, loader)
    acc = {row: values["accuracy"] for row, values in result.rows.items()}
    assert acc == pytest.approx({ORIGINAL: 1.0, "A": 0.75, "B": 0.75, "C": 0.5, WORST_CASE: 0.5})
    assert result.confusion["A"] == [[1, 1], [0, 2]]
    assert result.confusion[WORST_CASE] == [[1, 1], [1, 1]]
    # the perturbation actually used: swapping (0.9, 0.1) moves each pixel by 0.8 (L-inf 0.8, L2 0.8 * sqrt 2)
    assert result.rows["A"]["linf"] == pytest.approx(0.8 / 4)
    assert result.rows["A"]["l2"] == pytest.approx(0.8 * 2 ** 0.5 / 4)
    assert result.rows[ORIGINAL]["linf"] == 0.0
    # fooled samples pick a fooling attack; the two others the lowest true-class score (ties: first row)
    assert sum(result.meta["worst_case_choice"].values()) == 4


def test_seeded_runs_are_reproducible_and_leave_the_global_rng_alone():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    data = [{"image": torch.rand(4, 3, 8, 8), "label": torch.tensor([0, 1, 0, 1])}]
    evaluator = RobustnessEvaluator([PGD(), GaussianNoise()], progress=False, seed=3)
    torch.manual_seed(123)
    first = evaluator(network, data)
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(1))  # the run forked the RNG
    second = evaluator(network, data)
    assert first.rows == second.rows  # random start and noise repeat exactly
    other = RobustnessEvaluator([GaussianNoise()], progress=False, seed=4)(network, data)
    assert other.rows["GN"]["l2"] != first.rows["GN"]["l2"]


# ---------------------------------------------------------------------------------------------- sliding window
def test_attacks_run_through_the_sliding_window():
    torch.manual_seed(0)
    unet = UNet(2, 3, 1, channels=(4, 8), strides=(2,), num_res_units=0)
    model = InfererNetwork(unet, roi_size=32, sw_batch_size=4, overlap=0.25)
    x = torch.rand(1, 3, 48, 56, requires_grad=True)
    out = model(x)
    assert out.shape == (1, 1, 48, 56)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.abs().sum() > 0  # differentiable end to end
    with pytest.raises(ValueError, match="roi_size"):
        InfererNetwork(unet)


# ---------------------------------------------------------------------------------------------- real data
def _ham_loader(data_dir, image_size=32, per_class=6):
    from monai_dpaat.data import ham10000_datalists, ham10000_transforms

    lists = ham10000_datalists(data_dir / "ham10000", classes=("mel", "nv"), n_train=20, n_test=per_class,
                               val_fraction=None)
    return DataLoader(Dataset(lists["test"], ham10000_transforms(image_size)), batch_size=8), lists


def _check_report_files(out, metrics):
    files = {p.name for p in out.iterdir()}
    assert {"report.md", "report.json"} <= files
    assert not [f for f in files if f.endswith(".tmp")]
    report = json.loads((out / "report.json").read_text())
    for m in metrics:
        with open(out / f"table_{m}.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0][0] == "attack" and rows[1][0] == ORIGINAL and rows[-1][0] == WORST_CASE
        assert m in report["tables"]
    pngs = [f for f in files if f.endswith(".png")]
    assert pngs
    for name in pngs:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    md = (out / "report.md").read_text()
    assert "| Attack |" in md and WORST_CASE in md
    return report


@pytest.mark.slow
def test_classification_on_real_ham10000(data_dir, tmp_path):
    torch.manual_seed(0)
    from monai_dpaat.networks import build_classifier

    loader, _ = _ham_loader(data_dir)
    network = build_classifier("small_cnn", num_classes=2, in_channels=3)
    evaluator = RobustnessEvaluator("dpaat-table", eps=8 / 255, class_names=["mel", "nv"], progress=False)
    result = evaluator(network, loader)
    n = result.num_samples
    assert n >= 8
    # the clean row agrees with a plain forward pass
    network.eval()
    correct = 0
    with torch.no_grad():
        for batch in loader:
            correct += int((network(batch["image"]).argmax(1) == batch["label"]).sum())
    assert result.rows[ORIGINAL]["accuracy"] == pytest.approx(correct / n)
    attacks = [r for r in result.rows if r not in (ORIGINAL, WORST_CASE)]
    assert attacks == ["FGSM", "10-IFGSM", "20-IFGSM", "20-PGD", "50-PGD"]
    worst = result.rows[WORST_CASE]["accuracy"]
    for row in attacks:
        values = result.rows[row]
        assert worst <= values["accuracy"] + 1e-12
        assert 0 < values["linf"] <= 8 / 255 + 1e-6  # the perturbation really used, inside the budget
        assert 0 <= values["map"] <= 1 and 0 <= values["f1"] <= 1
        assert sum(map(sum, result.confusion[row])) == n
    assert worst <= result.rows[ORIGINAL]["accuracy"]
    write_report({"small_cnn": result}, tmp_path, flags=["example flag"])
    report = _check_report_files(tmp_path, ("accuracy", "precision", "recall", "f1", "map", "linf", "l2"))
    assert report["tables"]["accuracy"]["columns"] == ["small_cnn"]
    assert "example flag" in report["flags"]
    assert (tmp_path / "confusion_small_cnn.png").is_file()


@pytest.mark.slow
def test_segmentation_on_real_he_tiles(data_dir, tmp_path):
    from monai_dpaat.data import nuinsseg_datalist, nuinsseg_eval_transforms

    torch.manual_seed(0)
    items = nuinsseg_datalist(data_dir / "nuclei_he")[:3]
    transforms = Compose([nuinsseg_eval_transforms(track_meta=False),
                          CenterSpatialCropd(keys=("image", "label"), roi_size=(96, 96))])
    loader = DataLoader(Dataset(items, transforms), batch_size=3)
    unet = UNet(2, 3, 1, channels=(4, 8), strides=(2,), num_res_units=0)
    # a few steps of training so the Dice is not trivially 0
    batch = next(iter(loader))
    opt = torch.optim.Adam(unet.parameters(), lr=0.02)
    for _ in range(15):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(unet(batch["image"]), batch["label"]).backward()
        opt.step()
    evaluator = RobustnessEvaluator("unet-paper", task="segmentation", inferer=SlidingWindowInferer(64, overlap=0.25),
                                    progress=False)
    result = evaluator(unet, loader)
    assert result.num_samples == 3
    assert list(result.rows) == [ORIGINAL, "FGSM", "PGD", "MI-FGSM", "TI-FGSM", "DI-FGSM", "SI-DI-FGSM", "NI-FGSM",
                                 "GN", WORST_CASE]
    clean = result.rows[ORIGINAL]
    assert 0 < clean["dice"] <= 1 and 0 < clean["iou"] <= clean["dice"] and 0 < clean["pixel_accuracy"] <= 1
    assert clean["hd95"] >= 0
    # the worst case pools the clean input and the bounded attacks; unbounded GN (std 0.1) keeps its own row
    assert result.meta["worst_case_pool"] == [ORIGINAL, "FGSM", "PGD", "MI-FGSM", "TI-FGSM", "DI-FGSM", "SI-DI-FGSM",
                                              "NI-FGSM"]
    assert list(result.meta["worst_case_excluded"]) == ["GN"]
    for row in result.meta["worst_case_pool"]:
        assert result.rows[WORST_CASE]["dice"] <= result.rows[row]["dice"] + 1e-12
    assert result.rows["PGD"]["loss"] > clean["loss"]  # the attack goes through the sliding window
    assert result.rows["PGD"]["linf"] <= 8 / 255 + 1e-6
    write_report({"UNet": result}, tmp_path)
    report = _check_report_files(tmp_path, ("dice", "iou", "pixel_accuracy", "loss", "hd95"))
    assert report["task"] == "segmentation"
    assert report["models"]["UNet"]["rows"][WORST_CASE]["dice"] == pytest.approx(result.rows[WORST_CASE]["dice"])


# ---------------------------------------------------------------------------------------------- handler
def _toy_data(n=8):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 16, 16, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0.5).long()
    return [{"image": x[i], "label": y[i]} for i in range(n)]


def test_handler_publishes_robust_metrics_every_interval(tmp_path):
    from ignite.engine import Events
    from monai.engines import SupervisedEvaluator, SupervisedTrainer
    from monai.handlers import TensorBoardStatsHandler, ValidationHandler

    torch.manual_seed(0)
    from monai_dpaat.networks import build_classifier

    net = build_classifier("small_cnn", num_classes=2, in_channels=3, width=4)
    loader = DataLoader(_toy_data(), batch_size=4)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=net)
    seen = {}
    RobustnessValidationHandler(attacks=preset("dpaat-table", only=["FGSM", "10-IFGSM"]),
                                interval=2).attach(evaluator)  # reuses the evaluator's data
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.update({e.state.epoch: dict(e.state.metrics)}))
    trainer_handler = RobustnessValidationHandler(attacks={"FGSM": FGSM()}, data_loader=loader, interval=1, max_samples=4)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=2, train_data_loader=loader, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01), loss_function=nn.CrossEntropyLoss(),
        train_handlers=[ValidationHandler(validator=evaluator, interval=1, epoch_level=True), trainer_handler,
                        TensorBoardStatsHandler(log_dir=str(tmp_path), iteration_log=False,
                                                output_transform=lambda x: None)])
    trainer.run()
    assert not any(k.startswith("robust_") for k in seen[1])  # interval 2: nothing at epoch 1
    keys = {metric_key("robust_", r, "accuracy") for r in (ORIGINAL, "FGSM", "10-IFGSM", WORST_CASE)}
    assert keys == {"robust_clean_accuracy", "robust_fgsm_accuracy", "robust_10_ifgsm_accuracy",
                    "robust_worst_case_accuracy"}
    assert keys <= set(seen[2])
    assert seen[2]["robust_worst_case_accuracy"] <= seen[2]["robust_fgsm_accuracy"]
    assert {"robust_clean_accuracy", "robust_fgsm_accuracy"} <= set(trainer.state.metrics)
    assert trainer_handler.last_result.num_samples == 4
    # TensorBoardStatsHandler logged the robust curves with the trainer's metrics
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert {"robust_clean_accuracy", "robust_worst_case_accuracy"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("robust_fgsm_accuracy")] == [1, 2]
