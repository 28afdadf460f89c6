"""HAM10000 datalists and transforms on the real sample data (2,005 images present of 10,015 rows)."""

from __future__ import annotations

import csv
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import error_text
import torch
from monai.data import DataLoader, Dataset
from PIL import Image

from monai_dpaat.data import ham10000_datalists, ham10000_transforms, read_ham10000_metadata

CLASSES = ("mel", "bkl", "nv")



@pytest.fixture(scope="module")
def root(data_dir) -> Path:
    return data_dir / "ham10000"


@pytest.fixture(scope="module")
def splits(root):
    return ham10000_datalists(root)


def test_metadata_and_presence_counts(root, caplog):
    rows = read_ham10000_metadata(root / "HAM10000_metadata.csv")
    assert len(rows) == 10015
    with caplog.at_level(logging.INFO, logger="monai_dpaat.data"):
        out = ham10000_datalists(root, classes=("mel", "nv", "bkl", "akiec", "bcc", "df", "vasc")[:3])
    assert "8010 of 10015 metadata rows dropped" in caplog.text
    present = Counter(x["dx"] for split in out.values() for x in split)
    # every present image of these classes is used (each class has < 800 + 299 images)
    assert present == {"mel": 1000, "nv": 1003, "bkl": 2}


def test_splits_are_lesion_and_image_disjoint(splits):
    names = ("train", "val", "test")
    lesions = {k: {x["lesion_id"] for x in splits[k]} for k in names}
    images = {k: {x["image_id"] for x in splits[k]} for k in names}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not lesions[a] & lesions[b], (a, b)
            assert not images[a] & images[b], (a, b)


def test_items_and_per_class_counts(splits):
    for name, items in splits.items():
        assert [x["index"] for x in items] == list(range(len(items))), name
        for x in items[:50] + items[-5:]:
            assert set(x) == {"image", "label", "index", "image_id", "lesion_id", "dx"}
            assert CLASSES[x["label"]] == x["dx"]
            assert Path(x["image"]).is_file() and Path(x["image"]).stem == x["image_id"]
    counts = {k: Counter(x["dx"] for x in v) for k, v in splits.items()}
    # 1000 mel < 800 + 299: quotas shrink in proportion -> round(1000 * 299 / 1099) = 272 test
    assert 265 <= counts["test"]["mel"] <= 272 and 266 <= counts["test"]["nv"] <= 273
    for cls in ("mel", "nv"):
        pool = counts["train"][cls] + counts["val"][cls]
        assert 0.08 <= counts["val"][cls] / pool <= 0.12
    assert counts["train"]["bkl"] + counts["test"]["bkl"] == 2  # two lesions: one each


def test_quota_caps_and_determinism(root):
    a = ham10000_datalists(root, classes=("nv", "mel"), n_train=300, n_test=100, val_fraction=0.2, seed=3)
    b = ham10000_datalists(root, classes=("nv", "mel"), n_train=300, n_test=100, val_fraction=0.2, seed=3)
    c = ham10000_datalists(root, classes=("nv", "mel"), n_train=300, n_test=100, val_fraction=0.2, seed=4)
    assert a == b and a != c
    for label in (0, 1):
        n_test = sum(x["label"] == label for x in a["test"])
        n_pool = sum(x["label"] == label for x in a["train"] + a["val"])
        n_val = sum(x["label"] == label for x in a["val"])
        assert 95 <= n_test <= 100 and 295 <= n_pool <= 300  # whole lesions: never above the quota
        assert 55 <= n_val <= 60


def test_image_dirs_override_and_missing_rows(root, tmp_path, caplog):
    ids = ["ISIC_0024310", "ISIC_0024313", "ISIC_0027533", "ISIC_0027287"]  # 2 mel, 2 bkl (2 lesions)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in ids:
        shutil.copy(root / "HAM10000_images_part_1" / f"{i}.jpg", folder)
    shutil.copy(root / "HAM10000_metadata.csv", tmp_path)
    with caplog.at_level(logging.INFO, logger="monai_dpaat.data"):
        out = ham10000_datalists(tmp_path, classes=("mel", "bkl"), val_fraction=0.0, image_dirs="imgs")
    assert "10011 of 10015 metadata rows dropped" in caplog.text
    assert out["val"] == []
    got = sorted(x["image_id"] for s in out.values() for x in s)
    assert got == sorted(ids)
    assert all(Path(x["image"]).parent == folder for s in out.values() for x in s)


