"""Small helpers shared by bundles, the CLI and the training methods."""

from __future__ import annotations

import glob
import os
import re
from typing import Any

__all__ = ["checkpoint_dict", "latest_checkpoint", "resume_checkpoint", "read_checkpoint", "check_checkpoint",
           "load_weights", "check_overrides"]


def checkpoint_dict(**items: Any) -> dict[str, Any]:
    """The ``save_dict``/``load_dict`` of a ``CheckpointSaver``/``CheckpointLoader``, without the entries
    that are None (e.g. ``method`` when training is standard and there is no method state)."""
    return {k: v for k, v in items.items() if v is not None}


def _numbered_checkpoints(ckpt_dir: str, prefix: str) -> list[tuple[int, str]]:
    """``[(N, path), ...]`` of the ``{prefix}_*=N.pt`` files (ignite's naming) in ``ckpt_dir``, newest first."""
    pattern = os.path.join(glob.escape(str(ckpt_dir)), f"{prefix}_*.pt")
    found = []
    for path in glob.glob(pattern):
        match = re.search(r"=(\d+)\.pt$", path)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def latest_checkpoint(ckpt_dir: str, prefix: str = "checkpoint") -> str:
    """Path of the newest ``{prefix}_epoch=N.pt`` (ignite's naming) in ``ckpt_dir``, by epoch number.

    Does not open it: to resume, :func:`resume_checkpoint` also skips unreadable files and checks the data.

    Raises:
        FileNotFoundError: naming the folder, when it holds no such checkpoint.
    """
    found = _numbered_checkpoints(ckpt_dir, prefix)
    if not found:
        raise FileNotFoundError(f"no checkpoint '{prefix}_epoch=N.pt' to resume from in {ckpt_dir!r}")
    return found[0][1]


def _reason(err: BaseException) -> str:
    """The first line of a loader's error, short (torch's zip reader errors run on for lines)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = text.split(". ")[0][:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: names the file and why (empty, truncated/corrupt, not a checkpoint)."""


#: how a file torch writes begins: a zip archive (torch >= 1.6) or a pickle (the legacy format)
_ZIP_MAGIC = b"PK\x03\x04"


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """Read a checkpoint file with ``torch.load(weights_only=True)`` (it cannot run code), or raise one clear error.

    The one reader of monai-dpaat's checkpoints (:func:`load_weights`, :func:`resume_checkpoint`,
    :func:`check_checkpoint`, the CLI). Returns what the file holds.

    Raises:
        FileNotFoundError: ``path`` does not exist (names it).
        CheckpointError (a ``ValueError``): ``path`` is a directory, an empty file, a truncated or corrupt
            PyTorch file, or not a PyTorch checkpoint at all (names the file and the reason, in one line).
    """
    import pickle

    import torch

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"cannot read {what} {path!r}: it is a directory, not a checkpoint file")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise CheckpointError(f"cannot read {what} {path!r}: {err.strerror or err}") from None
    if size == 0:
        raise CheckpointError(f"cannot read {what} {path!r}: the file is empty (0 bytes; a save or copy that never "
                              "completed?)")
    torch_file = head == _ZIP_MAGIC or head[:1] == b"\x80"  # zip archive, or a pickle (protocol >= 2)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - every reader error becomes one message
        if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
            reason = ("not a plain checkpoint: it holds pickled objects other than tensors and plain containers, whose "
                      f"code weights_only=True refuses to run ({_reason(err)})")
        elif torch_file:
            reason = f"the file is truncated or corrupt ({size} bytes; {_reason(err)})"
        else:
            reason = f"not a PyTorch checkpoint (the file starts with {head!r}; {_reason(err)})"
        raise CheckpointError(f"cannot read {what} {path!r}: {reason}") from None


def check_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> str:
    """Raise the error of :func:`read_checkpoint` when ``path`` is not a readable checkpoint dict; return ``path``.

    Meant for the ``initialize`` list of a bundle's inference/evaluate config, so an unreadable ``model.pt`` is
    named before any data is read: ``"$monai_dpaat.utils.check_checkpoint(@ckpt_path)"``.
    """
    obj = read_checkpoint(path, what=what)
    if not isinstance(obj, dict):
        raise CheckpointError(f"cannot read {what} {os.fspath(path)!r}: it holds a {type(obj).__name__}, not a "
                              "checkpoint dict")
    return os.fspath(path)


def resume_checkpoint(ckpt_dir: str, training: Any = None, prefix: str = "checkpoint", key: str = "data") -> str:
    """Path of the checkpoint to resume from: the newest readable ``{prefix}_*=N.pt`` in ``ckpt_dir``.

    Each candidate, newest first, is read with ``torch.load(weights_only=True)`` on the CPU; an unreadable one
    (truncated by a crash, corrupt) is skipped with a warning naming it, and the next older one is tried. With
    ``training`` (a :class:`monai_dpaat.handlers.checkpoint.TrainingData` of this run), the chosen checkpoint's
    ``key`` entry must record the same data (seed, split, ordered training ids): a resume never silently trains
    on another split, nor points a per-sample epsilon table at other images.

    Meant for a bundle's ``resume.json``: ``"resume_from": "$monai_dpaat.utils.resume_checkpoint(@ckpt_dir,
    training=@training_data)"``, the ``load_path`` of ``monai.handlers.CheckpointLoader``.

    Raises:
        FileNotFoundError: ``ckpt_dir`` holds no such checkpoint.
        ValueError: none of them is readable (names each file and why), or the newest readable one was trained on
            other data (names the checkpoint and what changed).
    """
    import warnings

    import torch

    found = _numbered_checkpoints(ckpt_dir, prefix)
    if not found:
        raise FileNotFoundError(f"no checkpoint '{prefix}_epoch=N.pt' to resume from in {ckpt_dir!r}")
    broken = []
    for _, path in found:
        try:
            ckpt = read_checkpoint(path)
            if not isinstance(ckpt, dict):
                raise ValueError(f"holds a {type(ckpt).__name__}, not a checkpoint dict")
        except (OSError, ValueError) as err:  # truncated (a non-atomic copy, a full disk), corrupt, not a torch file
            text = str(err)
            text = text.split(": ", 1)[1] if text.startswith("cannot read checkpoint") else text
            broken.append(f"{path!r} ({type(err).__name__}: {text})")
            continue
        if broken:
            warnings.warn(
                f"resuming from {path!r}: the newer checkpoint(s) {', '.join(broken)} are unreadable (truncated or "
                "corrupt) and were skipped", stacklevel=2,
            )
        if training is not None:
            training.check(ckpt.get(key), f"checkpoint {path!r}")
        return path
    raise ValueError(
        f"no readable checkpoint to resume from in {ckpt_dir!r}: {'; '.join(broken)}. Each is truncated or corrupt; "
        "start a new training (or restore a copy of the folder)."
    )


