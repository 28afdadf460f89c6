"""``benchmark`` on a MONAI bundle (issue 14): the benchmark protocol on the bundle's own evaluation.

The bundle is read as ``python -m monai.bundle run`` would read its evaluation: ``configs/train.json`` +
``configs/evaluate.json`` (+ extra files and overrides), the Model Zoo ids: ``network``, ``validate#dataloader``
(the test split, ``image``/``label`` keys), ``validate#inferer`` (when there is one: every forward, the attacks'
included, goes through it, sliding windows too) and the ``CheckpointLoader`` of ``validate#handlers`` (its
``load_path`` and the ``load_dict`` entry of the network). The task comes from the network's output: ``(N, K)``
logits run the classification cascade, ``(N, K, *spatial)`` the segmentation protocol (the worst case by Dice).
Everything is checked before any attack runs (a missing config, no checkpoint loader, weights that do not fit,
outputs that fit neither task, an empty split, labels that do not fit the output, a budget outside its units'
range): one ``ValueError`` naming the file or key, nothing written.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_dpaat.attacks import APGD, with_eps_units
from monai_dpaat.attacks.base import intensity_range
from monai_dpaat.conventions import class_indices, plain_tensor, primary_output
from monai_dpaat.error_hook import user_error_of
from monai_dpaat.networks.inferer_network import InfererNetwork
from monai_dpaat.utils import bundle_config_files, load_weights, read_checkpoint

from .leaderboard import dataset_fingerprint, file_sha256, versions
from .protocol import DEFAULT_PROTOCOL, classification_protocol, run_cascade, segmentation_protocol
from .report import atomic_write_text

__all__ = ["EPS_UNITS", "benchmark_bundle", "load_bundle_evaluation", "write_row"]

logger = logging.getLogger(__name__)

EPS_UNITS = ("range", "absolute")


def _parsed(parser: Any, key: str, bundle: Any) -> Any:
    try:
        return parser.get_parsed_content(key)
    except Exception as err:  # MONAI wraps the builder's error: name the key and give the innermost message
        raise ValueError(f"cannot build {key!r} of the bundle {str(bundle)!r}: {user_error_of(err) or err}") from None


def _checkpoint_loader(parser: Any, bundle: Any) -> tuple[int, str]:
    """Index of the ``CheckpointLoader`` in ``validate#handlers`` and the network's key in its ``load_dict``."""
    handlers = parser.get("validate#handlers") or []
    for i, handler in enumerate(handlers):
        if isinstance(handler, Mapping) and str(handler.get("_target_", "")).endswith("CheckpointLoader"):
            load_dict = handler.get("load_dict") or {}
            key = next((k for k, v in load_dict.items() if str(v) in ("@network", "@network_def")), "model")
            return i, key
    raise ValueError(f"the bundle {str(bundle)!r} has no CheckpointLoader in validate#handlers of its "
                     "configs/evaluate.json: the benchmark reads the weights it loads")


def _class_indices(labels: Any, n: int, k: int, where: str) -> torch.Tensor:
    """:func:`~monai_dpaat.conventions.class_indices`, with one label per image and the range checked, named."""
    try:
        y = class_indices(labels, k, n)
    except RuntimeError:  # its reshape: not one label per image
        raise ValueError(f"{where}: labels of shape {tuple(torch.as_tensor(labels).shape)} do not fit {n} images "
                         "(expected class indices (N,) or one-hot (N, K))") from None
    if (y < 0).any() or (y >= k).any():
        raise ValueError(f"{where}: label values {sorted(set(y.tolist()))[:10]} are outside [0, {k - 1}] for the "
                         f"network's {k} outputs")
    return y


