"""HAM10000 datalists and transforms on the real sample data (2,005 images present of 10,015 rows)."""

from __future__ import annotations

import csv
import logging
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import error_text
import torch
from monai.data import DataLoader, Dataset
from PIL import Image

from monai_dpaat.data import ham10000_datalists, ham10000_transforms, image_files, read_ham10000_metadata

REPO = Path(__file__).resolve().parents[1]
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
        out = ham10000_datalists(tmp_path, classes=("mel", "bkl"), val_fraction=None, image_dirs="imgs")
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


def test_unknown_class_and_empty_split(root, tmp_path):
    with pytest.raises(ValueError, match=r"'melanoma'.*known:.*'mel'"):
        ham10000_datalists(root, classes=("melanoma", "nv"))
    with pytest.raises(ValueError, match=r"'df' has no images present"):
        ham10000_datalists(root, classes=("df", "nv"))
    # 1 image per class in the training pool: round(0.4 * 1) = 0 images of either class left for validation
    tiny = _tiny_ham(tmp_path)
    (tiny / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx\nHAM_1,ISIC_1,mel\nHAM_2,ISIC_2,mel\n"
                                                "HAM_3,ISIC_3,nv\nHAM_4,ISIC_4,nv\n")
    with pytest.raises(ValueError, match=r"split 'val' is empty"):
        ham10000_datalists(tiny, classes=("mel", "nv"), n_train=1, n_test=1, val_fraction=0.4)


@pytest.mark.parametrize("classes", [("bkl",), ["mel"], "nv", ()])
def test_fewer_than_two_classes_is_refused_naming_the_key(root, classes):
    """A one-class classifier trains with loss 0 and would still write model.pt: refused before any file is read."""
    with pytest.raises(ValueError, match=r"^classes must name at least 2 HAM10000 classes, got \[.*\]: a classifier "
                                         r"of one class learns nothing"):
        ham10000_datalists(root, classes=classes)


def test_val_fraction_zero_message_fits_the_python_api_and_a_bundle(root):
    """``--val_fraction None`` on a bundle command line is dropped by monai.bundle: the message must not offer it
    there, and must still tell a Python caller about ``val_fraction=None``."""
    for bad in (0, 0.0, 1.0, -0.1):
        with pytest.raises(ValueError) as info:
            ham10000_datalists(root, classes=("mel", "nv"), val_fraction=bad)
        text = str(info.value)
        assert text.startswith(f"val_fraction must be in (0, 1), got {bad!r}"), text
        assert "bundle" in text and "model.pt" in text and "drops None overrides" in text, text
        assert "only the Python API takes val_fraction=None" in text, text


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
    out = ham10000_datalists(tmp_path, classes=("mel", "bkl"), val_fraction=None)  # no header check
    assert sum(map(len, out.values())) == 4
    with pytest.raises(ValueError, match=r"ISIC_X[12]\.jpg' is unreadable or corrupt"):
        ham10000_datalists(tmp_path, classes=("mel", "bkl"), val_fraction=None, validate=True)
    with pytest.raises(RuntimeError) as e:
        ham10000_transforms(image_size=32)({"image": str(folder / "ISIC_X2.jpg"), "label": 0})
    assert "ISIC_X2.jpg" in error_text(e.value) and "corrupt" in error_text(e.value)


