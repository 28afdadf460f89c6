"""Override files that add adversarial training and robust validation to any MONAI bundle (package data).

They are installed with the package (``pip install``, editable or not), so a Model Zoo user composes them by
absolute path after their own ``configs/train.json``; ``python -m monai_dpaat overrides [method]`` prints the
paths and the ready ``python -m monai.bundle run`` command (see ``README.md`` in this folder for the keys)::

    adversarial_train.json      AT by default; wraps train#dataset, sets train#trainer#iteration_update
    methods/<name>.json         composed after it: at, sat, amat, dpaat, d-a, d-b
    robust_validation.json      robust_* metrics from validate#handlers

In a git checkout the same folder is reachable as ``bundles/overrides`` (a link, not a copy).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["OVERRIDES_DIR", "METHODS_DIR", "METHODS", "override_path", "config_files", "config_file_literal",
           "bundle_run_command", "shell_quote",
           "resume", "TrainHandlers"]

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


def resume(state_file: str, iteration: Any, network: Any = None, model_file: str | None = None) -> None:
    """Load a method's per-sample state (the AMAT/DPAAT tables) written by :class:`TrainHandlers` and, with
    ``network`` and ``model_file``, the network weights of the bundle's own ``CheckpointSaver`` (``model.pt``).

    Raises ``ValueError`` naming a file that does not exist."""
    from monai_dpaat.utils import load_weights, read_checkpoint

    for path in (state_file, model_file if network is not None else None):
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"--adversarial_resume: checkpoint {path!r} does not exist")
    state = read_checkpoint(state_file)
    iteration.load_state_dict(state["method"])
    if network is not None and model_file is not None:
        load_weights(network, model_file)
    logger.info("resumed the %s state from %s (saved after epoch %s)", type(iteration).__name__, state_file,
                state.get("epoch"))


class TrainHandlers:
    """What ``adversarial_train.json`` attaches to a bundle's trainer, given as an entry of
    ``train#trainer#additional_metrics`` (MONAI calls ``attach(trainer, name)`` on each at construction), not of
    ``train#handlers``: the Model Zoo's ``multi_gpu_train.json`` slices that list per rank
    (``@train#handlers[: -2 if dist.get_rank() > 0 else None]``), and an appended entry would shift which of the
    bundle's own handlers rank > 0 keeps.

    - an :class:`~monai_dpaat.handlers.adversarial_stats.AdversarialStatsHandler`: ``adv_*`` epoch metrics, which
      the bundle's ``StatsHandler`` / ``TensorBoardStatsHandler`` then log, and an ``epsilon`` histogram;
    - after every epoch, on rank 0, ``{"method": iteration.state_dict(), "epoch": N}`` written atomically to
      ``state_file``: the per-sample tables (AMAT, DPAAT) that the bundle's ``CheckpointSaver`` of the bare
      network does not keep; :func:`resume` loads them back.

    Args:
        iteration: the training method (the trainer's ``iteration_update``).
        stats: the stats handler (``None``: none).
        state_file: where the method's state goes (``None``: not saved).
        resume: load ``state_file`` (and ``model_file`` into ``network``) before training, by :func:`resume`.
        network, model_file: the bundle's network and its ``CheckpointSaver``'s file, for ``resume``.
    """

    def __init__(self, iteration: Any, stats: Any = None, state_file: str | None = None, resume: bool = False,
                 network: Any = None, model_file: str | None = None) -> None:
        if resume and state_file is None:
            raise ValueError("--adversarial_resume needs a state_file (adversarial_state_file)")
        self.iteration = iteration
        self.stats = stats
        self.state_file = state_file
        self.resume = bool(resume)
        self.network = network
        self.model_file = model_file

    def attach(self, engine: Any, name: str | None = None) -> None:
        """Attach to the trainer (``name``: the ``additional_metrics`` key, unused)."""
        from ignite.engine import Events

        if self.resume:  # at attach (the trainer's construction): before any epoch, on every rank that has it
            resume(self.state_file, self.iteration, network=self.network, model_file=self.model_file)
        if self.stats is not None:
            self.stats.attach(engine)
        if self.state_file is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.save_state)

    def save_state(self, engine: Any) -> None:
        import torch

        from monai_dpaat.atomic_io import atomic_write
        from monai_dpaat.conventions import plain_tensor

        import ignite.distributed as idist

        if idist.get_rank() > 0:
            return
        # plain tensors (a MetaTensor value would not load with weights_only=True)
        method = {key: plain_tensor(value) for key, value in self.iteration.state_dict().items()}
        state = {"method": method, "epoch": int(engine.state.epoch)}
        os.makedirs(os.path.dirname(os.path.abspath(self.state_file)), exist_ok=True)
        atomic_write(self.state_file, lambda f: torch.save(state, f))
