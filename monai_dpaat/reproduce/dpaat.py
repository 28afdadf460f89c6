"""Reproduce Li et al. 2024 (DPAAT) on HAM10000: ``python -m monai_dpaat reproduce dpaat --scale smoke|quick|paper``.

Every model is trained by the HAM10000 bundle (``bundles/ham10000_dpaat_classification``: ``configs/train.json`` +
``configs/methods/<method>.json`` through ``monai.bundle``, as the ``demo`` verb does), its best checkpoint is
evaluated on the lesion-disjoint test split with the ``dpaat-table`` preset (:class:`RobustnessEvaluator`), and the
numbers are written next to the paper's (:mod:`~monai_dpaat.reproduce.published_dpaat`):

- Table I: RAcc under FGSM / 10-IFGSM / 20-IFGSM / 20-PGD / 50-PGD and GAcc, per CNN and per group
  ("widely used", "lightweight", "all six"; a group average is taken per seed over the CNNs that ran);
- Table II: mAP (clean), mARP (mAP on the worst case over the attacks: the paper does not say which attack),
  precision, recall, F1 (clean, macro);
- the ablation D-A / D-B / D-(A+B) (with AT) on the paper's ablation CNNs;
- confusion matrices (clean and worst case, summed over seeds);
- Grad-CAM energy inside the lesion for STD / AT / DPAAT (expert masks ``<image_id>_segmentation.png`` when the
  data folder has them, else the Otsu proxy, labelled);
- paired t-tests over seeds of DPAAT vs AT on worst-case RAcc and on GAcc, with a plain verdict.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import check_scale
from . import published_dpaat as published
from .results import (claim, claims_section, comparison_table, markdown_table, provenance, render_results,
                      write_results)
from .stats import SIGNIFICANCE, claim_outcome, compare, format_p, paired_test

__all__ = ["SETTINGS", "settings", "run"]

BUNDLE = "ham10000_dpaat_classification"
#: our method keys (bundle ``configs/methods/<key>.json``) -> the paper's row names
METHOD_NAMES = {"std": "STD", "at": "AT", "sat": "SAT", "amat": "AMAT", "dpaat": "DPAAT"}
ABLATION_METHODS = {"at": "AT", "d-a": "D-A", "d-b": "D-B", "dpaat": "D-(A+B)"}
ATTACK_COLUMNS = published.TABLE_I_COLUMNS[:-1]  # the dpaat-table preset's labels
WORST = "Worst case"
ALL_SIX = published.GROUPS["all six"]
#: the ``"paper"`` entry of the results
PAPER = "Li et al. 2024, Dynamic perturbation-adaptive adversarial training on medical image classification (DPAAT)"

#: the settings of each scale; ``reductions`` says how each differs from the paper's (Sec. IV-A)
SETTINGS: dict[str, dict[str, Any]] = {
    "smoke": {
        "networks": ("resnet34", "mobilenet_v2"), "seeds": 1, "image_size": 32, "n_train": 8, "n_test": 2,
        "val_fraction": 0.25, "warmup_epochs": 0, "max_epochs": 1, "early_stop_patience": 5, "batch_size": 8,
        "lr": 1e-3, "attack_steps": 1, "robust_val_max_samples": 2, "ablation_networks": ("mobilenet_v2",),
        "gradcam_images": 4, "gradcam_min_side": 4,
        "reductions": [
            "2 of the 6 CNNs (ResNet34 for 'widely used', MobileNetV2 for 'lightweight'; the paper's Fig. 2-4 pair)",
            "1 seed (no standard deviation, no p-value)",
            "32x32 input instead of 224x224 (InceptionV3 up-samples to its minimum 75x75 internally)",
            "8 training-pool images per class (6 train + 2 validation) and 2 test images per class instead of "
            "800 / 299",
            "robust validation during training on 2 samples (10-PGD) instead of 256",
            "1 epoch, no head-only warm-up, instead of 10 head-only + 50 epochs with early stopping",
            "1-step PGD training adversary instead of 7-step",
            "learning rate 1e-3 instead of 3e-4 (one epoch)",
            "ablation on MobileNetV2 only",
            "Grad-CAM on 4 test images, of the deepest block with a map of at least 4x4 (at 32 px the last "
            "convolutional maps are 1x1 or 2x2)",
        ],
    },
    "quick": {
        "networks": ALL_SIX, "seeds": 3, "image_size": 32, "n_train": 40, "n_test": 10, "val_fraction": 0.2,
        "warmup_epochs": 0, "max_epochs": 3, "early_stop_patience": 5, "batch_size": 16, "lr": 1e-3,
        "attack_steps": 2, "robust_val_max_samples": 8, "ablation_networks": published.ABLATION_CNNS,
        "gradcam_images": 12, "gradcam_min_side": 4,
        "reductions": [
            "3 seeds (each seed draws its own lesion-disjoint split and initialisation)",
            "32x32 input instead of 224x224 (InceptionV3 up-samples to its minimum 75x75 internally)",
            "40 training-pool images per class (32 train + 8 validation) and 10 test images per class instead of "
            "800 / 299",
            "robust validation during training on 8 samples (10-PGD) instead of 256",
            "3 epochs, no head-only warm-up, instead of 10 head-only + 50 epochs with early stopping",
            "2-step PGD training adversary instead of 7-step",
            "learning rate 1e-3 instead of 3e-4 (few epochs)",
            "Grad-CAM on 12 test images (seed 0), of the deepest block with a map of at least 4x4 instead of the "
            "last convolutional layer (1x1 or 2x2 at 32 px, where every map is uniform)",
        ],
    },
    "paper": {
        "networks": ALL_SIX, "seeds": 3, "image_size": 224, "n_train": 800, "n_test": 299, "val_fraction": 0.1,
        "warmup_epochs": 10, "max_epochs": 60, "early_stop_patience": 5, "batch_size": 32, "lr": 3e-4,
        "attack_steps": 7, "robust_val_max_samples": 256, "ablation_networks": published.ABLATION_CNNS,
        "gradcam_images": 64, "gradcam_min_side": None,
        "reductions": [
            "the ablation uses the main runs' batch size 32 and 60 epochs (the paper: batch 64, 100 epochs)",
            "Grad-CAM on 64 test images (the paper: 532 correctly predicted ones)",
        ],
    },
}

#: choices the paper leaves open, reported with every run
CHOICES = [
    "budget eps = 8/255 (L-inf, images in [0, 1]) for training and evaluation: the paper's epsilon was lost in "
    "extraction",
    "training PGD step size alpha = 2/255 (the bundle's; the paper's 'step size of 0.15' has no stated unit)",
    "evaluation step size eps/4 (the dpaat-table preset's default)",
    "DPAAT and AMAT constants are the bundle's configs/methods/*.json (DPAAT: lambda_sync 0.5, eps in [eps/4, 2 eps], "
    "adaptive length eps/8)",
    "networks from random initialisation (the bundle's network_def; the paper does not say whether it used "
    "ImageNet weights)",
    "mARP = mAP on each sample's worst case over the five attacks (the paper does not name the attack)",
    "Table II precision / recall / F1 are macro averages on the clean test set",
    "group rows: per seed, the mean over the group's CNNs that ran; then mean and std over seeds",
]


def settings(scale: str) -> dict[str, Any]:
    """A copy of the settings of ``scale`` (one of :data:`~monai_dpaat.reproduce.SCALES`)."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in SETTINGS[check_scale(scale)].items()}


