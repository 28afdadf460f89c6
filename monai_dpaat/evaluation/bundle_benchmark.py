"""``benchmark`` on a MONAI bundle (issue 14): the classification protocol on the bundle's own evaluation.

The bundle is read as ``python -m monai.bundle run`` would read its evaluation: ``configs/train.json`` +
``configs/evaluate.json`` (+ extra files and overrides), the Model Zoo ids: ``network``, ``validate#dataloader``
(the test split, ``image``/``label`` keys) and the ``CheckpointLoader`` of ``validate#handlers`` (its ``load_path``
and the ``load_dict`` entry of the network). Everything is checked before any attack runs (a missing config, no
checkpoint loader, weights that do not fit, outputs that are not ``(N, K)`` logits, an empty split, labels out of
range, a budget outside its units' range): one ``ValueError`` naming the file or key, nothing written.
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
from monai_dpaat.conventions import class_indices, plain_tensor
from monai_dpaat.error_hook import user_error_of
from monai_dpaat.utils import bundle_config_files, load_weights, read_checkpoint

from .leaderboard import dataset_fingerprint, file_sha256, versions
from .protocol import classification_protocol, run_cascade
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


def load_bundle_evaluation(bundle: Any, config_file: Any = None, overrides: Mapping[str, Any] | None = None,
                           device: Any = "cpu", max_samples: int | None = None) -> dict[str, Any]:
    """The bundle's network (weights loaded, eval mode), its test batches ``[(images, labels)]`` and what the row
    records about them: ``{"network", "batches", "checkpoint", "files", "metadata", "num_classes"}``."""
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
    loader = _parsed(parser, "validate#dataloader", bundle)
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    count, k = 0, None
    for batch in loader:
        if not isinstance(batch, Mapping) or "image" not in batch or "label" not in batch:
            raise ValueError(f"validate#dataloader of {str(bundle)!r} must give dicts with 'image' and 'label'")
        x = torch.as_tensor(batch["image"]).float().to(device)
        if k is None:
            with torch.no_grad():
                out = network(x[:1])
            try:
                logits = APGD.logits_of(out)
            except ValueError:
                raise ValueError(f"the network of {str(bundle)!r} outputs shape {tuple(getattr(out, 'shape', ()))}: "
                                 "the classification protocol needs (N, K) logits (segmentation: not in this "
                                 "version)") from None
            k = logits.shape[1]
        y = _class_indices(batch["label"], x.shape[0], k, f"validate#dataloader of {str(bundle)!r}")
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
    return {"network": network, "batches": batches, "checkpoint": checkpoint, "files": [str(f) for f in files],
            "metadata": metadata, "num_classes": k, "root": root}


def _check_eps(eps: float, eps_units: str) -> None:
    if eps_units not in EPS_UNITS:
        raise ValueError(f"eps_units must be one of {EPS_UNITS}, got {eps_units!r}")
    if not (isinstance(eps, (int, float)) and 0 < eps < float("inf")):
        raise ValueError(f"eps must be a number > 0, got {eps!r}")
    if eps_units == "range" and eps > 1:
        raise ValueError(f"eps={eps} is a fraction of each sample's intensity range (eps_units='range'): it must be "
                         "at most 1")


def benchmark_bundle(bundle: Any, config_file: Any = None, eps: float = 8 / 255, eps_units: str = "range",
                     budget: str = "standard", version: str = "v1", value_range: Any = "data",
                     device: Any = "cpu", max_samples: int | None = None, name: str | None = None, seed: int = 0,
                     check_masking: bool = True, overrides: Mapping[str, Any] | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Run the protocol on the bundle's evaluation and return its leaderboard row (see :func:`write_row`);
    ``progress``: a tqdm bar on stderr, one step per batch and attack, with the samples still robust."""
    _check_eps(eps, eps_units)
    attacks = classification_protocol(eps, version, budget, value_range, seed)  # an unknown version/budget: named
    if eps_units == "range":
        attacks = {label: with_eps_units(a, "range") for label, a in attacks.items()}
    start = time.perf_counter()
    data = load_bundle_evaluation(bundle, config_file, overrides, device, max_samples)
    network, batches = data["network"], data["batches"]
    widths = torch.cat([intensity_range(x).reshape(-1).cpu() for x, _ in batches])
    absolute = widths * eps if eps_units == "range" else torch.full_like(widths, eps)
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
        flags.append(f"Square (black-box) broke {result.breaks['Square']} sample(s) both APGD runs failed on: "
                     "gradient masking")
    if check_masking:
        from .sanity import check_gradient_masking

        flags += check_gradient_masking(network, batches[:2], task="classification", eps=float(absolute.mean()),
                                        device=device)
    metadata = data["metadata"]
    return {
        "protocol": version, "budget": budget, "name": name or metadata.get("name") or data["root"].name,
        "bundle": {"name": metadata.get("name") or data["root"].name, "version": metadata.get("version"),
                   "path": str(data["root"]), "config_files": data["files"]},
        "weights": {"file": data["checkpoint"], "sha256": file_sha256(data["checkpoint"])},
        "dataset": {"num_samples": result.num_samples, "fingerprint": dataset_fingerprint(batches),
                    "num_classes": data["num_classes"]},
        "eps": eps, "eps_units": eps_units,
        "eps_absolute": {"mean": float(absolute.mean()), "min": float(absolute.min()), "max": float(absolute.max())},
        "value_range": list(value_range) if isinstance(value_range, (list, tuple)) else value_range,
        "clean_accuracy": result.clean_accuracy, "robust_accuracy": result.robust_accuracy,
        "attacks": {label: attack.config() for label, attack in attacks.items()},
        "breaks": result.breaks, "attacked": result.attacked, "attack_seconds": result.to_dict()["seconds"],
        "flags": flags, "wall_seconds": round(time.perf_counter() - start, 2),
        "device": str(device) if str(device) == "cpu" or not torch.cuda.is_available()
        else torch.cuda.get_device_name(torch.device(device)),
        "versions": versions(), "seed": seed,
    }


