"""Command line of monai-dpaat (``python -m monai_dpaat <command> ...`` or ``monai-dpaat <command> ...``): a thin
layer over the bundles and the Python API, with no networks, trainers or attack tables of its own.

- ``robustness``: evaluate a trained model under an attack suite and write the paper-shaped report: a bundle's own
  robustness run (``configs/train.json`` + ``configs/robustness.json`` + extra configs, with ``--key value``
  overrides, run as ``python -m monai.bundle run`` runs them), or a network config / classifier name through the
  Python API::

      python -m monai_dpaat robustness --bundle bundles/ham10000_dpaat_classification \\
          --config_file "['configs/quick.json']" --attacks fgsm,20-pgd --eps 8/255 --limit 40
      python -m monai_dpaat robustness --network small_cnn --checkpoint model.pt --data ../shared/data/ham10000 \\
          --attacks dpaat-table --eps "2/255,4/255,8/255" --output_dir out     # an epsilon sweep + plots

- ``demo``: train the HAM10000 bundle's quick STD run, evaluate it, print the table; ``gradcam``: Grad-CAM maps;
  ``combine``: merge ``report.json`` files into one table per metric; ``presets``: list the attack presets.

``<command> --help`` lists a command's flags. Values are written as for ``fire`` (which ``monai.bundle`` uses):
``--flag value`` or ``--flag=value``, Python literals are parsed, anything else is a string, booleans also as
``--flag`` / ``--noflag``. The whole command line, and every file it names, is checked before anything is read,
built or written: a misspelled flag (with ``--bundle``: a key that is no id of the bundle's configs), a bad value,
a missing or unreadable file, an output folder that cannot be written (or, for a report, holds anything but a
previous report) prints one line ``error: ...`` and exits with status 2 (``MONAI_DPAAT_DEBUG=1`` shows the
traceback). Errors found later (a corrupt image...) are one line too, by :func:`monai_dpaat.error_hook.user_error_of`.

What is trusted: a ``--network`` (or ``gradcam --models``) file is data, built only by
:func:`monai_dpaat.utils.check_config_is_safe`'s rules unless ``--trust_config``; a ``--bundle`` folder is the
user's own code, run as ``python -m monai.bundle run`` runs it.
"""

from __future__ import annotations

import difflib
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

from monai_dpaat import utils
from monai_dpaat.error_hook import user_error_of
from monai_dpaat.utils import (UnsafeConfigError, build_network_config, bundle_config_files, check_checkpoint,
                               check_config_is_safe, check_override_keys, config_file_list, default_data_dir,
                               load_weights, read_network_config, run_bundle, unique_keys)

__all__ = ["CLIError", "UnsafeConfigError", "robustness", "robustness_bundle", "demo", "gradcam", "combine",
           "presets", "overrides", "reproduce", "main", "COMMANDS", "BUNDLE_KEYS",
           "BUNDLE_ONLY_FLAGS", "NETWORK_FLAGS", "default_data_dir", "load_network", "attack_configs",
           "parse_eps_list", "parse_command_line", "check_output_dir", "check_config_is_safe"]

logger = logging.getLogger("monai_dpaat.cli")
PROG = "monai-dpaat"


class CLIError(ValueError):
    """A user error found by the command line's own checks: printed as ``error: <message>``, exit status 2."""


# ---------------------------------------------------------------------------------------------- values
def _cli_error(check: Any, *args: Any, **kwargs: Any) -> Any:
    """``check(*args, **kwargs)`` (a library check), its ``ValueError`` raised as a :class:`CLIError`."""
    try:
        return check(*args, **kwargs)
    except ValueError as err:
        raise CLIError(str(err)) from None


def _int_arg(flag: str, value: Any, minimum: int | None = None, optional: bool = False) -> int | None:
    """:func:`monai_dpaat.utils.check_int` of ``--flag`` (fire gives ``int`` for ``8``; a float, bool or word is
    refused)."""
    return _cli_error(utils.check_int, value, f"--{flag}", minimum, optional)


def _bool_arg(flag: str, value: Any) -> bool:
    """:func:`monai_dpaat.utils.check_bool` of ``--flag``."""
    return _cli_error(utils.check_bool, value, f"--{flag}")


def parse_eps_list(eps: Any, flag: str = "--eps") -> list[float] | None:
    """``None``, a number, ``"8/255"``, ``"2/255,8/255"``, ``"[2/255, 8/255]"`` or a list -> list of finite floats
    >= 0, each read by :func:`monai_dpaat.evaluation.presets.parse_eps` (whether they fit the data's value range
    is checked by :func:`check_eps_range`)."""
    from monai_dpaat.evaluation.presets import parse_eps

    if eps is None:
        return None
    items = list(eps) if isinstance(eps, (list, tuple)) else [p for p in str(eps).strip("[]() ").split(",")
                                                               if p.strip()]
    usage = f"{flag} must be a number, 'a/b' (such as 8/255) or a comma-separated list of them, got {eps!r}"
    out = []
    for item in items:
        try:
            out.append(parse_eps(item, flag))
        except ValueError as err:
            raise CLIError(usage if "such as" in str(err) else str(err)) from None
    if not out:
        raise CLIError(usage)
    return out


def check_eps_range(eps_list: Sequence[float] | None, value_range: float | None, flag: str = "--eps") -> None:
    """Budgets are in the data's units: one above the value range (1.0 for images scaled to [0, 1]) can only be a
    mistake (``1e6``, ``8`` for ``8/255``) and is an error; one above 64/255 of it warns. ``value_range=None``
    (z-scored volumes): only the attacks' own checks apply."""
    from monai_dpaat.attacks.base import LARGE_BUDGET_FRACTION  # the attacks' own warning threshold (64/255)

    for e in eps_list if eps_list and value_range is not None else []:
        if e > value_range:
            raise CLIError(f"{flag} {e:g} is above the data's value range ({value_range:g}: the images are scaled to "
                           f"[0, {value_range:g}]); budgets are in pixel-value units, e.g. 8/255")
        if e > LARGE_BUDGET_FRACTION * value_range:
            logger.warning("%s %.4g is more than 64/255 of the data's value range [0, %g]: such a perturbation can "
                           "change what the image shows; was 8/255 meant?", flag, e, value_range)


def check_device(device: Any, flag: str = "--device") -> Any:
    """:func:`monai_dpaat.utils.check_device` (a device this machine has), raising ``CLIError``."""
    return _cli_error(utils.check_device, device, flag)