def _small_ham_copy(root: Path, dst: Path, per_class: int = 60) -> Path:
    """``dst`` holding ``per_class`` real mel and nv images (one lesion each) and their metadata rows."""
    images = dst / "HAM10000_images_part_1"
    images.mkdir(parents=True)
    rows, seen, n = [], set(), Counter()
    with open(root / "HAM10000_metadata.csv", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            src = root / "HAM10000_images_part_1" / f"{row['image_id']}.jpg"
            wanted = row["dx"] in ("mel", "nv") and n[row["dx"]] < per_class and row["lesion_id"] not in seen
            if wanted and src.exists():
                seen.add(row["lesion_id"])
                n[row["dx"]] += 1
                shutil.copy(src, images)
                rows.append(row)
        fields = reader.fieldnames
    with open(dst / "HAM10000_metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)
    return dst


_BUSY_WORKER = """
import sys, torch
from monai.data import CacheDataset
from monai.transforms import Compose, Lambdad
from monai_dpaat.data import ham10000_transforms

def busy(label):  # many short GIL-releasing torch ops, as a large volume's transform chain makes
    t = torch.zeros(10_000)
    for _ in range(100_000):
        t = t + 1
    return label

items = [{"image": sys.argv[1], "label": 0}] + [{"image": sys.argv[2], "label": 0}] * 4
CacheDataset(items, Compose([ham10000_transforms(16), Lambdad("label", busy)]).flatten(), num_workers=1, progress=False)
"""


def _run_to_file(cmd: list[str], tmp_path: Path, **kwargs) -> tuple[int, str]:
    """``(exit status, stderr)``; stderr goes to a file as in a terminal (a pipe slows the traceback down, which
    can hide an abort at exit)."""
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err, timeout=300, **kwargs)
    return proc.returncode, (tmp_path / "stderr.txt").read_text()


def test_error_while_a_loader_thread_is_in_torch_exits_1(root, tmp_path):
    """The mechanism of the abort, made certain: CacheDataset's worker thread is still busy in torch ops (the next
    item) when the first item's error ends the program. Without the wait at exit CPython ends that daemon thread
    with pthread_exit inside torch and the process aborts (-6 / 134, "terminate called without an active
    exception") after printing the error."""
    good = tmp_path / "good.jpg"
    shutil.copy(root / "HAM10000_images_part_1" / "ISIC_0024481.jpg", good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:1200])  # truncated
    code, stderr = _run_to_file([sys.executable, "-c", _BUSY_WORKER, str(bad), str(good)], tmp_path)
    assert code == 1, f"exit {code} (-6 / 134: aborted):\n{stderr[-3000:]}"
    assert f"could not load {{'image': '{bad}'}}" in stderr and "truncated" in stderr, stderr[-3000:]


@pytest.mark.slow
def test_bundle_exits_1_naming_a_truncated_jpeg(root, tmp_path):
    """The user's case: a truncated JPEG among the cached training images of the classification bundle exits 1
    with the file named, never 134 (whether it aborted before depended on timing: most runs on a quiet machine)."""
    bundle = REPO / "bundles" / "ham10000_dpaat_classification"
    shutil.copytree(bundle / "configs", tmp_path / "bundle" / "configs")
    data = _small_ham_copy(root, tmp_path / "ham")
    lists = ham10000_datalists(data, classes=("mel", "nv"), n_train=120, n_test=40, val_fraction=0.2, seed=0)
    broken = Path(lists["train"][0]["image"])  # the first item CacheDataset loads: the others are queued behind it
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "['configs/train.json','configs/quick.json']",
           "--bundle_root", str(tmp_path / "bundle"), "--dataset_dir", str(data)]
    code, stderr = _run_to_file(cmd, tmp_path, cwd=tmp_path / "bundle")
    assert code == 1, f"exit {code} (-6 / 134: aborted):\n{stderr[-3000:]}"
    assert f"could not load {{'image': '{broken}'}}" in stderr and "truncated" in stderr, stderr[-3000:]
    assert not (tmp_path / "bundle" / "models" / "model.pt").exists()


def _tiny_ham(root: Path, ids=("ISIC_1", "ISIC_2", "ISIC_3", "ISIC_4")) -> Path:
    """``root/HAM10000_images_part_1`` with small random JPEGs named by ``ids``."""
    folder = root / "HAM10000_images_part_1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id in ids:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{image_id}.jpg")
    return root


