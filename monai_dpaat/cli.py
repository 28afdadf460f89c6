"""Command line of monai-dpaat (``python -m monai_dpaat <command> ...`` or ``monai-dpaat <command> ...``).

Commands:

- ``robustness``: evaluate a trained model under an attack suite and write the paper-shaped report::

      python -m monai_dpaat robustness --network small_cnn --checkpoint model.pt --num_classes 2 \\
          --data ../shared/data/ham10000 --classes mel,nv --attacks dpaat-table --eps 8/255 --output_dir out
      python -m monai_dpaat robustness --bundle bundles/nuclei_seg --task segmentation \\
          --data ../shared/data/nuclei_he --attacks unet-paper --roi_size 256 --limit 4 --output_dir out
      python -m monai_dpaat robustness ... --eps "2/255,4/255,8/255"     # an epsilon sweep + plots

- ``demo``: train a small CNN on the HAM10000 sample (mel vs nv, 64x64) for a couple of epochs with a MONAI
  ``SupervisedTrainer``, then evaluate it with the ``dpaat-table`` suite and write the report.
- ``gradcam``: Grad-CAM maps (see :func:`monai_dpaat.evaluation.gradcam.gradcam_cli`).
- ``combine``: merge several ``report.json`` files into one table per metric (one column per model).
- ``presets``: list the attack presets and their attacks.

``python -m monai_dpaat <command> --help`` lists a command's flags. Values are written as with ``fire`` (which
MONAI's ``python -m monai.bundle`` uses too): ``--flag value`` or ``--flag=value``, Python literals are parsed
(``8``, ``True``, ``[1, 2]``), anything else is a string; booleans also as ``--flag`` / ``--noflag``.

The whole command line is checked before anything is read, built or written: an unknown or misspelled flag, a bad
value (``--eps`` outside the data's value range, ``--limit 0``, ``--device cuda`` without a GPU...), a missing file
or an output folder that cannot be written (or, for a report, holds anything but a previous report: the report
replaces the whole folder) prints one line ``error: ...`` and exits with status 2, without a traceback (set
``MONAI_DPAAT_DEBUG=1`` to see it). A bad data file found while loading (a corrupt image, a wrong label or mask)
is reported the same way, with the file's name, instead of MONAI's ``applying transform`` traceback.

What is trusted: a JSON/YAML file given with ``--network`` (or ``gradcam --models``) is data. Its ``$`` expressions
(and ``@`` references or ``%`` macros leading to them) are never evaluated, and its ``_target_`` must be a
``torch.nn.Module`` class or a network factory (``monai.networks.nets``, ``torchvision.models``,
``monai_dpaat.networks``) of ``torch``, ``torchvision``, ``monai`` or ``monai_dpaat``, unless ``--trust_config``
is given. A ``--bundle`` folder is the user's own code: its configs run as ``python -m monai.bundle run`` runs them
(``$`` expressions included), so only pass bundles you trust.
"""

from __future__ import annotations

import difflib
import errno
import inspect
import logging
import math
import numbers
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CLIError", "UnsafeConfigError", "robustness", "demo", "gradcam", "combine", "presets", "main", "COMMANDS",
           "default_data_dir", "load_network", "parse_eps_list", "parse_command_line", "check_output_dir",
           "check_config_is_safe"]

logger = logging.getLogger("monai_dpaat.cli")

PROG = "monai-dpaat"


class CLIError(Exception):
    """A user error: printed as ``error: <message>``, exit status 2."""


class UnsafeConfigError(CLIError, ValueError):
    """A config given on the command line would run code (``$``, ``%``, a ``_target_`` outside the trusted
    packages) and ``--trust_config`` was not given."""


# ---------------------------------------------------------------------------------------------- values
def default_data_dir() -> Path:
    """The sample data folder: ``$MONAI_DPAAT_DATA``, else ``../shared/data`` beside the checkout, else
    ``../shared/data`` from the working directory."""
    env = os.environ.get("MONAI_DPAAT_DATA")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return beside if beside.is_dir() else Path.cwd().parent / "shared" / "data"


def _int_arg(flag: str, value: Any, minimum: int | None = None, optional: bool = False) -> int | None:
    """``value`` as an int (fire gives ``int`` for ``8``; a float, bool or word is refused, naming the flag)."""
    if value is None and optional:
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        value = int(value)
    bound = f" >= {minimum}" if minimum is not None else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CLIError(f"--{flag} must be an integer{bound}, got {value!r}")
    if minimum is not None and value < minimum:
        raise CLIError(f"--{flag} must be{bound}, got {value!r}")
    return int(value)


def _bool_arg(flag: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):  # fire parses only True/False
        return value.strip().lower() == "true"
    raise CLIError(f"--{flag} must be True or False (or --{flag} / --no{flag}), got {value!r}")


def _eps_value(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, numbers.Real):
        return float(value)
    num, slash, den = str(value).strip().partition("/")
    return float(num) / float(den) if slash else float(num)


def parse_eps_list(eps: Any, flag: str = "--eps") -> list[float] | None:
    """``None``, a number, ``"8/255"``, ``"2/255,8/255"``, ``"[2/255, 8/255]"`` or a list -> list of finite floats
    >= 0 (whether they fit the data's value range is checked by :func:`check_eps_range`)."""
    if eps is None:
        return None
    if isinstance(eps, (list, tuple)):
        items = list(eps)
    else:
        text = str(eps).strip().strip("[]()")
        items = [p for p in text.split(",") if p.strip()]
    out = []
    for item in items:
        try:
            value = _eps_value(item)
        except (ValueError, ZeroDivisionError):
            raise CLIError(f"{flag} must be a number, 'a/b' (such as 8/255) or a comma-separated list of them, "
                           f"got {eps!r}") from None
        if not math.isfinite(value):
            raise CLIError(f"{flag} must be a finite number, got {item!r}")
        if value < 0:
            raise CLIError(f"{flag} must be >= 0, got {item!r}")
        out.append(value)
    if not out:
        raise CLIError(f"{flag} must be a number, 'a/b' (such as 8/255) or a comma-separated list of them, got {eps!r}")
    return out



