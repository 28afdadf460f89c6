"""``monai_dpaat.reproduce.dpaat``: the DPAAT paper's tables regenerated (smoke scale on the real sample data), the
published numbers as transcribed, and bad input refused before any training."""

from __future__ import annotations

import json
import math
import re

import pytest

from monai_dpaat.reproduce import dpaat
from monai_dpaat.reproduce import published_dpaat as published


def test_published_numbers_have_the_papers_shape():
    for table, columns in ((published.TABLE_I, published.TABLE_I_COLUMNS),
                           (published.TABLE_II, published.TABLE_II_COLUMNS)):
        assert list(table) == list(published.GROUPS)
        for rows in table.values():
            assert list(rows) == list(published.METHODS)
            for row in rows.values():
                assert list(row) == list(columns)
                assert all(v is None or 0.0 <= v <= 1.0 for v in row.values())
    assert all(v is None for v in published.TABLE_II["all six"]["STD"].values())  # no STD rows in Table II
    assert published.TABLE_I["all six"]["DPAAT"]["GAcc"] == pytest.approx(0.7071)
    assert published.TABLE_I["widely used"]["STD"]["GAcc"] == pytest.approx(0.7581)  # the text's 75.81 %
    assert published.TABLE_II["lightweight"]["DPAAT"]["mAP"] == pytest.approx(0.85)
    groups = published.GROUPS
    assert set(groups["all six"]) == set(groups["widely used"]) | set(groups["lightweight"])
    assert set(published.TABLE_I_PER_CNN) == set(published.GROUPS["all six"])
    assert list(published.ABLATION) == list(published.ABLATION_CNNS)


def test_group_networks_are_buildable_classifiers():
    from monai_dpaat.networks import CLASSIFIER_NAMES

    assert set(published.GROUPS["all six"]) <= set(CLASSIFIER_NAMES)
    assert tuple(dpaat.SETTINGS["quick"]["networks"]) == published.GROUPS["all six"]  # all six, unchanged


@pytest.mark.parametrize("kwargs, match", [
    ({"scale": "huge"}, "scale"),
    ({"data": "/nonexistent/ham"}, "does not exist"),
    ({"seeds": 0}, "seeds"),
    ({"seeds": []}, "seeds"),
])
def test_bad_input_is_refused_before_training(tmp_path, kwargs, match):
    args = {"scale": "smoke", "output_dir": tmp_path / "out", **kwargs}
    with pytest.raises(ValueError, match=match):
        dpaat.run(**args)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _numbers(cell):
    vals = [cell["mean"], *cell["values"]] + ([] if cell["std"] is None else [cell["std"]])
    return vals


