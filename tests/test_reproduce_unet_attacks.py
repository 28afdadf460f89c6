"""``reproduce unet-attacks`` (Koishiyeva et al. 2025): the transcribed published tables, the input checks, and the
``smoke`` run end to end on the real sample tiles (slow: both models trained and attacked by the bundle)."""

from __future__ import annotations

import json
import math
import re

import pytest

from monai_dpaat.reproduce import published_unet as published
from monai_dpaat.reproduce import unet_attacks

TABLES = ("clean", "dice", "iou", "loss")


def test_published_tables_shapes():
    assert published.MODELS == ("UNet", "Att-UNet++")
    assert len(published.ATTACKS) == 8
    for model in published.MODELS:
        assert list(published.CLEAN[model]) == list(published.CLEAN_METRICS)
        for metric, table in published.ATTACK_TABLES.items():
            assert list(table[model]) == ["Original", *published.ATTACKS], (model, metric)
            values = [v for v in table[model].values() if v is not None]
            assert all(v > 0 for v in values)
            if metric != "loss":
                assert all(v <= 1 for v in values)
        # the inference that table 2 is Dice and table 3 IoU: mean IoU never exceeds mean Dice
        iou, dice = published.ATTACK_IOU[model], published.ATTACK_DICE[model]
        assert all(iou[row] <= dice[row] for row in iou)
        assert published.CLEAN[model]["Mean IoU"] <= published.CLEAN[model]["Dice"]


def test_attack_labels_match_the_preset():
    from monai_dpaat.evaluation import preset

    assert tuple(preset("unet-paper")) == published.ATTACKS


def test_gn_std_matching_interpolates():
    stds, drops = [0.1, 0.2, 0.4], [0.1, 0.3, 0.5]
    assert unet_attacks.gn_std_matching(stds, drops, 0.4) == pytest.approx(0.3)
    assert unet_attacks.gn_std_matching(stds, drops, 0.3) == pytest.approx(0.2)
    assert unet_attacks.gn_std_matching(stds, drops, 0.9) is None


@pytest.mark.parametrize("kwargs, match", [
    ({"scale": "huge"}, "scale"),
    ({"seeds": 0}, "seeds"),
    ({"seeds": 1.5}, "seeds"),
    ({"gn_std": -0.1}, "gn_std"),
    ({"data": "/nonexistent/nuinsseg"}, "/nonexistent/nuinsseg"),
])
def test_bad_input_is_refused_before_training(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        unet_attacks.run(**{"output_dir": tmp_path, **kwargs})
    assert not list(tmp_path.iterdir())


def test_data_folder_not_in_the_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="NuInsSeg layout"):
        unet_attacks.run(output_dir=tmp_path / "out", data=tmp_path / "empty")


def _in_unit(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 1.0


@pytest.mark.slow
def test_smoke_run_writes_the_tables(tmp_path, data_dir):
    result = unet_attacks.run("smoke", tmp_path, data=data_dir)
    json_path, md_path = tmp_path / "unet_attacks_smoke.json", tmp_path / "unet_attacks_smoke.md"
    assert result["files"] == [str(json_path), str(md_path)]
    payload = json.loads(json_path.read_text())
    markdown = md_path.read_text()

    assert set(TABLES) <= set(payload["tables"])
    for model in published.MODELS:
        for metric in published.CLEAN_METRICS:
            cell = payload["tables"]["clean"][metric][model]
            assert cell["published"] == published.CLEAN[model][metric]
            assert _in_unit(cell["mean"]) and cell["n"] == 1
            assert cell["difference"] == pytest.approx(cell["mean"] - cell["published"])
        for metric in ("dice", "iou", "loss"):
            rows = payload["tables"][metric]
            assert list(rows) == ["Original", *published.ATTACKS]
            for row, cells in rows.items():
                assert cells[model]["published"] == published.ATTACK_TABLES[metric][model][row]
                value = cells[model]["mean"]
                assert _in_unit(value) if metric != "loss" else (math.isfinite(value) and value >= 0)
        # the clean rows of the attack tables are the same run's clean metrics
        assert payload["tables"]["dice"]["Original"][model]["mean"] == payload["tables"]["clean"]["Dice"][model]["mean"]

    tests = payload["paired_tests"]
    assert list(tests) == ["clean (table 1)", *published.ATTACKS]
    for entry in tests.values():
        assert entry["n"] == 1 and entry["p"] is None and "untested (one seed)" in entry["claim"]

    gn = payload["gn_sweep"]
    for model in published.MODELS:
        assert [float(s) for s in gn[model]["dice"]] == sorted(unet_attacks.GN_SWEEP)
        assert all(_in_unit(v["mean"]) for v in gn[model]["dice"].values())
        assert 0 < gn[model]["paper_relative_drop"] < 1
        assert "matching_std" in gn[model]
    assert payload["reductions"] and all(r in markdown for r in payload["reductions"])
    for key in ("command", "commit", "machine", "torch", "monai"):
        assert key in payload["provenance"]
    for heading in ("Table 1", "Table 2", "Table 3", "Table 4", "paired t-test", "Gaussian-noise budget",
                    "Reductions", "Provenance"):
        assert heading in markdown
    assert "UNet paper" in markdown and "Att-UNet++ diff" in markdown
    assert f"{published.ATTACK_DICE['Att-UNet++']['GN']:.4f}" in markdown


def test_claims_of_the_committed_quick_results(tmp_path):
    """The committed quick results (docs/results) re-rendered: one claim row per paired test, per model for PGD vs
    FGSM and for the GN drop, each outcome derived from the numbers."""
    import shutil
    from pathlib import Path

    from monai_dpaat.reproduce.stats import claim_outcome

    committed = Path(__file__).resolve().parents[1] / "docs" / "results" / "unet_attacks_quick.json"
    shutil.copy(committed, tmp_path / "unet_attacks_quick.json")
    payload = unet_attacks.render(tmp_path / "unet_attacks_quick.json")
    claims = payload["claims"]
    tests = payload["paired_tests"]
    assert len(claims) == len(tests) + 1 + 2 * len(published.MODELS)
    for c, t in zip(claims, tests.values()):
        assert c["outcome"] == claim_outcome(t, 1 if t["paper_difference"] > 0 else -1)
        assert f"{t['mean_difference']:+.4f}" in c["measured"]
    assert re.fullmatch(r"held on \d+ of 16 \(model, attack\) pairs", claims[len(tests)]["outcome"])
    markdown = (tmp_path / "unet_attacks_quick.md").read_text()
    assert "re-rendered by commit" in markdown and markdown.index("## Claims") < markdown.index("## Table 1")
    with pytest.raises(ValueError, match="not 'Li et al"):
        from monai_dpaat.reproduce import dpaat

        dpaat.render(tmp_path / "unet_attacks_quick.json")
    with pytest.raises(ValueError, match="does not exist"):
        unet_attacks.render(tmp_path / "missing.json")