def _label_maps(labels: Any, x: torch.Tensor, k: int, where: str) -> torch.Tensor:
    """Label maps ``(N, 1, *spatial)`` (long) of segmentation ``labels`` for images ``x`` and a ``k``-channel output:
    ``(N, 1, *spatial)``, ``(N, *spatial)`` or one-hot ``(N, K, *spatial)``, values in ``[0, max(k - 1, 1)]``."""
    t = plain_tensor(torch.as_tensor(labels)).detach()
    n, spatial = x.shape[0], tuple(x.shape[2:])
    if k > 1 and t.ndim == x.ndim and t.shape[1] == k and t.shape[1] != 1:
        t = t.argmax(1, keepdim=True)
    elif t.ndim == x.ndim - 1:
        t = t[:, None]
    if tuple(t.shape) != (n, 1, *spatial):
        raise ValueError(f"{where}: labels of shape {tuple(torch.as_tensor(labels).shape)} do not fit images "
                         f"{tuple(x.shape)} (expected label maps (N, 1, *spatial) or one-hot (N, K, *spatial))")
    if t.is_floating_point() and not torch.equal(t, t.round()):
        # e.g. a JPEG mask scaled to [0, 1]: rounded, the rule of conventions.label_map, and said
        odd = int((t != t.round()).sum())
        logger.warning("%s: %d of %d label values are not class indices (e.g. a compressed mask rescaled to [0, 1]);"
                       " rounded to the nearest class", where, odd, t.numel())
    t = t.round().long()
    top = max(k - 1, 1)
    if t.numel() and (t.min() < 0 or t.max() > top):
        raise ValueError(f"{where}: label values {sorted(set(t.unique().tolist()))[:10]} are outside [0, {top}] "
                         f"for the network's {k} output channel(s)")
    return t


def _task_of(out: Any, bundle: Any) -> tuple[str, int]:
    """``("classification", K)`` for ``(N, K)`` logits, ``("segmentation", K)`` for ``(N, K, *spatial)``."""
    out = primary_output(out)
    shape = tuple(getattr(out, "shape", ()))
    if len(shape) == 2:
        return "classification", APGD.logits_of(out).shape[1]
    if len(shape) >= 4:  # (N, K, H, W) or (N, K, D, H, W)
        return "segmentation", shape[1]
    raise ValueError(f"the network of {str(bundle)!r} outputs shape {shape}: the benchmark needs (N, K) logits "
                     "(classification) or (N, K, *spatial) logits (segmentation)")


def load_bundle_evaluation(bundle: Any, config_file: Any = None, overrides: Mapping[str, Any] | None = None,
                           device: Any = "cpu", max_samples: int | None = None) -> dict[str, Any]:
    """The bundle's network (weights loaded, eval mode; seen through ``validate#inferer`` when the bundle has one),
    its test batches ``[(images, labels)]`` (labels: class indices ``(N,)`` or label maps ``(N, 1, *spatial)``) and
    what the row records about them: ``{"network", "batches", "task", "inferer", "checkpoint", "files",
    "metadata", "num_classes", "root"}``."""
    from monai.bundle import ConfigParser

    files = bundle_config_files(bundle, ("train.json", "evaluate.json"), config_file)
    root = Path(str(bundle)).expanduser().resolve()
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.update({"bundle_root": str(root), **dict(overrides or {})})
    if "network" not in parser or "validate#dataloader" not in parser:
        raise ValueError(f"the bundle {str(bundle)!r} has no 'network' or 'validate#dataloader' in "
                         f"{[str(f) for f in files]}")
    index, key = _checkpoint_loader(parser, bundle)
    checkpoint = str(_parsed(parser, f"validate#handlers#{index}#load_path", bundle))
    content = read_checkpoint(checkpoint)  # a missing or unreadable file: named before anything is built
    network = _parsed(parser, "network", bundle)
    if isinstance(network, torch.nn.parallel.DistributedDataParallel):
        network = network.module
    load_weights(network, checkpoint, key=key if isinstance(content, dict) and key in content else None,
                 content=content)
    network = network.to(device).eval()
    inferer = _parsed(parser, "validate#inferer", bundle) if "validate#inferer" in parser else None
    if inferer is not None:  # the attacks differentiate through the bundle's own inference (sliding window too)
        network = InfererNetwork(network, inferer).eval()
    loader = _parsed(parser, "validate#dataloader", bundle)
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    count, k, task = 0, None, None
    where = f"validate#dataloader of {str(bundle)!r}"
    for batch in loader:
        if not isinstance(batch, Mapping) or "image" not in batch or "label" not in batch:
            raise ValueError(f"validate#dataloader of {str(bundle)!r} must give dicts with 'image' and 'label'")
        x = plain_tensor(torch.as_tensor(batch["image"])).float().to(device)
        if k is None:
            with torch.no_grad():
                task, k = _task_of(network(x[:1]), bundle)
        if task == "classification":
            y = _class_indices(batch["label"], x.shape[0], k, where)
        else:
            y = _label_maps(batch["label"], x, k, where)
        if max_samples is not None:
            x, y = x[: max_samples - count], y[: max_samples - count]
        batches.append((plain_tensor(x), y.to(device)))
        count += len(y)
        if max_samples is not None and count >= max_samples:
            break
    if count == 0:
        raise ValueError(f"the test split of {str(bundle)!r} (validate#dataloader) is empty")
    meta_path = root / "configs" / "metadata.json"
    metadata = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return {"network": network, "batches": batches, "task": task, "checkpoint": checkpoint,
            "inferer": type(inferer).__name__ if inferer is not None else None, "files": [str(f) for f in files],
            "metadata": metadata, "num_classes": k, "root": root}


