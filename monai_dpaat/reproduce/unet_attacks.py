"""Reproduce Koishiyeva et al. 2025: UNet vs Residual-Attention UNet++ on NuInsSeg-layout H&E tiles, clean and under
the eight attacks of the ``unet-paper`` preset (``python -m monai_dpaat reproduce unet-attacks --scale quick``).

Each model is trained and evaluated by the bundle ``bundles/nuinsseg_adversarial_segmentation`` itself, run in this
process as ``python -m monai.bundle run`` runs it (:func:`monai_dpaat.utils.run_bundle`): ``train.json`` with the
scale's overrides (standard training, ``DiceCELoss``, best-validation-Dice checkpoint), then ``robustness.json``
(clean and attacked Dice / IoU / pixel accuracy / loss on the held-out test tiles, by sliding window). Per seed the
split, the initialisation and the attacks' randomness change. Then:

- the paper's tables (:mod:`~monai_dpaat.reproduce.published_unet`) with ours as mean ± std over seeds, the published
  number and the difference;
- per comparison (clean Dice, each attack's Dice) a paired t-test UNet vs Att-UNet++ over seeds and whether the
  paper's ordering held;
- a sweep of the Gaussian-noise std (Dice under GN vs std) and the std at which our relative Dice drop matches the
  paper's GN drop (the paper gives no GN setting).

>>> result = run("smoke", "docs/results")    # doctest: +SKIP
>>> result["files"]                          # doctest: +SKIP
['docs/results/unet_attacks_smoke.json', 'docs/results/unet_attacks_smoke.md']
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monai_dpaat.data import nuinsseg_datalist
from monai_dpaat.evaluation import RobustnessEvaluator, load_report, preset, unet_paper
from monai_dpaat.utils import run_bundle

from . import check_scale
from . import published_unet as published
from .results import (claim, claims_section, comparison_table, markdown_table, provenance, render_results,
                      write_results)
from .stats import SIGNIFICANCE, claim_outcome, compare, format_p, paired_test, summarize

__all__ = ["run", "SETTINGS", "NETWORKS", "GN_SWEEP", "DEFAULT_GN_STD", "resolve_data", "gn_std_matching"]

PAPER = ("Koishiyeva, Kang, Iliev, Bissembayev, Mukasheva 2025, \"Resilience of UNet-Based Models Under "
         "Adversarial Conditions in Medical Image Segmentation\", Eng. Proc. 104, 3")
BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "nuinsseg_adversarial_segmentation"
#: the paper's model names -> the bundle's ``network_name``
NETWORKS = {"UNet": "unet", "Att-UNet++": "attention_unet_pp"}
#: the GN std of the ``unet-paper`` preset (torchattacks' default)
DEFAULT_GN_STD = 0.1
#: the GN stds of the sweep
GN_SWEEP = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)

_COMMON = {"method": "std", "num_workers": 0}
#: keys of ``robustness.json`` (not in ``train.json``, so only for the robustness run)
_ROBUSTNESS = {"robustness_hd95": False, "robustness_split": "test"}
#: per scale: seeds, bundle overrides (train and robustness runs), attack steps, what was reduced
SETTINGS: dict[str, dict[str, Any]] = {
    "smoke": {
        "seeds": 1,
        "overrides": {"max_tiles": 5, "features": [8, 16, 32], "patch_size": [64, 64], "num_samples": 2,
                      "batch_size": 2, "eval_crop": [64, 64], "sw_batch_size": 16, "lr": 0.003, "max_epochs": 2},
        "robustness_steps": 2,
        "reductions": [
            "5 of the sample tiles (3 train / 1 validation / 1 test), the 64x64 centre of each evaluation tile",
            "tiny networks (features 8-16-32), 64x64 training patches, 2 epochs (the models are barely trained)",
            "2 steps for the iterative attacks (paper: not stated; preset default 10)",
        ],
    },
    "quick": {
        "seeds": 3,
        "overrides": {"features": [16, 32, 64, 128], "patch_size": [128, 128], "num_samples": 2, "batch_size": 2,
                      "eval_crop": [192, 192], "sw_batch_size": 4, "lr": 0.003, "max_epochs": 30,
                      "early_stop_patience": 10},
        "robustness_steps": 10,
        "reductions": [
            "the 15 sample tiles (TCGA, MICCAI 2015; 10 train / 2 validation / 3 test per seed), not NuInsSeg's 665",
            "the 192x192 centre of each validation and test tile (4 sliding windows: the attacks' cost)",
            "smaller networks (features 16-32-64-128 instead of 32-64-128-256), 128x128 training patches "
            "(2 per tile, 2 tiles per batch)",
            "30 epochs at most (early stopping on validation Dice, patience 10), instead of 100",
        ],
    },
    "paper": {
        "seeds": 3,
        "overrides": {"max_epochs": 100},
        "robustness_steps": 10,
        "reductions": [
            "the paper states no training or attack settings: the bundle's defaults are used (features 32-64-128-256, "
            "256x256 patches, 100 epochs, Adam 1e-3, DiceCELoss, eps 8/255, 10 steps); give --data the full NuInsSeg",
        ],
    },
}
#: the first seed (seed i of a run is _SEED0 + i)
_SEED0 = 0


# ---------------------------------------------------------------------------------------------- inputs
def resolve_data(data: str | os.PathLike | None) -> Path:
    """The NuInsSeg-layout folder: ``data`` itself, or its ``nuclei_he`` subfolder (``data`` = the sample data
    folder); ``None``: ``$MONAI_DPAAT_DATA`` or ``../shared/data`` beside the checkout, then ``nuclei_he``.
    Raises ``ValueError`` naming the folder when it is missing or holds no tiles."""
    from monai_dpaat.utils import default_data_dir

    root = Path(default_data_dir() if data is None else data).expanduser()
    if not root.is_dir():
        raise ValueError(f"data folder {str(root)!r} does not exist (give --data a NuInsSeg-layout folder)")
    if (root / "nuclei_he").is_dir():
        root = root / "nuclei_he"
    try:
        nuinsseg_datalist(root, target="binary")
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"data folder {str(root)!r} is not in the NuInsSeg layout: {err}") from None
    return root


def _check_seeds(seeds: Any, scale: str) -> int:
    if seeds is None:
        return int(SETTINGS[scale]["seeds"])
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a whole number >= 1, got {seeds!r}")
    return seeds


def _check_std(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _gn_key() -> str:
    """The ``unet-paper`` preset's name for the GN std (``gn_std`` where it has one, else ``std``)."""
    return "gn_std" if "gn_std" in inspect.signature(unet_paper).parameters else "std"