# ---------------------------------------------------------------------------------------------- inputs
def _bundle_dir() -> Path:
    path = Path(__file__).resolve().parents[2] / "bundles" / BUNDLE  # <checkout>/monai_dpaat/reproduce/dpaat.py
    if not (path / "configs").is_dir():
        raise ValueError(f"the bundle {BUNDLE!r} is not at {str(path)!r}: the reproduction needs a checkout of "
                         "monai-dpaat (git clone), not an installed package")
    return path


def _data_dir(data: Any) -> Path:
    """The HAM10000 folder: ``data`` (that folder or its parent), default ``$MONAI_DPAAT_DATA`` or
    ``../shared/data`` beside the checkout."""
    from monai_dpaat.utils import default_data_dir

    root = Path(str(default_data_dir() if data is None else data)).expanduser()
    if not root.is_dir():
        raise ValueError(f"data folder {str(root)!r} does not exist (give data= / --data or set MONAI_DPAAT_DATA)")
    if not (root / "HAM10000_metadata.csv").is_file() and (root / "ham10000" / "HAM10000_metadata.csv").is_file():
        root = root / "ham10000"
    if not (root / "HAM10000_metadata.csv").is_file():
        raise ValueError(f"data folder {str(root)!r} has no HAM10000_metadata.csv (nor a ham10000/ folder with one)")
    return root


def _seeds(seeds: Any, default: int) -> list[int]:
    """``None`` -> ``range(default)``; an int ``n >= 1`` -> ``range(n)``; a sequence of ints >= 0 -> itself."""
    if seeds is None:
        return list(range(default))
    if isinstance(seeds, bool):
        raise ValueError(f"seeds must be a count >= 1 or a list of seeds, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        return list(range(seeds))
    out = list(seeds)
    if not out or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in out) or len(set(out)) != len(out):
        raise ValueError(f"seeds must be a count >= 1 or a non-empty list of distinct ints >= 0, got {seeds!r}")
    return out


