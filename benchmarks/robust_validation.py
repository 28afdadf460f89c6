"""Seconds per robust-validation epoch on the two Model Zoo bundles of ``tests/model_zoo``, next to their own
plain validation epoch on the same images (issue 12).

For ``endoscopic_inbody_classification`` (SEResNet50, 256x256) and ``endoscopic_tool_segmentation``
(FlexibleUNet/efficientnet-b2, 736x480), each at its native input size, on CPU:

- dummy data made like the Zoo's own CI tests (``tests/model_zoo_bundles.py``: random JPEGs written at the
  native size), ``--images`` validation images, the bundle's own validation batch size (64 / 8) and
  preprocessing; the network is untrained (its weights do not change the cost of a pass);
- the bundle's ``train.json`` is built in process with ``monai.bundle.ConfigWorkflow``, alone ("plain") and
  with ``monai_dpaat/bundle_overrides/robust_validation.json`` composed after it, at the override's defaults
  (one 10-step L-inf PGD, ``robust_val_max_samples`` 128, progress bar on);
- "plain": ``validate#evaluator.run()`` of the bundle alone, median of ``--repeats`` runs after two warm-ups;
- "robust": the seconds the robust-validation handler reports in its ``epoch <e> robustness: ... (<s> s)`` log
  line, on one run of the composed evaluator (a standalone evaluator: the handler runs on every run); its
  CPU time is that run's process CPU time less the first plain run's (which pays the same one-time costs);
- wall and process CPU time (all threads) both: on a shared machine the CPU time is the steadier number;
- passes: a forward hook on the bundle's ``network`` counts the images that went through it without gradient
  (the suite's clean and adversarial predictions, one sample for task inference) and with one (the attack's
  steps), and a hook on those outputs counts the backward passes through them; the plain epoch's forwards are
  subtracted. Next to it, the steps the default attack is configured with.

    python benchmarks/robust_validation.py               # 4 images per bundle: a few minutes on 2 CPU cores
    python benchmarks/robust_validation.py --images 8 --threads 4
    python benchmarks/robust_validation.py --quick       # 1 image per bundle: a smoke check
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the Model Zoo helpers of the tests

from model_zoo_bundles import BUNDLES, CLASSIFICATION, SEGMENTATION, copy_bundle, make_dummy_data  # noqa: E402

from monai_dpaat import bundle_overrides  # noqa: E402

#: the bundles' native input size (``train#deterministic_transforms#3``, ``Resized``) and the config id holding
#: their validation list (cut to ``--images`` entries)
NATIVE = {CLASSIFICATION: (256, 256), SEGMENTATION: (736, 480)}
VAL_LIST = {CLASSIFICATION: "val_dict", SEGMENTATION: "val_images"}
ROBUSTNESS_LOGGER = "monai_dpaat.handlers.robustness"


@dataclass
class Passes:
    """Images through the network: ``forward`` without gradient, ``grad_forward`` with one, ``backward``
    passes back through its output (each counted per image of the batch)."""

    forward: int = 0
    grad_forward: int = 0
    backward: int = 0

    def __sub__(self, other: Passes) -> Passes:
        return Passes(self.forward - other.forward, self.grad_forward - other.grad_forward,
                      self.backward - other.backward)


class PassCounter:
    """Count the passes of ``network`` (a forward hook, and a tensor hook on each output that needs a
    gradient) while the ``with`` block runs; the hook is removed on exit."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.network = network
        self.passes = Passes()

    def _backward(self, grad: torch.Tensor) -> None:
        self.passes.backward += grad.shape[0]

    def _forward(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        out = output if isinstance(output, torch.Tensor) else next(o for o in output if isinstance(o, torch.Tensor))
        if out.requires_grad:
            self.passes.grad_forward += out.shape[0]
            out.register_hook(self._backward)
        else:
            self.passes.forward += out.shape[0]

    def __enter__(self) -> PassCounter:
        self._handle = self.network.register_forward_hook(self._forward)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()


class RobustnessLine(logging.Handler):
    """Keep the seconds of the last ``epoch <e> robustness: ... (<s> s)`` line logged (the handler's summary)."""

    PATTERN = re.compile(r"robustness: .* (\d+(?:\.\d+)?) s\)\s*$")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        match = self.PATTERN.search(record.getMessage())
        if match:
            self.seconds = float(match.group(1))


def per_class_for(bundle: str, images: int) -> int:
    """The smallest ``per_class`` of ``make_dummy_data`` that gives at least ``images`` validation images:
    classification keeps 20 % of each class folder for validation (``int(0.8 p) - int(0.6 p)``), segmentation
    writes ``p`` tiles into each of ``val/inbody`` and ``val/outbody``."""
    p = 1
    while True:
        val = 2 * (int(p * 0.8) - int(p * 0.6)) if bundle == CLASSIFICATION else 2 * p
        if val >= images:
            return p
        p += 1


def prepare(bundle: str, work: Path, images: int) -> tuple[Path, dict[str, Any]]:
    """A copy of ``bundle`` with dummy data at its native size under ``work``; the overrides of the run (the
    Zoo CI's, minus their validation batch size, plus the validation list cut to ``images`` entries)."""
    bundle_dir = copy_bundle(bundle, work)
    overrides = make_dummy_data(bundle, work, bundle_root=bundle_dir, per_class=per_class_for(bundle, images),
                                spatial=NATIVE[bundle])
    overrides.pop("validate#dataloader#batch_size")  # their own: 64 (classification), 8 (segmentation)
    raw = json.loads((bundle_dir / "configs" / "train.json").read_text())[VAL_LIST[bundle]]
    if not (isinstance(raw, str) and raw.startswith("$")):
        raise ValueError(f"{bundle}: train.json {VAL_LIST[bundle]!r} is not an expression: {raw!r}")
    overrides[VAL_LIST[bundle]] = f"$({raw[1:]})[:{images}]"
    return bundle_dir, overrides


def build(bundle_dir: Path, robust: bool, overrides: dict[str, Any]):
    """``(workflow, evaluator)``: the bundle's ``train.json`` (then ``robust_validation.json`` if ``robust``),
    initialized (their ``set_determinism(seed=123)``: the same weights in both)."""
    from monai.bundle import ConfigWorkflow

    files = [str(bundle_dir / "configs" / "train.json")]
    if robust:
        files.append(str(bundle_overrides.override_path("robust_validation")))
    workflow = ConfigWorkflow(config_file=files, meta_file=str(bundle_dir / "configs" / "metadata.json"),
                              logging_file=False, workflow_type="train", **overrides)
    workflow.initialize()
    return workflow, workflow.parser.get_parsed_content("validate#evaluator")


def timed_run(evaluator: Any) -> tuple[float, float, Passes]:
    """Wall seconds, process CPU seconds (all threads) of one ``evaluator.run()`` and the network passes
    counted in it."""
    with PassCounter(evaluator.network) as counter:
        wall, cpu = time.perf_counter(), time.process_time()
        evaluator.run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, counter.passes


def measure(bundle: str, work: Path, images: int, repeats: int) -> dict[str, Any]:
    """One bundle's numbers: plain and robust epoch seconds, images, passes, the default attack's steps."""
    bundle_dir, overrides = prepare(bundle, work, images)

    workflow, plain = build(bundle_dir, robust=False, overrides=overrides)
    n_val = len(plain.data_loader.dataset)
    # the first run pays what the composed run pays once too (first batch, their CheckpointSaver's first save);
    # a second warm-up, as the first few runs are still slower (allocator, oneDNN primitives)
    _, first_cpu, _ = timed_run(plain)
    timed_run(plain)
    plain_runs = [timed_run(plain) for _ in range(repeats)]
    plain_s, plain_cpu = (statistics.median(r[i] for r in plain_runs) for i in (0, 1))
    plain_passes = plain_runs[0][2]
    workflow.finalize()

    workflow, evaluator = build(bundle_dir, robust=True, overrides=overrides)
    handler = workflow.parser.get_parsed_content("robust_validation")
    line = RobustnessLine()
    logger = logging.getLogger(ROBUSTNESS_LOGGER)
    logger.addHandler(line)
    logger.setLevel(logging.INFO)
    try:
        total_s, total_cpu, passes = timed_run(evaluator)
    finally:
        logger.removeHandler(line)
    workflow.finalize()
    if line.seconds is None or handler.last_result is None:
        raise RuntimeError(f"{bundle}: robust validation did not run (no 'robustness:' log line)")
    result = handler.last_result
    return {
        "bundle": bundle, "network": type(evaluator.network).__name__, "size": NATIVE[bundle],
        "batch": evaluator.data_loader.batch_size, "images": n_val, "attacked": result.num_samples,
        "task": result.task, "plain_s": plain_s, "robust_s": line.seconds, "total_s": total_s,
        # the handler's CPU time: the composed run's less the first plain run's (its log line has wall time only)
        "plain_cpu": plain_cpu, "robust_cpu": total_cpu - first_cpu,
        "passes": passes - plain_passes, "steps": {k: v["steps"] for k, v in result.meta["attack_info"].items()},
    }


def report(row: dict[str, Any]) -> None:
    """Print one bundle's numbers."""
    n, a, p = row["images"], row["attacked"], row["passes"]
    steps = ", ".join(f"{k}: {v} steps" for k, v in row["steps"].items())
    print(f"{row['bundle']} ({row['network']}, {row['size'][0]}x{row['size'][1]}, batch {row['batch']}, "
          f"{row['task']}, untrained)")
    print(f"  {'':<24}{'wall s':>9}{'s/image':>9}{'CPU s':>9}{'CPU s/image':>12}")
    for name, wall, cpu, count in (("plain validation epoch", row["plain_s"], row["plain_cpu"], n),
                                   ("robust validation epoch", row["robust_s"], row["robust_cpu"], a)):
        print(f"  {name:<24}{wall:9.2f}{wall / count:9.2f}{cpu:9.2f}{cpu / count:12.2f}   ({count} images)")
    print(f"  robust / plain: {row['robust_s'] / row['plain_s']:.1f}x wall, "
          f"{row['robust_cpu'] / row['plain_cpu']:.1f}x CPU;  "
          f"evaluator run with robust validation: {row['total_s']:.2f} s wall")
    print(f"  default attack ({steps}): per attacked image {p.grad_forward / a:g} forward+backward "
          f"(backward {p.backward / a:g}) and {p.forward / a:g} forwards without gradient (measured)")


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", default=",".join(BUNDLES), help=f"comma-separated, of {', '.join(BUNDLES)}")
    parser.add_argument("--images", type=int, default=4, help="validation images per bundle")
    parser.add_argument("--repeats", type=int, default=3, help="plain validation runs (median) after two warm-ups")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--quick", action="store_true", help="a smoke check: 1 image per bundle, 1 plain run")
    args = parser.parse_args(argv)
    bundles = [b.strip() for b in args.bundles.split(",") if b.strip()]
    unknown = [b for b in bundles if b not in BUNDLES]
    if unknown or not bundles:
        raise ValueError(f"--bundles: unknown {unknown}; expected some of {BUNDLES}")
    if args.quick:
        args.images, args.repeats = 1, 1
    if args.images < 1 or args.repeats < 1:
        raise ValueError(f"--images and --repeats must be >= 1, got {args.images}, {args.repeats}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    print(f"robust validation at robust_validation.json's defaults, CPU, {torch.get_num_threads()} threads, "
          f"{args.images} validation images per bundle, dummy data at native size; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other processes slow the wall times more than the "
          f"CPU times)")
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="robust_val_bench_") as tmp:
        for bundle in bundles:
            rows[bundle] = measure(bundle, Path(tmp) / bundle, args.images, args.repeats)
            report(rows[bundle])
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print("robust validation epoch (default 10-PGD, CPU): " + "; ".join(
        f"{b}: {r['robust_s']:.1f} s wall / {r['robust_cpu']:.1f} s CPU for {r['attacked']} images "
        f"({r['robust_s'] / r['attacked']:.1f} s/image wall, {r['robust_s'] / r['plain_s']:.0f}x wall and "
        f"{r['robust_cpu'] / r['plain_cpu']:.0f}x CPU its plain validation epoch)" for b, r in rows.items()))
    return rows


if __name__ == "__main__":
    main()
