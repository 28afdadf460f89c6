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

User errors (unknown attack/preset/model, missing checkpoint or data) print ``error: ...`` and exit with
status 2, without a traceback (set ``MONAI_DPAAT_DEBUG=1`` to see it).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CLIError", "robustness", "demo", "gradcam", "combine", "presets", "main", "COMMANDS",
           "default_data_dir", "load_network", "parse_eps_list"]

logger = logging.getLogger("monai_dpaat.cli")


class CLIError(Exception):
    """A user error: printed as ``error: <message>``, exit status 2."""


# ---------------------------------------------------------------------------------------------- helpers
def default_data_dir() -> Path:
    """The sample data folder: ``$MONAI_DPAAT_DATA``, else ``../shared/data`` beside the checkout, else
    ``../shared/data`` from the working directory."""
    env = os.environ.get("MONAI_DPAAT_DATA")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return beside if beside.is_dir() else Path.cwd().parent / "shared" / "data"


def parse_eps_list(eps: Any) -> list[float] | None:
    """``None``, a number, ``"8/255"``, ``"2/255,8/255"``, ``"[2/255, 8/255]"`` or a list -> list of floats."""
    from monai_dpaat.evaluation.presets import parse_eps

    if eps is None:
        return None
    if isinstance(eps, (list, tuple)):
        items = list(eps)
    else:
        text = str(eps).strip().strip("[]()")
        items = [p for p in text.split(",") if p.strip()]
    if not items:
        raise CLIError(f"eps must be a number, 'a/b' or a comma-separated list, got {eps!r}")
    try:
        return [parse_eps(v) for v in items]
    except ValueError as err:
        raise CLIError(str(err)) from None


def _read_config(path: Path) -> Any:
    from monai.bundle import ConfigParser

    try:
        return ConfigParser.load_config_file(str(path))
    except Exception as err:  # malformed JSON/YAML
        raise CLIError(f"cannot read config file {str(path)!r}: {err}") from None


def _parse_attacks(attacks: Any) -> Any:
    """Attack suite argument: preset/attack names, or a JSON/YAML file with a list of specs (or {"attacks": [...]})."""
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


def load_checkpoint(network: Any, checkpoint: str | os.PathLike) -> None:
    """Load weights into ``network`` (see :func:`monai_dpaat.utils.load_weights`); errors become ``CLIError``."""
    from monai_dpaat.utils import load_weights

    try:
        load_weights(network, checkpoint)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None


SEGMENTATION_NETWORKS = ("unet", "attention-unet++")


def load_network(network: str, task: str = "classification", num_classes: int = 2, in_channels: int = 3,
                 spatial_dims: int = 2) -> Any:
    """A network from a JSON/YAML config (``{"_target_": ...}`` or a bundle config with ``network_def``), or a
    name: any :func:`monai_dpaat.networks.build_classifier` name for classification; ``unet`` (MONAI UNet)
    or ``attention-unet++`` for segmentation (``num_classes`` output channels, 1 = sigmoid foreground)."""
    path = Path(str(network))
    if str(network).lower().endswith((".json", ".yaml", ".yml")):
        if not path.is_file():
            raise CLIError(f"network config file {str(network)!r} does not exist")
        from monai.bundle import ConfigParser

        config = _read_config(path)
        if not isinstance(config, Mapping):
            raise CLIError(f"network config {str(network)!r} must be a dict with '_target_' or 'network_def'")
        parser = ConfigParser(dict(config))
        key = "network_def" if "network_def" in config else ""
        if key == "" and "_target_" not in config:
            raise CLIError(f"network config {str(network)!r} has neither '_target_' nor 'network_def'")
        try:
            return parser.get_parsed_content(key) if key else parser.get_parsed_content()
        except Exception as err:
            raise CLIError(f"cannot build the network of {str(network)!r}: {err}") from None
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


