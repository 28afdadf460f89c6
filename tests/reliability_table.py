"""The bad-input table's registry and helpers: ``case`` registers a row, the ``reliability_cases_*`` modules and
``test_reliability.py`` add rows, ``test_reliability.py`` runs them all (see its docstring)."""


import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "ham10000_dpaat_classification"

# ---------------------------------------------------------------------------------------------- case registry
CASES: list = []


def case(case_id: str, error: type[BaseException], match: str, needs: str | None = None):
    """Register ``fn(ctx) -> call | (call, after)`` as a table row; ``needs`` marks it xfail(strict) with the fix."""

    def register(fn):
        marks = [pytest.mark.xfail(strict=True, reason=f"needs: {needs}")] if needs else []
        CASES.append(pytest.param(fn, error, match, id=case_id, marks=marks))
        return fn

    return register


class Ctx:
    def __init__(self, tmp: Path, request) -> None:
        self.tmp = tmp
        self.request = request

    @property
    def data_dir(self) -> Path:
        return self.request.getfixturevalue("data_dir")


class CLIFailed(Exception):
    """A CLI run that exited non-zero: the message is ``exit <code>: <stderr>``."""


# ---------------------------------------------------------------------------------------------- file helpers
def _png(path: Path, size: int = 16, mode: str = "RGB", seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path)
    return path


def _jpg(path: Path, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path, format="JPEG")
    return path


def _corrupt(path: Path) -> Path:
    """A file with an image's name whose bytes are a truncated JPEG header plus junk."""
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x13" * 40)
    return path


def _nifti(path: Path, array: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def _ham_root(tmp: Path, corrupt: str | None = None, columns: str = "lesion_id,image_id,dx") -> Path:
    """A tiny HAM10000 folder: 2 mel and 2 nv lesions with one image each; ``corrupt`` names an image id to break."""
    root = tmp / "ham"
    images = root / "HAM10000_images_part_1"
    images.mkdir(parents=True)
    rows = [("HAM_1", "ISIC_1", "mel"), ("HAM_2", "ISIC_2", "mel"), ("HAM_3", "ISIC_3", "nv"), ("HAM_4", "ISIC_4", "nv")]
    for i, (_, image_id, _) in enumerate(rows):
        path = images / f"{image_id}.jpg"
        _corrupt(path) if image_id == corrupt else _jpg(path, seed=i)
    n = len(columns.split(","))
    (root / "HAM10000_metadata.csv").write_text(columns + "\n" + "\n".join(",".join(r[:n]) for r in rows) + "\n")
    return root


def _nuinsseg_root(tmp: Path, drop_mask: bool = False, corrupt_mask: bool = False) -> Path:
    organ = tmp / "nuinsseg" / "liver"
    (organ / "tissue images").mkdir(parents=True)
    (organ / "mask binary").mkdir()
    for name in ("a", "b"):
        _png(organ / "tissue images" / f"{name}.png")
    _png(organ / "mask binary" / "a.png", mode="L")
    if corrupt_mask:
        _corrupt(organ / "mask binary" / "b.png")
    elif not drop_mask:
        _png(organ / "mask binary" / "b.png", mode="L")
    return organ.parent


def _unwrapped(call):
    """``call`` with MONAI's ``RuntimeError("applying transform ...")`` wrappers (``monai.transforms.apply_transform``
    wraps every error of a transform chain; the user sees the chain) replaced by the error they wrap."""

    def run():
        try:
            return call()
        except RuntimeError as err:
            e = err
            while isinstance(e, RuntimeError) and str(e).startswith("applying transform") and e.__cause__ is not None:
                e = e.__cause__
            if e is err:
                raise
            raise e from None

    return run


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_state(module: torch.nn.Module, before: dict[str, torch.Tensor], what: str) -> None:
    changed = [k for k, v in module.state_dict().items() if not torch.equal(v, before[k])]
    assert not changed, f"{what} changed by the failed call: {changed[:5]}"


def _small_cnn(num_classes: int = 3, in_channels: int = 3, seed: int = 0) -> torch.nn.Module:
    from monai_dpaat.networks import build_classifier

    torch.manual_seed(seed)
    return build_classifier("small_cnn", num_classes=num_classes, in_channels=in_channels, width=4)


# ---------------------------------------------------------------------------------------------- CLI and bundle runners
def _cli_checkpoint(ctx, num_classes: int = 2) -> str:
    """A default small_cnn (what ``--network small_cnn`` builds) saved as a MONAI checkpoint."""
    from monai_dpaat.networks import build_classifier

    path = ctx.tmp / "out" / "small_cnn.pt"
    torch.manual_seed(0)
    torch.save({"model": build_classifier("small_cnn", num_classes=num_classes).state_dict()}, path)
    return str(path)


def _cli(*argv: str):
    """In-process ``python -m monai_dpaat ...``: raises :class:`CLIFailed` with the exit status and stderr."""

    def call():
        from monai_dpaat.cli import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(list(argv))
        if code != 0:
            raise CLIFailed(f"exit {code}: {err.getvalue()}")

    return call



def _bundle_copy(ctx) -> Path:
    root = ctx.tmp / "bundle"
    shutil.copytree(BUNDLE / "configs", root / "configs")
    return root




def _bundle_run(root: Path, *argv: str):
    """``python -m monai.bundle run <argv>``, in-process (saves a MONAI import, ~10 s of CPU): the same fire
    command line parsing and ``sys.argv`` as the real command; an error that would end the process (exit status 1)
    is raised as a RuntimeError holding the whole chain of messages the user would see."""

    def call():
        import fire
        from monai.bundle.scripts import run

        cwd, saved_argv = os.getcwd(), sys.argv
        os.chdir(root)
        sys.argv = [str(Path(run.__code__.co_filename).with_name("__main__.py")), "run", *argv]
        try:
            fire.Fire({"run": run}, command=["run", *argv], name="monai.bundle")
        except (Exception, SystemExit) as err:
            chain, e = [], err
            while e is not None:
                chain.append(f"{type(e).__name__}: {e}")
                e = e.__cause__ or e.__context__
            raise RuntimeError(" <- ".join(chain)) from None
        finally:
            os.chdir(cwd)
            sys.argv = saved_argv

    return call


BUNDLE_CONFIGS = "['configs/train.json','configs/quick.json']"