def _check_eps(eps: float, eps_units: str) -> None:
    if eps_units not in EPS_UNITS:
        raise ValueError(f"eps_units must be one of {EPS_UNITS}, got {eps_units!r}")
    if not (isinstance(eps, (int, float)) and 0 < eps < float("inf")):
        raise ValueError(f"eps must be a number > 0, got {eps!r}")
    if eps_units == "range" and eps > 1:
        raise ValueError(f"eps={eps} is a fraction of each sample's intensity range (eps_units='range'): it must be "
                         "at most 1")


#: a black box this much (mean Dice) below every gradient attack, or the worst case of this fraction of the samples,
#: is the masking flag of the segmentation protocol (random search should not beat gradients on a smooth model)
SQUARE_DICE_MARGIN = 0.02
SQUARE_WORST_FRACTION = 0.10


def _with_units(attacks: dict[str, Any], eps_units: str) -> dict[str, Any]:
    return {label: with_eps_units(a, "range") for label, a in attacks.items()} if eps_units == "range" else attacks


def _classification_results(network, batches, attacks, version, budget, progress):
    """The cascade's part of the row and its flags (``attacks``: the protocol's, in their units)."""
    from tqdm.auto import tqdm

    # one step per (batch, attack); the postfix says which attack ran on which batch and how many are still robust
    with tqdm(total=len(batches) * len(attacks), desc=f"benchmark {version} ({budget})", unit="step",
              disable=not progress) as bar:
        def advance(line: str) -> None:
            bar.set_postfix_str(line, refresh=False)
            bar.update(1)
            logger.debug("benchmark: %s", line)

        result = run_cascade(network, batches, attacks, progress=advance)
    flags = []
    if result.breaks.get("Square", 0) > 0:
        flags.append(f"Square (black-box) broke {result.breaks['Square']} sample(s) every gradient attack failed on: "
                     "gradient masking")
    part = {"metric": "accuracy", "clean_accuracy": result.clean_accuracy, "robust_accuracy": result.robust_accuracy,
            "attacks": {label: attack.config() for label, attack in attacks.items()},
            "breaks": result.breaks, "attacked": result.attacked, "attack_seconds": result.to_dict()["seconds"]}
    return part, flags, result.num_samples


SEGMENTATION_METRICS = ("dice", "iou", "hd95", "hd95_undefined")