def _bundle_network(bundle: Path) -> tuple[Any, Path]:
    if not bundle.is_dir():
        raise CLIError(f"bundle folder {str(bundle)!r} does not exist")
    for name in ("inference.json", "inference.yaml", "train.json", "train.yaml"):
        config_file = bundle / "configs" / name
        if config_file.is_file():
            break
    else:
        raise CLIError(f"bundle {str(bundle)!r} has no configs/inference.json (or train.json)")
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle)
    if "network_def" not in parser.get():
        raise CLIError(f"{str(config_file)!r} defines no 'network_def'")
    try:
        net = parser.get_parsed_content("network_def")
    except Exception as err:
        raise CLIError(f"cannot build network_def of {str(config_file)!r}: {err}") from None
    return net, bundle / "models" / "model.pt"


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


def _data_loader(task: str, data: str | None, datalist: str | None, split: str, classes: Sequence[str],
                 image_size: int, batch_size: int, limit: int | None, seed: int) -> tuple[Any, list[str] | None]:
    from monai.data import DataLoader, Dataset

    from monai_dpaat import data as D

    if (data is None) == (datalist is None):
        raise CLIError("give exactly one data source: --data <dataset folder> or --datalist <Decathlon JSON>")
    class_names = None
    if datalist is not None:
        if not Path(datalist).is_file():
            raise CLIError(f"datalist file {datalist!r} does not exist")
        items = D.load_datalist(datalist, split=split)
        first = str(items[0].get("image", "")) if items else ""
        if task == "classification":
            transforms = D.ham10000_transforms(image_size, train=False)
        elif first.endswith((".nii", ".nii.gz")):
            transforms = D.nifti_transforms(spatial_size=None, track_meta=False)
        else:
            transforms = D.nuinsseg_eval_transforms(track_meta=False)
    else:
        root = Path(data)
        if not root.is_dir():
            raise CLIError(f"data folder {str(root)!r} does not exist")
        if task == "classification":
            lists = D.ham10000_datalists(root, classes=list(classes), seed=seed, val_fraction=0.0)
            if split not in lists:
                raise CLIError(f"unknown split {split!r}; HAM10000 splits are {sorted(lists)}")
            items, class_names = lists[split], list(classes)
            transforms = D.ham10000_transforms(image_size, train=False)
        else:
            items = D.nuinsseg_datalist(root)
            transforms = D.nuinsseg_eval_transforms(track_meta=False)
    items = _balanced_subset(items, limit)
    if not items:
        raise CLIError("the data source holds no samples")
    bs = batch_size if task == "classification" else 1  # tiles differ in size
    return DataLoader(Dataset(items, transforms), batch_size=bs, shuffle=False, num_workers=0), class_names


def evaluator_model(network: Any, inferer: Any) -> Any:
    from monai_dpaat.evaluation import InfererNetwork

    return network if inferer is None else InfererNetwork(network, inferer)


def _print_table(tables: Mapping[str, Any], metric: str) -> None:
    from monai_dpaat.evaluation.report import markdown_table

    if metric in tables:
        print(f"\n{tables[metric]['title']}\n")
        print(markdown_table(tables[metric], metric))


def _as_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [p.strip() for p in str(value).split(",") if p.strip()]


