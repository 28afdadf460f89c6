"""A ``CheckpointSaver`` whose files are never half-written.

MONAI's ``CheckpointSaver`` builds ignite ``DiskSaver``s with ``atomic=False`` (for group read permission),
so a run killed while ``torch.save`` writes leaves a truncated checkpoint under the final name. ignite's
atomic mode writes to a temporary file in the same folder, ``os.replace``s it (atomic on POSIX) and then
adds group/other read permission, so the newest file under a checkpoint name is always loadable.
"""

from __future__ import annotations

from collections.abc import Mapping

from ignite.handlers import DiskSaver

from monai.handlers import CheckpointSaver

__all__ = ["AtomicCheckpointSaver"]


class _AtomicDiskSaver(DiskSaver):
    """ignite's atomic ``DiskSaver`` plus MONAI's optional fixed file name."""

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def remove(self, filename: str) -> None:
        super().remove(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """Drop-in ``monai.handlers.CheckpointSaver`` (same arguments) that writes every checkpoint atomically."""

    def __init__(self, save_dir: str, save_dict: dict, *args, **kwargs) -> None:
        import os

        try:  # a clear error for a save_dir that cannot be a folder (e.g. under a regular file) or written
            os.makedirs(save_dir, exist_ok=True)
        except OSError as err:
            raise ValueError(f"checkpoint save_dir {str(save_dir)!r} cannot be created: {err.strerror or err}") from None
        if not os.access(save_dir, os.W_OK | os.X_OK):
            raise ValueError(f"checkpoint save_dir {str(save_dir)!r} is not writable")
        super().__init__(save_dir, save_dict, *args, **kwargs)
        for name in ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint"):
            checkpoint = getattr(self, name, None)
            if checkpoint is not None:
                fixed = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, filename=fixed)