def _classes(root: Path, n_needed: int) -> tuple[list[str], str | None]:
    """The paper's mel/bkl/nv, or mel vs nv (with the reduction's text) when bkl has fewer images than needed."""
    from monai_dpaat.data import ham10000_image_files, read_ham10000_metadata

    files = ham10000_image_files(root)
    n_bkl = sum(1 for row in read_ham10000_metadata(root / "HAM10000_metadata.csv")
                if row["dx"] == "bkl" and row["image_id"] in files)
    if n_bkl >= n_needed:
        return ["mel", "bkl", "nv"], None
    return ["mel", "nv"], (f"mel vs nv instead of mel/bkl/nv: the data folder has {n_bkl} bkl images "
                           f"(needed {n_needed})")


# ---------------------------------------------------------------------------------------------- one model
def _overrides(cfg: dict[str, Any], network: str, seed: int, classes: list[str], root: Path, work: str,
               bundle: Path) -> dict[str, Any]:
    return {"bundle_root": str(bundle), "dataset_dir": str(root), "ckpt_dir": f"{work}/models",
            "output_dir": f"{work}/eval", "classes": classes, "network_name": network, "seed": seed,
            "image_size": cfg["image_size"], "n_train": cfg["n_train"], "n_test": cfg["n_test"],
            "val_fraction": cfg["val_fraction"], "warmup_epochs": cfg["warmup_epochs"],
            "max_epochs": cfg["max_epochs"], "early_stop_patience": cfg["early_stop_patience"],
            "batch_size": cfg["batch_size"], "lr": float(cfg["lr"]), "attack_steps": cfg["attack_steps"],
            "robust_val_max_samples": cfg["robust_val_max_samples"], "device": f"$torch.device({_device()!r})"}