def check_output_dir(path: Any, flag: str = "--output_dir", report: bool = False) -> Path:
    """Check, before any work, that ``path`` is a folder that can be written or created
    (:func:`monai_dpaat.utils.check_writable_dir`) and, with ``report``, that it can be a report folder (missing,
    empty or a previous report's: :func:`monai_dpaat.evaluation.report.check_report_folder`). Creates nothing."""
    from monai_dpaat.evaluation.report import check_report_folder

    out = _cli_error(utils.check_writable_dir, path, flag)
    if report:
        try:
            check_report_folder(out)
        except ValueError as err:
            raise CLIError(f"{err} ({flag})") from None
    return out


def _as_list(value: Any) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


# ---------------------------------------------------------------------------------------------- attacks
def _attack_target(name: str) -> str:
    """The ``_target_`` of attack ``name`` (``"bim"`` -> ``"monai_dpaat.attacks.IFGSM"``)."""
    from monai_dpaat import attacks as A
    from monai_dpaat.evaluation.presets import list_presets

    factory = A.ATTACKS.get(A.canonical_name(name))
    if not isinstance(factory, type):  # an alias: the class it builds
        try:
            factory = type(A.build_attack(name))
        except ValueError:
            raise CLIError(f"unknown attack or preset {name!r}; presets: {', '.join(list_presets())}; attacks: "
                           f"{', '.join(sorted(A.ATTACKS))} (with a step count: 20-pgd)") from None
    if getattr(A, factory.__name__, None) is factory:
        return f"{A.__name__}.{factory.__name__}"
    return f"{factory.__module__}.{factory.__qualname__}"


def _name_spec(name: str) -> tuple[str, dict[str, Any]]:
    """``(label, _target_ config)`` of an attack name, its step count parsed: ``"20-pgd"`` ->
    ``("20-PGD", {"_target_": "monai_dpaat.attacks.PGD", "steps": 20})``."""
    text = str(name).strip()
    match = re.fullmatch(r"(\d+)-(.+)", text)  # the step count as the DPAAT paper writes it
    config = {"_target_": _attack_target(match.group(2) if match else text)}
    return text.upper(), {**config, **({"steps": int(match.group(1))} if match else {})}


def _is_attacks_file(attacks: Any) -> bool:
    return isinstance(attacks, str) and attacks.lower().endswith((".json", ".yaml", ".yml"))


def _attack_specs(attacks: Any) -> str | dict[str, dict[str, Any]]:
    """``--attacks`` as a preset name, or ``{label: _target_ config}`` from attack names (``fgsm,20-pgd``) or from
    a JSON/YAML file holding such a mapping (:data:`~monai_dpaat.attacks.configs.ATTACKS_FILE_FORM`; not built)."""
    from monai_dpaat.evaluation.presets import PRESETS

    if _is_attacks_file(attacks):
        from monai_dpaat.attacks.configs import read_attack_configs

        return _cli_error(read_attack_configs, attacks)
    names = _as_list(attacks)
    presets = [n.lower().replace("_", "-") for n in names if n.lower().replace("_", "-") in PRESETS]
    if presets and len(names) == 1:
        return presets[0]
    if presets or not names:
        raise CLIError(f"--attacks must be one preset ({', '.join(PRESETS)}) or attack names, got {attacks!r}")
    return unique_keys(_name_spec(n) for n in names)


def attack_configs(attacks: Any, eps: Any = "@robustness_eps", alpha: Any = "$@robustness_eps / 4",
                   value_range: Any = None) -> str | dict[str, dict[str, Any]]:
    """``--attacks`` for a bundle: a preset name as it is (``robustness_preset``), or ``{label: _target_ config}``
    (``robustness_attacks``) with the presets' rules where a config gives none: ``eps``, the step size ``alpha``
    of multi-step attacks (``eps / 4``, :mod:`monai_dpaat.evaluation.presets`) and ``value_range`` (e.g.
    ``"@attack_value_range"``; None: the class default); ``attack_configs("fgsm,20-pgd")["20-PGD"] ==
    {"_target_": "monai_dpaat.attacks.PGD", "steps": 20, "eps": "@robustness_eps", "alpha": "$@robustness_eps / 4"}``.
    """
    specs = _attack_specs(attacks)
    if isinstance(specs, str):
        return specs
    defaults = {"eps": eps, "alpha": alpha, "value_range": value_range}
    from monai_dpaat.attacks.configs import with_attack_defaults

    return {label: with_attack_defaults(config, defaults) for label, config in specs.items()}


def _parse_attacks(attacks: Any, trust_config: bool = False, value_range: Any = None) -> str | dict[str, Any]:
    """``--attacks`` for the Python API: a preset name, or ``{label: Attack}`` built by MONAI's ``ConfigParser``
    (:func:`~monai_dpaat.attacks.configs.build_attack_configs`; an attacks file is checked first unless
    ``trust_config``). ``value_range`` (None: the classes' default) goes to every attack that does not set its own;
    a preset stays a name (its attacks at the evaluator's defaults: GN keeps its unclipped noise)."""
    specs = _attack_specs(attacks)
    if isinstance(specs, str):
        return specs
    from monai_dpaat.attacks.configs import build_attack_configs

    source = None if trust_config or not _is_attacks_file(attacks) else str(attacks)
    return _cli_error(build_attack_configs, specs, source=source, value_range=value_range)


# ---------------------------------------------------------------------------------------------- networks
#: names the CLI once built with channel choices of its own, so a bundle-trained checkpoint did not fit them
RETIRED_NETWORK_NAMES = ("unet", "attention-unet++", "attention_unet++", "attunet++", "att-unet++")


def load_network(network: Any, task: str = "classification", num_classes: int = 2, in_channels: int = 3,
                 trust_config: bool = False) -> Any:
    """A network from a JSON/YAML config (``{"_target_": ...}``, or ``network_def`` inside; checked with
    :func:`~monai_dpaat.utils.check_config_is_safe` unless ``trust_config``), or a classifier name of
    :func:`monai_dpaat.networks.build_classifier`. Segmentation networks come from a config or a bundle."""
    spec = read_network_config(network, trust_config)
    if spec is not None:
        return build_network_config(*spec)
    if str(network).strip().lower() in RETIRED_NETWORK_NAMES:
        raise CLIError(f"--network {network!r} is not a network name any more: evaluate a bundle-trained model "
                       "with --bundle <bundle folder> (its own network_def), or give a JSON/YAML network config, "
                       "e.g. {\"_target_\": \"monai.networks.nets.UNet\", \"spatial_dims\": 2, ...}")
    if task == "segmentation":
        raise CLIError(f"--network {network!r}: give a segmentation network as a JSON/YAML config or a --bundle; "
                       "names are the classifiers of monai_dpaat.networks.build_classifier")
    from monai_dpaat.networks import build_classifier

    try:
        return build_classifier(str(network).strip().lower(), num_classes=num_classes, in_channels=in_channels)
    except (ValueError, KeyError) as err:
        raise CLIError(f"unknown model {network!r}: {err}") from None


