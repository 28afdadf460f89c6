"""Small helpers shared by bundles, the CLI and the training methods."""

from __future__ import annotations

import glob
import os
import re
from typing import Any

__all__ = ["checkpoint_dict", "latest_checkpoint"]


def checkpoint_dict(**items: Any) -> dict[str, Any]:
    """The ``save_dict``/``load_dict`` of a ``CheckpointSaver``/``CheckpointLoader``, without the entries
    that are None (e.g. ``method`` when training is standard and there is no method state)."""
    return {k: v for k, v in items.items() if v is not None}


def latest_checkpoint(ckpt_dir: str, prefix: str = "checkpoint") -> str:
    """Path of the newest ``{prefix}_epoch=N.pt`` (ignite's naming) in ``ckpt_dir``, by epoch number.

    Raises:
        FileNotFoundError: naming the folder, when it holds no such checkpoint.
    """
    pattern = os.path.join(glob.escape(str(ckpt_dir)), f"{prefix}_*.pt")
    found = []
    for path in glob.glob(pattern):
        match = re.search(r"=(\d+)\.pt$", path)
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        raise FileNotFoundError(f"no checkpoint '{prefix}_epoch=N.pt' to resume from in {ckpt_dir!r}")
    return max(found)[1]


def load_weights(network: Any, checkpoint: str | os.PathLike, key: str | None = None, map_location: Any = "cpu") -> Any:
    """Load weights into ``network`` from a state-dict file or a MONAI/ignite checkpoint, safely.

    Accepts a bare ``state_dict`` (what ``CheckpointSaver`` writes for a one-entry ``save_dict``), or a dict
    holding it under ``key`` / ``"model"`` / ``"network"`` / ``"state_dict"``. Uses ``torch.load(weights_only=True)``,
    so a checkpoint can't run code. Returns ``network``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable checkpoint, or its weights do not fit ``network`` (names the file
            and the first mismatching keys).
    """
    import torch

    path = os.fspath(checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated file, pickle with code, not a torch file ...
        raise ValueError(f"cannot read checkpoint {path!r}: {err}") from None
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
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        raise ValueError(f"checkpoint {path!r} does not fit the network {type(target).__name__}: {' '.join(lines[:3])[:600]}") from None
    return network
