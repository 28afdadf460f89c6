"""Datasets of monai-dpaat: datalists and MONAI dict transforms for HAM10000 (classification),
NuInsSeg-layout H&E nuclei tiles (2D segmentation) and NIfTI volumes such as BraTS (3D segmentation).

Every ``*_datalist(s)`` function returns plain lists of dicts (each with an ``"index"``, its
position in its split) usable by :class:`monai.data.Dataset` and bundle configs
(``"$monai_dpaat.data.ham10000_datalists(@dataset_dir)['train']"``). Wherever a datalist is
accepted, :func:`load_datalist` turns a MONAI Decathlon-style JSON file or an in-memory list into one;
:func:`image_files` globs unlabelled images for inference configs; :mod:`~monai_dpaat.data.evaluation_data` reads
and checks the samples of a robustness evaluation (a datalist or a dataset folder) before any attack runs.

Bad data is refused when it is loaded, with an error naming the file (or the CSV row, or the argument) and
what was expected, never truncated or skipped silently. Problems are logged to the ``"monai_dpaat.data"`` logger.
"""

from monai_dpaat.data.evaluation_data import (
    balanced_subset,
    check_datalist_labels,
    check_image_dims,
    evaluation_loader,
    first_image,
    folder_items,
    is_volume,
    read_evaluation_datalist,
)
from monai_dpaat.data.ham10000 import (
    HAM10000_CLASSES,
    ham10000_datalists,
    ham10000_image_files,
    ham10000_transforms,
    load_ham10000_image,
    read_ham10000_metadata,
)
from monai_dpaat.data.indexed import IndexedDataset
from monai_dpaat.data.nifti import (
    BRATS_WHOLE_TUMOUR,
    CheckNiftiFilesd,
    check_nifti_file,
    nifti_datalist,
    nifti_transforms,
)
from monai_dpaat.data.nuinsseg import (
    nuinsseg_datalist,
    nuinsseg_eval_transforms,
    nuinsseg_train_transforms,
    split_datalist,
)
from monai_dpaat.data.transforms import (
    CheckClassLabeld,
    CheckedLoadImaged,
    CheckFinited,
    CheckSameSpatialShaped,
    RemapLabels,
    RemapLabelsd,
    ToRGBFloatd,
    above_background,
)
from monai_dpaat.data.utils import (
    DataError,
    as_image,
    as_mask,
    check_image_file,
    image_files,
    load_datalist,
    logger,
    reindex,
    to_rgb,
)

__all__ = [
    "balanced_subset",
    "check_datalist_labels",
    "check_image_dims",
    "evaluation_loader",
    "first_image",
    "folder_items",
    "is_volume",
    "read_evaluation_datalist",
    "IndexedDataset",
    "HAM10000_CLASSES",
    "ham10000_datalists",
    "ham10000_image_files",
    "ham10000_transforms",
    "load_ham10000_image",
    "read_ham10000_metadata",
    "BRATS_WHOLE_TUMOUR",
    "CheckNiftiFilesd",
    "check_nifti_file",
    "nifti_datalist",
    "nifti_transforms",
    "nuinsseg_datalist",
    "nuinsseg_eval_transforms",
    "nuinsseg_train_transforms",
    "split_datalist",
    "CheckClassLabeld",
    "CheckedLoadImaged",
    "CheckFinited",
    "CheckSameSpatialShaped",
    "RemapLabels",
    "RemapLabelsd",
    "ToRGBFloatd",
    "above_background",
    "DataError",
    "as_image",
    "as_mask",
    "check_image_file",
    "image_files",
    "load_datalist",
    "logger",
    "reindex",
    "to_rgb",
]