def load_weights(network: Any, checkpoint: str | os.PathLike, key: str | None = None, map_location: Any = "cpu") -> Any:
    """Load weights into ``network`` from a state-dict file or a MONAI/ignite checkpoint, safely.

    Accepts a bare ``state_dict`` (what ``CheckpointSaver`` writes for a one-entry ``save_dict``), or a dict
    holding it under ``key`` / ``"model"`` / ``"network"`` / ``"state_dict"``. Uses ``torch.load(weights_only=True)``,
    so a checkpoint can't run code. Keys saved from a ``DistributedDataParallel`` wrapper (``module.`` prefix) are
    accepted. Names and shapes are checked before anything is copied, so a checkpoint that does not fit leaves
    ``network`` untouched. Returns ``network``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable checkpoint (a directory, empty, truncated or corrupt, not a
            checkpoint: :func:`read_checkpoint`), or its weights do not fit ``network`` (names the file
            and the first mismatching keys).
    """
    import torch

    path = os.fspath(checkpoint)
    obj = read_checkpoint(path, map_location=map_location)
    state = obj
    if isinstance(obj, dict):
        for k in ([key] if key else []) + ["model", "network", "state_dict"]:
            if k in obj and isinstance(obj[k], dict):
                state = obj[k]
                break
        else:
            if key:
                raise ValueError(f"checkpoint {path!r} has no entry {key!r}; it has {sorted(obj)[:10]}")
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path!r} holds a {type(state).__name__}, not a state dict")
    target = getattr(network, "module", network)  # DistributedDataParallel / DataParallel
    own = target.state_dict()
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state) and not any(
        k.startswith("module.") for k in own
    ):  # saved from a DistributedDataParallel / DataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    # check names and shapes first: load_state_dict copies every fitting tensor before it raises, which
    # would leave the network half-overwritten by a checkpoint of another architecture
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs network {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"shape mismatch {mismatched[:3]}")
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise ValueError(
            f"checkpoint {path!r} does not fit the network {type(target).__name__} (was it saved from another "
            f"network or with other num_classes/in_channels?): {'; '.join(parts)}"
        )
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        raise ValueError(f"checkpoint {path!r} does not fit the network {type(target).__name__}: {' '.join(lines[:3])[:600]}") from None
    return network


#: keyword arguments of ``monai.bundle run`` itself (not config ids)
_RUN_ARGS = ("run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file")


def check_overrides(argv: list[str] | None = None, config_file: Any = None) -> None:
    """Raise ``ValueError`` when a ``--key value`` override of ``python -m monai.bundle run`` names no id of
    the bundle's configs (a misspelled key would otherwise be added silently and ignored).

    Meant for a bundle's ``"initialize"`` list: ``"$monai_dpaat.utils.check_overrides()"``. Reads ``sys.argv``
    (does nothing when it holds no ``--config_file``, e.g. a ``ConfigWorkflow`` built in Python) and the
    config files named there (or ``config_file``: a path or list of paths). Nested ids (``train#trainer#max_epochs``)
    must exist down to their last part's parent; the last part may be new only where the parent is a
    ``_target_`` component (an extra constructor argument).
    """
    import difflib
    import sys

    from monai.bundle import ConfigParser

    args = list(sys.argv[1:] if argv is None else argv)
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            key, eq, value = arg[2:].partition("=")
            if not eq:
                value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else True
                i += 0 if value is True else 1
            overrides[key.replace("-", "_") if key.replace("-", "_") in _RUN_ARGS else key] = value
        i += 1
    files = config_file if config_file is not None else overrides.get("config_file")
    if files is None:
        return
    if isinstance(files, str):
        text = files.strip()
        if text.startswith("["):  # fire's list syntax: "['configs/train.json','configs/quick.json']"
            files = [f.strip().strip("'\"") for f in text.strip("[]").split(",") if f.strip()]
        else:
            files = [text]
    config = ConfigParser.load_config_files(list(files))
    known = sorted(str(k) for k in config)
    for key in overrides:
        if key in _RUN_ARGS:
            continue
        parts = key.split("#")
        node: Any = config
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif last and depth > 0 and isinstance(node, dict) and "_target_" in node:
                break  # an extra argument of a component
            else:
                where = "#".join(parts[:depth]) or "the top level"
                options = [str(k) for k in node] if isinstance(node, dict) else known
                close = difflib.get_close_matches(part, options, n=3)
                hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                raise ValueError(
                    f"unknown config key {key!r} (override --{key}): {part!r} is not an id at {where} of "
                    f"{[str(f) for f in files]}{hint}"
                )