def test_transforms_batch_shapes(splits):
    items = splits["train"][:3] + [x for x in splits["test"] if x["dx"] == "bkl"]  # bkl: a 600x450 original
    loader = DataLoader(Dataset(items, ham10000_transforms(image_size=64)), batch_size=4)
    batch = next(iter(loader))
    img = batch["image"]
    assert img.shape == (4, 3, 64, 64) and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.05
    assert batch["label"].shape == (4,) and batch["label"].dtype == torch.long
    assert batch["label"].tolist() == [x["label"] for x in items]
    assert batch["index"].tolist() == [x["index"] for x in items]
    train_xform = ham10000_transforms(image_size=64, train=True)
    train_xform.set_random_state(seed=0)
    augmented = [train_xform(items[0])["image"] for _ in range(4)]
    assert all(a.shape == (3, 64, 64) for a in augmented)
    assert any(not torch.equal(augmented[0], a) for a in augmented[1:])  # random flips / rotations happen
    plain = img[0]
    variants = [plain, plain.flip(1), plain.flip(2), plain.flip(1).flip(2)]
    variants += [torch.rot90(v, k, (1, 2)) for v in variants for k in (1, 2, 3)]
    assert all(any(torch.allclose(a, v, atol=1e-6) for v in variants) for a in augmented)  # only flips/rot90


def test_transform_layout_is_channel_first_hw(root):
    """A 600x450 (WxH) original at its own size comes back as (3, 450, 600) equal to PIL's pixels / 255."""
    f = root / "HAM10000_images_part_1" / "ISIC_0027533.jpg"
    ref = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    assert ref.shape == (3, 450, 600)
    out = ham10000_transforms(image_size=(450, 600))({"image": str(f), "label": 1})
    np.testing.assert_allclose(out["image"].numpy(), ref, atol=1e-6)
    assert out["label"].item() == 1


def test_unknown_class_and_empty_split(root):
    with pytest.raises(ValueError, match=r"'melanoma'.*known:.*'mel'"):
        ham10000_datalists(root, classes=("melanoma", "nv"))
    with pytest.raises(ValueError, match=r"'df' has no images present"):
        ham10000_datalists(root, classes=("df", "nv"))
    # bkl has 2 images (2 lesions): one goes to train, one to test, none left for validation
    with pytest.raises(ValueError, match=r"split 'val' is empty"):
        ham10000_datalists(root, classes=("bkl",))


def test_missing_files(tmp_path, root):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ham10000_datalists(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="HAM10000_metadata.csv"):
        ham10000_datalists(tmp_path)
    shutil.copy(root / "HAM10000_metadata.csv", tmp_path)
    with pytest.raises(FileNotFoundError, match="part_9"):
        ham10000_datalists(tmp_path, image_dirs="part_9")


def test_bad_metadata_columns(tmp_path):
    with open(tmp_path / "HAM10000_metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows([["lesion", "image_id", "dx"], ["HAM_1", "ISIC_1", "mel"]])
    with pytest.raises(ValueError, match=r"HAM10000_metadata.csv.*lesion_id"):
        ham10000_datalists(tmp_path)


def test_corrupt_image(root, tmp_path):
    folder = tmp_path / "HAM10000_images_part_1"
    folder.mkdir()
    rows = [["lesion_id", "image_id", "dx"]]
    for k, (image_id, lesion) in enumerate([("ISIC_0024310", "HAM_0003350"), ("ISIC_0027533", "HAM_0001417")]):
        shutil.copy(root / "HAM10000_images_part_1" / f"{image_id}.jpg", folder)
        rows.append([lesion, image_id, ("mel", "bkl")[k]])
    rows += [["HAM_X1", "ISIC_X1", "mel"], ["HAM_X2", "ISIC_X2", "bkl"]]
    good = (folder / "ISIC_0024310.jpg").read_bytes()
    (folder / "ISIC_X1.jpg").write_bytes(good[:200])  # truncated JPEG
    (folder / "ISIC_X2.jpg").write_bytes(b"not a jpeg at all" * 20)
    with open(tmp_path / "HAM10000_metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    out = ham10000_datalists(tmp_path, classes=("mel", "bkl"), val_fraction=0.0)  # no header check
    assert sum(map(len, out.values())) == 4
    with pytest.raises(ValueError, match=r"ISIC_X[12]\.jpg' is unreadable or corrupt"):
        ham10000_datalists(tmp_path, classes=("mel", "bkl"), val_fraction=0.0, validate=True)
    with pytest.raises(RuntimeError) as e:
        ham10000_transforms(image_size=32)({"image": str(folder / "ISIC_X2.jpg"), "label": 0})
    assert "ISIC_X2.jpg" in error_text(e.value) and "corrupt" in error_text(e.value)
