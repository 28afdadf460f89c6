"""Bad-input table rows of the loaders (:mod:`monai_dpaat.data`) and the bundles' inference datalists: every data
error is raised at load and names the file (or the CSV and its ids, or the argument) and what was expected.

Reading-correctly behaviours (a CSV with a BOM or in Latin-1, a 16-bit PNG, an RGB mask with equal channels) are
ordinary tests in ``tests/test_data_*.py``; the exit status (1, never an abort) after a corrupt image is checked in
subprocesses by ``test_data_ham10000.py::test_error_while_a_loader_thread_is_in_torch_exits_1`` and
``::test_bundle_exits_1_naming_a_truncated_jpeg``.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from reliability_table import case, _png, _jpg, _nifti, _ham_root, _nuinsseg_root, _unwrapped, _bundle_copy, _bundle_run


def _metadata(root, rows: list[tuple[str, str, str]]) -> None:
    (root / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx\n" + "\n".join(",".join(r) for r in rows) + "\n")


def _ham_args():
    return dict(classes=("mel", "nv"), n_train=1, n_test=1, val_fraction=0.5)


def _multiframe_tiff(path, frames: int = 3):
    rng = np.random.default_rng(0)
    pages = [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(frames)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def _volume(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32) + 1


# ---------------------------------------------------------------------------------------------- HAM10000 metadata
@case("data-ham-image-under-two-lesions", ValueError,
      r"HAM10000_metadata\.csv'.*image_id 'ISIC_1'.*rows 2, 6.*lesion_id 'HAM_1', 'HAM_9'")
def _(ctx):
    from monai_dpaat.data import ham10000_datalists

    root = _ham_root(ctx.tmp)
    rows = [("HAM_1", "ISIC_1", "mel"), ("HAM_2", "ISIC_2", "mel"), ("HAM_3", "ISIC_3", "nv"),
            ("HAM_4", "ISIC_4", "nv"), ("HAM_9", "ISIC_1", "mel")]
    _metadata(root, rows)  # the lesion-disjoint split would put ISIC_1 in two splits
    return lambda: ham10000_datalists(root, **_ham_args())


@case("data-ham-duplicate-image-id", ValueError, r"HAM10000_metadata\.csv'.*image_id 'ISIC_3'.*rows 4, 5")
def _(ctx):
    from monai_dpaat.data import read_ham10000_metadata

    root = _ham_root(ctx.tmp)
    _metadata(root, [("HAM_1", "ISIC_1", "mel"), ("HAM_2", "ISIC_2", "mel"), ("HAM_3", "ISIC_3", "nv"),
                     ("HAM_3", "ISIC_3", "nv"), ("HAM_4", "ISIC_4", "nv")])
    return lambda: read_ham10000_metadata(root / "HAM10000_metadata.csv")


@case("data-ham-metadata-empty-field", ValueError, r"HAM10000_metadata\.csv' row 3 has an empty 'lesion_id'")
def _(ctx):
    from monai_dpaat.data import ham10000_datalists

    root = _ham_root(ctx.tmp)
    _metadata(root, [("HAM_1", "ISIC_1", "mel"), ("", "ISIC_2", "mel"), ("HAM_3", "ISIC_3", "nv"),
                     ("HAM_4", "ISIC_4", "nv")])
    return lambda: ham10000_datalists(root, **_ham_args())


@case("data-ham-val-fraction-zero", ValueError, r"val_fraction must be in \(0, 1\).*got 0\.0.*val_fraction=None")
def _(ctx):
    from monai_dpaat.data import ham10000_datalists

    root = _ham_root(ctx.tmp)
    return lambda: ham10000_datalists(root, classes=("mel", "nv"), n_train=1, n_test=1, val_fraction=0.0)


@case("data-ham-no-images", ValueError, r"no HAM10000 image \(\.jpg, \.jpeg, \.png\) in \['.*HAM10000_images_part_1'\]")
def _(ctx):
    from monai_dpaat.data import ham10000_datalists

    root = _ham_root(ctx.tmp)
    for f in (root / "HAM10000_images_part_1").iterdir():
        f.rename(f.with_suffix(".bmp"))
    return lambda: ham10000_datalists(root, **_ham_args())


# ---------------------------------------------------------------------------------------------- HAM10000 transforms
@case("data-ham-label-not-integer", ValueError, r"label 0\.5 of '.*a\.jpg' is not a class index")
def _(ctx):
    from monai_dpaat.data import ham10000_transforms

    image = _jpg(ctx.tmp / "a.jpg")
    return _unwrapped(lambda: ham10000_transforms(16)({"image": str(image), "label": 0.5}))


@case("data-ham-label-negative", ValueError, r"label -1 of '.*a\.jpg' is not a class index: expected an integer in "
      r"\[0, 1\]")
def _(ctx):
    from monai_dpaat.data import ham10000_transforms

    image = _jpg(ctx.tmp / "a.jpg")
    return _unwrapped(lambda: ham10000_transforms(16, num_classes=2)({"image": str(image), "label": -1}))


@case("data-ham-label-too-large", ValueError, r"label 3 of '.*a\.jpg' is not a class index: expected an integer in "
      r"\[0, 2\]")
def _(ctx):
    from monai_dpaat.data import ham10000_transforms

    image = _jpg(ctx.tmp / "a.jpg")
    return _unwrapped(lambda: ham10000_transforms(16, num_classes=3)({"image": str(image), "label": 3}))


@case("data-ham-image-size-zero", ValueError, r"image_size must be positive .*got \(0, 0\)")
def _(ctx):
    from monai_dpaat.data import ham10000_transforms

    return lambda: ham10000_transforms(0)


@case("data-ham-transform-32-bit-image", ValueError, r"'.*deep\.tif' is a 32-bit .* image \(PIL mode 'F'\)")
def _(ctx):
    from monai_dpaat.data import ham10000_transforms

    path = ctx.tmp / "deep.tif"
    Image.fromarray(np.random.default_rng(0).random((16, 16)).astype(np.float32)).save(path)
    return _unwrapped(lambda: ham10000_transforms(16)({"image": str(path), "label": 0}))


# ---------------------------------------------------------------------------------------------- NuInsSeg
@case("data-nuinsseg-multiframe-tiff", ValueError, r"b\.tif' has 3 frames")
def _(ctx):
    from monai_dpaat.data import nuinsseg_datalist

    root = _nuinsseg_root(ctx.tmp)
    images = root / "liver" / "tissue images"
    (images / "b.png").unlink()
    _multiframe_tiff(images / "b.tif")
    return lambda: nuinsseg_datalist(root)


@case("data-nuinsseg-transform-multiframe-tiff", ValueError, r"tile\.tif' has 3 frames.*one 2D image per file")
def _(ctx):
    from monai_dpaat.data import nuinsseg_eval_transforms

    tile = _multiframe_tiff(ctx.tmp / "tile.tif")
    mask = _png(ctx.tmp / "mask.png", mode="L")
    return _unwrapped(lambda: nuinsseg_eval_transforms()({"image": str(tile), "label": str(mask)}))


@case("data-nuinsseg-rgb-mask-channels-differ", ValueError, r"mask '.*mask\.png' is an RGB image whose channels differ")
def _(ctx):
    from monai_dpaat.data import nuinsseg_eval_transforms

    tile = _png(ctx.tmp / "tile.png")
    mask = _png(ctx.tmp / "mask.png", mode="RGB", seed=1)  # a colour overlay, not a mask
    return _unwrapped(lambda: nuinsseg_eval_transforms()({"image": str(tile), "label": str(mask)}))


@case("data-nuinsseg-patch-size-negative", ValueError, r"patch_size must be positive .*got \(-1, 256\)")
def _(ctx):
    from monai_dpaat.data import nuinsseg_train_transforms

    return lambda: nuinsseg_train_transforms(patch_size=(-1, 256))


# ---------------------------------------------------------------------------------------------- NIfTI
def _flat_nifti(ctx, image: np.ndarray):
    root = ctx.tmp / "nifti"
    root.mkdir()
    _nifti(root / "c0.nii.gz", image)
    _nifti(root / "c0_label.nii.gz", np.zeros((6, 6, 6), np.uint8))
    return root


@case("data-nifti-4d-volume", ValueError, r"NIfTI file '.*c0\.nii\.gz' is 4D \(shape \(6, 6, 6, 2\)\); expected one 3D")
def _(ctx):
    from monai_dpaat.data import nifti_datalist

    root = _flat_nifti(ctx, _volume((6, 6, 6, 2)))
    return lambda: nifti_datalist(root, image_patterns="*.nii.gz", label_pattern="{case}_label.nii.gz", layout="flat")


@case("data-nifti-2d-volume", ValueError, r"NIfTI file '.*c0\.nii\.gz' is 2D \(shape \(6, 6\)\); expected one 3D")
def _(ctx):
    from monai_dpaat.data import nifti_datalist

    root = _flat_nifti(ctx, _volume((6, 6)))
    return lambda: nifti_datalist(root, image_patterns="*.nii.gz", label_pattern="{case}_label.nii.gz", layout="flat")


@case("data-nifti-transform-4d-volume", ValueError, r"NIfTI file '.*t1\.nii\.gz' is 4D \(shape \(6, 6, 6, 3\)\)")
def _(ctx):
    from monai_dpaat.data import nifti_transforms

    flair = _nifti(ctx.tmp / "flair.nii.gz", _volume((6, 6, 6)))
    t1 = _nifti(ctx.tmp / "t1.nii.gz", _volume((6, 6, 6, 3)))  # a datalist JSON skips nifti_datalist's checks
    label = _nifti(ctx.tmp / "lab.nii.gz", np.zeros((6, 6, 6), np.uint8))
    return _unwrapped(lambda: nifti_transforms(None)({"image": [str(flair), str(t1)], "label": str(label)}))


@case("data-nifti-constant-volume", ValueError, r"'.*t1\.nii\.gz' is constant \(every voxel is 0\.0\)")
def _(ctx):
    from monai_dpaat.data import nifti_transforms

    flair = _nifti(ctx.tmp / "flair.nii.gz", _volume((6, 6, 6)))
    t1 = _nifti(ctx.tmp / "t1.nii.gz", np.zeros((6, 6, 6), np.float32))  # an empty export
    label = _nifti(ctx.tmp / "lab.nii.gz", np.zeros((6, 6, 6), np.uint8))
    return _unwrapped(lambda: nifti_transforms(None)({"image": [str(flair), str(t1)], "label": str(label)}))


@case("data-nifti-spatial-size-zero", ValueError, r"spatial_size must be positive .*got \(0, 64, 64\)")
def _(ctx):
    from monai_dpaat.data import nifti_transforms

    return lambda: nifti_transforms(spatial_size=(0, 64, 64))


# ---------------------------------------------------------------------------------------------- datalists and globs
@case("data-datalist-empty-split", ValueError, r"datalist JSON '.*list\.json' has no items under 'validation'")
def _(ctx):
    from monai_dpaat.data import load_datalist

    path = ctx.tmp / "list.json"
    path.write_text(json.dumps({"training": [{"image": "a.png", "label": 0}], "validation": []}))
    return lambda: load_datalist(path, split="validation")


@case("data-image-files-missing-folder", FileNotFoundError, r"image folder '.*nope' does not exist")
def _(ctx):
    from monai_dpaat.data import image_files

    return lambda: image_files(ctx.tmp / "nope", "*.jpg")


@case("data-image-files-no-match", ValueError, r"no file matches '\*\.png' in '.*imgs\[1\]'")
def _(ctx):
    from monai_dpaat.data import image_files

    folder = ctx.tmp / "imgs[1]"
    folder.mkdir()
    _jpg(folder / "a.jpg")
    return lambda: image_files(folder, "*.png")


def _bundle_with_model(ctx):
    """The classification bundle with a readable ``models/model.pt`` (inference's ``initialize`` checks it first)."""
    import shutil

    root = _bundle_copy(ctx)
    (root / "models").mkdir()
    shutil.copy(ctx.tmp / "out" / "model.pt", root / "models" / "model.pt")
    return root


@case("data-bundle-inference-missing-dataset-dir", RuntimeError,
      r"FileNotFoundError: image folder '.*no_data' does not exist")
def _(ctx):
    root = _bundle_with_model(ctx)
    # fails while the datalist is built: before the checkpoint is loaded and before predictions.csv is touched
    return _bundle_run(root, "--config_file", "configs/inference.json", "--bundle_root", str(root),
                       "--dataset_dir", str(ctx.tmp / "no_data"))


@case("data-bundle-inference-nothing-matches", RuntimeError, r"Error: no file matches "
      r"'HAM10000_images_part_\*/\*\.jpg' in '.*ham\[1\]'")
def _(ctx):
    root = _bundle_with_model(ctx)
    data = ctx.tmp / "ham[1]"
    data.mkdir()
    _png(data / "ISIC_1.png")
    return _bundle_run(root, "--config_file", "configs/inference.json", "--bundle_root", str(root),
                       "--dataset_dir", str(data))