# ---------------------------------------------------------------------------------------------- reports
def _print_table(tables: Mapping[str, Any], metric: str) -> None:
    from monai_dpaat.evaluation.report import markdown_table

    if metric in tables:
        print(f"\n{tables[metric]['title']}\n")
        print(markdown_table(tables[metric], metric))


def _write_error(output_dir: Any, err: OSError) -> CLIError:
    return CLIError(f"cannot write report to {str(output_dir)!r}: {err.strerror or err}")


# ---------------------------------------------------------------------------------------------- bundles
#: ``robustness --bundle`` flags -> the robustness keys of every bundle's ``configs/robustness.json``
BUNDLE_KEYS = {"attacks": ("robustness_preset", "robustness_attacks"),
               "eps": ("robustness_eps", "robustness_eps_sweep"), "limit": ("robustness_max_samples",),
               "output_dir": ("robustness_dir",), "checkpoint": ("model_path",), "name": ("model_name",),
               "device": ("device",)}
BUNDLE_FLAGS = ("bundle", "config_file", *BUNDLE_KEYS)
#: ``robustness`` flags that only ``--bundle`` takes (the others of :data:`BUNDLE_FLAGS` work without it too)
BUNDLE_ONLY_FLAGS = ("bundle", "config_file")


def bundled(name: str) -> Path:
    """The folder of the bundle ``name`` of a checkout (``bundles/`` beside the package)."""
    import monai_dpaat

    path = Path(monai_dpaat.__file__).resolve().parents[1] / "bundles" / name
    if not (path / "configs").is_dir():
        raise CLIError(f"the bundle {name!r} is not at {str(path)!r}: the bundles come with a checkout of "
                       "monai-dpaat (git clone), not with an installed package")
    return path


def _check_bundle_keys(files: Sequence[Path], overrides: Mapping[str, Any], flags: Mapping[str, str]) -> None:
    """Refuse an override naming no id of the merged configs; ``flags`` maps the keys the CLI set to their flag,
    and for another key a close ``robustness --bundle`` flag is suggested first."""
    for key in overrides:
        flag = flags.get(key)
        try:
            check_override_keys([key], files, what=f"what --{flag} sets" if flag else "override --{key}")
        except ValueError as err:
            close = difflib.get_close_matches(key, BUNDLE_FLAGS, n=1) if flag is None else []
            if close:
                raise CLIError(f"robustness: unknown flag --{key}; did you mean --{close[0]}? (with --bundle, other "
                               f"flags are bundle overrides, and {err})") from None
            raise CLIError(str(err)) from None


def _is_plain(value: Any) -> bool:
    """A config value that builds and runs nothing: None, a bool, a number, a string that is no ``$`` expression,
    ``@`` reference or ``%`` macro, or a list of such values."""
    if isinstance(value, str):
        return not value.startswith(("$", "@", "%"))
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, numbers.Number))