def _segmentation_results(network, batches, attacks, seed, progress, device, hd95):
    """The segmentation protocol's part of the row (worst case by Dice over ``attacks``, the protocol's in their
    units) and its flags."""
    from .suite import ORIGINAL, WORST_CASE, RobustnessEvaluator

    evaluator = RobustnessEvaluator(attacks, task="segmentation", device=device, hd95=hd95, seed=seed,
                                    progress=progress)
    result = evaluator(network, batches)

    def metrics(row: str) -> dict[str, float]:
        return {m: result.rows[row][m] for m in SEGMENTATION_METRICS if m in result.rows[row]}

    per_attack = {label: metrics(label) for label in attacks}
    choice = result.meta.get("worst_case_choice", {})
    worst_by = {label: int(choice.get(label, 0)) for label in attacks}
    n = result.num_samples
    flags = [f"{label} is outside its budget and left out of the worst case: {why}"
             for label, why in result.meta.get("worst_case_excluded", {}).items()]
    square, gradient = per_attack["Square-seg"]["dice"], min(per_attack[k]["dice"] for k in attacks if k != "Square-seg")
    if square < gradient - SQUARE_DICE_MARGIN or worst_by["Square-seg"] > SQUARE_WORST_FRACTION * n:
        flags.append(f"Square-seg (black-box) left mean Dice {square:.4f} against {gradient:.4f} for the best gradient "
                     f"attack and gave the worst case of {worst_by['Square-seg']} of {n} samples: gradient masking")
    part = {"metric": "dice", "clean_dice": result.rows[ORIGINAL]["dice"], "robust_dice": result.rows[WORST_CASE]["dice"],
            "clean": metrics(ORIGINAL), "robust": metrics(WORST_CASE), "per_attack": per_attack,
            "worst_case_by": worst_by, "clean_best": int(choice.get(ORIGINAL, 0)),
            "attacks": {label: attack.config() for label, attack in attacks.items()},
            "attack_seconds": {"all": result.meta.get("seconds")}}
    return part, flags, n


def _reference(reference: Any) -> dict[str, Any]:
    """A reference row (a mapping, or a ``leaderboard.json`` / its folder) that holds a corruption table."""
    from .leaderboard import read_row

    row = dict(reference) if isinstance(reference, Mapping) else read_row(reference)
    if "table" not in (row.get("corruptions") or {}):
        raise ValueError(f"the reference row {row.get('name', str(reference))!r} has no corruption table: run its "
                         "benchmark with corruptions on")
    return row


def _corruptions(network, batches, task, seed, reference: Mapping[str, Any] | None) -> dict:
    """The row's ``corruptions``: the table, its summary (mCE when there is a reference) and the reference used."""
    from .corruptions import corruption_table, mean_corruption_error, severity_table

    table = corruption_table(network, batches, task, seed=seed)
    summary = mean_corruption_error(table, None if reference is None else reference["corruptions"]["table"])
    severities = severity_table()
    return {"table": table, "summary": summary, "severities": {c: severities[c] for c in table["errors"]},
            "reference": None if reference is None else {"name": reference.get("name"),
                                                         "weights": reference.get("weights", {}).get("sha256")}}


