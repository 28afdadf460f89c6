"""Bad-input rows for the report writer (run by ``test_reliability.py``): a write that fails part-way through
(a plot that cannot be rendered, a disk that stops taking data) raises the error and leaves the previous run's
report set exactly as it was, with no staging folder or temporary file behind."""

from __future__ import annotations

import os

import torch

from reliability_table import _small_cnn, case


def _result(accuracy: float, eps: float = 8 / 255):
    from monai_dpaat.evaluation import ORIGINAL, WORST_CASE, RobustnessResult

    rows = {name: {"accuracy": a, "precision": a, "recall": a, "f1": a, "map": a, "linf": eps, "l2": 1.0}
            for name, a in ((ORIGINAL, 0.9), ("FGSM", accuracy), ("10-PGD", accuracy / 2), (WORST_CASE, accuracy / 2))}
    info = {"FGSM": {"name": "fgsm", "eps": eps, "steps": 1}, "10-PGD": {"name": "pgd", "eps": eps, "steps": 10}}
    return RobustnessResult("classification", rows, confusion={r: [[2, 1], [0, 3]] for r in rows},
                            attacks={"FGSM": {"name": "fgsm", "eps": eps}, "10-PGD": {"name": "pgd", "eps": eps}},
                            num_samples=6, class_names=["mel", "nv"], meta={"attack_info": info})


def _previous_report(ctx):
    """A whole report set from a "previous run" (with eps sweeps, so it has more plots than the new one) in
    ``out/robustness``; returns the folder."""
    from monai_dpaat.evaluation import write_report

    folder = ctx.tmp / "out" / "robustness"
    write_report({"STD": _result(0.5)}, folder, sweeps={"STD": {2 / 255: _result(0.7, 2 / 255), 8 / 255: _result(0.5)}},
                 title="previous run")
    return folder


@case("report-plot-fails-midway-keeps-old-set", OSError, r"disk full")
def _(ctx):
    from matplotlib.figure import Figure

    from monai_dpaat.evaluation import write_report

    folder = _previous_report(ctx)

    def call():
        real, calls = Figure.savefig, []

        def failing_savefig(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:  # the tables and the first plot are written by then
                raise OSError(28, "disk full")
            return real(self, *args, **kwargs)

        Figure.savefig = failing_savefig
        try:
            write_report({"STD": _result(0.3)}, folder, title="new run")
        finally:
            Figure.savefig = real

    return call


@case("report-fsync-fails-midway-keeps-old-set", OSError, r"Input/output error")
def _(ctx):
    from monai_dpaat.evaluation import report

    folder = _previous_report(ctx)

    def call():
        real, calls = os.fsync, []

        def failing_fsync(fd):
            calls.append(fd)
            if len(calls) > 3:  # a disk that stops taking data after three files
                raise OSError(5, "Input/output error")
            return real(fd)

        report.os.fsync = failing_fsync
        try:
            report.write_report({"STD": _result(0.3)}, folder, title="new run", plots=False)
        finally:
            report.os.fsync = real

    return call


# ---------------------------------------------------------------------------------------------- evaluator
@case("eval-label-minus-one", ValueError, r"label values \[-1\] are outside \[0, 1\] for a 2-class output")
def _(ctx):
    from monai_dpaat.attacks import FGSM
    from monai_dpaat.evaluation import RobustnessEvaluator

    net = _small_cnn(num_classes=2).eval()
    batch = {"image": torch.rand(2, 3, 16, 16), "label": torch.tensor([1, -1])}
    return lambda: RobustnessEvaluator({"FGSM": FGSM()}, task="classification", progress=False)(net, [batch])