def _check_network_flags(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> None:
    """Refuse a flag of the ``--network`` path (:data:`NETWORK_FLAGS`) given with ``--bundle``: the bundle's configs
    define the network, task and data. One the bundle defines as a plain value (:func:`_is_plain`:
    ``--image_size 32``, ``--batch_size 8``) is an override of it, as any other ``--key value``."""
    for key in overrides:
        if key in NETWORK_FLAGS and not (key in config and _is_plain(config[key])):
            raise CLIError(f"--{key} does not apply with --bundle (the bundle's configs define it)")


def _bundle_values(files: Sequence[Path], overrides: Mapping[str, Any], bundle: Any) -> tuple[Any, Any, Any]:
    """``(robustness_dir, model_path, width of the attacks' value_range or None)`` of the merged configs."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.update(dict(overrides))
    keys = ["robustness_dir", "model_path"] + [k for k in ("attack_value_range", "train_attack#value_range")
                                               if k in parser][:1]
    try:
        values = [parser.get_parsed_content(k) for k in keys]
    except Exception as err:
        raise CLIError(f"cannot evaluate {keys} of the bundle {str(bundle)!r}: {user_error_of(err) or err}") from None
    span = values[2] if len(values) > 2 else None  # "data" / None (z-scored volumes): no bound known upfront
    return values[0], values[1], float(span[1]) - float(span[0]) if isinstance(span, (list, tuple)) else None


# ---------------------------------------------------------------------------------------------- commands
def _evaluate(network: Any, loader: Any, attacks: Any, eps_list: Sequence[float] | None, output_dir: Any, name: str,
              task: str = "classification", device: Any = None, inferer: Any = None, check_masking: bool = False,
              title: str | None = None, extra_files: Mapping[str, bytes] | None = None, **evaluator_args: Any) -> None:
    """Run :class:`~monai_dpaat.evaluation.RobustnessEvaluator` (over each budget of ``eps_list`` when it holds
    several: the table is the largest one's), write the report to ``output_dir`` and print its main table."""
    from monai_dpaat.evaluation import InfererNetwork, RobustnessEvaluator, write_report
    from monai_dpaat.evaluation.report import combine_results

    evaluator = RobustnessEvaluator(attacks, task=task, inferer=inferer, device=device, **evaluator_args)
    network, sweeps = network.to(device), None
    if eps_list and len(eps_list) > 1:
        sweep = evaluator.sweep(network, loader, eps_list)
        result, sweeps = sweep[max(sweep)], {name: sweep}
    else:
        result = evaluator(network, loader, eps=eps_list[0] if eps_list else None)
    flags = None
    if check_masking:
        from monai_dpaat.evaluation.sanity import check_gradient_masking

        model = network if inferer is None else InfererNetwork(network, inferer)
        flags = check_gradient_masking(model, loader, task=task, eps=eps_list[-1] if eps_list else 8 / 255,
                                       device=device, max_batches=2)
    try:
        files = write_report({name: result}, output_dir, sweeps=sweeps, flags=flags, extra_files=extra_files,
                             title=title or f"Robustness of {name} ({task}, {result.num_samples} samples)")
    except OSError as err:  # ENOSPC, EIO...: the writer leaves the previous report as it was
        raise _write_error(output_dir, err) from None
    _print_table(combine_results({name: result}), "accuracy" if task == "classification" else "dice")
    print(f"\nreport written to {files['markdown'].parent}")


def robustness(bundle: str | None = None, config_file: Any = None, checkpoint: str | None = None,
               network: str | None = None, task: str = "classification", data: str | None = None,
               datalist: str | None = None, split: str = "test", attacks: Any = "dpaat-table", eps: Any = None,
               output_dir: str = "robustness_report", device: str = "cpu", limit: int | None = None,
               batch_size: int = 16, num_classes: int = 2, in_channels: int = 3, classes: Any = "mel,nv",
               image_size: int = 64, roi_size: int | None = None, sw_batch_size: int = 4, name: str = "model",
               seed: int = 0, hd95: bool = True, check_masking: bool = False, progress: bool = True,
               trust_config: bool = False, **overrides: Any) -> None:
    """Evaluate a model under an attack suite and write report.md/.json, table_*.csv and PNG plots.

    With --bundle: the bundle's own robustness run (:func:`robustness_bundle`); the flags marked [bundle: key] set
    its robustness keys (left out: the bundle's values), [bundle only] flags need --bundle, any other --key value
    is a bundle override (# for nested ids), checked against the bundle's configs first. The [network only] flags
    are refused with --bundle (its configs define the network, task and data), but where the bundle's configs
    define a plain value of that name (--image_size 32, --batch_size 8): that is then overridden. Without
    --bundle: --network, --checkpoint and the data.

    Args:
        bundle: [bundle only] a bundle folder; configs/train.json + configs/robustness.json run as monai.bundle
            run runs them.
        config_file: [bundle only] extra configs: "['configs/quick.json']", a comma list or the flag repeated.
        checkpoint: [bundle: model_path] weights (a state dict or a CheckpointSaver file).
        network: [network only] a JSON/YAML network config (``_target_``, or ``network_def`` inside; no ``$``
            expressions, only network classes/factories of torch, torchvision, monai, monai_dpaat unless
            --trust_config) or a classifier name of monai_dpaat.networks.build_classifier.
        task: [network only] classification | segmentation.
        data: [network only] a dataset folder (HAM10000 for classification, NuInsSeg layout for segmentation), or
        datalist, split: [network only] a Decathlon datalist JSON and its key (default ``test``).
        attacks: [bundle: robustness_preset / robustness_attacks] a preset (dpaat-table, unet-paper), attack names
            with step counts (``fgsm,20-pgd``: multi-step ones at step size eps/4, as the presets) or a JSON/YAML
            file of {label: {"_target_": "monai_dpaat.attacks.<Class>", ...keyword arguments}}. Without --bundle
            such a file builds only monai_dpaat.attacks classes and no ``$`` expressions unless --trust_config;
            a bundle runs it as its own config.
        eps: [bundle: robustness_eps / robustness_eps_sweep] ``8/255``, or ``2/255,4/255,8/255`` for a sweep with
            metric-vs-eps plots; at most the data's value range (1 for images scaled to [0, 1]).
        output_dir: [bundle: robustness_dir] the report folder: new, empty or a previous report's.
        device: [bundle: device] cpu, cuda, cuda:0...
        limit: [bundle: robustness_max_samples] at most this many samples, >= 1. Without --bundle: a class-balanced
            subset (round-robin over the labels) of the classification data, the first samples of segmentation
            data. With --bundle: the bundle's robustness_max_samples, as its configs use it (the HAM10000 bundle:
            a class-balanced subset of its test list, monai_dpaat.data.balanced_subset; the segmentation
            bundles: the evaluator stops after that many samples).
        batch_size, seed, progress: [network only] the loader's batch size, the data/attack seed, progress bars.
        num_classes, in_channels: [network only] of a named classifier; classes: HAM10000 classes in label order.
        image_size: [network only] classification input side; roi_size, sw_batch_size: [network only]
            segmentation sliding window (256; 0: whole tiles).
        name: [bundle: model_name] the model's column in the tables.
        hd95: [network only] compute HD95 (segmentation); check_masking: [network only] also run the
            gradient-masking checks on two batches.
        trust_config: [network only] build --network and --attacks files as MONAI would (``$`` expressions and any
            ``_target_`` run).
    """
    if bundle is not None:  # the arguments left at their defaults take the bundle's own values
        arguments = {k: v for k, v in locals().items() if k in NETWORK_FLAGS or k in BUNDLE_KEYS}
        defaults = {k: p.default for k, p in inspect.signature(robustness).parameters.items()}
        given = {k: v for k, v in arguments.items() if v != defaults[k]}  # network flags: refused or overrides
        return robustness_bundle(bundle, config_file, **given, **overrides)
    if config_file is not None or overrides:
        raise CLIError(f"robustness: config_file and overrides {sorted(overrides)} need a bundle")
    from monai_dpaat.data.evaluation_data import (balanced_subset, check_image_dims, evaluation_loader, folder_items,
                                                  is_volume, read_evaluation_datalist)

    # 1. the command line: nothing is read, built or written until all of it and every file it names is checked
    if task not in ("classification", "segmentation"):
        raise CLIError(f"--task must be 'classification' or 'segmentation', got {task!r}")
    limit = _int_arg("limit", limit, 1, optional=True)
    batch_size, image_size = _int_arg("batch_size", batch_size, 1), _int_arg("image_size", image_size, 1)
    num_classes, in_channels = _int_arg("num_classes", num_classes, 1), _int_arg("in_channels", in_channels, 1)
    roi_size = _int_arg("roi_size", roi_size, 0, optional=True)
    sw_batch_size, seed = _int_arg("sw_batch_size", sw_batch_size, 1), _int_arg("seed", seed, 0)
    hd95, check_masking = _bool_arg("hd95", hd95), _bool_arg("check_masking", check_masking)
    progress, trust_config = _bool_arg("progress", progress), _bool_arg("trust_config", trust_config)
    class_names = _as_list(classes)
    if task == "classification" and not class_names:
        raise CLIError(f"--classes must name the HAM10000 classes in label order (e.g. mel,nv), got {classes!r}")
    eps_list, dev = parse_eps_list(eps), check_device(device)
    suite = _parse_attacks(attacks, trust_config)  # an unknown attack or preset: an error before any loading
    if network is None:
        raise CLIError("give a model: --bundle <folder>, or --network <config|name> with --checkpoint <file>")
    # 2. the files it names: they exist, configs are safe to build, the budget fits the data
    if checkpoint is None:
        raise CLIError("--network needs --checkpoint <weights file>")
    spec = read_network_config(network, trust_config)
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
        class_names = None  # the datalist's labels are class indices
        items = read_evaluation_datalist(datalist, split, task, num_classes if spec is None else None)
    elif not Path(data).is_dir():
        raise CLIError(f"data folder {str(data)!r} does not exist")
    volume = task == "segmentation" and is_volume(items)
    check_eps_range(eps_list, None if volume else 1.0)
    # named attacks clamp to the images' [0, 1], as a bundle's attack_value_range (volumes: the class default)
    suite = _parse_attacks(attacks, trust_config, value_range=None if volume else [0.0, 1.0])
    check_output_dir(output_dir)
    # 3. the work
    import torch

    net = build_network_config(*spec) if spec is not None else load_network(network, task, num_classes, in_channels)
    if not isinstance(net, torch.nn.Module):
        raise CLIError(f"the network built from {network!r} is a {type(net).__name__}, not a torch.nn.Module")
    load_weights(net, checkpoint)
    check_output_dir(output_dir, report=True)  # a dedicated report folder: refused before any data or attack
    if items is None:
        items, class_names = folder_items(task, Path(data), split, class_names, seed)
    items = balanced_subset(items, limit)
    if not items:
        raise CLIError("the data source holds no samples")
    check_image_dims(task, items, net)
    inferer = None
    if task == "segmentation" and roi_size != 0:
        from monai.inferers import SlidingWindowInferer

        inferer = SlidingWindowInferer(roi_size=int(roi_size or 256), sw_batch_size=sw_batch_size, overlap=0.25,
                                       mode="gaussian")
    _evaluate(net, evaluation_loader(task, items, image_size, batch_size), suite, eps_list, output_dir, str(name),
              task=task, device=dev, inferer=inferer, check_masking=check_masking, class_names=class_names,
              hd95=hd95, seed=seed, progress=progress)


#: ``robustness`` flags of the ``--network`` path only (see :func:`_check_network_flags` for ``--bundle``)
NETWORK_FLAGS = tuple(n for n, p in inspect.signature(robustness).parameters.items()
                      if p.kind is not p.VAR_KEYWORD and n not in BUNDLE_FLAGS)


def robustness_bundle(bundle: Any, config_file: Any = None, checkpoint: str | None = None, attacks: Any = None,
                      eps: Any = None, limit: int | None = None, output_dir: str | None = None,
                      name: str | None = None, device: str | None = None, **overrides: Any) -> None:
    """``robustness --bundle``: run ``configs/train.json`` + ``configs/robustness.json`` + ``config_file`` of
    ``bundle`` with ``bundle_root=<bundle>``, as ``python -m monai.bundle run`` does, the flags set to the bundle's
    robustness keys (:data:`BUNDLE_KEYS`; one ``eps`` runs no sweep) and ``overrides`` (``#`` for nested ids).
    Before anything runs: every key is an id of the merged configs, the report folder (``robustness_dir``) can
    be written and is dedicated, the checkpoint (``model_path``) is readable, the budget fits the attacks' value
    range, the device exists and no flag of the ``--network`` path is given (:func:`_check_network_flags`). Attacks
    named on the command line get the bundle's ``attack_value_range`` when it defines one."""
    from monai.bundle import ConfigParser

    files = bundle_config_files(bundle, ("train.json", "robustness.json"), config_file)
    config = _cli_error(ConfigParser.load_config_files, [str(f) for f in files])
    _check_network_flags(config, overrides)
    values: dict[str, Any] = {"bundle_root": str(Path(str(bundle)).expanduser().resolve())}
    eps_list = parse_eps_list(eps)
    if attacks is not None:
        spec = attack_configs(attacks, value_range="@attack_value_range" if "attack_value_range" in config else None)
        values["robustness_preset" if isinstance(spec, str) else "robustness_attacks"] = spec
    if eps_list:
        values.update(robustness_eps=max(eps_list), robustness_eps_sweep=eps_list if len(eps_list) > 1 else [])
    if limit is not None:
        values["robustness_max_samples"] = _int_arg("limit", limit, 1)
    for flag, value in (("output_dir", output_dir), ("checkpoint", checkpoint), ("name", name)):
        if value is not None:
            values[BUNDLE_KEYS[flag][0]] = str(value)
    if device is not None:
        values["device"] = f"$torch.device({str(check_device(device))!r})"
    flags = {key: flag for flag, keys in BUNDLE_KEYS.items() for key in keys if key in values}
    overrides = {**values, **overrides}
    _check_bundle_keys(files, overrides, flags)
    report_dir, model_path, value_range = _bundle_values(files, overrides, bundle)
    check_eps_range(eps_list, value_range)
    check_output_dir(report_dir, report=True)
    try:
        check_checkpoint(model_path)
    except (OSError, ValueError) as err:
        raise CLIError(str(err)) from None
    run_bundle(files, overrides)


def _print_epochs(workflow: Any) -> None:
    """Print each epoch's mean loss of the bundle's trainer (the demo's progress)."""
    from ignite.engine import Events
    from monai.handlers import from_engine

    trainer, losses = workflow.parser.get_parsed_content("train#trainer"), []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: losses.append(
        float(from_engine(["loss"], first=True)(engine.state.output))))

    @trainer.on(Events.EPOCH_COMPLETED)
    def _print(engine: Any) -> None:
        print(f"epoch {engine.state.epoch}/{engine.state.max_epochs}: loss {sum(losses) / max(len(losses), 1):.4f}",
              flush=True)
        losses.clear()


def demo(data: str | None = None, output_dir: str = "demo_output", epochs: int | None = None, n_train: int = 200,
         n_test: int = 64, image_size: int = 64, batch_size: int = 32, lr: float = 1e-3, attacks: Any = "dpaat-table",
         eps: Any = "8/255", device: str = "cpu", seed: int = 0, progress: bool = True) -> None:
    """Train the HAM10000 bundle's quick run (configs/quick.json: small CNN, mel vs nv) with the STD method
    (configs/methods/std.json) through monai.bundle, evaluate its best model, print the accuracy table and write
    the report and model.pt to ``output_dir`` (the training's own files go to a temporary folder).

    Args:
        data: HAM10000 folder (default: ``<sample data>/ham10000``, see ``MONAI_DPAAT_DATA``).
        epochs: the bundle's max_epochs (default: configs/quick.json's; its first epoch trains the head only).
        n_train, n_test, image_size, batch_size, lr: the bundle's n_train, n_test (per class), image_size,
            batch_size and lr.
        attacks, eps: the evaluation suite and budget (as for robustness).
    """
    epochs, n_train = _int_arg("epochs", epochs, 1, optional=True), _int_arg("n_train", n_train, 1)
    n_test, image_size = _int_arg("n_test", n_test, 1), _int_arg("image_size", image_size, 1)
    batch_size, seed = _int_arg("batch_size", batch_size, 1), _int_arg("seed", seed, 0)
    progress = _bool_arg("progress", progress)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (math.isfinite(lr) and lr > 0):
        raise CLIError(f"--lr must be a finite number > 0, got {lr!r}")
    eps_list = parse_eps_list(eps) or [8 / 255]
    check_eps_range(eps_list, 1.0)
    from monai.bundle import ConfigParser
    from monai.data import DataLoader, Dataset

    bundle = bundled("ham10000_dpaat_classification")
    files = bundle_config_files(bundle, ("train.json", "quick.json", "methods/std.json"))
    config = ConfigParser.load_config_files([str(f) for f in files])
    epochs = config["max_epochs"] if epochs is None else epochs  # the quick config's (not passed on)
    value_range = config.get("attack_value_range")  # the attacks as the bundle's robustness run builds them
    dev = check_device(device)
    suite = _parse_attacks(attacks, value_range=value_range if _is_plain(value_range) else None)
    root = Path(data) if data is not None else default_data_dir() / "ham10000"
    if not root.is_dir():
        raise CLIError(f"HAM10000 data folder {str(root)!r} does not exist (give --data or set MONAI_DPAAT_DATA)")
    check_output_dir(output_dir, report=True)

    with tempfile.TemporaryDirectory(prefix="monai_dpaat_demo.") as work:
        overrides = {"bundle_root": str(bundle), "dataset_dir": str(root), "ckpt_dir": f"{work}/models",
                     "output_dir": f"{work}/eval", "n_train": n_train, "n_test": n_test, "image_size": image_size,
                     "batch_size": batch_size, "lr": float(lr), "seed": seed, "device": f"$torch.device({str(dev)!r})"}
        if epochs != config["max_epochs"]:
            overrides["max_epochs"] = epochs
        check_override_keys(list(overrides), files, what="set by demo")
        print(f"training the HAM10000 bundle's quick STD run (mel vs nv, {image_size}x{image_size}) for {epochs} "
              f"epoch(s) on {dev}", flush=True)
        parsed = run_bundle(files, overrides, prepare=_print_epochs).parser.get_parsed_content
        model_path = Path(work, "models", "model.pt")
        network = load_weights(parsed("network"), model_path)
        test = Dataset(parsed("datalists")["test"], parsed("validate#preprocessing"))
        print(f"evaluating on {len(test)} test images, eps = {', '.join(f'{e * 255:g}/255' for e in eps_list)}",
              flush=True)
        _evaluate(network, DataLoader(test, batch_size=batch_size, shuffle=False, num_workers=0), suite, eps_list,
                  output_dir, "STD", device=dev, class_names=parsed("classes"), seed=seed, progress=progress,
                  title="monai-dpaat demo: small_cnn on HAM10000 (mel vs nv)",
                  extra_files={"model.pt": model_path.read_bytes()})  # part of the set: replaced with it
    print(f"report, tables, plots and model.pt written to {output_dir}")


def gradcam(**kwargs: Any) -> Any:
    """Grad-CAM maps: the flags are those of :func:`monai_dpaat.evaluation.gradcam.gradcam_cli` (see ``gradcam
    --help``); they are all checked, and the --models file read and checked, before any model is built."""
    from monai_dpaat.evaluation.gradcam import check_gradcam_args, gradcam_cli

    try:
        check_gradcam_args(**kwargs)
    except TypeError as err:  # an argument gradcam_cli does not take, or one missing
        raise CLIError(f"gradcam: {err} (see: {PROG} gradcam --help)") from None
    result = gradcam_cli(**kwargs)
    for key in ("png", "json", "tensorboard"):
        if result.get(key):
            print(f"{key}: {result[key]}")
    return result


def combine(*reports: str, names: Any = None, output_dir: str = "combined_report",
            title: str = "Robustness report") -> None:
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
    merged = unique_keys(item for path in reports for item in load_report(path).items())
    if names is not None:
        labels = _as_list(names)
        if len(labels) != len(merged):
            raise CLIError(f"--names gives {len(labels)} names for {len(merged)} models")
        merged = dict(zip(labels, merged.values()))
    try:
        write_report(merged, output_dir, title=str(title))
    except OSError as err:
        raise _write_error(output_dir, err) from None
    task = next(iter(merged.values())).task
    _print_table(combine_results(merged), "accuracy" if task == "classification" else "dice")


def presets() -> None:
    """List the attack presets and their attacks."""
    from monai_dpaat.evaluation.presets import list_presets, preset

    for key in list_presets():
        print(f"{key}:")
        for label, attack in preset(key).items():
            config = attack.config()
            args = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items()
                             if k != "name")
            print(f"  {label:<12} {config['name']:<12} {args}")