def benchmark_bundle(bundle: Any, config_file: Any = None, eps: float = 8 / 255, eps_units: str = "range",
                     budget: str = "standard", version: str = DEFAULT_PROTOCOL, value_range: Any = "data",
                     device: Any = "cpu", max_samples: int | None = None, name: str | None = None, seed: int = 0,
                     check_masking: bool = True, overrides: Mapping[str, Any] | None = None,
                     progress: bool = True, hd95: bool = True, corruptions: bool = True,
                     reference: Any = None) -> dict[str, Any]:
    """Run the protocol of the bundle's task on its evaluation and return its leaderboard row (see
    :func:`write_row`); ``progress``: a tqdm bar on stderr (classification: one step per batch and attack, with the
    samples still robust; segmentation: one step per batch, the running attack in its postfix); ``hd95``: HD95
    under attack (segmentation; the slowest metric); ``corruptions``: the natural-corruption table
    (:mod:`.corruptions`), its mCE normalised by ``reference`` (a row, or the path of one, of a reference model on
    the same test data) when given."""
    _check_eps(eps, eps_units)
    reference_row = _reference(reference) if corruptions and reference is not None else None
    # built once; an unknown version/budget is named here, before any work
    attacks = _with_units(classification_protocol(eps, version, budget, value_range, seed), eps_units)
    start = time.perf_counter()
    data = load_bundle_evaluation(bundle, config_file, overrides, device, max_samples)
    network, batches, task = data["network"], data["batches"], data["task"]
    if task == "segmentation":
        # v1 has none: named before any attack
        attacks = _with_units(segmentation_protocol(eps, version, budget, value_range, seed), eps_units)
    fingerprint = dataset_fingerprint(batches)
    if reference_row is not None and reference_row.get("dataset", {}).get("fingerprint") != fingerprint:
        raise ValueError(f"the reference row {reference_row.get('name')!r} was measured on other test data (its "
                         "dataset fingerprint differs): mCE normalises by the reference's errors on the same images")
    widths = torch.cat([intensity_range(x).reshape(-1).cpu() for x, _ in batches])
    absolute = widths * eps if eps_units == "range" else torch.full_like(widths, eps)
    if task == "classification":
        part, flags, n = _classification_results(network, batches, attacks, version, budget, progress)
    else:
        part, flags, n = _segmentation_results(network, batches, attacks, seed, progress, device, hd95)
    if check_masking:
        from .sanity import check_gradient_masking

        flags += check_gradient_masking(network, batches[:2], task=task, eps=float(absolute.mean()), device=device)
    if corruptions:
        part["corruptions"] = _corruptions(network, batches, task, seed, reference_row)
    metadata = data["metadata"]
    return {
        "protocol": version, "budget": budget, "task": task,
        "name": name or metadata.get("name") or data["root"].name,
        "bundle": {"name": metadata.get("name") or data["root"].name, "version": metadata.get("version"),
                   "path": str(data["root"]), "config_files": data["files"], "inferer": data["inferer"]},
        "weights": {"file": data["checkpoint"], "sha256": file_sha256(data["checkpoint"])},
        "dataset": {"num_samples": n, "fingerprint": fingerprint, "num_classes": data["num_classes"]},
        "eps": eps, "eps_units": eps_units,
        "eps_absolute": {"mean": float(absolute.mean()), "min": float(absolute.min()), "max": float(absolute.max())},
        "value_range": list(value_range) if isinstance(value_range, (list, tuple)) else value_range,
        **part,
        "flags": flags, "wall_seconds": round(time.perf_counter() - start, 2),
        "device": str(device) if str(device) == "cpu" or not torch.cuda.is_available()
        else torch.cuda.get_device_name(torch.device(device)),
        "versions": versions(), "seed": seed,
    }


def _results_lines(row: Mapping[str, Any]) -> list[str]:
    if row.get("task", "classification") == "classification":
        lines = ["| | accuracy |", "|---|---|", f"| clean | {row['clean_accuracy']:.4f} |",
                 f"| robust (worst case over the cascade) | {row['robust_accuracy']:.4f} |", "",
                 "| attack (in cascade order) | ran on | broke | seconds |", "|---|---|---|---|"]
        for label in row["breaks"]:
            lines.append(f"| {label} | {row['attacked'][label]} | {row['breaks'][label]} | "
                         f"{row['attack_seconds'][label]:.1f} |")
        return lines
    lines = ["| | Dice | IoU | HD95 | worst case of |", "|---|---|---|---|---|"]

    def line(label: str, m: Mapping[str, float], worst: Any) -> str:
        return f"| {label} | {m['dice']:.4f} | {m['iou']:.4f} | {m.get('hd95', float('nan')):.2f} | {worst} |"

    lines.append(line("clean", row["clean"], f"{row['clean_best']} (no attack lowered their Dice)"))
    lines += [line(label, m, row["worst_case_by"][label]) for label, m in row["per_attack"].items()]
    lines.append(line("**worst case** (per sample, lowest Dice)", row["robust"], row["dataset"]["num_samples"]))
    return lines


