"""Checkpoints that are never lost or half-written, and the record of what a run was trained on.

:class:`AtomicCheckpointSaver` takes the arguments of ``monai.handlers.CheckpointSaver`` and writes the same files,
through :class:`AtomicDiskSaver`: every file is written to a temporary file in the same folder and ``os.replace``\\ d
into place (atomic on POSIX), and a file ignite's ``Checkpoint`` retires (``n_saved``, a new best under a fixed
``key_metric_filename``) is deleted only after its successor is complete. So a run killed at any moment leaves
``model.pt`` and the newest checkpoints whole, with the old or the new contents.

The validation state a resume must continue is an entry of the trainer's interval checkpoints too: a best-model
:class:`AtomicCheckpointSaver` (``state_dict``: the saved best files and their scores, and the evaluator's MONAI
``best_metric`` / ``best_metric_epoch``), so that the first validation after a resume replaces ``model.pt`` only with
a better model; and :class:`ResumableEarlyStopHandler` (MONAI's ``EarlyStopHandler`` with the patience counter and
best score in a ``state_dict``). :func:`entries_saved_in` lets a resume load them only from checkpoints that have
them (older ones resume with a warning that this state restarts).

:class:`TrainingData` is an entry of a checkpoint's ``save_dict``: the seed, the ordered training ids (the rows of a
per-sample epsilon table) and the val/test ids, so that a resume can refuse a run whose split differs
(:func:`monai_dpaat.utils.resume_checkpoint`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import numbers
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, EarlyStopping

from monai.handlers import EarlyStopHandler
from monai.utils import is_scalar

from monai_dpaat.atomic_io import atomic_write

__all__ = ["AtomicCheckpointSaver", "AtomicDiskSaver", "ResumableEarlyStopHandler", "TrainingData",
           "entries_saved_in"]


class AtomicDiskSaver(DiskSaver):
    """An ignite ``DiskSaver`` that replaces files atomically and deletes retired files only after the next write.

    ignite's ``Checkpoint`` calls ``remove(old)`` *before* it writes the new file, and under a fixed file name (MONAI's
    ``key_metric_filename="model.pt"``) ``old`` is the very file being replaced: a run killed in between has none.
    Here ``remove`` only queues the name; once the next file is complete (temporary file in the same folder, flushed
    and fsynced, then ``os.replace``), the queued files other than the one just written are deleted.

    Args:
        dirname: the folder of the checkpoints (created if missing).
        filename: a fixed file name for every save (MONAI's ``final_filename`` / ``key_metric_filename``).
        save_on_rank: the rank that writes, under ``torch.distributed``.
        kwargs: passed to ``torch.save``.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, save_on_rank: int = 0, **kwargs: Any):
        super().__init__(dirname, atomic=True, create_dir=True, require_empty=False, save_on_rank=save_on_rank,
                         **kwargs)
        self.filename = filename
        self._retired: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != self.save_on_rank:
            return
        name = self.filename or filename
        path = self.dirname / name
        # a hidden *.tmp name: no loader or glob of checkpoints picks up a half-written file; mode 0666 & ~umask
        atomic_write(path, lambda f: torch.save(checkpoint, f, **self.kwargs))
        retired, self._retired = self._retired, []
        for old in retired:
            if old != name:  # the one just written replaced it in place
                with contextlib.suppress(FileNotFoundError):
                    (self.dirname / old).unlink()

    def remove(self, filename: str) -> None:
        """Queue ``filename`` for deletion once the next checkpoint is written (see the class docstring)."""
        name = self.filename or filename
        if name not in self._retired:
            self._retired.append(name)


def _saved(checkpoint: Checkpoint) -> tuple[str, list]:
    """``(key, [(priority, filename), ...])`` of ignite's public ``Checkpoint.state_dict()``."""
    ((key, saved),) = checkpoint.state_dict().items()
    return key, [tuple(item) for item in saved]


