"""Override files that add adversarial training and robust validation to any MONAI bundle (package data).

They are installed with the package (``pip install``, editable or not), so a Model Zoo user composes them by
absolute path after their own ``configs/train.json``; ``python -m monai_dpaat overrides [method]`` prints the
paths and the ready ``python -m monai.bundle run`` command (see ``README.md`` in this folder for the keys)::

    adversarial_train.json      AT by default; wraps train#dataset, sets train#trainer#iteration_update, adds the
                                method's state to their CheckpointSaver/CheckpointLoader
    methods/<name>.json         composed after it: at, sat, amat, dpaat, d-a, d-b
    robust_validation.json      robust_* metrics from validate#handlers

In a git checkout the same folder is reachable as ``bundles/overrides`` (a link, not a copy).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

__all__ = ["OVERRIDES_DIR", "METHODS_DIR", "METHODS", "override_path", "config_files", "config_file_literal",
           "bundle_run_command", "shell_quote",
           "check_run", "resume", "TrainHandlers"]

logger = logging.getLogger(__name__)

#: the folder of the installed override files
OVERRIDES_DIR = Path(__file__).resolve().parent
#: the folder of the method files (``<name>.json``)
METHODS_DIR = OVERRIDES_DIR / "methods"
#: the method names that have a method file, in the order of the paper's table
METHODS = ("at", "sat", "amat", "dpaat", "d-a", "d-b")


def override_path(name: str) -> str:
    """Absolute path of an override file: ``"adversarial_train.json"``, ``"robust_validation.json"`` or a method
    name / ``"methods/<name>.json"``. Raises ``ValueError`` naming the choices for anything else."""
    stem = name[:-5] if name.endswith(".json") else name
    stem = stem[len("methods/"):] if stem.startswith("methods/") else stem
    if stem in ("adversarial_train", "robust_validation"):
        return str(OVERRIDES_DIR / f"{stem}.json")
    if stem in METHODS:
        return str(METHODS_DIR / f"{stem}.json")
    raise ValueError(f"unknown override {name!r}; expected adversarial_train, robust_validation or a method "
                     f"{list(METHODS)}")


def config_files(method: str | None = "at", robust_validation: bool = True, adversarial: bool = True) -> list[str]:
    """The override files to compose, in order, after a bundle's ``configs/train.json`` (absolute paths).

    Args:
        method: the training method (its ``methods/<name>.json`` follows ``adversarial_train.json``); ``None``
            or ``"at"``: only ``adversarial_train.json`` (its default is AT).
        robust_validation: add ``robust_validation.json`` (last, so that it appends to the ``validate#handlers``
            of every file before it, e.g. the bundle's ``evaluate.json``).
        adversarial: add ``adversarial_train.json`` (and the method file); ``False`` for robust validation alone.
    """
    files = []
    if adversarial:
        files.append(override_path("adversarial_train"))
        if method not in (None, "at"):
            files.append(override_path(str(method)))
    elif method not in (None, "at"):
        raise ValueError(f"method {method!r} needs adversarial=True (it is composed after adversarial_train.json)")
    if robust_validation:
        files.append(override_path("robust_validation"))
    return files


def shell_quote(text: str) -> str:
    """``text`` for a POSIX shell: in double quotes (as the Model Zoo READMEs write ``--config_file "[...]"``)
    unless it holds a character special there, then as ``shlex.quote``."""
    import shlex

    return f'"{text}"' if not any(c in text for c in '"$`\\!') else shlex.quote(text)


def config_file_literal(files: list[str], bundle_root: str | None = None, base: str = "configs/train.json") -> str:
    """The ``--config_file`` value (a Python list literal): ``<bundle_root>/<base>`` then ``files``."""
    root = "<their bundle>" if bundle_root is None else str(Path(bundle_root).resolve())
    return "[" + ",".join(repr(f) for f in (f"{root}/{base}", *files)) + "]"


def bundle_run_command(bundle_root: str | None = None, files: list[str] | None = None,
                       base: str = "configs/train.json") -> str:
    """The ``python -m monai.bundle run`` command line for ``files`` composed after ``<bundle_root>/<base>``.

    ``bundle_root`` (default ``<their bundle>``) is made absolute when it is a folder and passed as
    ``--bundle_root`` too, since Model Zoo bundles write ``"bundle_root": "."`` and resolve their datalists,
    ``models/`` and ``eval/`` against it: the command then works from any folder."""
    root = "<their bundle>" if bundle_root is None else str(Path(bundle_root).resolve())
    config_list = config_file_literal(files if files is not None else config_files(), bundle_root, base)
    return (f"python -m monai.bundle run --config_file {shell_quote(config_list)} "
            f"--meta_file {shell_quote(root + '/configs/metadata.json')} "
            f"--logging_file {shell_quote(root + '/configs/logging.conf')} --bundle_root {shell_quote(root)}")


def check_run(method: str | None, iteration: Any, methods_dir: str | None = None,
              base: Sequence[str] = ("<their>/configs/train.json",)) -> None:
    """The checks of a run with ``adversarial_train.json``, before any training: the one-line error hook
    (:func:`monai_dpaat.error_hook.install`), the ``--key value`` overrides
    (:func:`monai_dpaat.utils.check_overrides`) and that ``method`` (``adversarial_method``) names ``iteration``
    (:func:`monai_dpaat.training.check_method`; ``None``: not checked). Called from the file's ``+initialize``
    (early) and again by :meth:`TrainHandlers.attach`, since the Zoo's ``multi_gpu_train.json`` composed after the
    file replaces ``initialize``. ``methods_dir`` defaults to the installed :data:`METHODS_DIR`."""
    from monai_dpaat import error_hook
    from monai_dpaat.training import check_method
    from monai_dpaat.utils import check_overrides

    error_hook.install()
    check_overrides()
    if method is not None:
        check_method(method, iteration, methods_dir=str(methods_dir or METHODS_DIR), key="adversarial_method",
                     base=[*base, override_path("adversarial_train")])


def resume(checkpoint_file: str, iteration: Any, network: Any = None, key: str = "adversarial") -> None:
    """Load a method's per-sample state (the AMAT/DPAAT tables) from ``checkpoint_file[key]``, a checkpoint the
    bundle's own ``CheckpointSaver`` wrote with :class:`TrainHandlers` in its ``save_dict``, and with ``network``
    its network weights (``checkpoint_file["model"]``, or a bare state dict).

    Raises ``FileNotFoundError`` naming a file that does not exist and ``ValueError`` naming one without ``key``."""
    from monai_dpaat.utils import load_weights, read_checkpoint

    state = read_checkpoint(checkpoint_file, what="--adversarial_resume checkpoint")
    if not isinstance(state, dict) or key not in state:
        found = sorted(state)[:10] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"--adversarial_resume: checkpoint {checkpoint_file!r} has no {key!r} entry (found {found}): "
                         "it was not saved by a run with adversarial_train.json")
    iteration.load_state_dict(state[key])
    if network is not None:
        load_weights(network, checkpoint_file, content=state)
    logger.info("resumed the %s state from %s[%r]", type(iteration).__name__, checkpoint_file, key)


def _entry(path: str, key: str) -> Any:
    """``checkpoint[key]`` of the checkpoint at ``path`` (what a loader may ask for), or ``None`` when the file
    does not exist or has no such entry."""
    from monai_dpaat.utils import read_checkpoint

    if not os.path.isfile(path):
        return None
    state = read_checkpoint(path)
    return state.get(key) if isinstance(state, dict) else None


class TrainHandlers:
    """What ``adversarial_train.json`` attaches to a bundle's trainer, given as an entry of
    ``train#trainer#additional_metrics`` (MONAI calls ``attach(trainer, name)`` on each at construction), not of
    ``train#handlers``: the Model Zoo's ``multi_gpu_train.json`` slices that list per rank
    (``@train#handlers[: -2 if dist.get_rank() > 0 else None]``), and an appended entry would shift which of the
    bundle's own handlers rank > 0 keeps. At attach (the trainer's construction, in any composition order):

    - :func:`check_run` (error hook, override keys, method), which the file's ``"initialize"`` entry also runs
      but could lose (``multi_gpu_train.json`` composed last replaces that list);
    - an :class:`~monai_dpaat.handlers.adversarial_stats.AdversarialStatsHandler`: ``adv_*`` epoch metrics, which
      the bundle's ``StatsHandler`` / ``TensorBoardStatsHandler`` then log, and an ``epsilon`` histogram;
    - the method (its ``state_dict``: the AMAT/DPAAT per-sample tables) added as ``checkpoint_key`` to the
      ``save_dict`` of every MONAI ``CheckpointSaver`` among ``checkpoint_handlers``, so that their checkpoint
      holds the tables of the same epoch as the weights (``{"model": ..., "adversarial": ...}``), and to the
      ``load_dict`` of every ``CheckpointLoader`` there whose file has that entry (a plain weights file, e.g. a
      standard pre-trained model, still loads; the method then starts fresh, logged);
    - with ``resume``: :func:`resume` from ``resume_file`` (their ``model.pt``) before any epoch;
    - under ``torch.distributed``, a barrier at the trainer's ``COMPLETED``: every rank leaves training together,
      none reaches their ``finalize`` while rank 0 still runs the last robust validation
      (:func:`~monai_dpaat.training.utils.wait_for_all_ranks`);
    - with ``guard``: the catastrophic-overfitting guard (on every rank: its counts are summed over ranks).

    Args:
        iteration: the training method (the trainer's ``iteration_update``).
        stats: the stats handler (``None``: none).
        checkpoint_handlers: the bundle's handlers (``train#handlers`` + ``validate#handlers``); the
            ``CheckpointSaver`` / ``CheckpointLoader`` instances among them are extended, others ignored.
        checkpoint_key: the method's entry in their checkpoints.
        resume: load ``resume_file`` (the method's state and ``network``'s weights) before training.
        network, resume_file: the bundle's network and the checkpoint to resume from.
        method, methods_dir, base: the bundle key ``adversarial_method`` and where its method files are, for
            :func:`check_run` (``method=None``: no method check).
        guard: a :class:`~monai_dpaat.handlers.CatastrophicOverfittingGuard` to attach (bundle key
            ``adversarial_co_guard``; None: none).
    """

    def __init__(self, iteration: Any, stats: Any = None, checkpoint_handlers: Sequence[Any] = (),
                 checkpoint_key: str = "adversarial", resume: bool = False, network: Any = None,
                 resume_file: str | None = None, method: str | None = None, methods_dir: str | None = None,
                 base: Sequence[str] = ("<their>/configs/train.json",), guard: Any = None) -> None:
        if resume and resume_file is None:
            raise ValueError("--adversarial_resume needs a checkpoint file (adversarial_resume_file)")
        if not isinstance(checkpoint_key, str) or not checkpoint_key:
            raise ValueError(f"adversarial_checkpoint_key must be a non-empty string, got {checkpoint_key!r}")
        self.iteration = iteration
        self.stats = stats
        self.checkpoint_handlers = list(checkpoint_handlers or ())
        self.checkpoint_key = checkpoint_key
        self.resume = bool(resume)
        self.network = network
        self.resume_file = resume_file
        self.method = method
        self.methods_dir = str(methods_dir or METHODS_DIR)
        self.base = list(base)
        self.guard = guard
        self.attached = False

    def __call__(self, engine: Any, batchdata: Any) -> Any:
        """The trainer's ``iteration_update``: the method's iteration. MONAI attaches ``additional_metrics`` only
        to a trainer with a ``key_train_metric`` (2 of the 27 Model Zoo train configs have none): then this
        attaches at the first iteration, before the method's first step, with the same effect."""
        if not self.attached:
            logger.info("train#trainer has no key_train_metric, so MONAI did not attach additional_metrics: "
                        "the adversarial handlers attach at the first iteration")
            self.attach(engine)
        return self.iteration(engine, batchdata)

    def attach(self, engine: Any, name: str | None = None) -> None:
        """Attach to the trainer (``name``: the ``additional_metrics`` key, unused)."""
        started = engine.state.iteration > 0 or engine.state.epoch > 0  # the late path of __call__
        self.attached = True
        check_run(self.method, self.iteration, self.methods_dir, self.base)
        if self.resume:  # before the method's first step, on every rank that has it
            resume(self.resume_file, self.iteration, network=self.network, key=self.checkpoint_key)
        if self.stats is not None:
            self.stats.attach(engine)
            if started:  # its EPOCH_STARTED reset of this epoch has passed
                self.stats.epoch_started(engine)
        self.extend_checkpoints(loaded=started)
        from ignite.engine import Events

        from monai_dpaat.training.utils import wait_for_all_ranks

        engine.add_event_handler(Events.COMPLETED, wait_for_all_ranks)
        if self.guard is not None:
            self.guard.attach(engine)
            if started:  # this iteration's ITERATION_STARTED has passed: hold its batch now
                self.guard.iteration_started(engine)

    def extend_checkpoints(self, loaded: bool = False) -> None:
        """Add the method to their savers' ``save_dict`` and (where the file has it) loaders' ``load_dict``;
        ``loaded``: their loaders have already run (the trainer's STARTED event), so load the entry now."""
        from monai.handlers import CheckpointLoader, CheckpointSaver

        key = self.checkpoint_key
        for handler in self.checkpoint_handlers:
            # MONAI's handlers keep these dicts as public attributes and read them at every save / at load
            if isinstance(handler, CheckpointSaver):
                if key in handler.save_dict and handler.save_dict[key] is not self.iteration:
                    raise ValueError(f"their CheckpointSaver already saves an entry {key!r}; set "
                                     "adversarial_checkpoint_key to another name")
                handler.save_dict[key] = self.iteration
            elif isinstance(handler, CheckpointLoader):
                entry = _entry(handler.load_path, key)
                if entry is not None and loaded:
                    self.iteration.load_state_dict(entry)
                elif entry is not None:
                    handler.load_dict[key] = self.iteration
                else:
                    logger.info("%s has no %r entry: the %s state starts fresh", handler.load_path, key,
                                type(self.iteration).__name__)