def overrides(*method: str, bundle: str | None = None, robust_validation: bool = True) -> None:
    """Print the installed override files that add a training method (default AT) and robust validation to any
    MONAI bundle, the ``--config_file`` list and the ready ``python -m monai.bundle run`` command (with
    ``--bundle_root``, so it runs from any folder).

    Args:
        method: the training method: at, sat, amat, dpaat, d-a or d-b (default at).
        bundle: the bundle's folder (holding configs/train.json); default: a ``<their bundle>`` placeholder.
        robust_validation: also compose ``robust_validation.json``.
    """
    from monai_dpaat import bundle_overrides

    if len(method) > 1:
        raise CLIError(f"overrides: give one method, got {list(method)}")
    name = str(method[0]) if method else "at"
    if name not in bundle_overrides.METHODS:
        raise CLIError(f"overrides: unknown method {name!r}; expected one of {list(bundle_overrides.METHODS)}")
    if bundle is not None and not (Path(str(bundle)) / "configs" / "train.json").is_file():
        raise CLIError(f"overrides: --bundle {str(bundle)!r} has no configs/train.json")
    files = bundle_overrides.config_files(name, robust_validation=_bool_arg("--robust_validation", robust_validation))
    root = None if bundle is None else str(bundle)
    for path in files:
        print(path)
    print(f"--config_file {bundle_overrides.shell_quote(bundle_overrides.config_file_literal(files, root))}")
    print(bundle_overrides.bundle_run_command(root, files))