def _plain(value: Any) -> Any:
    """A score as a Python int/float (a 0-d tensor or a numpy scalar would not load with ``weights_only=True``)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


class AtomicCheckpointSaver:
    """``monai.handlers.CheckpointSaver`` (the same arguments, events and file names) whose files are never lost or
    half-written: the ignite ``Checkpoint`` objects are built here with :class:`AtomicDiskSaver`.

    Differences from MONAI's: a resumed run's interval checkpoints count the earlier run's files of the same name
    pattern (older than the resumed epoch/iteration, newest ``n_saved``) towards ``n_saved``, so they are rotated
    out instead of piling up; a ``save_dir`` that cannot be created or written fails at construction; and a best-model
    saver (``save_key_metric=True``) is itself an entry for the trainer's ``save_dict``: its :meth:`state_dict` (the
    best files kept and their scores, plus the ``best_metric`` / ``best_metric_epoch`` of the engine it is attached
    to) goes into the interval checkpoints, and a ``CheckpointLoader`` restores it with :meth:`load_state_dict`, so a
    resumed run replaces ``model.pt`` only with a model that beats the best one saved before the resume.

    Args: as ``monai.handlers.CheckpointSaver``:
        save_dir: the folder of the checkpoints.
        save_dict: the objects to save, e.g. ``{"model": net, "optimizer": opt, "trainer": trainer}``.
        name: logger name (default: the engine's logger).
        file_prefix: prefix of the file names.
        save_final: save at the end of the run or on an exception (``final_filename`` or
            ``checkpoint_final_iteration=N.pt``).
        final_filename: fixed name of the final checkpoint.
        save_key_metric: save when the key metric beats all earlier values.
        key_metric_name: the metric in ``engine.state.metrics`` (default ``engine.state.key_metric_name``).
        key_metric_n_saved: how many best checkpoints to keep.
        key_metric_filename: fixed name of the best checkpoint (then ``key_metric_n_saved`` must be 1).
        key_metric_save_state: also save the best-score tracking list (key ``checkpointer``).
        key_metric_greater_or_equal: an equal score replaces the saved one.
        key_metric_negative_sign: smaller is better.
        epoch_level: ``save_interval`` counts epochs (True) or iterations.
        save_interval: save every N epochs/iterations (0: never).
        n_saved: interval checkpoints to keep (None: all).
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: dict,
        name: str | None = None,
        file_prefix: str = "",
        save_final: bool = False,
        final_filename: str | None = None,
        save_key_metric: bool = False,
        key_metric_name: str | None = None,
        key_metric_n_saved: int = 1,
        key_metric_filename: str | None = None,
        key_metric_save_state: bool = False,
        key_metric_greater_or_equal: bool = False,
        key_metric_negative_sign: bool = False,
        epoch_level: bool = True,
        save_interval: int = 0,
        n_saved: int | None = None,
    ) -> None:
        if save_dir is None:
            raise ValueError("AtomicCheckpointSaver needs a save_dir.")
        if not save_dict:
            raise ValueError("AtomicCheckpointSaver needs a non-empty save_dict (the objects to save).")
        if save_key_metric and key_metric_filename is not None and key_metric_n_saved > 1:
            raise ValueError("with a fixed key_metric_filename only one best model can be kept (key_metric_n_saved=1).")
        try:  # a clear error for a save_dir that cannot be a folder (e.g. under a regular file) or written
            os.makedirs(save_dir, exist_ok=True)
        except OSError as err:
            reason = err.strerror or err
            raise ValueError(f"checkpoint save_dir {str(save_dir)!r} cannot be created: {reason}") from None
        if not os.access(save_dir, os.W_OK | os.X_OK):
            raise ValueError(f"checkpoint save_dir {str(save_dir)!r} is not writable")
        self.save_dir = save_dir
        self.save_dict = save_dict
        self.logger = logging.getLogger(name)
        self._name = name
        self.file_prefix = file_prefix
        self.final_filename = final_filename
        self.key_metric_name = key_metric_name
        self.key_metric_filename = key_metric_filename
        self.key_metric_negative_sign = key_metric_negative_sign
        self.epoch_level = epoch_level
        self.save_interval = save_interval
        self._adopted = False
        self._engine: Engine | None = None  # the engine attached to (its best_metric is part of the state)
        self._best_metric: dict[str, Any] | None = None  # restored before attach: applied by attach

        def saver(filename: str | None = None) -> AtomicDiskSaver:
            return AtomicDiskSaver(save_dir, filename=filename)

        self.final_checkpoint: Checkpoint | None = None
        self.key_metric_checkpoint: Checkpoint | None = None
        self.interval_checkpoint: Checkpoint | None = None
        if save_final:
            self.final_checkpoint = Checkpoint(
                save_dict, saver(final_filename), filename_prefix=file_prefix,
                score_function=lambda engine: engine.state.iteration, score_name="final_iteration",
            )
        if save_key_metric:
            self.key_metric_checkpoint = Checkpoint(
                save_dict, saver(key_metric_filename), filename_prefix=file_prefix, score_function=self._key_metric,
                score_name="key_metric", n_saved=key_metric_n_saved, include_self=key_metric_save_state,
                greater_or_equal=key_metric_greater_or_equal,
            )
        if save_interval > 0:
            self.interval_checkpoint = Checkpoint(
                save_dict, saver(), filename_prefix=file_prefix, score_function=self._interval_score,
                score_name="epoch" if epoch_level else "iteration", n_saved=n_saved,
            )

    def _key_metric(self, engine: Engine) -> Any:
        metric_name = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        if not isinstance(metric_name, str):
            raise ValueError(f"Incompatible values: save_key_metric=True and key_metric_name={self.key_metric_name}.")
        metric = engine.state.metrics[metric_name]
        if not is_scalar(metric):
            warnings.warn(
                f"key metric {metric_name}={metric} is not a scalar value: not compared, no model saved. Use another "
                "key metric, or the `reduction` mode 'mean'."
            )
            return -1
        return (-1 if self.key_metric_negative_sign else 1) * metric

    def _interval_score(self, engine: Engine) -> int:
        return engine.state.epoch if self.epoch_level else engine.state.iteration

    def state_dict(self) -> dict[str, Any]:
        """The best-model tracking, for an entry of the trainer's ``save_dict`` (``weights_only``-loadable).

        ``{"key_metric": [[score, filename], ...], "best_metric": ..., "best_metric_epoch": ...}``: the best
        checkpoints kept (ignite's ``Checkpoint.state_dict()``, scores as Python numbers) and, once attached, the
        engine's MONAI ``best_metric`` / ``best_metric_epoch``. Empty without ``save_key_metric``.
        """
        if self.key_metric_checkpoint is None:
            return {}
        _, saved = _saved(self.key_metric_checkpoint)
        state: dict[str, Any] = {"key_metric": [[_plain(priority), str(filename)] for priority, filename in saved]}
        engine_state = getattr(self._engine, "state", None)
        if engine_state is not None and hasattr(engine_state, "best_metric"):
            state["best_metric"] = _plain(engine_state.best_metric)
            state["best_metric_epoch"] = _plain(getattr(engine_state, "best_metric_epoch", -1))
        elif self._best_metric is not None:  # restored, not attached yet
            state.update(self._best_metric)
        return state

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore the best-model tracking: a :meth:`state_dict` (the entry of a trainer checkpoint), or, as MONAI's,
        ignite's ``Checkpoint.state_dict()`` (the ``checkpointer`` saved with ``key_metric_save_state=True``).

        A best file that is no longer in ``save_dir`` (``model.pt`` deleted) is dropped from the tracking with a
        warning, so that the next validation saves a new one.
        """
        checkpoint = self.key_metric_checkpoint
        if checkpoint is None:
            warnings.warn("no key metric checkpoint saver to resume the key metric tracking list.")
            return
        if "key_metric" not in state_dict:  # ignite's own format, as monai.handlers.CheckpointSaver.load_state_dict
            checkpoint.load_state_dict(state_dict)
            return
        key, _ = _saved(checkpoint)
        saved = [(priority, filename) for priority, filename in state_dict["key_metric"]]
        if idist.get_rank() == 0:  # the rank that writes the files: keep only the files that are still there
            def on_disk(filename: str) -> str:
                return os.path.join(self.save_dir, self.key_metric_filename or filename)

            kept = [(p, f) for p, f in saved if os.path.isfile(on_disk(f))]
            if len(kept) < len(saved):
                missing = sorted({os.path.basename(on_disk(f)) for p, f in saved if (p, f) not in kept})
                warnings.warn(
                    f"the best model file(s) {', '.join(missing)} recorded in the checkpoint are missing from "
                    f"{str(self.save_dir)!r}: the best-model tracking restarts for them (the next validation saves a "
                    "new best model)", stacklevel=2,
                )
            saved = kept
        checkpoint.load_state_dict({key: saved})
        best = {k: state_dict[k] for k in ("best_metric", "best_metric_epoch") if k in state_dict}
        if not saved:
            best = {}  # nothing left to beat: MONAI's best metric restarts with the tracking
        self._best_metric = best or None
        self._restore_best_metric()

    def _restore_best_metric(self) -> None:
        """Set the attached engine's MONAI ``best_metric`` / ``best_metric_epoch`` (public state) to the restored."""
        engine_state = getattr(self._engine, "state", None)
        if self._best_metric is None or engine_state is None or not hasattr(engine_state, "best_metric"):
            return
        for k, v in self._best_metric.items():
            setattr(engine_state, k, v)
        self._best_metric = None

    def attach(self, engine: Engine) -> None:
        if self._name is None:
            self.logger = engine.logger
        self._engine = engine
        self._restore_best_metric()
        if self.final_checkpoint is not None:
            engine.add_event_handler(Events.COMPLETED, self.completed)
            engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)
        if self.key_metric_checkpoint is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.metrics_completed)
        if self.interval_checkpoint is not None:
            event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
            engine.add_event_handler(event(every=self.save_interval), self.interval_completed)

    def _save_final(self, engine: Engine) -> str:
        checkpoint = self.final_checkpoint
        assert checkpoint is not None
        _, previous = _saved(checkpoint)
        checkpoint.reset()  # always save, even at the same iteration; the previous file goes once the new one is there
        for _, filename in previous:
            checkpoint.save_handler.remove(filename)
        checkpoint(engine)
        if self.final_filename is not None:
            return os.path.join(self.save_dir, self.final_filename)
        return str(checkpoint.last_checkpoint)

    def completed(self, engine: Engine) -> None:
        """``Events.COMPLETED``: save the final checkpoint (``save_final=True``)."""
        self.logger.info(f"Train completed, saved final checkpoint: {self._save_final(engine)}")

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        """``Events.EXCEPTION_RAISED``: save the final checkpoint, then re-raise ``e``."""
        self.logger.info(f"Exception raised, saved the last checkpoint: {self._save_final(engine)}")
        raise e

    def metrics_completed(self, engine: Engine) -> None:
        """``Events.EPOCH_COMPLETED``: save if the key metric is a new best."""
        assert self.key_metric_checkpoint is not None
        self.key_metric_checkpoint(engine)

    def interval_completed(self, engine: Engine) -> None:
        """Every ``save_interval`` epochs/iterations: save, keeping the newest ``n_saved``."""
        checkpoint = self.interval_checkpoint
        assert checkpoint is not None
        if not self._adopted:  # first save of this run: after any CheckpointLoader restored the engine
            self._adopted = True
            self._adopt_earlier_files(checkpoint, self._interval_score(engine))
        checkpoint(engine)
        unit = "epoch" if self.epoch_level else "iteration"
        self.logger.info(f"Saved checkpoint at {unit}: {self._interval_score(engine)}")

    def _adopt_earlier_files(self, checkpoint: Checkpoint, current: int) -> None:
        """Count the interval checkpoints an earlier run wrote here (numbered below ``current``: the run this one
        resumes) towards ``n_saved``, so ignite rotates them out."""
        name = "checkpoint" if len(self.save_dict) != 1 else next(iter(self.save_dict))
        prefix = f"{self.file_prefix}_" if self.file_prefix else ""
        pattern = re.compile(re.escape(f"{prefix}{name}_{checkpoint.score_name}=") + r"(\d+)\.pt")
        found = []
        with contextlib.suppress(OSError):
            for entry in os.listdir(self.save_dir):
                match = pattern.fullmatch(entry)
                if match and int(match.group(1)) < current:
                    found.append((int(match.group(1)), entry))
        key, saved = _saved(checkpoint)
        known = {filename for _, filename in saved}
        found = sorted(item for item in found if item[1] not in known)
        if checkpoint.n_saved is not None:
            found = found[-checkpoint.n_saved:]  # older extras (another n_saved) are left alone, never deleted
        if found:
            checkpoint.load_state_dict({key: sorted(saved + found)})


