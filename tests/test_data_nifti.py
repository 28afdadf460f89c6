"""NIfTI datalists/transforms on the real BraTS 2013 cases and tiny_nifti, RemapLabelsd, and
load_datalist (Decathlon JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import error_text
import torch
from monai.data import DataLoader, Dataset

from monai_dpaat.data import (
    BRATS_WHOLE_TUMOUR,
    RemapLabelsd,
    load_datalist,
    nifti_datalist,
    nifti_transforms,
)



@pytest.fixture(scope="module")
def brats(data_dir):
    return nifti_datalist(data_dir / "brats2013")


@pytest.fixture(scope="module")
def tiny_root(data_dir) -> Path:
    return data_dir / "tiny_nifti"


def test_brats_datalist(brats):
    assert [x["case"] for x in brats] == [f"brats_2013_pat000{i}_1" for i in (3, 4, 5, 6)]
    for i, x in enumerate(brats):
        assert x["index"] == i
        assert [Path(f).name for f in x["image"]] == ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"]
        assert Path(x["label"]).name == "OTMultiClass.nii.gz"


def test_brats_transforms_whole_tumour(brats):
    label_file = brats[0]["label"]
    raw = np.asarray(nib.load(label_file).dataobj)
    assert set(np.unique(raw).tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}
    out = nifti_transforms((48, 48, 48), label_mapping=BRATS_WHOLE_TUMOUR)(brats[0])
    image, label = out["image"], out["label"]
    assert image.shape == (2, 48, 48, 48) and label.shape == (1, 48, 48, 48)
    assert image.dtype == label.dtype == torch.float32
    assert set(torch.unique(label).tolist()) == {0.0, 1.0}
    assert image.min() < -2.0  # z-scored values kept, not squashed into [0, 1]
    # the foreground crop keeps the tumour: its volume fraction grows, roughly by the cropped-away part
    assert (label > 0).float().mean() > (raw > 0).mean()
    assert label.meta["filename_or_obj"] == label_file


def test_brats_full_resolution_crop_keeps_labels(brats):
    out = nifti_transforms(None, train=True)(brats[1])
    raw = np.asarray(nib.load(brats[1]["label"]).dataobj)
    assert out["image"].shape[0] == 2 and out["image"].shape[1:] == out["label"].shape[1:]
    assert all(s < r for s, r in zip(out["image"].shape[1:], raw.shape))  # the background was cropped
    assert int((out["label"] > 0).sum()) == int((raw > 0).sum())  # no tumour voxel lost
    assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}


def test_remap_labels_policy():
    label = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    out = RemapLabelsd("label", {"1": 1, "2": 0, "4": 1})({"label": label})["label"]  # JSON-style str keys
    assert out.tolist() == [[[0.0, 1.0], [0.0, 1.0]]]
    with pytest.raises(ValueError, match=r"label values \[4.0\].*not in the mapping"):
        RemapLabelsd("label", {1: 1, 2: 1})({"label": label})
    assert RemapLabelsd("label", {1: 2}, default=7)({"label": label})["label"].tolist() == [[[0, 2], [7, 7]]]
    np_out = RemapLabelsd("label", {1: 5, 2: 5, 4: 5})({"label": label.numpy().astype(np.uint8)})["label"]
    assert isinstance(np_out, np.ndarray) and np_out.dtype == np.uint8 and np_out.max() == 5


def test_remap_error_names_file(tmp_path):
    image, label = tmp_path / "img.nii.gz", tmp_path / "seg.nii.gz"
    _write(image, (6, 6, 6))
    nib.save(nib.Nifti1Image(np.array([0, 1, 3, 4, 5, 0], np.uint8)[:, None, None].repeat(6, 1).repeat(6, 2),
                             np.eye(4)), str(label))
    with pytest.raises(RuntimeError) as e:
        nifti_transforms(4, label_mapping={1: 1, 3: 1}, crop_foreground=False)(
            {"image": [str(image)], "label": str(label)}
        )
    text = error_text(e.value)
    assert "[4.0, 5.0]" in text and "seg.nii.gz" in text
    out = nifti_transforms(None, label_mapping={1: 1, 3: 1}, label_default=0, crop_foreground=False)(
        {"image": [str(image)], "label": str(label)}
    )
    assert out["label"][0, :, 0, 0].tolist() == [0, 1, 1, 0, 0, 0]


def test_tiny_nifti_flat_layout(tiny_root):
    items = nifti_datalist(tiny_root, image_patterns="*.nii", label_pattern="{case}_label.nii.gz")
    assert [x["case"] for x in items] == ["anatomical", "reoriented_anat_moved"]
    loader = DataLoader(Dataset(items, nifti_transforms(16, train=True, normalize=True)), batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 1, 16, 16, 16) and batch["label"].shape == (2, 1, 16, 16, 16)
    assert set(torch.unique(batch["label"]).tolist()) == {0.0, 1.0}
    assert batch["index"].tolist() == [0, 1]
    unlabelled = nifti_datalist(tiny_root, image_patterns="*.nii", label_pattern=None)
    assert all("label" not in x for x in unlabelled)
    assert nifti_transforms(8, with_label=False)(unlabelled[1])["image"].shape == (1, 8, 8, 8)


def test_load_datalist_decathlon_json(tiny_root, tmp_path):
    spec = {
        "training": [{"image": "anatomical.nii", "label": "anatomical_label.nii.gz"}],
        "validation": [{"image": "reoriented_anat_moved.nii", "label": "reoriented_anat_moved_label.nii.gz"}],
    }
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(spec))
    train = load_datalist(path, "training", base_dir=tiny_root)
    assert train == [{"image": str(tiny_root / "anatomical.nii"), "label": str(tiny_root / "anatomical_label.nii.gz"),
                      "index": 0}]
    out = nifti_transforms(12)(load_datalist(str(path), "validation", base_dir=tiny_root)[0])
    assert out["image"].shape == (1, 12, 12, 12)
    assert load_datalist([{"image": "a"}, {"image": "b"}]) == [{"image": "a", "index": 0}, {"image": "b", "index": 1}]
    with pytest.raises(ValueError, match=r"datalist.json.*test"):
        load_datalist(path, "test")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_datalist(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="item 1 is str"):
        load_datalist([{"image": "a"}, "b"])


def _write(path: Path, shape, dtype=np.float32) -> None:
    nib.save(nib.Nifti1Image(np.arange(np.prod(shape), dtype=dtype).reshape(shape) % 3, np.eye(4)), str(path))


def test_bad_nifti_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        nifti_datalist(tmp_path / "nowhere")
    case = tmp_path / "case1"
    case.mkdir()
    _write(case / "Flair.nii.gz", (8, 8, 6))
    _write(case / "T1c.nii.gz", (8, 8, 6))
    with pytest.raises(FileNotFoundError, match=r"case 'case1'.*'OTMultiClass.nii.gz'.*none"):
        nifti_datalist(tmp_path)
    _write(case / "OTMultiClass.nii.gz", (8, 8, 5), np.uint8)
    with pytest.raises(ValueError, match=r"case 'case1': files differ in shape.*OTMultiClass.nii.gz: \(8, 8, 5\)"):
        nifti_datalist(tmp_path)
    _write(case / "OTMultiClass.nii.gz", (8, 8, 6), np.uint8)
    assert len(nifti_datalist(tmp_path)) == 1
    (case / "T1c.nii.gz").write_bytes(b"\x1f\x8b" + b"broken" * 10)
    with pytest.raises(ValueError, match=r"T1c.nii.gz' is unreadable or corrupt"):
        nifti_datalist(tmp_path)
    item = nifti_datalist(tmp_path, validate=False)[0]
    with pytest.raises(RuntimeError) as e:
        nifti_transforms(4)(item)
    assert "T1c.nii.gz" in error_text(e.value) and "corrupt" in error_text(e.value)
    flat = tmp_path / "flat"
    flat.mkdir()
    _write(flat / "a.nii", (4, 4, 4))
    with pytest.raises(FileNotFoundError, match=r"case 'a'.*'a_label.nii.gz'"):
        nifti_datalist(flat, image_patterns="*.nii", label_pattern="{case}_label.nii.gz")
    with pytest.raises(ValueError, match="no NIfTI case found"):
        nifti_datalist(flat, image_patterns="*.mha", label_pattern=None)


def test_single_volume_stored_4d_is_accepted(tmp_path):
    """``(H, W, D, 1)`` is one 3D volume (some exporters add the axis); ``(H, W, D, 2)`` is refused (see the table)."""
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((6, 6, 6, 1)).astype(np.float32), np.eye(4)),
             str(tmp_path / "c0.nii.gz"))
    _write(tmp_path / "c0_label.nii.gz", (6, 6, 6), np.uint8)
    items = nifti_datalist(tmp_path, image_patterns="*.nii.gz", label_pattern="{case}_label.nii.gz", layout="flat")
    out = nifti_transforms(None, crop_foreground=False)(items[0])
    assert out["image"].shape == out["label"].shape == (1, 6, 6, 6)
