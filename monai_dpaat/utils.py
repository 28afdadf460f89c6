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
