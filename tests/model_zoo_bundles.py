"""Two real MONAI Model Zoo bundles (configs only, see ``tests/model_zoo/README.md``) and the small dummy data
their own CI tests make (``Project-MONAI/model-zoo`` ``ci/unit_tests/test_endoscopic_inbody_classification.py``
and ``test_endoscopic_tool_segmentation.py``), at tiny sizes.

- ``copy_bundle(name, tmp_path)``: a private copy of ``tests/model_zoo/<name>`` (a run writes ``models/``,
  ``eval/`` and, for the classification bundle, ``label/`` under its ``bundle_root``).
- ``make_dummy_data(bundle, root)``: writes random JPEGs (and labels / JSON datalists) as the Zoo tests do and
  returns the ``--key value`` overrides those tests pass (plus ``epochs=1``, small batches, ``num_workers=0``,
  32x32 images, CPU).
- ``run_bundle(bundle_dir, config_files, overrides)``: ``python -m monai.bundle run`` in a subprocess whose cwd
  is a fresh temporary folder (never the bundle), returning ``(returncode, stdout + stderr)``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from monai_dpaat import bundle_overrides

REPO = Path(__file__).resolve().parents[1]
MODEL_ZOO = Path(__file__).resolve().parent / "model_zoo"
#: the installed override files (package data; ``bundles/overrides`` in a checkout links to them)
OVERRIDES = bundle_overrides.OVERRIDES_DIR
CLASSIFICATION = "endoscopic_inbody_classification"
SEGMENTATION = "endoscopic_tool_segmentation"
BUNDLES = (CLASSIFICATION, SEGMENTATION)

# the Zoo tests write 10 images per class folder at 256x256 (classification) / 736x480 (segmentation) and resize
# to 32x32 through ``train#deterministic_transforms#3#spatial_size``; here the images are already small
SPATIAL = (32, 32)


def copy_bundle(name: str, tmp_path: Path) -> Path:
    """Copy ``tests/model_zoo/<name>`` to ``tmp_path / name`` and return the copy (its ``bundle_root``)."""
    dst = Path(tmp_path) / name
    shutil.copytree(MODEL_ZOO / name, dst, ignore=shutil.ignore_patterns("models", "eval", "label", "__pycache__"))
    return dst


def prepare_bundle(name: str, tmp_path: Path, **kwargs: Any) -> tuple[Path, dict[str, Any]]:
    """A private copy of bundle ``name`` under ``tmp_path`` with its dummy data: ``(bundle, overrides)``
    (``kwargs`` go to :func:`make_dummy_data`)."""
    bundle = copy_bundle(name, tmp_path)
    return bundle, make_dummy_data(name, tmp_path, bundle_root=bundle, **kwargs)


def _write_jpg(array: np.ndarray, path: Path, channel_dim: int | None) -> None:
    from monai.data import PILWriter

    writer = PILWriter(np.uint8)
    writer.set_data_array(array, channel_dim=channel_dim)
    writer.write(str(path), verbose=False)


def _classification_datalists(data_path: Path, out_path: Path) -> None:
    """``models/endoscopic_inbody_classification/scripts/data_process.py`` (``generate_labels``): a 60/20/20 split
    per class into ``train_samples.json``, ``val_samples.json``, ``test_samples.json`` (label 1 = outbody)."""
    data_list = [os.path.join(r, x) for r, _, files in sorted(os.walk(data_path)) for x in sorted(files) if "jpg" in x]
    items = [{"image": x, "label": int("outbody" in os.path.basename(os.path.dirname(x)))} for x in data_list]
    inbody = [d for d in items if d["label"] == 0]
    outbody = [d for d in items if d["label"] != 0]
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for group in (inbody, outbody):
        n_train, n_val = int(len(group) * 0.6), int(len(group) * (0.6 + 0.2))
        splits["train"] += group[:n_train]
        splits["val"] += group[n_train:n_val]
        splits["test"] += group[n_val:]
    out_path.mkdir(parents=True, exist_ok=True)
    for split, content in splits.items():
        with open(out_path / f"{split}_samples.json", "w+") as fp:
            json.dump(content, fp, indent=4, separators=(",", ":"))


def make_dummy_data(bundle: str, root: Path, bundle_root: Path | None = None, per_class: int = 5,
                    batch_size: int = 2, seed: int = 0, spatial: Sequence[int] = SPATIAL) -> dict[str, Any]:
    """Write the Zoo CI's dummy data for ``bundle`` under ``root / "data"`` and return the overrides.

    Classification (as the Zoo test): ``inbody/`` and ``outbody/`` folders of random RGB JPEGs (values 0..4),
    datalists by the bundle's ``scripts/data_process.py`` split written to ``<bundle_root>/label/`` (where its
    ``train_json``/``val_json`` look). ``per_class=5`` gives 3 + 3 training and 1 + 1 validation images.
    Segmentation (as the Zoo test): ``{train,val,test}/{inbody,outbody}/<name>_<s>.jpg`` with random RGB JPEGs and
    ``<name>_<s>_seg.jpg`` labels (values 0..4) for train and val. ``per_class=5`` gives 10 training and 10
    validation tiles.

    ``bundle_root`` defaults to ``root``; it is always among the returned overrides (the bundles' paths are
    relative to it: drop it to see their ``FileNotFoundError``).

    ``spatial``: the images' height and width, also the size ``train#deterministic_transforms#3`` resizes to
    (default 32x32; the bundles' native sizes are 256x256 and 736x480).
    """
    root = Path(root)
    bundle_root = Path(bundle_root) if bundle_root is not None else root
    dataset_dir = root / "data"
    rng = np.random.default_rng(seed)
    overrides: dict[str, Any] = {
        "bundle_root": str(bundle_root),
        "dataset_dir": str(dataset_dir),
        "device": "$torch.device('cpu')",
        "train#trainer#max_epochs": 1,
        "train#dataloader#num_workers": 0,
        "validate#dataloader#num_workers": 0,
        "train#dataloader#batch_size": batch_size,
        "validate#dataloader#batch_size": batch_size,
        "train#deterministic_transforms#3#spatial_size": list(spatial),
    }
    if bundle == CLASSIFICATION:
        for sub in ("inbody", "outbody"):
            (dataset_dir / sub).mkdir(parents=True, exist_ok=True)
            for s in range(per_class):
                image = rng.integers(0, 5, size=(3, *spatial)).astype(np.int8)
                _write_jpg(image, dataset_dir / sub / f"{sub}_{s}.jpg", channel_dim=0)
        _classification_datalists(dataset_dir, bundle_root / "label")
    elif bundle == SEGMENTATION:
        for mode in ("train", "val", "test"):
            for sub in ("inbody", "outbody"):
                folder = dataset_dir / mode / sub
                folder.mkdir(parents=True, exist_ok=True)
                for s in range(per_class):
                    image = rng.integers(0, 5, size=(3, *spatial)).astype(np.int8)
                    _write_jpg(image, folder / f"{sub}_{s}.jpg", channel_dim=0)
                    if mode != "test":
                        label = rng.integers(0, 5, size=tuple(spatial)).astype(np.int8)
                        _write_jpg(label, folder / f"{sub}_{s}_seg.jpg", channel_dim=None)
        overrides["train#dataset#num_workers"] = 0  # its training CacheDataset caches with 4 workers
    else:
        raise ValueError(f"unknown Model Zoo bundle {bundle!r}; expected one of {BUNDLES}")
    return overrides


def _cli_value(value: Any) -> str:
    """How a Python value is written on the ``monai.bundle`` command line (python-fire parses it back)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def bundle_command(bundle_dir: Path, config_files: Sequence[str | Path], overrides: Mapping[str, Any],
                   launcher: Sequence[str] = (sys.executable, "-m")) -> list[str]:
    """The ``monai.bundle run`` command line; ``config_files`` relative to ``bundle_dir`` are made absolute."""
    bundle_dir = Path(bundle_dir)
    files = [str(p if Path(p).is_absolute() else bundle_dir / p) for p in config_files]
    cmd = [*launcher, "monai.bundle", "run", "--config_file", repr(files),
           "--meta_file", str(bundle_dir / "configs" / "metadata.json"),
           "--logging_file", str(bundle_dir / "configs" / "logging.conf")]
    for key, value in overrides.items():
        cmd += [f"--{key}", _cli_value(value)]
    return cmd


def run_bundle(bundle_dir: Path, config_files: Sequence[str | Path], overrides: Mapping[str, Any],
               timeout: float = 300, cwd: Path | None = None,
               launcher: Sequence[str] = (sys.executable, "-m"),
               env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Run ``python -m monai.bundle run`` on ``bundle_dir``'s ``config_files`` (composed in order) with
    ``overrides`` as ``--key value``; cwd is ``cwd`` or a fresh temporary folder (not the bundle, so relative
    paths do not resolve by accident). Returns ``(returncode, stdout + stderr)``; raises
    ``subprocess.TimeoutExpired`` past ``timeout`` seconds. ``env`` adds environment variables (the run is on
    CPU: ``CUDA_VISIBLE_DEVICES`` is emptied)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    cmd = bundle_command(bundle_dir, config_files, overrides, launcher)
    with tempfile.TemporaryDirectory(prefix="zoo_cwd_") as tmp:
        proc = subprocess.run(cmd, cwd=str(cwd or tmp), capture_output=True, text=True, timeout=timeout, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def adversarial_configs(method: str | None = "dpaat", robust_validation: bool = False) -> list[str]:
    """This project's override files (absolute paths) to compose after a bundle's ``train.json``."""
    files = [bundle_overrides.override_path("adversarial_train")]
    if method is not None:
        files.append(bundle_overrides.override_path(method))
    if robust_validation:
        files.append(bundle_overrides.override_path("robust_validation"))
    return files


def ok(rc: int, out: str) -> str:
    """``out`` of a run that exited 0 (else an assertion error with its last 4000 characters)."""
    assert rc == 0, f"monai.bundle run failed ({rc}):\n{out[-4000:]}"
    return out


def tensorboard_tags(folder: Path) -> set[str]:
    """Every scalar and histogram tag in the TensorBoard event files under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in Path(folder).glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        found = acc.Tags()
        tags |= set(found.get("scalars", [])) | set(found.get("histograms", []))
    return tags