# ---------------------------------------------------------------------------------------------- resumable validation
class ResumableEarlyStopHandler(EarlyStopHandler):
    """``monai.handlers.EarlyStopHandler`` (the same arguments and use: attach it to the validator, ``set_trainer``)
    whose state, ignite ``EarlyStopping``'s patience ``counter`` and ``best_score``, is an entry for the trainer's
    ``save_dict``: a resumed run counts the epochs without improvement since the best score before the resume, and
    stops where the uninterrupted run would have, instead of starting its patience afresh.

    The ignite handler is built by :meth:`set_trainer` and held in :attr:`early_stopping`; a state loaded before that
    is applied when it is built.
    """

    def __init__(
        self,
        patience: int,
        score_function: Any,
        trainer: Engine | None = None,
        min_delta: float = 0.0,
        cumulative_delta: bool = False,
        epoch_level: bool = True,
    ) -> None:
        self.early_stopping: EarlyStopping | None = None
        self._pending: dict[str, Any] | None = None
        super().__init__(patience, score_function, trainer=trainer, min_delta=min_delta,
                         cumulative_delta=cumulative_delta, epoch_level=epoch_level)

    def set_trainer(self, trainer: Engine) -> None:
        """The trainer to stop (as MONAI's); a state loaded before is applied to the new ignite handler."""
        # positional min_delta / cumulative_delta: ignite 0.4's names, 0.5's threshold / cumulative
        self.early_stopping = EarlyStopping(self.patience, self.score_function, trainer, self.min_delta,
                                            self.cumulative_delta)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.load_state_dict(pending)

    def __call__(self, engine: Engine) -> None:
        if self.early_stopping is None:
            raise RuntimeError("please set trainer in __init__() or call set_trainer() before training.")
        self.early_stopping(engine)

    def state_dict(self) -> dict[str, Any]:
        """``{"counter": epochs without improvement, "best_score": the best score so far (None before any)}``."""
        if self.early_stopping is None:
            return dict(self._pending) if self._pending is not None else {"counter": 0, "best_score": None}
        state = self.early_stopping.state_dict()
        return {"counter": int(state["counter"]), "best_score": _plain(state["best_score"])}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore ``counter`` and ``best_score`` (applied by :meth:`set_trainer` if it has not been called yet)."""
        state = {"counter": int(state_dict["counter"]), "best_score": state_dict["best_score"]}
        if self.early_stopping is None:
            self._pending = state
            return
        self.early_stopping.load_state_dict({**self.early_stopping.state_dict(), **state})


def _restart_note(obj: Any) -> str:
    if isinstance(obj, AtomicCheckpointSaver) and obj.key_metric_checkpoint is not None:
        name = obj.key_metric_filename or "the best model files"
        return (f"the best-model tracking restarts: the next validation replaces {name} even if that model is worse "
                "than the one saved before")
    if isinstance(obj, EarlyStopHandler):
        return "the early-stopping patience counter and best score restart"
    return "its state starts afresh"


def entries_saved_in(checkpoint: str | os.PathLike, **objects: Any) -> dict[str, Any]:
    """The ``objects`` whose name is an entry of the checkpoint file ``checkpoint``: the optional part of a
    ``CheckpointLoader``'s ``load_dict``, e.g. in ``resume.json``::

        "load_dict": "$monai_dpaat.utils.checkpoint_dict(model=@network, ..., **monai_dpaat.handlers.checkpoint.
                      entries_saved_in(@resume_from, best_model_saver=@validate#best_model_saver))"

    A checkpoint written before an entry was saved (ignite's loader refuses a ``load_dict`` key the file lacks) still
    resumes: the missing entries are left out with a warning naming what restarts. Reads the file with
    ``torch.load(weights_only=True, mmap=True)`` (the tensors are not read).
    """
    path = os.fspath(checkpoint)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - a legacy (non-zip) file cannot be memory-mapped; an unreadable one is named
        from monai_dpaat.utils import read_checkpoint

        ckpt = read_checkpoint(path)
    keys = set(ckpt) if isinstance(ckpt, Mapping) else set()
    del ckpt
    found = {k: v for k, v in objects.items() if k in keys}
    missing = [k for k in objects if k not in keys]
    if missing:
        names = ", ".join(repr(k) for k in missing)
        notes = "; ".join(f"{k!r}: {_restart_note(objects[k])}" for k in missing)
        warnings.warn(
            f"checkpoint {path!r} has no {names} entr{'y' if len(missing) == 1 else 'ies'} (written before "
            f"monai-dpaat saved them); resuming without: {notes}", stacklevel=2,
        )
    return found


# ---------------------------------------------------------------------------------------------- training data record
def _item_id(item: Any) -> str:
    """A short stable id of a datalist item: its id-like key, else its file name(s) (not the folder, so that moving
    the data set keeps the ids)."""
    if isinstance(item, Mapping):
        for key in ("id", "image_id", "case"):
            if key in item:
                return str(item[key])
        if "name" in item:
            return "/".join(str(item[k]) for k in ("organ", "name") if k in item)
        if "image" in item:
            item = item["image"]
    if isinstance(item, (list, tuple)):
        return "+".join(_item_id(x) for x in item)
    if isinstance(item, (str, os.PathLike)):
        return os.path.basename(os.fspath(item))
    return repr(item)


def _sha(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


class TrainingData:
    """What a training run is trained on, as an entry of its checkpoints' ``save_dict`` (``state_dict`` holds only
    ints, strings and lists: ``torch.load(weights_only=True)`` reads it).

    Records the seed, the ordered training ids (position ``i`` is row ``i`` of a per-sample epsilon table: DPAAT,
    AMAT), the per-sample table length and the validation/test ids. :meth:`check` (and ``load_state_dict``, which a
    ``CheckpointLoader`` calls) raise ``ValueError`` when a checkpoint was trained on other data, naming what changed.

    Args:
        train: the training datalist (dicts with ``image_id`` / ``case`` / ``organ`` + ``name`` / ``image``, or paths).
        seed: the run's seed (the one its split was drawn with).
        val: the validation datalist, if any.
        test: the held-out test datalist, if any.
        num_samples: the per-sample table length (default ``len(train)``).
    """

    def __init__(
        self,
        train: Sequence,
        seed: int | None = None,
        val: Sequence | None = None,
        test: Sequence | None = None,
        num_samples: int | None = None,
    ) -> None:
        self.seed = None if seed is None else int(seed)
        self.ids = {
            split: [_item_id(item) for item in items]
            for split, items in (("train", train), ("val", val), ("test", test))
            if items is not None
        }
        self.num_samples = len(self.ids["train"]) if num_samples is None else int(num_samples)

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "num_samples": self.num_samples,
            "ids": {split: list(ids) for split, ids in self.ids.items()},
            "sha256": {split: _sha(ids) for split, ids in self.ids.items()},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Nothing to restore (the data come from the config); raises ``ValueError`` if they differ (:meth:`check`)."""
        self.check(state_dict)

    def _summary(self, seed: Any, num_samples: Any, ids: Mapping[str, Sequence[str]]) -> str:
        train = ids.get("train", [])
        return f"seed {seed} / {num_samples} training items (ids sha256 {_sha(train)[:12]})"

    def check(self, state: Mapping[str, Any] | None, source: str | os.PathLike = "the checkpoint") -> None:
        """Raise ``ValueError`` unless ``state`` (a checkpoint's entry) records the data of this run.

        ``source`` names the checkpoint in the message, e.g. ``"checkpoint 'models/checkpoint_epoch=2.pt'"``.
        """
        source = os.fspath(source)
        if not isinstance(state, Mapping) or "ids" not in state:
            raise ValueError(
                f"{source} records no training data (seed, split, training ids): it was written before monai-dpaat "
                "recorded them, so a resume cannot check that this run trains on the same split. Resume it with the "
                "same settings through monai.handlers.CheckpointLoader without the 'data' entry, or start a new run."
            )
        old_ids = {k: list(v) for k, v in state["ids"].items()}
        old_seed, old_n = state.get("seed"), state.get("num_samples")
        changes = []
        if old_seed != self.seed:
            changes.append(f"seed {old_seed} -> {self.seed}")
        if old_n != self.num_samples:
            changes.append(f"the per-sample table has {old_n} rows, this run's training list {self.num_samples}")
        old_train, new_train = old_ids.get("train", []), self.ids["train"]
        if old_train != new_train:
            if len(old_train) == len(new_train):
                moved = sum(a != b for a, b in zip(old_train, new_train))
                changes.append(f"{moved} of the {len(new_train)} per-sample table rows would belong to other items")
            else:
                changes.append(f"{len(old_train)} training items -> {len(new_train)}")
            gone = len(set(old_train) - set(new_train))
            if gone:
                changes.append(f"{gone} former training items are no longer trained on")
        for split in ("test", "val"):
            leaked = len(set(new_train) & set(old_ids.get(split, [])))
            if leaked:
                changes.append(f"{leaked} former {split} items would be trained on")
            if split in self.ids and split in old_ids and old_ids[split] != self.ids[split]:
                if not leaked:
                    changes.append(f"the {split} split differs")
        if not changes:
            return
        raise ValueError(
            f"{source} was trained on {self._summary(old_seed, old_n, old_ids)}, this run has "
            f"{self._summary(self.seed, self.num_samples, self.ids)}: {'; '.join(changes)}. Resuming would silently "
            "train on another split: resume with the settings of that run (seed, data set, split sizes), or start a "
            "new training in another ckpt_dir / bundle_root."
        )