@pytest.mark.slow
def test_smoke_reproduction_writes_every_table(tmp_path, data_dir):
    payload = dpaat.run("smoke", tmp_path, data=data_dir, argv=["reproduce", "dpaat", "--scale", "smoke"])
    on_disk = json.loads((tmp_path / "dpaat_smoke.json").read_text())
    markdown = (tmp_path / "dpaat_smoke.md").read_text()
    assert on_disk["scale"] == "smoke" and on_disk["reductions"] == payload["reductions"]
    assert on_disk["reductions"] and all(isinstance(r, str) for r in on_disk["reductions"])
    assert on_disk["provenance"]["command"] == "python -m monai_dpaat reproduce dpaat --scale smoke"
    assert "commit" in on_disk["provenance"] and on_disk["provenance"]["commit"]
    networks = on_disk["settings"]["networks"]

    # Table I and II: each group the smoke CNNs cover, every method, every column with the paper's number beside it
    for key, columns in (("table_1", published.TABLE_I_COLUMNS), ("table_2", published.TABLE_II_COLUMNS)):
        groups = on_disk[key]["groups"]
        assert set(groups) == {"widely used", "lightweight", "all six"}
        for group, g in groups.items():
            assert list(g["rows"]) == list(published.METHODS)
            for method, cells in g["rows"].items():
                for column in columns:
                    cell = cells[column]
                    pub = (published.TABLE_I if key == "table_1" else published.TABLE_II)[group][method][column]
                    assert cell["published"] == pub
                    assert all(0.0 <= v <= 1.0 for v in _numbers(cell)), (key, group, method, column, cell)
                    if pub is not None:
                        assert cell["difference"] == pytest.approx(cell["mean"] - pub)
        assert set(on_disk[key]["per_cnn"]) == set(networks)
    # the group "all six" is the mean over the CNNs that ran of the per-CNN values (one seed)
    per = on_disk["table_1"]["per_cnn"]
    mean = sum(per[n]["DPAAT"]["GAcc"]["mean"] for n in networks) / len(networks)
    assert on_disk["table_1"]["groups"]["all six"]["rows"]["DPAAT"]["GAcc"]["mean"] == pytest.approx(mean)

    # paired tests: one seed gives no p-value, and the verdict says so
    for key in ("worst-case RAcc", "GAcc"):
        test = on_disk["paired_tests"][key]
        assert test["n"] == 1 and test["p"] is None and test["held"] is None
        assert "not testable" in test["verdict"] and math.isfinite(test["mean_difference"])

    # ablation rows, confusion matrices, Grad-CAM energy (Otsu proxy on the sample data: it has no expert masks)
    for net in on_disk["settings"]["ablation_networks"]:
        assert list(on_disk["ablation"]["rows"][net]) == ["AT", "D-A", "D-B", "D-(A+B)"]
    n_test = on_disk["runs"][0]["num_test"]
    for net in networks:
        for method in published.METHODS:
            for kind in ("clean", "worst case"):
                matrix = on_disk["confusion"][net][method][kind]
                assert len(matrix) == len(on_disk["classes"]) and sum(map(sum, matrix)) == n_test
    # every run reports its method's settings as built by the bundle (the options the paper leaves open)
    classes = {r["method"]: r["method_settings"].get("class") for r in on_disk["runs"]}
    assert classes["dpaat"] == "DPAATIteration" and classes["at"] == "ATIteration"
    assert on_disk["runs"][0]["method_settings"] is not None
    gradcam = on_disk["gradcam"]
    assert "Otsu proxy" in gradcam["mask_source"]
    for net in networks:
        energies = gradcam["energy_in_lesion"][net]
        # None where every map was all zero (a tiny random-init network at 32 px)
        assert set(energies) == {"STD", "AT", "DPAAT"} and all(e is None or 0.0 <= e <= 1.0 for e in energies.values())
    assert 0.0 < gradcam["lesion_area"] < 1.0
    # at 32 px the maps come from a block with at least a 4x4 map (the last convolutions are 1x1 / 2x2)
    for net in networks:
        sides = re.fullmatch(r"\S+ \((\d+)x(\d+)\)", gradcam["layers"][net]).groups()
        assert min(map(int, sides)) >= 4, gradcam["layers"]

    for heading in ("Table I", "Table II", "Ablation", "Confusion matrices", "Grad-CAM", "paired tests",
                    "Reductions", "Commit"):
        assert heading in markdown
    assert " paper |" in markdown and "not testable" in markdown.lower()
    for reduction in on_disk["reductions"]:
        assert reduction in markdown

    # every claim of the paper has a row: the two robustness readings, GAcc, Grad-CAM, the 5 ablation statements;
    # one seed: the paired tests are untested, the counts cover the CNNs that ran
    outcomes = [c["outcome"] for c in on_disk["claims"]]
    assert len(outcomes) == 3 + 1 + len(published.ABLATION_CLAIMS)
    assert outcomes[:3] == ["untested"] * 3
    assert re.fullmatch(r"held on \d of [0-2] CNNs \(DPAAT above both\)", outcomes[3]), outcomes[3]
    assert all(re.fullmatch(r"held on [01] of 1 CNNs", o) for o in outcomes[4:]), outcomes
    assert "## Claims" in markdown and markdown.index("## Claims") < markdown.index("## Table I")
    for c in on_disk["claims"]:
        assert c["paper"] in markdown and c["measured"] in markdown

    # --render rewrites the report from the JSON alone: same claims and tables, marked as re-rendered
    (tmp_path / "dpaat_smoke.md").unlink()
    rendered = dpaat.render(tmp_path / "dpaat_smoke.json")
    again = (tmp_path / "dpaat_smoke.md").read_text()
    assert rendered["claims"] == on_disk["claims"] and "re-rendered by commit" in again
    kept = [line for line in again.splitlines() if "re-rendered by commit" not in line]
    assert "\n".join(kept) + "\n" == markdown  # all but the re-rendered line


def test_ablation_highest_is_strict():
    """'D-B had the highest GAcc' does not hold on a tie (a network stuck at chance gives every variant 0.5)."""
    def run(method, gacc, racc, seed):
        rows = {c: {"accuracy": racc} for c in dpaat.ATTACK_COLUMNS}
        rows["Original"], rows[dpaat.WORST] = {"accuracy": gacc}, {"accuracy": racc}
        return {"network": "mobilenet_v2", "method": method, "seed": seed, "rows": rows}

    tied = [run(m, 0.5, 0.5, s) for m in dpaat.ABLATION_METHODS for s in (0, 1)]
    claims = dpaat._ablation(tied, ["mobilenet_v2"])["claims"]["mobilenet_v2"]
    assert not claims["D-B GAcc highest"]["held_on_means"] and not claims["D-(A+B) RAcc highest"]["held_on_means"]
    ahead = [run(m, 0.6 if m == "d-b" else 0.5, 0.4 if m == "dpaat" else 0.3, s)
             for m in dpaat.ABLATION_METHODS for s in (0, 1)]
    claims = dpaat._ablation(ahead, ["mobilenet_v2"])["claims"]["mobilenet_v2"]
    assert claims["D-B GAcc highest"]["held_on_means"] and claims["D-(A+B) RAcc highest"]["held_on_means"]