def check_eps_range(eps_list: Sequence[float] | None, value_range: float | None, flag: str = "--eps") -> None:
    """Budgets are in the data's units: one above the value range (1.0 for images scaled to [0, 1]) can only be a
    mistake (``1e6``, ``8`` for ``8/255``) and is an error; one above 64/255 of it warns. ``value_range=None``
    (z-scored volumes): only the attacks' own checks apply."""
    if not eps_list or value_range is None:
        return
    from monai_dpaat.attacks.base import LARGE_BUDGET_FRACTION  # the attacks' own warning threshold (64/255)

    for e in eps_list:
        if e > value_range:
            raise CLIError(f"{flag} {e:g} is above the data's value range ({value_range:g}: the images are scaled to "
                           f"[0, {value_range:g}]); budgets are in pixel-value units, e.g. 8/255")
        if e > LARGE_BUDGET_FRACTION * value_range:
            logger.warning("%s %.4g is more than 64/255 of the data's value range [0, %g]: such a perturbation can "
                           "change what the image shows; was 8/255 meant?", flag, e, value_range)


def check_device(device: Any, flag: str = "--device") -> Any:
    """``torch.device(device)``, refusing one this machine does not have (before any work, not in the first batch)."""
    import torch

    try:
        dev = torch.device(str(device))
    except (RuntimeError, TypeError, ValueError) as err:
        raise CLIError(f"{flag} {device!r} is not a device (cpu, cuda, cuda:0, ...): {err}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"{flag} {device!r}: no CUDA GPU is usable here (torch.cuda.is_available() is False); "
                           "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CLIError(f"{flag} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CLIError(f"{flag} {device!r}: no MPS (Apple GPU) device is usable here "
                       "(torch.backends.mps.is_available() is False); use --device cpu")
    elif dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except Exception as err:  # mps/xpu/... builds raise different types, some with a dispatcher dump
            first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
            first = first.split(". ")[0][:200]  # "Could not run '...' with arguments from the 'X' backend"
            raise CLIError(f"{flag} {device!r} is not usable here: {first}") from None
    return dev


def check_output_dir(path: Any, flag: str = "--output_dir", report: bool = False) -> Path:
    """Check, before any work, that ``path`` is a folder that can be written, or can be created: a probe file is
    written to it (or to its nearest existing parent) and removed. With ``report``, also that it can be a report
    folder (missing, empty or a previous report's; see :func:`monai_dpaat.evaluation.report.check_report_folder`).
    Creates nothing; raises ``CLIError``."""
    if path is None or str(path).strip() == "":
        raise CLIError(f"{flag} is empty; give a folder (a new one, or a previous report's)")
    out = Path(str(path)).expanduser()
    if os.path.islink(out) and not os.path.exists(out):  # a dangling link or a loop: Path.exists() says False
        try:
            os.stat(out)
        except OSError as err:
            why = "is a symlink loop" if err.errno == errno.ELOOP else f"is a broken symlink (to {os.readlink(out)!r})"
        else:
            why = "is a symlink that cannot be followed"
        raise CLIError(f"output_dir {str(out)!r} {why} ({flag})")
    try:
        os.stat(out)
    except OSError as err:  # a loop or a broken link further up the path, a permission error...
        if err.errno in (errno.ENOENT, errno.ENOTDIR):  # missing, or under a file: said below
            pass
        else:
            raise CLIError(f"output_dir {str(out)!r} cannot be used: {err.strerror or err} ({flag})") from None
    if out.exists() and not out.is_dir():
        raise CLIError(f"output_dir {str(out)!r} exists and is not a folder ({flag})")
    target = out
    while not os.path.lexists(target) and target != target.parent:
        target = target.parent
    if not target.is_dir():
        raise CLIError(f"output_dir {str(out)!r} cannot be created: {str(target)!r} is not a folder ({flag})")
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
        raise CLIError(f"output_dir {str(out)!r} {what}: {err.strerror or err} ({flag})") from None
    if report:
        from monai_dpaat.evaluation.report import check_report_folder

        try:
            check_report_folder(out)
        except ValueError as err:
            raise CLIError(f"{err} ({flag})") from None
    return out


def _report_write_error(output_dir: Any, err: OSError) -> CLIError:
    return CLIError(f"cannot write report to {str(output_dir)!r}: {err.strerror or err}")


def _read_config(path: Path) -> Any:
    from monai.bundle import ConfigParser

    try:
        return ConfigParser.load_config_file(str(path))
    except Exception as err:  # malformed JSON/YAML
        raise CLIError(f"cannot read config file {str(path)!r}: {err}") from None


def _parse_attacks(attacks: Any) -> Any:
    """Attack suite argument: preset/attack names, or a JSON/YAML file with a list of specs (or {"attacks": [...]}).
    Specs are ``name`` + keyword arguments, never evaluated (no ``$``/``_target_``)."""
    if isinstance(attacks, str) and attacks.lower().endswith((".json", ".yaml", ".yml")):
        path = Path(attacks)
        if not path.is_file():
            raise CLIError(f"attack config file {attacks!r} does not exist")
        data = _read_config(path)
        if isinstance(data, Mapping) and "attacks" in data:
            data = data["attacks"]
        if not isinstance(data, list):
            raise CLIError(f"attack config {attacks!r} must hold a list of {{'name': ..., kwargs}} dicts")
        return data
    return attacks


def _as_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [p.strip() for p in str(value).split(",") if p.strip()]


# ---------------------------------------------------------------------------------------------- configs
#: packages a config given on the command line may build from without --trust_config
TRUSTED_PACKAGES = ("torch", "torchvision", "monai", "monai_dpaat")
#: where network factory functions live; other functions of the trusted packages (torch.hub.load, torch.save,
#: monai.bundle.run, monai.utils.instantiate...) run code or write files, so only these and nn.Module classes pass
NETWORK_FACTORY_MODULES = ("monai.networks.nets", "monai_dpaat.networks", "torchvision.models")
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _in(module: str, prefixes: Sequence[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _check_target(target: Any, where: str) -> None:
    import pydoc

    import torch

    if not isinstance(target, str) or not _DOTTED_NAME.fullmatch(target):
        raise UnsafeConfigError(f"{where}: _target_ must be a name such as 'monai.networks.nets.UNet', got {target!r}")
    full = target
    if "." not in target:  # MONAI looks bare names up among the monai modules already imported
        from monai.bundle.config_item import ComponentLocator

        module = ComponentLocator().get_component_module_name(target)
        if not isinstance(module, str):
            raise CLIError(f"{where}: _target_ {target!r} " + ("is not a MONAI component" if module is None else
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
        raise CLIError(f"{where}: _target_ {target!r} cannot be imported")
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


def _network_config(network: Any, trust_config: bool) -> tuple[dict, str, str] | None:
    """``(config, item id, source)`` of a ``--network`` JSON/YAML file (or an inline dict), checked with
    :func:`check_config_is_safe` unless ``trust_config``; ``None`` for a network name."""
    if isinstance(network, Mapping):
        config, source = dict(network), "--network"
    elif str(network).lower().endswith((".json", ".yaml", ".yml")):
        path = Path(str(network))
        if not path.is_file():
            raise CLIError(f"network config file {str(network)!r} does not exist")
        config, source = _read_config(path), str(network)
    else:
        return None
    if not isinstance(config, Mapping):
        raise CLIError(f"network config {source!r} must be a dict with '_target_' or 'network_def'")
    config = dict(config)
    key = "network_def" if "network_def" in config else ""
    if key == "" and "_target_" not in config:
        raise CLIError(f"network config {source!r} has neither '_target_' nor 'network_def'")
    if not trust_config:
        check_config_is_safe(config, key, source, what="network config")
    return config, key, source


def _build_network_config(config: dict, key: str, source: str) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser(config)
    try:
        return parser.get_parsed_content(key) if key else parser.get_parsed_content()
    except Exception as err:
        raise CLIError(f"cannot build the network of {source!r}: {err}") from None


def load_checkpoint(network: Any, checkpoint: str | os.PathLike) -> None:
    """Load weights into ``network`` (see :func:`monai_dpaat.utils.load_weights`); errors become ``CLIError``."""
    from monai_dpaat.utils import load_weights

    try:
        load_weights(network, checkpoint)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None


SEGMENTATION_NETWORKS = ("unet", "attention-unet++")


def load_network(network: Any, task: str = "classification", num_classes: int = 2, in_channels: int = 3,
                 spatial_dims: int = 2, trust_config: bool = False) -> Any:
    """A network from a JSON/YAML config (``{"_target_": ...}`` or a bundle config with ``network_def``), or a
    name: any :func:`monai_dpaat.networks.build_classifier` name for classification; ``unet`` (MONAI UNet)
    or ``attention-unet++`` for segmentation (``num_classes`` output channels, 1 = sigmoid foreground).
    A config is checked with :func:`check_config_is_safe` (no ``$`` expressions...) unless ``trust_config``."""
    spec = _network_config(network, trust_config)
    if spec is not None:
        return _build_network_config(*spec)
    name = str(network).strip().lower()
    if task == "segmentation":
        if name == "unet":
            from monai.networks.nets import UNet

            return UNet(spatial_dims, in_channels, num_classes, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                        num_res_units=2)
        if name in ("attention-unet++", "attention_unet++", "attunet++", "att-unet++"):
            from monai_dpaat.networks import AttentionUNetPlusPlus

            return AttentionUNetPlusPlus(spatial_dims, in_channels, num_classes)
        raise CLIError(f"unknown segmentation network {network!r}; known: {', '.join(SEGMENTATION_NETWORKS)} "
                       "or a JSON/YAML config file")
    try:
        from monai_dpaat.networks import build_classifier
    except ImportError as err:
        raise CLIError(f"monai_dpaat.networks.build_classifier is unavailable: {err}") from None
    try:
        return build_classifier(name, num_classes=num_classes, in_channels=in_channels)
    except (ValueError, KeyError) as err:
        raise CLIError(f"unknown model {network!r}: {err}") from None


def _bundle_config(bundle: Path) -> Path:
    if not bundle.is_dir():
        raise CLIError(f"bundle folder {str(bundle)!r} does not exist")
    for name in ("inference.json", "inference.yaml", "train.json", "train.yaml"):
        config_file = bundle / "configs" / name
        if config_file.is_file():
            break
    else:
        raise CLIError(f"bundle {str(bundle)!r} has no configs/inference.json (or train.json)")
    if "network_def" not in (_read_config(config_file) or {}):
        raise CLIError(f"{str(config_file)!r} defines no 'network_def'")
    return config_file


def _bundle_network(bundle: Path, config_file: Path) -> Any:
    """The bundle's ``network_def``. A bundle is the user's own code: its ``$`` expressions run, as in
    ``python -m monai.bundle run`` (no --trust_config needed; see the module docstring)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle)
    try:
        return parser.get_parsed_content("network_def")
    except Exception as err:
        raise CLIError(f"cannot build network_def of {str(config_file)!r}: {err}") from None


# ---------------------------------------------------------------------------------------------- data
def _balanced_subset(items: Sequence[dict], limit: int | None) -> list[dict]:
    """At most ``limit`` items, taken round-robin over labels (datalists are sorted by label)."""
    if limit is None or limit >= len(items):
        return list(items)
    by_label: dict[Any, list[dict]] = {}
    for item in items:
        by_label.setdefault(str(item.get("label")), []).append(item)
    groups, out, i = list(by_label.values()), [], 0
    while len(out) < limit:
        for g in groups:
            if i < len(g) and len(out) < limit:
                out.append(g[i])
        i += 1
    return out


_NIFTI = (".nii", ".nii.gz")


def _first_image(items: Sequence[dict]) -> str:
    first = items[0].get("image", "") if items else ""
    return str(first[0] if isinstance(first, (list, tuple)) and first else first)


def _data_value_range(task: str, items: Sequence[dict] | None) -> float | None:
    """The CLI's transforms scale photos/tiles to [0, 1]; NIfTI volumes keep their (z-scored) intensities."""
    if task == "segmentation" and items is not None and _first_image(items).lower().endswith(_NIFTI):
        return None
    return 1.0


def _folder_items(task: str, root: Path, split: str, classes: Sequence[str], seed: int) -> tuple[list, list | None]:
    from monai_dpaat import data as D

    if task == "classification":
        lists = D.ham10000_datalists(root, classes=list(classes), seed=seed, val_fraction=None)
        if split not in lists:
            raise CLIError(f"unknown split {split!r}; HAM10000 splits are {sorted(lists)}")
        return lists[split], list(classes)
    return D.nuinsseg_datalist(root), None


def _network_spatial_dims(network: Any) -> int | None:
    from torch import nn

    for m in network.modules():
        for n, conv in ((1, nn.Conv1d), (2, nn.Conv2d), (3, nn.Conv3d)):
            if isinstance(m, conv):
                return n
    return None


def _check_image_dims(task: str, items: Sequence[dict], network: Any) -> None:
    """A volume fed to a 2D path (or a tile to a 3D network) fails deep in a transform or a convolution with a
    traceback: say which file and what shape was expected instead."""
    image = _first_image(items)
    data_dims, shape = 2, None
    if image.lower().endswith(_NIFTI):
        from monai_dpaat.data.nifti import check_nifti_file

        shape = check_nifti_file(image)  # the header only
        data_dims = 3 if len(shape) >= 3 else 2
    net_dims = 2 if task == "classification" else _network_spatial_dims(network)
    if net_dims is None or net_dims == data_dims:
        return
    found = f"a 3D volume of shape {shape}" if data_dims == 3 else "a 2D image"
    if task == "classification":
        raise CLIError(f"image {image!r} is {found}, but classification takes 2D images (PNG/JPEG/TIFF, read as "
                       "(C, H, W)); evaluate volumes with --task segmentation and a 3D network config, or a bundle")
    expected = "(C, H, W) images" if net_dims == 2 else "(C, D, H, W) volumes"
    raise CLIError(f"image {image!r} is {found}, but the network is {net_dims}D and takes {expected}; give a "
                   f"{data_dims}D network with --network <config> or --bundle")


def _make_loader(task: str, items: Sequence[dict], image_size: int, batch_size: int) -> Any:
    from monai.data import DataLoader, Dataset

    from monai_dpaat import data as D

    if task == "classification":
        transforms = D.ham10000_transforms(image_size, train=False)
    elif _first_image(items).lower().endswith(_NIFTI):
        transforms = D.nifti_transforms(spatial_size=None, track_meta=False)
    else:
        transforms = D.nuinsseg_eval_transforms(track_meta=False)
    bs = batch_size if task == "classification" else 1  # tiles differ in size
    return DataLoader(Dataset(list(items), transforms), batch_size=bs, shuffle=False, num_workers=0)


def _check_datalist_labels(items: Sequence[dict], datalist: Any, num_classes: int | None) -> None:
    """Every item of a classification datalist has an existing image file and a class-index label (an integer
    >= 0, below ``num_classes`` when known): checked before any attack, without decoding an image (the loader's
    ``CheckClassLabeld`` would find a bad label only when its batch comes)."""
    from monai_dpaat.data.transforms import CheckClassLabeld

    check = CheckClassLabeld("label", num_classes=num_classes)
    for i, item in enumerate(items):
        image = item.get("image")
        first = image[0] if isinstance(image, (list, tuple)) and image else image
        if isinstance(first, (str, os.PathLike)) and not Path(first).is_file():
            what = "is a folder" if Path(first).is_dir() else "does not exist"
            raise CLIError(f"datalist {str(datalist)!r} item {i}: image {str(first)!r} {what}")
        if "label" not in item:
            raise CLIError(f"datalist {str(datalist)!r} item {i} ({str(first)!r}) has no 'label'")
        try:
            check._class_index(item["label"], first, "label")
        except ValueError as err:
            raise CLIError(f"datalist {str(datalist)!r} item {i}: {err}") from None


def evaluator_model(network: Any, inferer: Any) -> Any:
    from monai_dpaat.evaluation import InfererNetwork

    return network if inferer is None else InfererNetwork(network, inferer)


def _print_table(tables: Mapping[str, Any], metric: str) -> None:
    from monai_dpaat.evaluation.report import markdown_table

    if metric in tables:
        print(f"\n{tables[metric]['title']}\n")
        print(markdown_table(tables[metric], metric))


# ---------------------------------------------------------------------------------------------- commands
def robustness(bundle: str | None = None, checkpoint: str | None = None, network: str | None = None,
               task: str = "classification", data: str | None = None, datalist: str | None = None,
               split: str = "test", attacks: Any = "dpaat-table", eps: Any = None,
               output_dir: str = "robustness_report", device: str = "cpu", limit: int | None = None,
               batch_size: int = 16, num_classes: int = 2, in_channels: int = 3, classes: Any = "mel,nv",
               image_size: int = 64, roi_size: int | None = None, sw_batch_size: int = 4, name: str = "model",
               seed: int = 0, hd95: bool = True, check_masking: bool = False, progress: bool = True,
               trust_config: bool = False) -> None:
    """Evaluate a model under an attack suite and write report.md/.json, table_*.csv and PNG plots.

    Args:
        bundle: a MONAI bundle folder (network from configs/inference.json ``network_def``, weights from
            models/model.pt unless --checkpoint). Its configs are trusted like code: their ``$`` expressions
            run, as with ``python -m monai.bundle run``.
        checkpoint: weights (a state dict or a CheckpointSaver file) for --network.
        network: a JSON/YAML config (``_target_`` dict, or ``network_def`` inside) or a model name. The config is
            not trusted: no ``$`` expressions, only nn.Module classes / network factories of torch, torchvision,
            monai and monai_dpaat, unless --trust_config.
        task: classification | segmentation.
        data: a dataset folder (HAM10000 root for classification, NuInsSeg-layout root for segmentation).
        datalist: a Decathlon datalist JSON instead of --data (key --split).
        split: datalist key / HAM10000 split (default ``test``).
        attacks: preset (dpaat-table, unet-paper), attack names (``fgsm,20-pgd``) or a JSON/YAML spec list.
        eps: budget override: ``8/255``, or a list ``2/255,4/255,8/255`` for a sweep with metric-vs-eps plots;
            at most the data's value range (1 for images scaled to [0, 1]).
        output_dir: report folder (created; checked to be writable before any work). It must be new, empty or a
            previous report's folder: the report replaces the whole folder, so one holding other files is refused.
        device: cpu, cuda, cuda:0...
        limit: at most this many samples (class-balanced for classification), >= 1.
        num_classes: output classes/channels of a named network; in_channels: its input channels.
        classes: HAM10000 class codes in label order (``mel,nv``).
        image_size: classification input side.
        roi_size: sliding-window size for segmentation (default 256; 0 = whole tiles).
        name: the model's column name in the tables.
        hd95: compute HD95 (segmentation).
        check_masking: also run :func:`monai_dpaat.evaluation.sanity.check_gradient_masking` on two batches
            (an eps grid, FGSM vs PGD vs noise, an unbounded attack) and list its flags in the report.
        trust_config: build --network configs as MONAI would (``$`` expressions and any ``_target_`` run).
    """
    # 1. the command line: nothing is read, built or written until all of it and every file it names is checked
    if task not in ("classification", "segmentation"):
        raise CLIError(f"--task must be 'classification' or 'segmentation', got {task!r}")
    limit = _int_arg("limit", limit, 1, optional=True)
    batch_size = _int_arg("batch_size", batch_size, 1)
    num_classes = _int_arg("num_classes", num_classes, 1)
    in_channels = _int_arg("in_channels", in_channels, 1)
    image_size = _int_arg("image_size", image_size, 1)
    roi_size = _int_arg("roi_size", roi_size, 0, optional=True)
    sw_batch_size = _int_arg("sw_batch_size", sw_batch_size, 1)
    seed = _int_arg("seed", seed, 0)
    hd95, check_masking = _bool_arg("hd95", hd95), _bool_arg("check_masking", check_masking)
    progress, trust_config = _bool_arg("progress", progress), _bool_arg("trust_config", trust_config)
    class_names, name = _as_list(classes), str(name)
    if task == "classification" and not class_names:
        raise CLIError(f"--classes must name the HAM10000 classes in label order (e.g. mel,nv), got {classes!r}")
    eps_list = parse_eps_list(eps)
    dev = check_device(device)

    from monai_dpaat.evaluation import build_suite

    suite = _parse_attacks(attacks)
    build_suite(suite, eps=eps_list[0] if eps_list else None)  # unknown attack/preset -> error before any loading
    if bundle is None and network is None:
        raise CLIError("give a model: --bundle <folder> or --network <config|name> with --checkpoint <file>")
    if bundle is not None and network is not None:
        raise CLIError("give --bundle or --network, not both")
    # 2. the files it names: they exist, configs are safe to build, the budget fits the data
    spec = None
    if bundle is not None:
        config_file = _bundle_config(Path(bundle))
        checkpoint = checkpoint or str(Path(bundle) / "models" / "model.pt")
    else:
        if checkpoint is None:
            raise CLIError("--network needs --checkpoint <weights file>")
        spec = _network_config(network, trust_config)
        if spec is None:  # a name: build it on the meta device (no memory, no init) to check name and sizes
            import torch

            with torch.device("meta"):
                load_network(network, task, num_classes, in_channels)
    if not Path(checkpoint).is_file():
        raise CLIError(f"checkpoint {str(checkpoint)!r} does not exist")
    if (data is None) == (datalist is None):
        raise CLIError("give exactly one data source: --data <dataset folder> or --datalist <Decathlon JSON>")
    items = None
    if datalist is not None:
        from monai_dpaat.data import load_datalist

        if not Path(datalist).is_file():
            raise CLIError(f"datalist file {datalist!r} does not exist")
        items, class_names = load_datalist(datalist, split=split), None
        if task == "classification":
            _check_datalist_labels(items, datalist, num_classes if spec is None and bundle is None else None)
    elif not Path(data).is_dir():
        raise CLIError(f"data folder {str(data)!r} does not exist")
    check_eps_range(eps_list, _data_value_range(task, items))
    check_output_dir(output_dir)

    # 3. the work
    import torch

    from monai_dpaat.evaluation import RobustnessEvaluator, write_report
    from monai_dpaat.evaluation.report import combine_results

    if bundle is not None:
        net = _bundle_network(Path(bundle), config_file)
    elif spec is not None:
        net = _build_network_config(*spec)
    else:
        net = load_network(network, task, num_classes, in_channels)
    if not isinstance(net, torch.nn.Module):
        raise CLIError(f"the network built from {bundle or network!r} is a {type(net).__name__}, not a torch.nn.Module")
    load_checkpoint(net, checkpoint)
    check_output_dir(output_dir, report=True)  # a dedicated report folder: refused before any data or attack
    if items is None:
        items, class_names = _folder_items(task, Path(data), split, class_names, seed)
    items = _balanced_subset(items, limit)
    if not items:
        raise CLIError("the data source holds no samples")
    _check_image_dims(task, items, net)
    loader = _make_loader(task, items, image_size, batch_size)
    inferer = None
    if task == "segmentation" and roi_size != 0:
        from monai.inferers import SlidingWindowInferer

        size = int(roi_size or 256)
        inferer = SlidingWindowInferer(roi_size=size, sw_batch_size=sw_batch_size, overlap=0.25, mode="gaussian")
    evaluator = RobustnessEvaluator(suite, task=task, inferer=inferer, device=dev, class_names=class_names,
                                    hd95=hd95, seed=seed, progress=progress)
    net = net.to(dev)
    sweeps = None
    if eps_list and len(eps_list) > 1:
        sweep = evaluator.sweep(net, loader, eps_list)
        result = sweep[max(sweep)]
        sweeps = {name: sweep}
    else:
        result = evaluator(net, loader, eps=eps_list[0] if eps_list else None)
    flags = None
    if check_masking:
        from monai_dpaat.evaluation.sanity import check_gradient_masking

        model = evaluator_model(net, inferer)
        flags = check_gradient_masking(model, loader, task=task, eps=eps_list[-1] if eps_list else 8 / 255,
                                       device=dev, max_batches=2)
    try:
        files = write_report({name: result}, output_dir, sweeps=sweeps, flags=flags,
                             title=f"Robustness of {name} ({task}, {result.num_samples} samples)")
    except OSError as err:  # ENOSPC, EIO...: the writer leaves the previous report as it was
        raise _report_write_error(output_dir, err) from None
    _print_table(combine_results({name: result}), "accuracy" if task == "classification" else "dice")
    print(f"\nreport written to {files['markdown'].parent}")


def demo(data: str | None = None, output_dir: str = "demo_output", epochs: int = 2, n_train: int = 200,
         n_test: int = 64, image_size: int = 64, batch_size: int = 32, lr: float = 1e-3, attacks: Any = "dpaat-table",
         eps: Any = "8/255", device: str = "cpu", seed: int = 0, progress: bool = True) -> None:
    """Train a small CNN on the HAM10000 sample (mel vs nv) with a MONAI SupervisedTrainer, evaluate it with the
    ``dpaat-table`` suite, print the accuracy table and write the full report (and model.pt) to ``output_dir``.

    Args:
        data: HAM10000 folder (default: ``<sample data>/ham10000``, see ``MONAI_DPAAT_DATA``).
        epochs, n_train, n_test, image_size, batch_size, lr: the quick training run (n_* per class).
        attacks, eps: the evaluation suite and budget.
    """
    epochs, n_train = _int_arg("epochs", epochs, 1), _int_arg("n_train", n_train, 1)
    n_test = _int_arg("n_test", n_test, 1)
    image_size, batch_size = _int_arg("image_size", image_size, 1), _int_arg("batch_size", batch_size, 1)
    seed, progress = _int_arg("seed", seed, 0), _bool_arg("progress", progress)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (math.isfinite(lr) and lr > 0):
        raise CLIError(f"--lr must be a finite number > 0, got {lr!r}")
    eps_list = parse_eps_list(eps) or [8 / 255]
    check_eps_range(eps_list, 1.0)
    dev = check_device(device)
    from monai_dpaat.evaluation import build_suite

    suite = _parse_attacks(attacks)
    build_suite(suite, eps=eps_list[0])
    root = Path(data) if data is not None else default_data_dir() / "ham10000"
    if not root.is_dir():
        raise CLIError(f"HAM10000 data folder {str(root)!r} does not exist (give --data or set MONAI_DPAAT_DATA)")
    check_output_dir(output_dir, report=True)

    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.engines import SupervisedTrainer
    from monai.utils import set_determinism

    from monai_dpaat import data as D
    from monai_dpaat.evaluation import RobustnessEvaluator, write_report
    from monai_dpaat.evaluation.report import combine_results

    out = Path(output_dir).expanduser()
    set_determinism(seed=seed)
    classes = ["mel", "nv"]
    lists = D.ham10000_datalists(root, classes=classes, n_train=n_train, n_test=n_test, val_fraction=None, seed=seed)
    train_ds = CacheDataset(lists["train"], D.ham10000_transforms(image_size, train=True), progress=False)
    test_ds = CacheDataset(lists["test"], D.ham10000_transforms(image_size, train=False), progress=False)
    train_loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=0)
    test_loader = DataLoader(test_ds, batch_size=batch_size, shuffle=False, num_workers=0)
    network = load_network("small_cnn", "classification", num_classes=2, in_channels=3).to(dev)
    optimizer = torch.optim.Adam(network.parameters(), lr=float(lr))
    trainer = SupervisedTrainer(device=dev, max_epochs=epochs, train_data_loader=train_loader, network=network,
                                optimizer=optimizer, loss_function=torch.nn.CrossEntropyLoss())

    from ignite.engine import Events

    @trainer.on(Events.EPOCH_COMPLETED)
    def _log(engine):
        print(f"epoch {engine.state.epoch}/{engine.state.max_epochs}: loss {float(engine.state.output[0]['loss']):.4f}",
              flush=True)

    print(f"training small_cnn on {len(train_ds)} HAM10000 images (mel vs nv, {image_size}x{image_size}), "
          f"{epochs} epochs on {dev}", flush=True)
    trainer.run()
    import io

    buf = io.BytesIO()
    torch.save(network.state_dict(), buf)
    evaluator = RobustnessEvaluator(suite, task="classification", device=dev, class_names=classes,
                                    seed=seed, progress=progress)
    print(f"evaluating on {len(test_ds)} test images, eps = {', '.join(f'{e * 255:g}/255' for e in eps_list)}",
          flush=True)
    sweeps = None
    if len(eps_list) > 1:
        sweep = evaluator.sweep(network, test_loader, eps_list)
        result, sweeps = sweep[max(sweep)], {"STD": sweep}
    else:
        result = evaluator(network, test_loader, eps=eps_list[0])
    try:
        write_report({"STD": result}, out, sweeps=sweeps, title="monai-dpaat demo: small_cnn on HAM10000 (mel vs nv)",
                     extra_files={"model.pt": buf.getvalue()})  # part of the set: replaced with it
    except OSError as err:
        raise _report_write_error(out, err) from None
    tables = combine_results({"STD": result})
    _print_table(tables, "accuracy")
    _print_table(tables, "map")
    print(f"\nreport, tables, plots and model.pt written to {out}")


#: gradcam_cli arguments a command line cannot give (a Python callable)
GRADCAM_PYTHON_ONLY = ("transform",)


def _gradcam_cli() -> Any:
    try:
        from monai_dpaat.evaluation.gradcam import gradcam_cli
    except ImportError as err:
        raise CLIError(f"Grad-CAM is unavailable: {err}") from None
    return gradcam_cli


def gradcam(**kwargs: Any) -> Any:
    """Grad-CAM maps: the flags are those of :func:`monai_dpaat.evaluation.gradcam.gradcam_cli` (see ``gradcam
    --help``); they are all checked, and the --models file read and checked, before any model is built."""
    gradcam_cli = _gradcam_cli()
    from monai_dpaat.evaluation.gradcam import read_model_specs

    try:
        bound = inspect.signature(gradcam_cli).bind(**kwargs)
    except TypeError as err:
        raise CLIError(f"gradcam: {err} (see: {PROG} gradcam --help)") from None
    bound.apply_defaults()
    a = bound.arguments
    from monai_dpaat.evaluation.gradcam import MAX_GRADCAM_IMAGES

    if _int_arg("n_images", a["n_images"], 1) > MAX_GRADCAM_IMAGES:
        raise CLIError(f"--n_images must be at most {MAX_GRADCAM_IMAGES} (one grid row per image), "
                       f"got {a['n_images']!r}")
    size = a["spatial_size"]
    sizes = list(size) if isinstance(size, (list, tuple)) else [size]
    if len(sizes) not in (1, 2):
        raise CLIError(f"--spatial_size must be an integer or two, got {size!r}")
    for s in sizes:
        _int_arg("spatial_size", s, 1)
    _int_arg("seed", a["seed"], 0)
    _bool_arg("tensorboard", a["tensorboard"])
    trust = _bool_arg("trust_config", a.get("trust_config", False))
    check_device(a["device"])
    if not Path(str(a["data_dir"])).is_dir():
        raise CLIError(f"--data_dir {str(a['data_dir'])!r} does not exist or is not a folder")
    mask_dir = a["mask_dir"]
    if mask_dir is not None and str(mask_dir).lower() != "otsu" and not Path(str(mask_dir)).is_dir():
        raise CLIError(f"--mask_dir {str(mask_dir)!r} does not exist or is not a folder (or give 'otsu')")
    if not isinstance(a["filename"], str) or not a["filename"] or Path(a["filename"]).name != a["filename"]:
        raise CLIError(f"--filename must be a file name (no folder), got {a['filename']!r}")
    read_model_specs(a["models"], trust_config=trust)  # exists, parses, builds nothing unsafe
    check_output_dir(a["output_dir"])
    result = gradcam_cli(**kwargs)
    for key in ("png", "json", "tensorboard"):
        if result.get(key):
            print(f"{key}: {result[key]}")
    return result


def combine(*reports: str, names: Any = None, output_dir: str = "combined_report", title: str = "Robustness report") -> None:
    """Merge ``report.json`` files (or folders holding one) into one report, one column per model.

    Args:
        reports: report.json files or folders.
        names: column names, comma-separated (default: the names stored in the reports).
    """
    from monai_dpaat.evaluation.report import combine_results, load_report, write_report

    if not reports:
        raise CLIError("give one or more report.json files or report folders")
    for path in reports:
        if not Path(str(path)).exists():
            raise CLIError(f"report {path!r} does not exist")
    check_output_dir(output_dir, report=True)
    merged: dict[str, Any] = {}
    for path in reports:
        for key, result in load_report(path).items():
            k, i = key, 2
            while k in merged:
                k, i = f"{key} ({i})", i + 1
            merged[k] = result
    if names is not None:
        labels = _as_list(names)
        if len(labels) != len(merged):
            raise CLIError(f"--names gives {len(labels)} names for {len(merged)} models")
        merged = dict(zip(labels, merged.values()))
    try:
        write_report(merged, output_dir, title=str(title))
    except OSError as err:
        raise _report_write_error(output_dir, err) from None
    task = next(iter(merged.values())).task
    _print_table(combine_results(merged), "accuracy" if task == "classification" else "dice")


def presets() -> None:
    """List the attack presets and their attacks."""
    from monai_dpaat.evaluation.presets import PRESETS

    for key, factory in sorted(PRESETS.items()):
        print(f"{key}:")
        for spec in factory():
            args = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in spec.items()
                             if k not in ("label", "name"))
            print(f"  {spec['label']:<12} {spec['name']:<12} {args}")


COMMANDS = {"robustness": robustness, "demo": demo, "gradcam": gradcam, "combine": combine, "presets": presets}
SUMMARIES = {"robustness": "evaluate a model under an attack suite and write the report",
             "demo": "train a small CNN on the HAM10000 sample, evaluate it and write the report",
             "gradcam": "Grad-CAM grids comparing models on the same HAM10000 images",
             "combine": "merge report.json files into one table per metric",
             "presets": "list the attack presets and their attacks"}


# ---------------------------------------------------------------------------------------------- command line
def _parameters(command: str) -> tuple[Any, list[inspect.Parameter]]:
    """``(documented function, its parameters)`` of a command; ``gradcam`` takes :func:`gradcam_cli`'s flags."""
    fn = COMMANDS[command]
    if command == "gradcam":
        fn = _gradcam_cli()
        return fn, [p for p in inspect.signature(fn).parameters.values() if p.name not in GRADCAM_PYTHON_ONLY]
    return fn, list(inspect.signature(fn).parameters.values())


def _is_flag(arg: str) -> bool:
    return arg.startswith("--") or re.match(r"^-[a-zA-Z]", arg) is not None  # as fire: "-1" is a value


def parse_command_line(command: str, args: Sequence[str]) -> tuple[list[Any], dict[str, Any]]:
    """``(positional, keyword)`` arguments of ``command`` from ``args``, with fire's syntax (``--flag value``,
    ``--flag=value``, ``--flag`` / ``--noflag`` for booleans, ``-x`` for a unique first letter) and fire's value
    parser, but checked first: an unknown flag (with the closest valid one), a flag given twice, a stray value
    or a missing required flag is a ``CLIError`` - fire would run the command first and complain afterwards."""
    from fire.parser import DefaultParseValue

    _, params = _parameters(command)
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    see = f"(see: {PROG} {command} --help)"
    positional: list[Any] = []
    kwargs: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not _is_flag(arg):
            if not varargs:
                raise CLIError(f"{command}: unexpected argument {arg!r}; flags are written --name value {see}")
            positional.append(DefaultParseValue(arg))
            continue
        key, eq, value = arg.lstrip("-").partition("=")
        key = key.replace("-", "_")
        bool_syntax = not eq and (i == len(args) or _is_flag(args[i]))
        if key in names:
            keyword = key
        elif bool_syntax and key.startswith("no") and key[2:] in names:
            keyword, value = key[2:], "False"
        elif len(key) == 1 and not arg.startswith("--") and len([n for n in names if n[0] == key]) == 1:
            keyword = next(n for n in names if n[0] == key)
        else:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f"; did you mean --{close[0]}?" if close else ""
            raise CLIError(f"{command}: unknown flag {arg.partition('=')[0]}{hint} {see}")
        if keyword in kwargs:
            raise CLIError(f"{command}: --{keyword} is given twice")
        if eq:
            kwargs[keyword] = DefaultParseValue(value)
        elif bool_syntax:
            kwargs[keyword] = value != "False"
        else:
            kwargs[keyword] = DefaultParseValue(args[i])
            i += 1
    missing = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               and p.name not in kwargs]
    if missing:
        raise CLIError(f"{command}: missing required flag(s) {', '.join('--' + m for m in missing)} {see}")
    return positional, kwargs


def _usage(command: str | None = None) -> str:
    if command is None:
        lines = [f"  {name:<11} {summary}" for name, summary in SUMMARIES.items()]
        return "\n".join([f"usage: {PROG} <command> [--flag value ...]", "", "commands:", *lines, "",
                          f"{PROG} <command> --help lists a command's flags."])
    fn, params = _parameters(command)
    head = [f"usage: {PROG} {command}"]
    flags = []
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            head.append(f"{p.name.upper()}...")
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            if p.default is p.empty:
                head.append(f"--{p.name} {p.name.upper()}")
            flags.append(f"  --{p.name:<16} " + ("(required)" if p.default is p.empty else f"(default: {p.default!r})"))
    if any(p.default is not p.empty for p in params):
        head.append("[--flag value ...]")
    return "\n".join([" ".join(head), "", inspect.getdoc(fn) or "", ""] + (["flags:"] + flags if flags else []))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0; or 2 after printing ``error: ...`` for a user error, before any
    work when the command line or a file it names is wrong)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        if argv[:1] in (["-h"], ["--help"]):
            print(_usage())
            return 0
        if not argv:
            raise CLIError(f"give a command: {', '.join(COMMANDS)} (see: {PROG} --help)")
        command = argv[0]
        if command not in COMMANDS:
            close = difflib.get_close_matches(command, list(COMMANDS), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; commands: {', '.join(COMMANDS)}"
            raise CLIError(f"unknown command {command!r}{hint}")
        if "-h" in argv[1:] or "--help" in argv[1:]:
            print(_usage(command))
            return 0
        args, kwargs = parse_command_line(command, argv[1:])
        COMMANDS[command](*args, **kwargs)
    except (CLIError, ValueError, OSError) as err:
        if os.environ.get("MONAI_DPAAT_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        cause = _transform_cause(err)
        if cause is None or os.environ.get("MONAI_DPAAT_DEBUG"):
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2
    return 0


def _transform_cause(err: BaseException) -> BaseException | None:
    """The data error (``DataError``/``ValueError``/``OSError``) that MONAI's ``RuntimeError("applying transform
    ...")`` wrappers (``monai.transforms.apply_transform``, one per nested Compose) hide; ``None`` when ``err`` is
    not such a wrapper of one."""
    seen = set()
    while isinstance(err, RuntimeError) and id(err) not in seen and "applying transform" in str(err):
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    if isinstance(err, (ValueError, OSError)) and seen:
        return err
    return None