# ---------------------------------------------------------------------------------------------- commands
def robustness(bundle: str | None = None, checkpoint: str | None = None, network: str | None = None,
               task: str = "classification", data: str | None = None, datalist: str | None = None,
               split: str = "test", attacks: Any = "dpaat-table", eps: Any = None,
               output_dir: str = "robustness_report", device: str = "cpu", limit: int | None = None,
               batch_size: int = 16, num_classes: int = 2, in_channels: int = 3, classes: Any = "mel,nv",
               image_size: int = 64, roi_size: int | None = None, sw_batch_size: int = 4, name: str = "model",
               seed: int = 0, hd95: bool = True, check_masking: bool = False, progress: bool = True) -> None:
    """Evaluate a model under an attack suite and write report.md/.json, table_*.csv and PNG plots.

    Args:
        bundle: a MONAI bundle folder (network from configs/inference.json ``network_def``, weights from
            models/model.pt unless --checkpoint).
        checkpoint: weights (a state dict or a CheckpointSaver file) for --network.
        network: a JSON/YAML config (``_target_`` dict, or ``network_def`` inside) or a model name.
        task: classification | segmentation.
        data: a dataset folder (HAM10000 root for classification, NuInsSeg-layout root for segmentation).
        datalist: a Decathlon datalist JSON instead of --data (key --split).
        split: datalist key / HAM10000 split (default ``test``).
        attacks: preset (dpaat-table, unet-paper), attack names (``fgsm,20-pgd``) or a JSON/YAML spec list.
        eps: budget override: ``8/255``, or a list ``2/255,4/255,8/255`` for a sweep with metric-vs-eps plots.
        output_dir: report folder (created).
        device: cpu, cuda, cuda:0...
        limit: at most this many samples (class-balanced for classification).
        num_classes: output classes/channels of a named network; in_channels: its input channels.
        classes: HAM10000 class codes in label order (``mel,nv``).
        image_size: classification input side.
        roi_size: sliding-window size for segmentation (default 256; 0 = whole tiles).
        name: the model's column name in the tables.
        hd95: compute HD95 (segmentation).
        check_masking: also run :func:`monai_dpaat.evaluation.sanity.check_gradient_masking` on two batches
            (an eps grid, FGSM vs PGD vs noise, an unbounded attack) and list its flags in the report.
    """
    import torch

    from monai_dpaat.evaluation import RobustnessEvaluator, build_suite, write_report
    from monai_dpaat.evaluation.report import combine_results

    if task not in ("classification", "segmentation"):
        raise CLIError(f"task must be 'classification' or 'segmentation', got {task!r}")
    eps_list = parse_eps_list(eps)
    suite = _parse_attacks(attacks)
    build_suite(suite, eps=eps_list[0] if eps_list else None)  # unknown attack/preset -> error before any loading
    if bundle is None and network is None:
        raise CLIError("give a model: --bundle <folder> or --network <config|name> with --checkpoint <file>")
    if bundle is not None:
        net, default_ckpt = _bundle_network(Path(bundle))
        checkpoint = checkpoint or str(default_ckpt)
    else:
        if checkpoint is None:
            raise CLIError("--network needs --checkpoint <weights file>")
        if not Path(checkpoint).is_file():
            raise CLIError(f"checkpoint {checkpoint!r} does not exist")
        net = load_network(network, task, int(num_classes), int(in_channels))
    load_checkpoint(net, checkpoint)
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise CLIError(f"bad device {device!r}: {err}") from None
    loader, class_names = _data_loader(task, data, datalist, split, _as_list(classes), int(image_size),
                                       int(batch_size), limit, int(seed))
    inferer = None
    if task == "segmentation" and roi_size != 0:
        from monai.inferers import SlidingWindowInferer

        size = int(roi_size or 256)
        inferer = SlidingWindowInferer(roi_size=size, sw_batch_size=int(sw_batch_size), overlap=0.25, mode="gaussian")
    evaluator = RobustnessEvaluator(suite, task=task, inferer=inferer, device=dev, class_names=class_names,
                                    hd95=bool(hd95), seed=seed, progress=bool(progress))
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
    files = write_report({name: result}, output_dir, sweeps=sweeps, flags=flags,
                         title=f"Robustness of {name} ({task}, {result.num_samples} samples)")
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
    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.engines import SupervisedTrainer
    from monai.utils import set_determinism

    from monai_dpaat import data as D
    from monai_dpaat.evaluation import RobustnessEvaluator, write_report
    from monai_dpaat.evaluation.report import atomic_write_bytes, combine_results, ensure_output_dir

    root = Path(data) if data is not None else default_data_dir() / "ham10000"
    if not root.is_dir():
        raise CLIError(f"HAM10000 data folder {str(root)!r} does not exist (give --data or set MONAI_DPAAT_DATA)")
    out = ensure_output_dir(output_dir)
    eps_list = parse_eps_list(eps) or [8 / 255]
    suite = _parse_attacks(attacks)
    set_determinism(seed=int(seed))
    dev = torch.device(device)
    classes = ["mel", "nv"]
    lists = D.ham10000_datalists(root, classes=classes, n_train=int(n_train), n_test=int(n_test), val_fraction=0.0,
                                 seed=int(seed))
    train_ds = CacheDataset(lists["train"], D.ham10000_transforms(int(image_size), train=True), progress=False)
    test_ds = CacheDataset(lists["test"], D.ham10000_transforms(int(image_size), train=False), progress=False)
    train_loader = DataLoader(train_ds, batch_size=int(batch_size), shuffle=True, num_workers=0)
    test_loader = DataLoader(test_ds, batch_size=int(batch_size), shuffle=False, num_workers=0)
    network = load_network("small_cnn", "classification", num_classes=2, in_channels=3).to(dev)
    optimizer = torch.optim.Adam(network.parameters(), lr=float(lr))
    trainer = SupervisedTrainer(device=dev, max_epochs=int(epochs), train_data_loader=train_loader, network=network,
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
    atomic_write_bytes(out / "model.pt", buf.getvalue())
    evaluator = RobustnessEvaluator(suite, task="classification", device=dev, class_names=classes,
                                    seed=int(seed), progress=bool(progress))
    print(f"evaluating on {len(test_ds)} test images, eps = {', '.join(f'{e * 255:g}/255' for e in eps_list)}",
          flush=True)
    sweeps = None
    if len(eps_list) > 1:
        sweep = evaluator.sweep(network, test_loader, eps_list)
        result, sweeps = sweep[max(sweep)], {"STD": sweep}
    else:
        result = evaluator(network, test_loader, eps=eps_list[0])
    write_report({"STD": result}, out, sweeps=sweeps, title="monai-dpaat demo: small_cnn on HAM10000 (mel vs nv)")
    tables = combine_results({"STD": result})
    _print_table(tables, "accuracy")
    _print_table(tables, "map")
    print(f"\nreport, tables, plots and model.pt written to {out}")


def gradcam(**kwargs: Any) -> Any:
    """Grad-CAM maps: every flag is passed to :func:`monai_dpaat.evaluation.gradcam.gradcam_cli`."""
    try:
        from monai_dpaat.evaluation.gradcam import gradcam_cli
    except ImportError as err:
        raise CLIError(f"Grad-CAM is unavailable: {err}") from None
    import inspect

    try:
        inspect.signature(gradcam_cli).bind(**kwargs)
    except TypeError as err:
        raise CLIError(f"gradcam: {err} (see: python -m monai_dpaat gradcam --help)") from None
    return gradcam_cli(**kwargs)


def combine(*reports: str, names: Any = None, output_dir: str = "combined_report", title: str = "Robustness report") -> None:
    """Merge ``report.json`` files (or folders holding one) into one report, one column per model.

    Args:
        reports: report.json files or folders.
        names: column names, comma-separated (default: the names stored in the reports).
    """
    from monai_dpaat.evaluation.report import combine_results, load_report, write_report

    if not reports:
        raise CLIError("give one or more report.json files or report folders")
    merged: dict[str, Any] = {}
    for path in reports:
        if not Path(path).exists():
            raise CLIError(f"report {path!r} does not exist")
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
    write_report(merged, output_dir, title=title)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0, or 2 after printing ``error: ...`` for a user error)."""
    import fire

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        fire.Fire(COMMANDS, command=argv, name="monai-dpaat")
    except (CLIError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        if os.environ.get("MONAI_DPAAT_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
