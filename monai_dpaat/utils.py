"""Small helpers shared by bundles, the CLI and the training methods."""

from __future__ import annotations

import contextlib
import errno
import glob
import numbers
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["checkpoint_dict", "latest_checkpoint", "resume_checkpoint", "read_checkpoint", "check_checkpoint",
           "load_weights", "unique_keys", "check_overrides", "check_override_keys", "config_file_list",
           "UnsafeConfigError", "check_config_is_safe", "TRUSTED_PACKAGES", "read_config_file",
           "read_network_config", "build_network_config", "check_int", "check_bool", "check_device",
           "check_writable_dir", "bundle_config_files", "run_bundle"]


def unique_keys(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``{key: value}`` of ``(key, value)`` pairs, a repeated key numbered as tables show it: ``PGD``,
    ``PGD (2)``, ``PGD (3)``."""
    out: dict[str, Any] = {}
    for key, value in items:
        unique, i = key, 2
        while unique in out:
            unique, i = f"{key} ({i})", i + 1
        out[unique] = value
    return out


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


def default_data_dir() -> Path:
    """The sample data folder: ``$MONAI_DPAAT_DATA``, else ``../shared/data`` beside the checkout, else
    ``../shared/data`` from the cwd (the CLI's and the reproductions' default)."""
    if os.environ.get("MONAI_DPAAT_DATA"):
        return Path(os.environ["MONAI_DPAAT_DATA"])
    beside = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return beside if beside.is_dir() else Path.cwd().parent / "shared" / "data"


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


def load_weights(network: Any, checkpoint: str | os.PathLike, key: str | None = None, map_location: Any = "cpu",
                 content: Any = None) -> Any:
    """Load weights into ``network`` from a state-dict file or a MONAI/ignite checkpoint, safely.

    Accepts a bare ``state_dict`` (what ``CheckpointSaver`` writes for a one-entry ``save_dict``), or a dict
    holding it under ``key`` / ``"model"`` / ``"network"`` / ``"state_dict"``. Uses ``torch.load(weights_only=True)``,
    so a checkpoint can't run code. Keys saved from a ``DistributedDataParallel`` wrapper (``module.`` prefix) are
    accepted. Names and shapes are checked before anything is copied, so a checkpoint that does not fit leaves
    ``network`` untouched. ``content``: what the file holds, when the caller has already read it with
    :func:`read_checkpoint` (``checkpoint`` then only names it in messages). Returns ``network``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable checkpoint (a directory, empty, truncated or corrupt, not a
            checkpoint: :func:`read_checkpoint`), or its weights do not fit ``network`` (names the file
            and the first mismatching keys).
    """
    import torch

    path = os.fspath(checkpoint)
    obj = read_checkpoint(path, map_location=map_location) if content is None else content
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


def config_file_list(value: Any) -> list[str]:
    """The config files of a ``--config_file`` value: a path, a list of paths, fire's list syntax
    (``"['configs/train.json','configs/quick.json']"``) or a comma-separated string."""
    if isinstance(value, (list, tuple)):
        return [str(f) for f in value]
    text = str(value).strip()
    if text.startswith("["):
        text = text.strip("[]")
    return [f.strip().strip("'\"") for f in text.split(",") if f.strip().strip("'\"")]


def check_overrides(argv: list[str] | None = None, config_file: Any = None) -> None:
    """Raise ``ValueError`` when a ``--key value`` override of ``python -m monai.bundle run`` names no id of
    the bundle's configs (a misspelled key would otherwise be added silently and ignored).

    Meant for a bundle's ``"initialize"`` list: ``"$monai_dpaat.utils.check_overrides()"``. Reads ``sys.argv``
    (does nothing when it holds no ``--config_file``, e.g. a ``ConfigWorkflow`` built in Python) and the
    config files named there (or ``config_file``: a path or list of paths); see :func:`check_override_keys`.
    """
    import sys

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
    check_override_keys([k for k in overrides if k not in _RUN_ARGS], config_file_list(files))


#: keys MONAI reads from a ``_target_`` component itself (not constructor arguments)
_COMPONENT_KEYS = ("_target_", "_disabled_", "_desc_", "_requires_", "_mode_")


def _target_parameters(component: Mapping) -> list[str] | None:
    """The keyword arguments the ``_target_`` of a config ``component`` takes (its constructor's or function's
    parameters, found as MONAI finds the target: a bare name among the imported MONAI modules, else the dotted
    path), or None when any keyword is accepted (``**kwargs``) or the target cannot be located or inspected."""
    import inspect
    import pydoc

    from monai.bundle.config_item import ComponentLocator, ConfigComponent

    target = ConfigComponent(dict(component), locator=ComponentLocator()).resolve_module_name()
    try:
        obj = pydoc.locate(target) if isinstance(target, str) else target
        params = inspect.signature(obj).parameters.values() if callable(obj) else None
    except (pydoc.ErrorDuringImport, TypeError, ValueError):  # an import error, a builtin without a signature
        params = None
    if params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_override_keys(keys: Sequence[str], config_file: Any, what: str = "override --{key}") -> None:
    """Raise ``ValueError`` naming the first of ``keys`` that is no id of the merged ``config_file`` (a path or a
    list of paths), with the closest ids. Nested ids (``train#trainer#max_epochs``) must exist down to their last
    part's parent; the last part must exist too, except where the parent is a ``_target_`` component and the part
    is a keyword argument its target takes (``iteration_update#temperature``: a constructor argument not written
    in the config; any name when the target takes ``**kwargs``). ``what`` says where the key came from (``{key}``
    is filled in)."""
    import difflib

    from monai.bundle import ConfigParser

    files = config_file_list(config_file)
    config = ConfigParser.load_config_files(files)
    known = sorted(str(k) for k in config)
    for key in keys:
        parts = key.split("#")
        node: Any = config
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            component = last and depth > 0 and isinstance(node, dict) and "_target_" in node
            params = _target_parameters(node) if component else []
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif component and (params is None or part in params or part in _COMPONENT_KEYS):
                break  # an argument of the component that the config does not write
            else:
                where = "#".join(parts[:depth]) or "the top level"
                options = [str(k) for k in node] + (params or []) if isinstance(node, dict) else known
                close = list(dict.fromkeys(difflib.get_close_matches(part, options, n=6)))[:3]
                hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                target = f" (a {node['_target_']} component)" if component else ""
                raise ValueError(
                    f"unknown config key {key!r} ({what.format(key=key)}): {part!r} is not an id at {where}{target} "
                    f"of {[str(f) for f in files]}{hint}"
                )


# ---------------------------------------------------------------------------------------------- checks before work
def check_int(value: Any, flag: str, minimum: int | None = None, optional: bool = False) -> int | None:
    """``value`` as an int (``"8"`` too, as a command line gives it), ``None`` if ``optional``; a float, bool or
    word, or a value below ``minimum``, is a ``ValueError`` naming ``flag``."""
    if value is None and optional:
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        value = int(value)
    bound = f" >= {minimum}" if minimum is not None else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{flag} must be an integer{bound}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{flag} must be{bound}, got {value!r}")
    return int(value)


def check_bool(value: Any, flag: str) -> bool:
    """``value`` as a bool (``"true"`` / ``"False"`` in any case too: fire parses only ``True`` / ``False``), else
    a ``ValueError`` naming ``flag`` (``--name``) and its two spellings."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ValueError(f"{flag} must be True or False (or {flag} / --no{flag.lstrip('-')}), got {value!r}")
    return value


def check_device(device: Any, flag: str = "--device") -> Any:
    """``torch.device(device)``, refusing one this machine does not have (before any work, not in the first batch)."""
    import torch

    try:
        dev = torch.device(str(device))
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"{flag} {device!r} is not a device (cpu, cuda, cuda:0, ...): {err}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{flag} {device!r}: no CUDA GPU is usable here (torch.cuda.is_available() is False); "
                             "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{flag} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{flag} {device!r}: no MPS (Apple GPU) device is usable here "
                         "(torch.backends.mps.is_available() is False); use --device cpu")
    elif dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except Exception as err:  # mps/xpu/... builds raise different types, some with a dispatcher dump
            first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
            first = first.split(". ")[0][:200]  # "Could not run '...' with arguments from the 'X' backend"
            raise ValueError(f"{flag} {device!r} is not usable here: {first}") from None
    return dev


def check_writable_dir(path: Any, flag: str = "--output_dir") -> Path:
    """Check, before any work, that ``path`` is a folder that can be written, or can be created: a probe file is
    written to it (or to its nearest existing parent) and removed; a broken symlink, a symlink loop or a file in
    the way is named. Creates nothing; raises ``ValueError`` (``flag`` names the setting in messages)."""
    if path is None or str(path).strip() == "":
        raise ValueError(f"{flag} is empty; give a folder (a new one, or a previous report's)")
    out = Path(str(path)).expanduser()
    if os.path.islink(out) and not os.path.exists(out):  # a dangling link or a loop: Path.exists() says False
        try:
            os.stat(out)
        except OSError as err:
            why = "is a symlink loop" if err.errno == errno.ELOOP else f"is a broken symlink (to {os.readlink(out)!r})"
        else:
            why = "is a symlink that cannot be followed"
        raise ValueError(f"output_dir {str(out)!r} {why} ({flag})")
    try:
        os.stat(out)
    except OSError as err:  # a loop or a broken link further up the path, a permission error...
        if err.errno in (errno.ENOENT, errno.ENOTDIR):  # missing, or under a file: said below
            pass
        else:
            raise ValueError(f"output_dir {str(out)!r} cannot be used: {err.strerror or err} ({flag})") from None
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {str(out)!r} exists and is not a folder ({flag})")
    target = out
    while not os.path.lexists(target) and target != target.parent:
        target = target.parent
    if not target.is_dir():
        raise ValueError(f"output_dir {str(out)!r} cannot be created: {str(target)!r} is not a folder ({flag})")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", suffix=".tmp", dir=target)
        try:
            os.write(fd, b"monai-dpaat write probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        what = "is not writable" if target == out else f"cannot be created in {str(target)!r}"
        raise ValueError(f"output_dir {str(out)!r} {what}: {err.strerror or err} ({flag})") from None
    return out


# ---------------------------------------------------------------------------------------------- running bundles
def bundle_config_files(bundle: Any, base: Sequence[str], extra: Any = None) -> list[Path]:
    """``<bundle>/configs/<base>`` followed by the ``extra`` config files (a path, a list, fire's list syntax or a
    comma-separated string), as ``monai.bundle run --config_file`` merges them. A relative extra path is taken
    from the bundle folder when the file is there (``configs/quick.json``), else from the working directory."""
    root = Path(str(bundle)).expanduser()
    if not root.is_dir():
        raise ValueError(f"bundle folder {str(bundle)!r} does not exist")
    files = []
    for name in base:
        if not (root / "configs" / name).is_file():
            raise ValueError(f"bundle {str(bundle)!r} has no configs/{name}")
        files.append(root / "configs" / name)
    for item in config_file_list(extra) if extra is not None else []:
        path = Path(item).expanduser()
        path = root / path if not path.is_absolute() and (root / path).is_file() else path
        if not path.is_file():
            raise ValueError(f"config file {item!r} is neither in the bundle {str(bundle)!r} nor in the working "
                           "directory")
        files.append(path)
    return files


@contextlib.contextmanager
def _as_bundle_command(files: Sequence[Path], overrides: Mapping[str, Any]) -> Iterator[None]:
    """While a bundle runs in this process: ``sys.argv`` as ``python -m monai.bundle run`` would have it (the
    bundle's ``initialize`` checks its overrides there, :func:`check_overrides`); afterwards the root logger's
    level and handlers as they were (the bundle's ``logging.conf`` replaces them, bound to the streams of the
    moment)."""
    import logging

    root = logging.getLogger()
    saved_argv, saved_level, saved_handlers = sys.argv, root.level, list(root.handlers)
    sys.argv = ["monai.bundle", "run", "--config_file", repr([str(f) for f in files]),
                *(f"--{key}={value!r}" for key, value in overrides.items())]
    try:
        yield
    finally:
        sys.argv = saved_argv
        for handler in [h for h in root.handlers if h not in saved_handlers]:
            root.removeHandler(handler)
        for handler in [h for h in saved_handlers if h not in root.handlers]:
            root.addHandler(handler)
        root.setLevel(saved_level)


def run_bundle(files: Sequence[Path], overrides: Mapping[str, Any], prepare: Any = None) -> Any:
    """``python -m monai.bundle run --config_file <files> --<key> <value> ...`` in this process (with the
    ``sys.argv`` that command would have; the caller's logging set up is restored after it). ``overrides`` are
    Python values (``{"train#trainer#max_epochs": 1}``); ``prepare``, if given, sees the initialized workflow
    before its ``run``. Returns the finalized workflow."""
    from monai.bundle import create_workflow

    with _as_bundle_command(files, overrides):
        workflow = create_workflow(config_file=[str(f) for f in files], **overrides)
        if prepare is not None:
            prepare(workflow)
        workflow.run()
        workflow.finalize()
    return workflow


# ---------------------------------------------------------------------------------------------- untrusted configs
class UnsafeConfigError(ValueError):
    """A config given as data (a CLI ``--network`` file, a Grad-CAM model spec) would run code (``$``, ``%``, a
    ``_target_`` outside the trusted packages) and the user did not vouch for it (``--trust_config``)."""


#: packages a config given as data may build from (unless the user vouches for it)
TRUSTED_PACKAGES = ("torch", "torchvision", "monai", "monai_dpaat")
#: where network factory functions live; other functions of the trusted packages (torch.hub.load, torch.save,
#: monai.bundle.run, monai.utils.instantiate...) run code or write files, so only these and nn.Module classes pass
NETWORK_FACTORY_MODULES = ("monai.networks.nets", "monai_dpaat.networks", "torchvision.models")
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _in(module: str, prefixes: Sequence[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _check_target(target: Any, where: str) -> None:
    """Refuse a ``_target_`` that is not an ``nn.Module`` class or a network factory of :data:`TRUSTED_PACKAGES`
    (resolved as MONAI resolves it, before importing anything outside those packages)."""
    import pydoc

    import torch

    if not isinstance(target, str) or not _DOTTED_NAME.fullmatch(target):
        raise UnsafeConfigError(f"{where}: _target_ must be a name such as 'monai.networks.nets.UNet', got {target!r}")
    full = target
    if "." not in target:  # MONAI looks bare names up among the monai modules already imported
        from monai.bundle.config_item import ComponentLocator

        module = ComponentLocator().get_component_module_name(target)
        if not isinstance(module, str):
            raise ValueError(f"{where}: _target_ {target!r} " + ("is not a MONAI component" if module is None else
                             f"is ambiguous ({module}); write the full dotted name"))
        full = f"{module}.{target}"
    refusal = (f"{where}: _target_ {target!r} is not a torch.nn.Module class or a network factory "
               f"({', '.join(NETWORK_FACTORY_MODULES)}) of {', '.join(TRUSTED_PACKAGES)}; configs given on the "
               "command line build nothing else (it could run code); pass --trust_config to build it anyway "
               "(only for files you trust)")
    if full.split(".")[0] not in TRUSTED_PACKAGES:  # checked before importing anything
        raise UnsafeConfigError(refusal)
    obj = pydoc.locate(full)
    if obj is None:
        raise ValueError(f"{where}: _target_ {target!r} cannot be imported")
    module = getattr(obj, "__module__", None) or ""  # the defining module: 'torch.os.system' is os.system
    is_module_class = isinstance(obj, type) and issubclass(obj, torch.nn.Module)
    is_factory = callable(obj) and _in(module, NETWORK_FACTORY_MODULES)
    if not (_in(module, TRUSTED_PACKAGES) and (is_module_class or is_factory)):
        raise UnsafeConfigError(refusal)


def check_config_is_safe(config: Any, root: str = "", source: str = "config", what: str = "config",
                         prefix: str = "") -> None:
    """Refuse, with :class:`UnsafeConfigError` naming ``source`` and the key, a MONAI config whose item ``root``
    (``""``: all of it) would run code when parsed: a ``$`` expression, a ``%`` macro (it pulls in another file),
    ``_mode_: debug`` or a ``_target_`` that is not an ``nn.Module`` class / network factory of the trusted
    packages (:data:`TRUSTED_PACKAGES`). ``@`` references are followed, so an expression elsewhere in the file
    that the item uses is refused too; items it does not use are not looked at. ``prefix`` is prepended to key
    names in messages."""
    from monai.bundle import ConfigParser
    from monai.bundle.reference_resolver import ReferenceResolver

    parser = ConfigParser(config)
    todo, seen = [(ReferenceResolver.normalize_id(root), None)], set()
    while todo:
        item_id, used_by = todo.pop()
        if item_id in seen:
            continue
        seen.add(item_id)
        try:
            node = parser[item_id]
        except (KeyError, IndexError, TypeError, ValueError):
            continue  # a dangling reference: the parser reports it when the item is built
        stack = [(item_id, node)]
        while stack:
            key, value = stack.pop()
            used = f" (used by {prefix + used_by!r})" if used_by is not None else ""
            where = f"{what} {source!r} key {prefix + key!r}{used}" if key else f"{what} {source!r}"
            if isinstance(value, dict):
                if "_target_" in value:
                    _check_target(value["_target_"], where)
                if value.get("_mode_", "default") not in ("default", "callable"):
                    raise UnsafeConfigError(f"{where}: _mode_ {value['_mode_']!r} is not allowed in configs given "
                                            "on the command line; pass --trust_config to allow it")
                stack += [(f"{key}::{k}" if key else str(k), v) for k, v in value.items()]
            elif isinstance(value, list):
                stack += [(f"{key}::{i}" if key else str(i), v) for i, v in enumerate(value)]
            elif isinstance(value, str):
                try:
                    text = ConfigParser.resolve_relative_ids(key, value)
                except ValueError:
                    text = value
                if text.startswith("$"):
                    raise UnsafeConfigError(f"{where} holds a '$' expression ({value[:60]!r}), which would run Python "
                                            "code: configs given on the command line are not evaluated; pass "
                                            "--trust_config to run it (only for files you trust)")
                if text.startswith("%"):
                    raise UnsafeConfigError(f"{where} holds a '%' macro ({value[:60]!r}), which pulls in content "
                                            "that is not checked; pass --trust_config to expand it")
                if text.startswith("@"):
                    todo.append((text[1:], key))


def read_config_file(path: Any) -> Any:
    """The content of a JSON/YAML config file (read by MONAI's ``ConfigParser``), or ``ValueError`` naming it."""
    from monai.bundle import ConfigParser

    try:
        return ConfigParser.load_config_file(str(path))
    except Exception as err:  # malformed JSON/YAML
        raise ValueError(f"cannot read config file {str(path)!r}: {err}") from None


def read_network_config(network: Any, trust_config: bool = False) -> tuple[dict, str, str] | None:
    """``(config, item id, source)`` of a network given as a JSON/YAML file or an inline dict (``{"_target_":
    ...}``, or ``network_def`` inside: the item id is then ``"network_def"``, else ``""``), checked with
    :func:`check_config_is_safe` unless ``trust_config``; ``None`` when ``network`` is neither (a name)."""
    if isinstance(network, Mapping):
        config, source = dict(network), "--network"
    elif str(network).lower().endswith((".json", ".yaml", ".yml")):
        if not Path(str(network)).is_file():
            raise ValueError(f"network config file {str(network)!r} does not exist")
        config, source = read_config_file(network), str(network)
    else:
        return None
    if not isinstance(config, Mapping) or not ("network_def" in config or "_target_" in config):
        raise ValueError(f"network config {source!r} must be a dict with '_target_' or 'network_def'")
    key = "network_def" if "network_def" in config else ""
    if not trust_config:
        check_config_is_safe(dict(config), key, source, what="network config")
    return dict(config), key, source


def build_network_config(config: Mapping, key: str = "", source: str = "config") -> Any:
    """Item ``key`` of ``config`` built by MONAI's ``ConfigParser`` (see :func:`read_network_config`); a failure
    is a ``ValueError`` naming ``source`` with the user error it comes from."""
    from monai.bundle import ConfigParser

    from monai_dpaat.error_hook import user_error_of

    try:
        return ConfigParser(dict(config)).get_parsed_content(key)
    except Exception as err:
        raise ValueError(f"cannot build the network of {source!r}: {user_error_of(err) or err}") from None