#: ``reproduce <paper>``: the paper's name -> the module whose ``run(scale, output_dir, data, seeds)`` reproduces it
PAPERS = {"dpaat": "monai_dpaat.reproduce.dpaat", "unet-attacks": "monai_dpaat.reproduce.unet_attacks"}


def reproduce(*paper: str, scale: str = "smoke", output_dir: str = "docs/results", data: str | None = None,
              seeds: int | None = None, render: str | None = None) -> None:
    """Reproduce a paper's tables, the published numbers beside ours (mean ± std over seeds, the difference, a
    paired test), written to ``OUTPUT_DIR/<paper>_<scale>.{json,md}`` (``-`` as ``_``) with the command, commit and
    machine.

    Args:
        paper: ``dpaat`` (Li et al. 2024, HAM10000, six CNNs x five methods) or ``unet-attacks`` (Koishiyeva et al.
            2025, UNet vs Residual-Attention UNet++ under eight attacks).
        scale: ``smoke`` (minutes, for tests), ``quick`` (under an hour on 2 CPU cores, every reduction stated)
            or ``paper`` (the papers' settings, for a GPU and the full data).
        output_dir: where the results go.
        data: the data folder (default: the sample data next to the checkout, ``../shared/data``).
        seeds: number of seeds (default: the scale's, 3 at ``quick``).
        render: instead of running, rewrite the report (Markdown and claims) of an earlier run from its JSON file
            with this version's code; the numbers stay the JSON's.
    """
    import importlib

    from monai_dpaat.reproduce import check_scale

    if len(paper) != 1:
        raise CLIError(f"reproduce: give one paper, one of {list(PAPERS)} (e.g. reproduce dpaat --scale smoke)")
    paper = str(paper[0])
    if paper not in PAPERS:
        close = difflib.get_close_matches(paper, list(PAPERS), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise CLIError(f"reproduce: unknown paper {paper!r}; expected one of {list(PAPERS)}{hint}")
    try:
        check_scale(scale)
        if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
            raise ValueError(f"--seeds must be a whole number >= 1, got {seeds!r}")
    except ValueError as err:
        raise CLIError(f"reproduce: {err}") from None
    module = importlib.import_module(PAPERS[paper])
    if render is not None:
        try:
            module.render(render)
        except ValueError as err:
            raise CLIError(f"reproduce --render: {err}") from None
        print(Path(render).with_suffix(".md"))
        return
    name = f"{paper.replace('-', '_')}_{scale}"
    module.run(scale=scale, output_dir=output_dir, data=data, seeds=seeds, name=name)
    for suffix in (".md", ".json"):
        print(Path(output_dir) / f"{name}{suffix}")


def benchmark(bundle: str | None = None, config_file: Any = None, eps: Any = "8/255", eps_units: str = "range",
              budget: str = "standard", output_dir: str = "benchmark", device: str = "cpu", limit: int | None = None,
              name: str | None = None, seed: int = 0, check_masking: bool = True, hd95: bool = True,
              corruptions: bool = True, reference: str | None = None, protocol: str = "v2",
              **overrides: Any) -> None:
    """Run the benchmark protocol (docs/benchmark.md) on a bundle's evaluation: OUT/leaderboard.json and report.md.
    Classification networks ((N, K) outputs) get the AutoAttack-style cascade, segmentation networks the worst case
    by Dice over SegPGD, CosPGD, APGD and a black-box Square, through the bundle's validate#inferer.

    The bundle's configs/train.json + configs/evaluate.json (+ --config_file) are read as monai.bundle run reads
    them: its network, the weights its CheckpointLoader loads and its test split (validate#dataloader). Any other
    --key value is a bundle override (# for nested ids), checked against its configs first.

    Args:
        bundle: the bundle folder (needs configs/evaluate.json).
        config_file: extra configs: "['configs/quick.json']", a comma list or the flag repeated.
        eps: the L-inf budget, ``8/255``; in ``eps_units``.
        eps_units: ``range`` (a fraction of each image's intensity range, the absolute values recorded) or
            ``absolute`` (the units of the bundle's preprocessed images).
        budget: ``standard`` (AutoAttack's counts) or ``quick`` (recorded: a CPU check, not a leaderboard number).
        output_dir: where leaderboard.json and report.md go (each replaced atomically).
        device: cpu, cuda, cuda:0...
        limit: at most this many test images (>= 1), the first of the split.
        name: the model's name in the row (default: the bundle's name).
        seed: the attacks' seed.
        check_masking: also run the gradient-masking checks on two batches.
        hd95: HD95 under attack (segmentation; --nohd95 skips the slowest metric).
        corruptions: the natural-corruption table (5 severities each; --nocorruptions skips it).
        reference: a reference model's leaderboard.json (same test data) to normalise the mCE by.
        protocol: the protocol version (v2: APGD-CE, APGD-T, FMN-T, Square and the segmentation protocol; v1: the
            classification cascade without FMN-T).
    """
    from monai.bundle import ConfigParser

    from monai_dpaat.evaluation.bundle_benchmark import benchmark_bundle, write_row

    if bundle is None:
        raise CLIError(f"benchmark needs --bundle <folder> (see: {PROG} benchmark --help)")
    eps_list = parse_eps_list(eps)
    if len(eps_list) != 1:
        raise CLIError(f"--eps must be one budget, got {eps!r}")
    limit = _int_arg("limit", limit, 1, optional=True)
    seed, check_masking = _int_arg("seed", seed, 0), _bool_arg("check_masking", check_masking)
    hd95, corruptions = _bool_arg("hd95", hd95), _bool_arg("corruptions", corruptions)
    dev = check_device(device)
    out = check_output_dir(output_dir)
    files = _cli_error(bundle_config_files, bundle, ("train.json", "evaluate.json"), config_file)
    config = ConfigParser(_cli_error(ConfigParser.load_config_files, [str(f) for f in files]))  # broken: exit 2
    own = [p for p in inspect.signature(benchmark).parameters if p != "overrides"]
    for key in overrides:  # a misspelt flag of the command, not meant as a bundle override
        close = difflib.get_close_matches(key, own, n=1, cutoff=0.75)
        if close and key not in config:
            raise CLIError(f"benchmark: unknown flag --{key}; did you mean --{close[0]}?")
    _check_bundle_keys(files, overrides, {})
    try:
        row = benchmark_bundle(bundle, config_file, eps=eps_list[0], eps_units=eps_units, budget=budget,
                               version=str(protocol),
                               device=dev, max_samples=limit, name=name, seed=seed, check_masking=check_masking,
                               overrides=overrides, hd95=hd95, corruptions=corruptions, reference=reference)
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from None
    try:
        written = write_row(row, out)
    except OSError as err:
        raise _write_error(out, err) from None
    metric = row["metric"]
    found = (("breaks " + ", ".join(f"{k} {v}" for k, v in row["breaks"].items())) if "breaks" in row else
             ("worst case by " + ", ".join(f"{k} {v}" for k, v in row["worst_case_by"].items())))
    print(f"{row['name']}: clean {metric} {row[f'clean_{metric}']:.4f}, robust {metric} {row[f'robust_{metric}']:.4f} "
          f"(protocol {row['protocol']}, {row['budget']}, eps {row['eps']:.6g} {row['eps_units']}); {found}")
    summary = (row.get("corruptions") or {}).get("summary")
    if summary:
        print(f"corruptions: mean error {summary['average_error']:.4f}"
              + (f", mCE {summary['mce']:.3f}" if summary.get("mce") is not None else ""))
    for flag in row["flags"]:
        print(f"flag: {flag}")
    print(f"row written to {written['json']}")


def leaderboard(*rows: str, output: str | None = None) -> None:
    """Merge benchmark rows (leaderboard.json files or their folders) into one table sorted by robust accuracy,
    printed as Markdown and written to --output (.md or .csv) when given."""
    from monai_dpaat.evaluation.leaderboard import merge_rows, read_row, rows_to_csv, rows_to_markdown
    from monai_dpaat.evaluation.report import atomic_write_text

    if not rows:
        raise CLIError(f"leaderboard needs one or more leaderboard.json files (see: {PROG} leaderboard --help)")
    if output is not None and Path(str(output)).suffix not in (".md", ".csv"):
        raise CLIError(f"--output must end in .md or .csv, got {output!r}")
    records = merge_rows([_cli_error(read_row, r) for r in rows])
    table = rows_to_markdown(records)
    print(table, end="")
    if output is not None:
        try:
            atomic_write_text(output, table if str(output).endswith(".md") else rows_to_csv(records))
        except OSError as err:
            raise _write_error(Path(str(output)).parent, err) from None


COMMANDS = {"robustness": robustness, "demo": demo, "gradcam": gradcam, "combine": combine, "presets": presets,
            "overrides": overrides, "reproduce": reproduce, "benchmark": benchmark, "leaderboard": leaderboard}
SUMMARIES = {"robustness": "evaluate a model (a bundle's, or a network config's) under an attack suite",
             "demo": "train the HAM10000 bundle's quick STD run, evaluate it and write the report",
             "gradcam": "Grad-CAM grids comparing models on the same HAM10000 images",
             "combine": "merge report.json files into one table per metric",
             "presets": "list the attack presets and their attacks",
             "overrides": "print the override files (and the monai.bundle command) adding DPAAT to any bundle",
             "reproduce": "reproduce a paper's tables (dpaat, unet-attacks) beside the published numbers",
             "benchmark": "the benchmark protocol on a bundle's evaluation: one leaderboard row",
             "leaderboard": "merge benchmark rows into one table sorted by robust accuracy"}


# ---------------------------------------------------------------------------------------------- command line
def _parameters(command: str) -> tuple[Any, list[inspect.Parameter]]:
    """``(documented function, its parameters)`` of a command; ``gradcam`` takes :func:`gradcam_cli`'s flags
    but its ``transform`` (a Python callable)."""
    if command == "gradcam":
        from monai_dpaat.evaluation.gradcam import gradcam_cli

        return gradcam_cli, [p for p in inspect.signature(gradcam_cli).parameters.values() if p.name != "transform"]
    return COMMANDS[command], list(inspect.signature(COMMANDS[command]).parameters.values())


def _is_flag(arg: str) -> bool:
    return arg.startswith("--") or re.match(r"^-[a-zA-Z]", arg) is not None  # as fire: "-1" is a value


def _bundle_mode(command: str, args: Sequence[str]) -> bool:
    """``robustness --bundle ...``: the flags but :data:`BUNDLE_FLAGS` are bundle overrides; ``benchmark``: the flags
    but its own."""
    return command == "benchmark" or (command == "robustness"
                                      and any(a == "--bundle" or a.startswith("--bundle=") for a in args))


def parse_command_line(command: str, args: Sequence[str]) -> tuple[list[Any], dict[str, Any]]:
    """``(positional, keyword)`` arguments of ``command`` from ``args``, with fire's syntax (``--flag value``,
    ``--flag=value``, ``--flag`` / ``--noflag`` for booleans, ``-x`` for a unique first letter) and fire's value
    parser, but checked first: an unknown flag (with the closest valid one), a flag given twice (but
    ``--config_file``, whose values add up), a stray value or a missing required flag is a ``CLIError``. With
    ``robustness --bundle``, a ``--key`` that is none of :data:`BUNDLE_FLAGS` is kept as a bundle override."""
    from fire.parser import DefaultParseValue

    _, params = _parameters(command)
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    overrides = _bundle_mode(command, args)
    names = [n for n in names if n in BUNDLE_FLAGS] if overrides and command == "robustness" else names
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
        elif overrides and arg.startswith("--") and key:
            keyword = key
        elif len(key) == 1 and not arg.startswith("--") and len([n for n in names if n[0] == key]) == 1:
            keyword = next(n for n in names if n[0] == key)
        else:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f"; did you mean --{close[0]}?" if close else ""
            raise CLIError(f"{command}: unknown flag {arg.partition('=')[0]}{hint} {see}")
        if eq:
            parsed = DefaultParseValue(value)
        elif bool_syntax:
            parsed = value != "False"
        else:
            parsed, i = DefaultParseValue(args[i]), i + 1
        if keyword in kwargs and keyword != "config_file":
            raise CLIError(f"{command}: --{keyword} is given twice")
        kwargs[keyword] = config_file_list(kwargs[keyword]) + config_file_list(parsed) if keyword in kwargs else parsed
    missing = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               and p.name not in kwargs]
    if missing:
        raise CLIError(f"{command}: missing required flag(s) {', '.join('--' + m for m in missing)} {see}")
    return positional, kwargs