def test_metadata_with_bom_or_latin1_is_read_correctly(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark, its plain "CSV" on Windows is Latin-1/cp1252."""
    text = ("lesion_id,image_id,dx,localization\nHAM_1,ISIC_1,mel,tête\nHAM_2,ISIC_2,mel,dos\n"
            "HAM_3,ISIC_3,nv,épaule\nHAM_4,ISIC_4,nv,dos\n")
    expected_first = {"lesion_id": "HAM_1", "image_id": "ISIC_1", "dx": "mel", "localization": "tête"}
    for encoding in ("utf-8-sig", "latin-1"):
        root = _tiny_ham(tmp_path / encoding)
        (root / "HAM10000_metadata.csv").write_bytes(text.encode(encoding))
        rows = read_ham10000_metadata(root / "HAM10000_metadata.csv")
        assert rows[0] == expected_first and [r["localization"] for r in rows[1:]] == ["dos", "épaule", "dos"]
        out = ham10000_datalists(root, classes=("mel", "nv"), n_train=1, n_test=1, val_fraction=None)
        assert sorted(x["lesion_id"] for s in out.values() for x in s) == ["HAM_1", "HAM_2", "HAM_3", "HAM_4"]
    assert (tmp_path / "utf-8-sig" / "HAM10000_metadata.csv").read_bytes()[:3] == b"\xef\xbb\xbf"


def test_16_bit_png_loads_by_its_bit_depth(tmp_path):
    """A 16-bit grayscale PNG is value / 65535 on all three channels (PIL's RGB conversion would clip it to 255)."""
    values = np.array([[0, 257, 1000, 30000], [40000, 50000, 65000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode in ("I;16", "I")  # Pillow < 10.1 opens 16-bit PNGs as "I"
    out = ham10000_transforms(image_size=values.shape)({"image": str(tmp_path / "deep.png"), "label": 1})
    assert out["image"].shape == (3, 2, 4) and out["image"].dtype == torch.float32
    np.testing.assert_allclose(out["image"].numpy(), np.broadcast_to(values / 65535.0, (3, 2, 4)), atol=1e-7)
    gray8 = (values // 257).astype(np.uint8)  # 8-bit grayscale: / 255, repeated to RGB
    Image.fromarray(gray8).save(tmp_path / "gray.png")
    out = ham10000_transforms(image_size=values.shape)({"image": str(tmp_path / "gray.png"), "label": 1})
    np.testing.assert_allclose(out["image"].numpy(), np.broadcast_to(gray8 / 255.0, (3, 2, 4)), atol=1e-7)


def test_integral_labels_of_any_type_are_kept(tmp_path):
    _tiny_ham(tmp_path)
    image = str(tmp_path / "HAM10000_images_part_1" / "ISIC_1.jpg")
    xform = ham10000_transforms(16, num_classes=3)
    for label in (2, 2.0, np.int64(2), np.float32(2.0), torch.tensor(2), torch.tensor([2])):
        out = xform({"image": image, "label": label})["label"]
        assert out.dtype == torch.long and out.shape == () and out.item() == 2, label


def test_image_files_takes_the_folder_literally(tmp_path):
    """``[1]`` in the folder name is part of the name, not a glob character class (which matched ``ham1``)."""
    root = _tiny_ham(tmp_path / "ham[1]", ids=("ISIC_2", "ISIC_1"))
    _tiny_ham(tmp_path / "ham1", ids=("ISIC_9",))
    expected = [str(root / "HAM10000_images_part_1" / f"ISIC_{i}.jpg") for i in (1, 2)]
    assert image_files(root, "HAM10000_images_part_*/*.jpg") == expected
    assert image_files(str(root), "**/*.jpg") == expected  # recursive patterns


def test_inference_config_datalist_uses_image_files(tmp_path):
    from monai.bundle import ConfigParser

    root = _tiny_ham(tmp_path / "ham[1]")
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "ham10000_dpaat_classification" / "configs" / "inference.json"))
    parser.update({"dataset_dir": str(root), "max_images": 3})
    items = parser.get_parsed_content("datalist")
    assert items == [{"image": str(root / "HAM10000_images_part_1" / f"ISIC_{i}.jpg")} for i in (1, 2, 3)]


def test_evaluation_data_checks_datalists_before_any_attack(tmp_path, splits):
    from torch import nn

    from monai_dpaat.data import (CheckClassLabeld, DataError, balanced_subset, check_datalist_labels,
                                  check_image_dims, is_volume)

    items = [{"image": f"{c}{i}.jpg", "label": c} for c in (0, 1) for i in range(3)]
    assert [item["label"] for item in balanced_subset(items, 4)] == [0, 1, 0, 1]
    assert balanced_subset(items, None) == items and not is_volume(items) and not is_volume(None)
    assert is_volume([{"image": ["t1.nii.gz", "t2.nii.gz"]}])
    assert CheckClassLabeld("label", num_classes=2).class_index(torch.tensor(1.0)) == 1
    test = splits["test"][:2]
    check_datalist_labels(test, "list.json", num_classes=3)
    with pytest.raises(DataError, match=r"'list\.json' item 1: label 3 of .* is not a class index"):
        check_datalist_labels([test[0], {**test[1], "label": 3}], "list.json", num_classes=3)
    with pytest.raises(DataError, match=r"item 0: image '.*gone\.jpg' does not exist"):
        check_datalist_labels([{"image": str(tmp_path / "gone.jpg"), "label": 0}], "list.json", None)
    check_image_dims("classification", test, nn.Conv2d(3, 2, 3))
    with pytest.raises(DataError, match=r"is a 2D image, but the network is 3D"):
        check_image_dims("segmentation", test, nn.Conv3d(3, 2, 3))