# ---------------------------------------------------------------------------------------------- one model
def _robust_validation_off() -> dict[str, Any]:
    """Overrides that switch off the bundle's robust validation during training (monitoring, not in the paper):
    its ``RobustnessValidationHandler`` also runs on the final epoch unless told not to."""
    handlers = json.loads((BUNDLE / "configs" / "train.json").read_text())["validate"]["handlers"]
    index = [i for i, h in enumerate(handlers)
             if isinstance(h, dict) and str(h.get("_target_", "")).endswith("RobustnessValidationHandler")]
    if len(index) != 1:
        raise RuntimeError(f"{BUNDLE}/configs/train.json: expected one RobustnessValidationHandler in "
                           f"validate#handlers, found {len(index)}")
    return {"robust_val_interval": 1_000_000, f"validate#handlers#{index[0]}#final_epoch": False}


def _overrides(scale: str, root: Path, data: Path, network: str, seed: int) -> dict[str, Any]:
    return {**_COMMON, **_robust_validation_off(), **SETTINGS[scale]["overrides"], "bundle_root": str(root),
            "dataset_dir": str(data), "network_name": network, "seed": seed}


def _train_and_evaluate(scale: str, data: Path, network: str, seed: int, gn_std: float, gn_sweep: Sequence[float],
                        workdir: Path) -> dict[str, Any]:
    """Train ``network`` with the bundle, evaluate it under the eight attacks and the GN sweep.

    Returns ``{"rows": {row: {metric: value}}, "gn_sweep": {std: dice}, "num_test_tiles", "seconds"}``."""
    root = workdir / f"{network}_seed{seed}"
    root.mkdir(parents=True)
    overrides = _overrides(scale, root, data, network, seed)
    start = time.perf_counter()
    run_bundle([BUNDLE / "configs" / "train.json"], overrides)
    trained = time.perf_counter()
    robustness = {**overrides, **_ROBUSTNESS, "robustness_steps": SETTINGS[scale]["robustness_steps"],
                  f"robustness_attacks#{_gn_key()}": gn_std}
    with contextlib.redirect_stdout(io.StringIO()):  # the robustness run prints its whole report
        workflow = run_bundle([BUNDLE / "configs" / "train.json", BUNDLE / "configs" / "robustness.json"], robustness)
    result = next(iter(load_report(root / "eval" / "robustness").values()))
    sweep = _gn_sweep(workflow, seed, gn_sweep)
    return {"rows": result.rows, "gn_sweep": sweep, "num_test_tiles": result.num_samples,
            "train_seconds": round(trained - start, 1), "seconds": round(time.perf_counter() - start, 1)}