def _report(row: Mapping[str, Any]) -> str:
    lines = [f"# Benchmark: {row['name']}", "",
             f"Protocol {row['protocol']} ({row['budget']} budget), eps {row['eps']:.6g} ({row['eps_units']}; "
             f"absolute {row['eps_absolute']['mean']:.4g} on average), {row['dataset']['num_samples']} test samples "
             f"of {row['bundle']['name']} {row['bundle']['version'] or ''}".rstrip() + ".", "",
             "| | accuracy |", "|---|---|", f"| clean | {row['clean_accuracy']:.4f} |",
             f"| robust (worst case over the cascade) | {row['robust_accuracy']:.4f} |", "",
             "| attack (in cascade order) | ran on | broke | seconds |", "|---|---|---|---|"]
    for label in row["breaks"]:
        lines.append(f"| {label} | {row['attacked'][label]} | {row['breaks'][label]} | "
                     f"{row['attack_seconds'][label]:.1f} |")
    lines += ["", "![accuracy after each attack of the cascade](cascade.png)"] if "plots" in row else []
    lines += ["", "## Flags", ""] + ([f"- {f}" for f in row["flags"]] or ["none"])
    lines += ["", f"Weights sha256 `{row['weights']['sha256'][:16]}`, data fingerprint "
                  f"`{row['dataset']['fingerprint'][:16]}`, {row['wall_seconds']} s on {row['device']}; "
                  + ", ".join(f"{k} {v}" for k, v in row["versions"].items()) + ".", ""]
    return "\n".join(lines)


def write_row(row: Mapping[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """``output_dir/cascade.png`` (accuracy after each attack), ``report.md`` and, last, ``leaderboard.json``, each
    written atomically (an earlier run's files stay whole until the new ones are complete)."""
    from .plots import plot_cascade

    out = Path(output_dir)
    row = {**row, "plots": ["cascade.png"]}
    return {"plot": plot_cascade(row, out / "cascade.png"),
            "markdown": atomic_write_text(out / "report.md", _report(row)),
            "json": atomic_write_text(out / "leaderboard.json", json.dumps(row, indent=2) + "\n")}