def _device() -> str:
    """``cuda:0`` where there is a GPU (the ``paper`` scale's machine), else ``cpu``."""
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _train_and_evaluate(cfg: dict[str, Any], network: str, method: str, seed: int, classes: list[str], root: Path,
                        gradcam: dict[str, Any] | None) -> dict[str, Any]:
    """Train ``network`` with ``method`` by the bundle, evaluate its best checkpoint with ``dpaat-table`` on the
    test split; with ``gradcam`` (``{"images", "masks"}``) also the Grad-CAM energy in the lesion."""
    import torch
    from monai.data import DataLoader, Dataset

    from monai_dpaat.evaluation import RobustnessEvaluator
    from monai_dpaat.utils import bundle_config_files, load_weights, run_bundle

    bundle = _bundle_dir()
    files = bundle_config_files(bundle, ("train.json", f"methods/{method}.json"))
    start, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="monai_dpaat_reproduce.") as work:
        workflow = run_bundle(files, _overrides(cfg, network, seed, classes, root, work, bundle))
        parsed = workflow.parser.get_parsed_content
        trained = time.perf_counter()
        model = load_weights(parsed("network"), Path(work, "models", "model.pt"))
        datalists = parsed("datalists")
        test = Dataset(datalists["test"], parsed("validate#preprocessing"))
        device = torch.device(_device())
        result = RobustnessEvaluator("dpaat-table", device=device, class_names=classes, seed=seed, progress=False)(
            model, DataLoader(test, batch_size=cfg["batch_size"], shuffle=False, num_workers=0))
    out = {"network": network, "method": method, "seed": seed, "num_train": len(datalists["train"]),
           "num_val": len(datalists["val"]), "num_test": result.num_samples, "rows": result.rows,
           "confusion": {"clean": result.confusion["Original"], "worst case": result.confusion[WORST]},
           "worst_case_choice": result.meta.get("worst_case_choice"),
           "method_settings": _method_settings(parsed("iteration_update")),
           "train_seconds": trained - start}
    if gradcam is not None:
        out["gradcam_energy"], out["gradcam_layer"] = _gradcam_energy(model.cpu(), gradcam, cfg["gradcam_min_side"])
    out["seconds"], out["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
    return out


def _method_settings(iteration: Any) -> dict[str, Any]:
    """The public scalar settings of an ``iteration_update`` (update timing, constants...) and its attack's, so every
    option a method has is reported with the run."""
    def scalars(obj: Any) -> dict[str, Any]:
        return {k: v for k, v in vars(obj).items()
                if not k.startswith("_") and isinstance(v, (bool, int, float, str)) and not isinstance(v, type)}

    if iteration is None:
        return {}
    out = {"class": type(iteration).__name__, **scalars(iteration)}
    attack = getattr(iteration, "attack", None)
    if attack is not None:
        out["attack"] = {"class": type(attack).__name__, **scalars(attack)}
    return out


def _gradcam_energy(model: Any, gradcam: dict[str, Any], min_side: int | None) -> tuple[float | None, str]:
    """Mean Grad-CAM energy in the lesion masks and the layer read (``"<name> (<h>x<w>)"``): the conventional
    layer (``min_side`` None), else the deepest block whose map has sides ``>= min_side``."""
    from monai_dpaat.evaluation.gradcam import compare_gradcam, find_target_layer, layer_with_map_side

    if min_side is None:
        layer, label = find_target_layer(model), None
    else:
        layer, side = layer_with_map_side(model, gradcam["images"], min_side)
        label = f"{layer} ({'x'.join(map(str, side))})"
    _, energies = compare_gradcam({"m": model}, gradcam["images"], masks=gradcam["masks"], target_layers=layer)
    vals = [e for e in energies["m"] if math.isfinite(e)]
    return (sum(vals) / len(vals) if vals else None), (label or layer)


def _mask_dir(root: Path) -> Path | None:
    """The folder holding expert lesion masks ``<image_id>_segmentation.png`` (ISIC naming), if any."""
    for path in sorted(root.rglob("*_segmentation.png")):
        return path.parent
    return None


def _gradcam_inputs(cfg: dict[str, Any], seed: int, classes: list[str], root: Path) -> dict[str, Any]:
    """Test images of ``seed``'s split (the first ``gradcam_images``, alternating classes) with lesion masks."""
    import torch

    from monai_dpaat.data import ham10000_datalists
    from monai_dpaat.evaluation.gradcam import load_ham10000_images

    test = ham10000_datalists(root, classes, cfg["n_train"], cfg["n_test"], cfg["val_fraction"], seed)["test"]
    by_class = [[item["image_id"] for item in test if item["label"] == k] for k in range(len(classes))]
    ids: list[str] = []
    while len(ids) < cfg["gradcam_images"] and any(by_class):
        for pool in by_class:
            if pool and len(ids) < cfg["gradcam_images"]:
                ids.append(pool.pop(0))
    masks_at = _mask_dir(root)
    images, masks, _, _ = load_ham10000_images(root, spatial_size=cfg["image_size"], classes=classes,
                                               mask_dir=str(masks_at) if masks_at else "otsu", image_ids=ids)
    areas = [float(m.float().mean()) for m in masks if m is not None]
    source = (f"expert masks ({masks_at})" if masks_at else
              "Otsu proxy masks (no expert <image_id>_segmentation.png in the data folder)")
    return {"images": images, "masks": masks, "image_ids": ids, "mask_source": source,
            "lesion_area": sum(areas) / len(areas) if areas else None, "seed": seed}


# ---------------------------------------------------------------------------------------------- tables
def _table_i_values(row: dict[str, dict[str, float]]) -> dict[str, float]:
    out = {c: float(row[c]["accuracy"]) for c in ATTACK_COLUMNS}
    out["GAcc"] = float(row["Original"]["accuracy"])
    out[WORST] = float(row[WORST]["accuracy"])
    return out


def _table_ii_values(row: dict[str, dict[str, float]]) -> dict[str, float]:
    clean = row["Original"]
    return {"mAP": float(clean["map"]), "mARP": float(row[WORST]["map"]), "Precision": float(clean["precision"]),
            "Recall": float(clean["recall"]), "F1": float(clean["f1"])}


def _values(runs: list[dict], network: str, method: str, kind: str) -> dict[int, dict[str, float]]:
    """``{seed: {column: value}}`` of one (network, method)."""
    pick = _table_i_values if kind == "I" else _table_ii_values
    return {r["seed"]: pick(r["rows"]) for r in runs if r["network"] == network and r["method"] == method}


def _group_values(runs: list[dict], networks: Sequence[str], method: str, kind: str) -> dict[int, dict[str, float]]:
    """Per seed, the mean over ``networks`` of each column."""
    per_net = [_values(runs, n, method, kind) for n in networks]
    seeds = sorted(set.intersection(*(set(v) for v in per_net))) if per_net else []
    out = {}
    for s in seeds:
        cols = per_net[0][s].keys()
        out[s] = {c: sum(v[s][c] for v in per_net) / len(per_net) for c in cols}
    return out


def _compare_cells(values: dict[int, dict[str, float]], published_row: dict[str, Any] | None,
                   columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    cells = {}
    for c in columns:
        if values and c in next(iter(values.values())):
            pub = None if published_row is None else published_row.get(c)
            cells[c] = compare([v[c] for v in values.values()], pub, what=c)
    return cells


def _tables(runs: list[dict], networks: Sequence[str], methods: dict[str, str]) -> dict[str, Any]:
    cols_i = (*published.TABLE_I_COLUMNS, WORST)
    table_i: dict[str, Any] = {"per_cnn": {}, "groups": {}}
    table_ii: dict[str, Any] = {"per_cnn": {}, "groups": {}}
    for net in networks:
        table_i["per_cnn"][net] = {name: _compare_cells(_values(runs, net, m, "I"), None, cols_i)
                                   for m, name in methods.items()}
        table_ii["per_cnn"][net] = {name: _compare_cells(_values(runs, net, m, "II"), None, published.TABLE_II_COLUMNS)
                                    for m, name in methods.items()}
    for group, members in published.GROUPS.items():
        ran = [n for n in members if n in networks]
        if not ran:
            continue
        table_i["groups"][group] = {"networks": ran, "rows": {
            name: _compare_cells(_group_values(runs, ran, m, "I"), published.TABLE_I[group][name], cols_i)
            for m, name in methods.items()}}
        table_ii["groups"][group] = {"networks": ran, "rows": {
            name: _compare_cells(_group_values(runs, ran, m, "II"), published.TABLE_II[group][name],
                                 published.TABLE_II_COLUMNS)
            for m, name in methods.items()}}
    return {"table_1": table_i, "table_2": table_ii}


def _verdict(test: dict[str, Any], claim: str) -> dict[str, Any]:
    """The paired test with a plain statement of whether ``claim`` (DPAAT > AT) held."""
    d, p, outcome = test["mean_difference"], test["p"], claim_outcome(test, +1)
    if outcome == "untested":
        text = (f"not testable: {test['n']} paired value(s) without variance (mean difference "
                f"{d:+.3f}); the claim '{claim}' is neither confirmed nor refuted")
    elif outcome == "held":
        text = f"held: DPAAT - AT = {d:+.3f} (p = {p:.3g} < {SIGNIFICANCE}), as the paper claims ({claim})"
    elif outcome == "contradicted":
        text = f"contradicted: DPAAT - AT = {d:+.3f} (p = {p:.3g} < {SIGNIFICANCE}), the opposite of '{claim}'"
    else:
        text = (f"not supported: DPAAT - AT = {d:+.3f} is not significant (p = {p:.3g} >= {SIGNIFICANCE}), so "
                f"'{claim}' was not reproduced")
    held = None if outcome == "untested" else outcome == "held"
    return {**test, "claim": claim, "held": held, "verdict": text}


def _paired_tests(runs: list[dict], networks: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """DPAAT vs AT over seeds (each seed's mean over the CNNs that ran), and over (CNN, seed) pairs."""
    out = {}
    for key, column, claim in (("worst-case RAcc", WORST, published.CLAIMS["robustness"]),
                               ("GAcc", "GAcc", published.CLAIMS["generalization"])):
        dp = _group_values(runs, networks, "dpaat", "I")
        at = _group_values(runs, networks, "at", "I")
        common = [s for s in seeds if s in dp and s in at]
        test = paired_test([dp[s][column] for s in common], [at[s][column] for s in common], what=key)
        out[key] = {"over": f"seeds (mean over {len(networks)} CNNs per seed)", **_verdict(test, claim)}
        pairs = [(n, s) for n in networks for s in seeds]
        a = [_values(runs, n, "dpaat", "I")[s][column] for n, s in pairs]
        b = [_values(runs, n, "at", "I")[s][column] for n, s in pairs]
        out[f"{key} (CNN x seed pairs)"] = {"over": f"{len(pairs)} (CNN, seed) pairs",
                                            **_verdict(paired_test(a, b, what=key), claim)}
    return out


def _ablation(runs: list[dict], networks: Sequence[str]) -> dict[str, Any]:
    table = {}
    for net in networks:
        table[net] = {}
        for m, name in ABLATION_METHODS.items():
            vals = _values(runs, net, m, "I")
            if vals:
                table[net][name] = {"GAcc": compare([v["GAcc"] for v in vals.values()], None, "GAcc"),
                                    "RAcc": compare([v[WORST] for v in vals.values()], None, "worst-case RAcc"),
                                    "20-PGD": compare([v["20-PGD"] for v in vals.values()], None, "20-PGD")}
    claims = {}
    for net, rows in table.items():
        if len(rows) < len(ABLATION_METHODS):
            continue
        g = {k: v["GAcc"]["mean"] for k, v in rows.items()}
        r = {k: v["RAcc"]["mean"] for k, v in rows.items()}
        def highest(values: dict[str, float], key: str) -> bool:  # strictly: a tie is not "the highest"
            return all(values[key] > v for k, v in values.items() if k != key)

        checks = {"D-A GAcc > AT GAcc": g["D-A"] > g["AT"], "D-B GAcc highest": highest(g, "D-B"),
                  "D-B RAcc < D-A RAcc": r["D-B"] < r["D-A"], "D-(A+B) RAcc highest": highest(r, "D-(A+B)"),
                  "D-(A+B) GAcc > AT GAcc": g["D-(A+B)"] > g["AT"]}
        claims[net] = {k: {"paper": published.ABLATION_CLAIMS[k], "held_on_means": bool(v)} for k, v in checks.items()}
    return {"rows": table, "claims": claims,
            "published": "Fig. 3 of the paper is a bar chart; its numbers are not in the text (None)"}


def _confusion(runs: list[dict], networks: Sequence[str]) -> dict[str, Any]:
    """Confusion matrices (rows: true class, columns: predicted) summed over seeds, clean and worst case."""
    out: dict[str, Any] = {}
    for r in runs:
        if r["network"] not in networks or r["method"] not in METHOD_NAMES:
            continue
        cell = out.setdefault(r["network"], {}).setdefault(METHOD_NAMES[r["method"]], {})
        for kind, matrix in r["confusion"].items():
            if kind in cell:
                cell[kind] = [[a + b for a, b in zip(x, y)] for x, y in zip(cell[kind], matrix)]
            else:
                cell[kind] = [list(row) for row in matrix]
    return out


def _gradcam_table(runs: list[dict], gradcam_info: dict[str, Any] | None) -> dict[str, Any] | None:
    if gradcam_info is None:
        return None
    rows: dict[str, dict[str, Any]] = {}
    layers: dict[str, str] = {}
    for r in runs:
        if "gradcam_energy" in r:
            rows.setdefault(r["network"], {})[METHOD_NAMES[r["method"]]] = r["gradcam_energy"]
            layers[r["network"]] = r["gradcam_layer"]
    return {"mask_source": gradcam_info["mask_source"], "lesion_area": gradcam_info["lesion_area"],
            "images": gradcam_info["image_ids"], "seed": gradcam_info["seed"], "energy_in_lesion": rows,
            "layers": layers, "claim": published.CLAIMS["interpretability"],
            "note": "Share of Grad-CAM energy inside the lesion mask (mean over images; None where every map was "
                    "all zero); an energy equal to the lesion area is what a uniform map gives (no localisation)"}


# ---------------------------------------------------------------------------------------------- claims
def _test_claim(paper: str, test: dict[str, Any], what: str) -> dict[str, str]:
    measured = (f"DPAAT - AT {what} = {test['mean_difference']:+.3f} over {test['n']} paired values, "
                f"p = {format_p(test)}")
    return claim(paper, measured, claim_outcome(test, +1))


def _count_claim(paper: str, held: Sequence[bool], over: str, measured: str) -> dict[str, str]:
    return claim(paper, measured, f"held on {sum(held)} of {len(held)} {over}" if held else "untested")


def claims(payload: dict[str, Any]) -> list[dict[str, str]]:
    """Each claim of the paper (:data:`~monai_dpaat.reproduce.published_dpaat.CLAIMS`, the ablation's
    :data:`~monai_dpaat.reproduce.published_dpaat.ABLATION_CLAIMS`), what ``payload`` (a run's results) measured
    for it and whether it held."""
    runs, networks, seeds = payload["runs"], payload["settings"]["networks"], payload["seeds"]
    out = []
    dp, at = _group_values(runs, networks, "dpaat", "I"), _group_values(runs, networks, "at", "I")
    common = [s for s in seeds if s in dp and s in at]
    pgd = paired_test([dp[s]["20-PGD"] for s in common], [at[s]["20-PGD"] for s in common], "20-PGD")
    out.append(_test_claim(published.CLAIMS["robustness"], pgd, f"20-PGD RAcc (mean over {len(networks)} CNNs)"))
    worst = payload["paired_tests"]["worst-case RAcc"]
    out.append(_test_claim(published.CLAIMS["robustness"] + " [on the worst case of the five attacks]", worst,
                           "worst-case RAcc"))
    out.append(_test_claim(published.CLAIMS["generalization"], payload["paired_tests"]["GAcc"], "GAcc"))
    gc = payload.get("gradcam")
    if gc:
        rows = {n: e for n, e in gc["energy_in_lesion"].items()
                if all(e.get(m) is not None for m in ("STD", "AT", "DPAAT"))}
        held = [e["DPAAT"] > max(e["STD"], e["AT"]) for e in rows.values()]
        mean = {m: sum(e[m] for e in rows.values()) / len(rows) for m in ("STD", "AT", "DPAAT")} if rows else {}
        area = "–" if gc["lesion_area"] is None else f"{gc['lesion_area']:.3f}"
        energies = ", ".join(f"{m} {v:.3f}" for m, v in mean.items())
        measured = (f"Grad-CAM energy in the lesion, mean over CNNs: {energies} (uniform map: {area}); "
                    f"seed {gc['seed']}, {len(gc['images'])} images")
        out.append(_count_claim(published.CLAIMS["interpretability"], held, "CNNs (DPAAT above both)", measured))
    abl = payload["ablation"]["claims"]
    for key, text in published.ABLATION_CLAIMS.items():
        held = [c[key]["held_on_means"] for c in abl.values() if key in c]
        out.append(_count_claim(f"Ablation: {text}", held, "CNNs", f"means over seeds on {', '.join(abl)}"))
    return out


def render(json_file: str | os.PathLike) -> dict[str, Any]:
    """Rewrite a run's Markdown (and its ``claims``) from its JSON with this code, without training: for a report
    whose format changed after the run. The numbers are the JSON's; the payload records who re-rendered it."""
    def derive(payload: dict[str, Any]) -> None:  # the ablation verdicts, as this version judges them
        payload["ablation"] = _ablation(payload["runs"], payload["settings"]["ablation_networks"])

    return render_results(json_file, PAPER, claims, _markdown, derive)


# ---------------------------------------------------------------------------------------------- Markdown
def _ran(networks: Sequence[str], group: str) -> str:
    return f"{len(networks)} of the paper's {len(published.GROUPS[group])} CNNs: {', '.join(networks)}"


def _markdown(payload: dict[str, Any]) -> str:
    prov, cfg = payload["provenance"], payload["settings"]
    lines = [f"# Reproduction of Li et al. 2024 (DPAAT) on HAM10000, scale `{payload['scale']}`", "",
             f"Command: `{prov['command']}`  ", f"Commit: `{prov['commit']}`  ",
             f"Machine: {prov['machine']}  ", f"Started {prov['started']}, finished {prov['finished']}, "
             f"wall time {payload['wall_seconds']:.0f} s, CPU time {payload['cpu_seconds']:.0f} s  ",
             f"Classes: {', '.join(payload['classes'])}; seeds: {payload['seeds']}; CNNs: {', '.join(cfg['networks'])}",
             *([f"Report re-rendered by commit `{payload['rendered']['commit']}` from this run's JSON  "]
               if payload.get("rendered") else []),
             "", *claims_section(payload["claims"]),
             "## Reductions against the paper's settings", ""]
    lines += [f"- {r}" for r in payload["reductions"]] or ["- none"]
    lines += ["", "## Choices the paper leaves open", ""] + [f"- {c}" for c in payload["choices"]]
    lines += ["", "## Method settings as run (first run of each method)", ""]
    shown: dict[str, Any] = {}
    for r in payload["runs"]:
        shown.setdefault(r["method"], r["method_settings"])
    lines += [f"- {m}: `{settings_}`" for m, settings_ in shown.items()]
    lines += ["", "## DPAAT vs AT: paired tests", ""]
    for key, t in payload["paired_tests"].items():
        lines.append(f"- **{key}** over {t['over']}: mean difference {t['mean_difference']:+.3f}, p = {format_p(t)}. "
                     f"{t['verdict'][0].upper()}{t['verdict'][1:]}.")
    cols_i = (*published.TABLE_I_COLUMNS, WORST)
    lines += ["", "## Table I: RAcc and GAcc (fractions), ours (mean ± std over seeds) | paper | difference", ""]
    for group, g in payload["table_1"]["groups"].items():
        lines += [f"### {group} ({_ran(g['networks'], group)})", "", comparison_table(g["rows"], cols_i), ""]
    lines += ["### per CNN (the paper gives group averages only)", ""]
    for net, rows in payload["table_1"]["per_cnn"].items():
        lines += [f"**{net}**", "", comparison_table(rows, cols_i), ""]
    lines += ["## Table II: mAP, mARP (mAP on the worst case), precision, recall, F1", ""]
    for group, g in payload["table_2"]["groups"].items():
        lines += [f"### {group} ({_ran(g['networks'], group)})", "",
                  comparison_table(g["rows"], published.TABLE_II_COLUMNS), ""]
    abl = payload["ablation"]
    lines += ["## Ablation (Fig. 3): AT, D-A (no synchronization), D-B (no adaptation), D-(A+B) = DPAAT", "",
              f"{abl['published']}.", ""]
    for net, rows in abl["rows"].items():
        body = [[name, v["GAcc"], v["RAcc"], v["20-PGD"]] for name, v in rows.items()]
        lines += [f"**{net}**", "", markdown_table(["variant", "GAcc", "worst-case RAcc", "20-PGD RAcc"], body), ""]
        for key, c in abl["claims"].get(net, {}).items():
            lines.append(f"- {c['paper']}: {'held' if c['held_on_means'] else 'did not hold'} (on the means)")
        lines.append("")
    lines += ["## Confusion matrices (rows: true class, columns: predicted; summed over seeds)", ""]
    for net, methods in payload["confusion"].items():
        body = [[m, str(c["clean"]), str(c["worst case"])] for m, c in methods.items()]
        lines += [f"**{net}**", "", markdown_table(["method", "clean", "worst case"], body), ""]
    gc = payload.get("gradcam")
    if gc:
        area = "–" if gc["lesion_area"] is None else f"{gc['lesion_area']:.3f}"
        lines += ["## Grad-CAM energy inside the lesion", "",
                  f"Masks: {gc['mask_source']}; mean lesion area {area} of the image; {len(gc['images'])} test "
                  f"images of seed {gc['seed']}. {gc['note']}.", ""]
        body = [[net, gc["layers"].get(net, "–"), *(rows.get(m) for m in ("STD", "AT", "DPAAT"))]
                for net, rows in gc["energy_in_lesion"].items()]
        lines += [markdown_table(["CNN", "layer (map)", "STD", "AT", "DPAAT"], body), "", f"Paper: {gc['claim']}.",
                  ""]
    lines += ["## Run times", "", markdown_table(["CNN", "method", "seed", "train s", "total s", "CPU s"], [
        [r["network"], r["method"], r["seed"], f"{r['train_seconds']:.1f}", f"{r['seconds']:.1f}",
         f"{r['cpu_seconds']:.1f}"]
        for r in payload["runs"]])]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- entry point
def run(scale: str = "smoke", output_dir: str | os.PathLike = "docs/results", data: Any = None, seeds: Any = None,
        name: str | None = None, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train the CNNs x STD/AT/SAT/AMAT/DPAAT (+ the ablation) at ``scale``, evaluate, compare with the paper and
    write ``<output_dir>/<name>.json`` and ``.md`` (``name`` default ``dpaat_<scale>``).

    Args:
        scale: ``"smoke"`` (under 3 minutes on 2 CPU cores), ``"quick"`` (all six CNNs, 3 seeds, under an hour on 2
            CPU cores) or ``"paper"`` (the paper's settings, for a GPU and the full data); see :data:`SETTINGS`.
        output_dir: where the results go.
        data: the HAM10000 folder or its parent (default ``$MONAI_DPAAT_DATA`` or ``../shared/data``).
        seeds: a count ``>= 1`` (seeds 0..n-1) or a list of seeds (default: the scale's count).
        argv: the command line recorded in the provenance (default ``sys.argv[1:]``).

    Returns:
        the payload written to the JSON file.

    Raises:
        ValueError: an unknown scale, a missing data folder or bad seeds (before any training).
    """
    cfg = settings(scale)
    root = _data_dir(data)
    seed_list = _seeds(seeds, cfg["seeds"])
    name = name or f"dpaat_{scale}"
    from monai_dpaat.atomic_io import ensure_output_dir

    ensure_output_dir(output_dir)
    started, t0, cpu0 = datetime.now(timezone.utc), time.perf_counter(), time.process_time()
    classes, class_note = _classes(root, cfg["n_train"] + cfg["n_test"])
    reductions = list(cfg["reductions"]) + ([class_note] if class_note else [])
    if seeds is not None and len(seed_list) != cfg["seeds"]:
        reductions.append(f"seeds {seed_list} instead of the scale's {cfg['seeds']}")
    networks, ablation_nets = tuple(cfg["networks"]), tuple(cfg["ablation_networks"])
    gradcam_methods = ("std", "at", "dpaat")
    runs, gradcam_info = [], None
    for seed in seed_list:
        gradcam = _gradcam_inputs(cfg, seed, classes, root) if seed == seed_list[0] and cfg["gradcam_images"] else None
        gradcam_info = gradcam_info or gradcam
        for net in networks:
            methods = list(METHOD_NAMES) + (["d-a", "d-b"] if net in ablation_nets else [])
            for method in methods:
                print(f"[reproduce dpaat {scale}] seed {seed}: {net} x {method}", flush=True)
                runs.append(_train_and_evaluate(cfg, net, method, seed, classes, root,
                                                gradcam if method in gradcam_methods else None))
    payload: dict[str, Any] = {
        "paper": PAPER,
        "scale": scale, "classes": classes, "seeds": seed_list, "data": str(root),
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if k != "reductions"},
        "reductions": reductions, "choices": CHOICES,
        **_tables(runs, networks, METHOD_NAMES),
        "paired_tests": _paired_tests(runs, networks, seed_list),
        "ablation": _ablation(runs, ablation_nets),
        "confusion": _confusion(runs, networks),
        "gradcam": _gradcam_table(runs, gradcam_info),
        "runs": runs,
    }
    payload["wall_seconds"] = time.perf_counter() - t0
    payload["cpu_seconds"] = time.process_time() - cpu0  # this process's CPU time (all threads)
    payload["provenance"] = provenance(argv, started)
    payload["claims"] = claims(payload)
    write_results(output_dir, name, payload, _markdown(payload))
    return payload