def _corruption_lines(part: Mapping[str, Any] | None) -> list[str]:
    if not part:
        return []
    table, summary = part["table"], part["summary"]
    severities = table["severities"]
    ref = part.get("reference")
    lines = ["", f"## Natural corruptions (error = 1 - {table['metric']}; clean error {table['clean_error']:.4f})", "",
             "| corruption | " + " | ".join(f"s{s}" for s in severities) + " | mean | CE |",
             "|---|" + "---|" * (len(severities) + 2)]
    for name, errors in table["errors"].items():
        ce = (summary.get("ce") or {}).get(name)
        lines.append(f"| {name} | " + " | ".join(f"{e:.4f}" for e in errors) +
                     f" | {summary['mean_error'][name]:.4f} | {'' if ce is None else f'{ce:.3f}'} |")
    if ref is not None and summary.get("mce") is not None:
        rel = summary.get("relative_mce")
        lines += ["", f"mCE {summary['mce']:.3f}" + (f", relative mCE {rel:.3f}" if rel is not None else "") +
                  f" (normalised by {ref['name']}, weights `{str(ref['weights'])[:12]}`)."]
    else:
        lines += ["", f"Mean corruption error {summary['average_error']:.4f} (no reference model: mCE needs "
                  "`--reference` a row of a reference model on the same data)."]
    return lines


def _report(row: Mapping[str, Any]) -> str:
    lines = [f"# Benchmark: {row['name']}", "",
             f"Protocol {row['protocol']} ({row['budget']} budget, {row.get('task', 'classification')}), eps "
             f"{row['eps']:.6g} ({row['eps_units']}; absolute {row['eps_absolute']['mean']:.4g} on average), "
             f"{row['dataset']['num_samples']} test samples of {row['bundle']['name']} "
             f"{row['bundle']['version'] or ''}".rstrip() + ".", ""]
    lines += _results_lines(row)
    lines += _corruption_lines(row.get("corruptions"))
    plot = (row.get("plots") or [None])[0]
    lines += ["", f"![the metric after each attack]({plot})"] if plot else []
    lines += ["", "## Flags", ""] + ([f"- {f}" for f in row["flags"]] or ["none"])
    lines += ["", f"Weights sha256 `{row['weights']['sha256'][:16]}`, data fingerprint "
                  f"`{row['dataset']['fingerprint'][:16]}`, {row['wall_seconds']} s on {row['device']}; "
                  + ", ".join(f"{k} {v}" for k, v in row["versions"].items()) + ".", ""]
    return "\n".join(lines)


def write_row(row: Mapping[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """The plot (classification ``cascade.png``: accuracy after each attack of the cascade; segmentation
    ``attacks.png``: Dice under each attack and in the worst case), ``report.md`` and, last, ``leaderboard.json``, each
    written atomically (an earlier run's files stay whole until the new ones are complete)."""
    from .plots import plot_cascade, plot_segmentation_protocol

    out = Path(output_dir)
    classification = row.get("task", "classification") == "classification"
    plot = "cascade.png" if classification else "attacks.png"
    row = {**row, "plots": [plot]}
    return {"plot": (plot_cascade if classification else plot_segmentation_protocol)(row, out / plot),
            "markdown": atomic_write_text(out / "report.md", _report(row)),
            "json": atomic_write_text(out / "leaderboard.json", json.dumps(row, indent=2) + "\n")}