def _gn_sweep(workflow: Any, seed: int, stds: Sequence[float]) -> dict[float, float]:
    """Dice under GN alone at each std, on the robustness run's model, test tiles and inferer."""
    parser = workflow.parser
    network, loader = parser.get_parsed_content("network"), parser.get_parsed_content("robustness#dataloader")
    value_range = parser.get_parsed_content("attack_value_range")
    out = {}
    for std in stds:
        attacks = preset("unet-paper", only=["GN"], value_range=value_range, **{_gn_key(): float(std)})
        evaluator = RobustnessEvaluator(attacks, task="segmentation", inferer=parser.get_parsed_content(
            "validate#inferer"), hd95=False, seed=seed, progress=False)
        out[float(std)] = float(evaluator(network, loader).rows["GN"]["dice"])
    return out


# ---------------------------------------------------------------------------------------------- tables
def _values(runs: Mapping[str, list[dict]], model: str, row: str, metric: str) -> list[float]:
    return [float(r["rows"][row][metric]) for r in runs[model]]


def _clean_table(runs: Mapping[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """Table 1: ``{metric: {model: compare row}}``."""
    keys = {"Dice": "dice", "Mean IoU": "iou", "Accuracy": "pixel_accuracy"}
    return {name: {m: compare(_values(runs, m, "Original", key), published.CLEAN[m][name], f"{m} clean {name}")
                   for m in published.MODELS} for name, key in keys.items()}


def _attack_table(runs: Mapping[str, list[dict]], metric: str) -> dict[str, dict[str, Any]]:
    """Tables 2-4: ``{row: {model: compare row}}`` for ``metric`` (``dice``, ``iou``, ``loss``)."""
    table = published.ATTACK_TABLES[metric]
    return {row: {m: compare(_values(runs, m, row, metric), table[m][row], f"{m} {row} {metric}")
                  for m in published.MODELS} for row in ("Original", *published.ATTACKS)}


def _verdict(test: dict[str, Any], paper_diff: float) -> str:
    """Whether our UNet - Att-UNet++ difference agrees with the paper's sign, in words."""
    paper_says = "UNet scores higher" if paper_diff > 0 else "Att-UNet++ scores higher"
    direction = 1 if paper_diff > 0 else -1
    same = test["mean_difference"] * direction > 0
    outcome = claim_outcome(test, direction)
    if outcome == "untested":
        why = "one seed" if test["n"] < 2 else "no variance over seeds"
        return f"paper: {paper_says}; ours points the {'same' if same else 'other'} way, untested ({why})"
    if outcome in ("held", "contradicted"):
        return f"paper: {paper_says}; {outcome} (p = {test['p']:.3g} < {SIGNIFICANCE})"
    return f"paper: {paper_says}; not settled (ours points the {'same' if same else 'other'} way, p = " \
           f"{test['p']:.3g} >= {SIGNIFICANCE})"


def _paired_tests(runs: Mapping[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """UNet vs Att-UNet++ over seeds on clean Dice (table 1's claim) and each attack's Dice (table 2's)."""
    a, b = published.MODELS
    tests = {}
    for row in ("Original", *published.ATTACKS):
        source = published.CLEAN if row == "Original" else published.ATTACK_DICE
        paper_diff = source[a]["Dice" if row == "Original" else row] - source[b]["Dice" if row == "Original" else row]
        test = paired_test(_values(runs, a, row, "dice"), _values(runs, b, row, "dice"), f"Dice {row}: {a} vs {b}")
        label = "clean (table 1)" if row == "Original" else row
        tests[label] = {**test, "difference": f"{a} - {b}", "paper_difference": paper_diff,
                        "claim": _verdict(test, paper_diff)}
    return tests


def gn_std_matching(stds: Sequence[float], drops: Sequence[float], target: float) -> float | None:
    """The std at which the relative Dice drop reaches ``target``, linearly interpolated between the first two
    consecutive sweep points that bracket it (``None`` when no pair does: the sweep's range is too narrow)."""
    points = sorted(zip(stds, drops))
    for (s0, d0), (s1, d1) in zip(points, points[1:]):
        if min(d0, d1) <= target <= max(d0, d1):
            return s0 if d1 == d0 else s0 + (target - d0) * (s1 - s0) / (d1 - d0)
    return None


def _gn_analysis(runs: Mapping[str, list[dict]], stds: Sequence[float]) -> dict[str, Any]:
    """Per model: Dice under GN vs std (mean ± std over seeds), the relative drop ``1 - Dice_GN / Dice_clean``, the
    paper's drop (table 2: ``1 - GN / Original``) and the std at which ours matches it."""
    out: dict[str, Any] = {}
    for model in published.MODELS:
        clean = _values(runs, model, "Original", "dice")
        paper_drop = 1 - published.ATTACK_DICE[model]["GN"] / published.ATTACK_DICE[model]["Original"]
        dice = {s: summarize([r["gn_sweep"][s] for r in runs[model]], f"{model} GN {s}") for s in stds}
        drops = {s: summarize([1 - r["gn_sweep"][s] / c if c > 0 else 0.0 for r, c in zip(runs[model], clean)],
                              f"{model} GN drop {s}") for s in stds}
        out[model] = {"dice": {str(s): v for s, v in dice.items()},
                      "relative_drop": {str(s): v for s, v in drops.items()}, "paper_relative_drop": paper_drop,
                      "matching_std": gn_std_matching(list(stds), [drops[s]["mean"] for s in stds], paper_drop)}
    return out


# ---------------------------------------------------------------------------------------------- claims
def claims(payload: dict[str, Any]) -> list[dict[str, str]]:
    """What the paper's tables claim (its prose did not survive extraction), what ``payload`` (a run's results)
    measured and whether it held: which model scores higher clean and under each attack (paired tests), that
    every attack lowers Dice, that PGD hurts more than FGSM, and how strong its Gaussian noise was."""
    a, b = published.MODELS
    runs, out = payload["runs"], []
    for label, t in payload["paired_tests"].items():
        row = "Original" if label.startswith("clean") else label
        source = published.CLEAN if row == "Original" else published.ATTACK_DICE
        key = "Dice" if row == "Original" else row
        higher, lower = (a, b) if t["paper_difference"] > 0 else (b, a)
        where = "on clean images (table 1)" if row == "Original" else f"under {row}"
        paper = f"{higher} has the higher Dice {where} ({source[higher][key]:.4f} vs {source[lower][key]:.4f})"
        out.append(claim(paper,
                         f"{a} - {b} = {t['mean_difference']:+.4f} over {t['n']} seeds, p = {format_p(t)}",
                         claim_outcome(t, 1 if t["paper_difference"] > 0 else -1)))
    mean = {(m, r): summarize(_values(runs, m, r, "dice"))["mean"]
            for m in published.MODELS for r in ("Original", *published.ATTACKS)}
    lowered = [(m, r) for m in published.MODELS for r in published.ATTACKS if mean[m, r] < mean[m, "Original"]]
    out.append(claim("every attack lowers both models' Dice (tables 2-3)",
                     "mean Dice under attack below the clean mean", f"held on {len(lowered)} of "
                     f"{len(published.MODELS) * len(published.ATTACKS)} (model, attack) pairs"))
    for m in published.MODELS:
        t = paired_test(_values(runs, m, "PGD", "dice"), _values(runs, m, "FGSM", "dice"), f"{m} PGD vs FGSM")
        out.append(claim(f"{m}: PGD lowers Dice more than FGSM ({published.ATTACK_DICE[m]['PGD']:.4f} vs "
                         f"{published.ATTACK_DICE[m]['FGSM']:.4f})",
                         f"PGD - FGSM Dice = {t['mean_difference']:+.4f} over {t['n']} seeds, p = {format_p(t)}",
                         claim_outcome(t, -1)))
    std = payload["settings"]["gn_std"]
    for m in published.MODELS:
        gn = payload["gn_sweep"][m]
        ours = gn["relative_drop"][str(float(std))]["mean"] if str(float(std)) in gn["relative_drop"] else None
        match, top = gn["matching_std"], max(float(k) for k in gn["relative_drop"])
        if ours is not None and ours >= gn["paper_relative_drop"]:
            outcome = f"held at std {std}"
        elif match is not None:
            outcome = f"not at std {std}; reached at std ≈ {match:.3g}"
        else:
            outcome = f"not reproduced by any std up to {top:g}"
        measured = "–" if ours is None else f"relative Dice drop {ours:.3f} at std {std}"
        out.append(claim(f"{m}: Gaussian noise cuts Dice by {gn['paper_relative_drop']:.1%} (table 2, std not given)",
                         measured, outcome))
    return out


def render(json_file: str | os.PathLike) -> dict[str, Any]:
    """Rewrite a run's Markdown (and its ``claims``) from its JSON with this code, without training: for a report
    whose format changed after the run. The numbers are the JSON's; the payload records who re-rendered it."""
    return render_results(json_file, PAPER, claims, _markdown)


# ---------------------------------------------------------------------------------------------- report
def _markdown(payload: dict[str, Any]) -> str:
    t = payload["tables"]
    models = list(published.MODELS)
    lines = [f"# Reproduction: {PAPER}", "",
             f"Scale **{payload['scale']}**, {payload['seeds']} seed(s), data `{payload['data']}`; every cell is ours "
             "(mean ± std over seeds) next to the paper's number and the difference (ours - paper).", "",
             *([f"Report re-rendered by commit `{payload['rendered']['commit']}` from this run's JSON.", ""]
               if payload.get("rendered") else []),
             *claims_section(payload["claims"]),
             "## Reductions", "", *[f"- {r}" for r in payload["reductions"]], "",
             "## Settings", "", *[f"- {k}: `{v}`" for k, v in payload["settings"].items()], "",
             "## Table 1: clean test metrics", "", comparison_table(t["clean"], models, 4), "",
             "## Table 2: Dice under attack", "", comparison_table(t["dice"], models, 4), "",
             "## Table 3: IoU under attack", "", comparison_table(t["iou"], models, 4), "",
             "## Table 4: loss under attack (ours: cross-entropy; the paper does not name its loss)", "",
             comparison_table(t["loss"], models, 4), "",
             "## UNet vs Att-UNet++: paired t-test over seeds (Dice)", ""]
    rows = [[label, f"{x['mean_difference']:+.4f}", f"{x['paper_difference']:+.4f}",
             format_p(x), x["claim"]] for label, x in payload["paired_tests"].items()]
    lines += [markdown_table(["Dice", "ours UNet - Att-UNet++", "paper", "p", "paper's claim"], rows), "",
              "## Gaussian-noise budget", "",
              f"The main tables use GN std {payload['settings']['gn_std']}. The paper gives no GN setting; its GN "
              "drop (table 2, relative to its clean row) is matched here by sweeping the std (Dice under GN alone, "
              "same models and test tiles):", ""]
    gn = payload["gn_sweep"]
    header = ["GN std", *[f"{m} Dice" for m in models], *[f"{m} drop" for m in models]]
    body = [[s, *[gn[m]["dice"][s] for m in models], *[gn[m]["relative_drop"][s] for m in models]]
            for s in gn[models[0]]["dice"]]
    lines += [markdown_table(header, body, 4), ""]
    for m in models:
        std = gn[m]["matching_std"]
        found = f"std ≈ {std:.3f}" if std is not None else "no std in the sweep (its range does not reach it)"
        lines.append(f"- {m}: paper's GN drop {gn[m]['paper_relative_drop']:.3f}; matched by {found}.")
    prov = payload["provenance"]
    lines += ["", "## Provenance", "", f"- command: `{prov['command']}`", f"- commit: `{prov['commit']}`",
              f"- machine: {prov['machine']}", f"- torch {prov['torch']}, monai {prov['monai']}, "
              f"python {prov['python']}", f"- wall time: {payload['seconds']:.0f} s",
              "", "## Notes", "", *[f"- {n}" for n in payload["notes"]]]
    return "\n".join(lines)


NOTES = [
    "The paper's table captions were lost in extraction; tables 2 and 3 are taken as Dice and IoU because every "
    "number of the third is below its counterpart in the second (mean IoU <= mean Dice). Its table 2 clean row "
    "disagrees with table 1's clean Dice, and the paper does not say on what images each was measured.",
    "The paper states no attack settings: the `unet-paper` preset's are used (L-inf eps 8/255, alpha eps/4, "
    "torchattacks' defaults otherwise), on images in [0, 1], each attack against our cross-entropy loss.",
    "Clean and attacked metrics are on the held-out test tiles, by sliding-window inference; Dice and IoU of the "
    "nucleus class, accuracy = pixel accuracy.",
]


def _reductions(scale: str, n_seeds: int) -> list[str]:
    seeds = [f"{n_seeds} seed(s) (no standard deviation, no paired-test p-value)"] if n_seeds < 2 else []
    common = ["no robust validation during training (the bundle's monitoring; not in the paper)"]
    return [*seeds, *SETTINGS[scale]["reductions"], *common]


# ---------------------------------------------------------------------------------------------- entry point
def run(scale: str = "smoke", output_dir: str | os.PathLike = "docs/results", data: str | os.PathLike | None = None,
        seeds: int | None = None, name: str | None = None, gn_std: float | None = None) -> dict[str, Any]:
    """Train and evaluate both models per seed, write ``<output_dir>/<name>.json`` and ``.md``.

    Args:
        scale: ``smoke``, ``quick`` or ``paper`` (:data:`SETTINGS`).
        output_dir: where the results go.
        data: a NuInsSeg-layout folder, or the sample data folder holding ``nuclei_he`` (default: the sample data).
        seeds: number of seeds (default: the scale's; 3 at ``quick``); seed ``i`` changes the split, the
            initialisation and the attacks' randomness.
        name: file stem (default ``unet_attacks_<scale>``).
        gn_std: the GN std of the main tables (default :data:`DEFAULT_GN_STD`, the preset's).

    Returns:
        the JSON payload, plus ``"files"``: the paths written.

    Raises:
        ValueError: an unknown scale, ``seeds < 1``, a bad ``gn_std``, a missing data folder or one not in the
            NuInsSeg layout -- before any training.
    """
    started = datetime.now(timezone.utc)
    check_scale(scale)
    n_seeds = _check_seeds(seeds, scale)
    gn_std = DEFAULT_GN_STD if gn_std is None else _check_std(gn_std, "gn_std")
    root = resolve_data(data)
    name = name or f"unet_attacks_{scale}"
    sweep = tuple(sorted({*GN_SWEEP, gn_std}))
    start = time.perf_counter()
    runs: dict[str, list[dict]] = {m: [] for m in published.MODELS}
    with tempfile.TemporaryDirectory(prefix="unet_attacks_") as tmp:
        for seed in range(_SEED0, _SEED0 + n_seeds):
            for model, network in NETWORKS.items():
                runs[model].append({"seed": seed, **_train_and_evaluate(scale, root, network, seed, gn_std, sweep,
                                                                       Path(tmp))})
    settings = {**SETTINGS[scale]["overrides"], "robustness_steps": SETTINGS[scale]["robustness_steps"],
                "gn_std": gn_std, "gn_parameter": _gn_key(), "eps": "8/255", "method": "std",
                "seeds": list(range(_SEED0, _SEED0 + n_seeds))}
    payload: dict[str, Any] = {
        "paper": PAPER, "scale": scale, "seeds": n_seeds, "data": str(root), "settings": settings,
        "reductions": _reductions(scale, n_seeds),
        "tables": {"clean": _clean_table(runs), **{k: _attack_table(runs, k) for k in published.ATTACK_TABLES}},
        "paired_tests": _paired_tests(runs),
        "gn_sweep": _gn_analysis(runs, sweep),
        "runs": {m: [{**r, "gn_sweep": {str(s): d for s, d in r["gn_sweep"].items()}} for r in rs]
                 for m, rs in runs.items()},
        "notes": NOTES, "seconds": round(time.perf_counter() - start, 1),
    }
    payload["provenance"] = provenance(started=started)
    payload["claims"] = claims(payload)
    paths = write_results(output_dir, name, payload, _markdown(payload))
    payload["files"] = [str(p) for p in paths]
    return payload