def _flag_scope(command: str, name: str) -> str:
    """`` [bundle only]``, `` [network only]`` or `` [bundle: <its keys>]`` for a ``robustness`` flag."""
    if command != "robustness":
        return ""
    if name in BUNDLE_ONLY_FLAGS:
        return " [bundle only]"
    if name in NETWORK_FLAGS:
        return " [network only]"
    return f" [bundle: {' / '.join(BUNDLE_KEYS[name])}]" if name in BUNDLE_KEYS else ""


def _usage(command: str | None = None) -> str:
    if command is None:
        lines = [f"  {name:<11} {summary}" for name, summary in SUMMARIES.items()]
        return "\n".join([f"usage: {PROG} <command> [--flag value ...]", "", "commands:", *lines, "",
                          f"{PROG} <command> --help lists a command's flags."])
    fn, params = _parameters(command)
    head, flags = [f"usage: {PROG} {command}"], []
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            head.append(f"{p.name.upper()}...")
        elif p.kind is p.VAR_KEYWORD:
            flags.append(f"  --{'<config id>':<16} with --bundle: an override of the bundle's configs (#: nested ids)")
        elif p.default is p.empty:
            head.append(f"--{p.name} {p.name.upper()}")
            flags.append(f"  --{p.name:<16} (required)")
        else:
            flags.append(f"  --{p.name:<16} (default: {p.default!r}){_flag_scope(command, p.name)}")
    if any(p.default is not p.empty for p in params):
        head.append("[--flag value ...]")
    return "\n".join([" ".join(head), "", inspect.getdoc(fn) or "", ""] + (["flags:", *flags] if flags else []))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status: 0, or 2 after printing ``error: ...`` for a user error (found before
    any work when the command line or a file it names is wrong; unwrapped by
    :func:`monai_dpaat.error_hook.user_error_of`). Any other error (a bug) keeps its traceback."""
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
        (robustness_bundle if command == "robustness" and _bundle_mode(command, argv[1:]) else COMMANDS[command])(
            *args, **kwargs)
    except Exception as err:  # noqa: BLE001 - a user error becomes one line, anything else keeps its traceback
        cause = user_error_of(err)
        if cause is None or os.environ.get("MONAI_DPAAT_DEBUG"):
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2
    return 0
