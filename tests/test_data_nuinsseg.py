"""NuInsSeg-layout loaders on the 15 real H&E tiles (``nuclei_he``) and on derived broken copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import error_text
import torch
from monai.data import DataLoader, Dataset
from PIL import Image

from monai_dpaat.data import (
    nuinsseg_datalist,
    nuinsseg_eval_transforms,
    nuinsseg_train_transforms,
    split_datalist,
)

ORGAN = "tcga_miccai2015"



@pytest.fixture(scope="module")
def root(data_dir) -> Path:
    return data_dir / "nuclei_he"


@pytest.fixture(scope="module")
def binary(root):
    return nuinsseg_datalist(root, target="binary")


@pytest.fixture(scope="module")
def instance(root):
    return nuinsseg_datalist(root, target="instance")


def test_datalist_pairs_all_tiles(binary, instance, root):
    assert len(binary) == len(instance) == 15
    for items, folder, ext in ((binary, "mask binary", ".png"), (instance, "label masks", ".tif")):
        assert [x["index"] for x in items] == list(range(15))
        for x in items:
            assert x["organ"] == ORGAN
            assert Path(x["image"]).stem == Path(x["label"]).stem == x["name"]
            assert Path(x["label"]).parent.name == folder and x["label"].endswith(ext)
    assert [x["name"] for x in binary] == [f"{ORGAN}_{i:02d}" for i in range(1, 16)]
    # an organ folder itself is accepted as root
    assert nuinsseg_datalist(root / ORGAN) == binary


def test_eval_transforms_full_tiles(binary, instance):
    for k, n_nuclei in ((0, 351), (9, 218)):  # tile 01 (643x488) and the largest, tile 10 (1032x808)
        b = nuinsseg_eval_transforms("binary")(binary[k])
        i = nuinsseg_eval_transforms("instance")(instance[k])
        w, h = Image.open(binary[k]["image"]).size
        assert b["image"].shape == (3, h, w) and b["label"].shape == (1, h, w) == i["label"].shape
        assert b["image"].dtype == torch.float32 and 0 <= b["image"].min() and b["image"].max() <= 1
        assert set(torch.unique(b["label"]).tolist()) == {0.0, 1.0}
        assert i["label"].dtype == torch.int64
        n_inst = len(torch.unique(i["label"])) - 1
        assert n_inst == n_nuclei  # ids 1..n, the counts of the source annotations
        assert i["label"].max() == n_inst
        assert torch.equal(b["label"] > 0, i["label"] > 0)  # binary mask = union of the instances
        assert b["image"].meta["filename_or_obj"].endswith(binary[k]["name"] + ".png")


def test_train_transforms_patches(binary, instance):
    loader = DataLoader(Dataset(binary[:2], nuinsseg_train_transforms((96, 96), num_samples=4)), batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 3, 96, 96) and batch["label"].shape == (8, 1, 96, 96)
    assert set(torch.unique(batch["label"]).tolist()) == {0.0, 1.0}
    assert (batch["label"].flatten(1).amax(1) > 0).sum() >= 4  # pos/neg sampling: half centred on nuclei
    assert batch["index"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    out = nuinsseg_train_transforms(64, num_samples=2, target="instance", sampler="uniform")(instance[1])
    assert len(out) == 2 and out[0]["label"].dtype == torch.int64 and out[0]["label"].max() > 1


def test_split_datalist(binary, tmp_path):
    train, val = split_datalist(binary, by="image", val_fraction=0.2, seed=0)
    assert len(train) == 12 and len(val) == 3
    assert {x["name"] for x in train} | {x["name"] for x in val} == {x["name"] for x in binary}
    assert not {x["name"] for x in train} & {x["name"] for x in val}
    assert [x["index"] for x in train] == list(range(12)) and [x["index"] for x in val] == [0, 1, 2]
    assert split_datalist(binary, by="image", seed=0) == (train, val)
    assert split_datalist(binary, by="image", seed=1) != (train, val)
    with pytest.raises(ValueError, match=r"1 group\(s\).*by='image'"):
        split_datalist(binary, by="organ")
    organs = [{**x, "organ": ("liver", "kidney", "colon")[i % 3]} for i, x in enumerate(binary)]
    tr, va = split_datalist(organs, by="organ", val_fraction=0.3)
    assert len({x["organ"] for x in va}) == 1 and not {x["organ"] for x in tr} & {x["organ"] for x in va}
    assert len(tr) + len(va) == 15
    path = tmp_path / "datalist.json"  # a Decathlon-style JSON is accepted too
    path.write_text(json.dumps({"training": [{k: x[k] for k in ("image", "label", "name")} for x in binary]}))
    from_json = split_datalist(path, by="image", val_fraction=0.2, seed=0)
    assert [[x["name"] for x in part] for part in from_json] == [[x["name"] for x in part] for part in (train, val)]


def _copy_tiles(root: Path, dst: Path, names: list[str]) -> Path:
    """Small derived copy of a few tiles (64x64 crops) in the NuInsSeg layout."""
    for folder in ("tissue images", "mask binary", "label masks"):
        (dst / "organ_a" / folder).mkdir(parents=True)
        for n in names:
            src = next((root / ORGAN / folder).glob(n + ".*"))
            Image.open(src).crop((0, 0, 64, 64)).save(dst / "organ_a" / folder / src.name)
    return dst / "organ_a"


def test_missing_folder_and_mask(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        nuinsseg_datalist(tmp_path / "no_such_dir")
    with pytest.raises(FileNotFoundError, match="no NuInsSeg organ folder"):
        nuinsseg_datalist(tmp_path)
    organ = _copy_tiles(root, tmp_path, [f"{ORGAN}_01", f"{ORGAN}_02"])
    (organ / "mask binary" / f"{ORGAN}_02.png").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{ORGAN}_02\.png' has no mask"):
        nuinsseg_datalist(tmp_path, target="binary")
    assert len(nuinsseg_datalist(tmp_path, target="instance")) == 2
    shutil.rmtree(organ / "label masks")
    with pytest.raises(FileNotFoundError, match="label masks"):
        nuinsseg_datalist(tmp_path, target="instance")
    with pytest.raises(ValueError, match="'semantic'"):
        nuinsseg_datalist(tmp_path, target="semantic")


def test_mask_size_mismatch(root, tmp_path):
    organ = _copy_tiles(root, tmp_path, [f"{ORGAN}_03"])
    mask = organ / "mask binary" / f"{ORGAN}_03.png"
    Image.open(mask).crop((0, 0, 60, 64)).save(mask)
    with pytest.raises(ValueError, match=rf"{ORGAN}_03\.png' is 64x60 .* is 64x64"):
        nuinsseg_datalist(tmp_path)
    items = nuinsseg_datalist(tmp_path, validate=False)
    with pytest.raises(RuntimeError) as e:
        nuinsseg_eval_transforms()(items[0])
    assert "spatial shapes differ" in error_text(e.value) and mask.name in error_text(e.value)


def test_corrupt_png_and_small_tile_padding(root, tmp_path):
    organ = _copy_tiles(root, tmp_path, [f"{ORGAN}_04", f"{ORGAN}_05"])
    out = nuinsseg_train_transforms((96, 96), num_samples=2)(nuinsseg_datalist(tmp_path)[0])
    assert out[0]["image"].shape == (3, 96, 96)  # 64x64 tile padded up to the patch
    image = organ / "tissue images" / f"{ORGAN}_05.png"
    image.write_bytes(image.read_bytes()[:40])  # truncated PNG
    with pytest.raises(ValueError, match=rf"{ORGAN}_05\.png' is unreadable or corrupt"):
        nuinsseg_datalist(tmp_path)
    items = nuinsseg_datalist(tmp_path, validate=False)
    with pytest.raises(RuntimeError) as e:
        nuinsseg_eval_transforms()(items[1])
    assert image.name in error_text(e.value) and "corrupt" in error_text(e.value)
    np.testing.assert_array_equal(nuinsseg_eval_transforms()(items[0])["label"].shape, (1, 64, 64))


def test_rgb_mask_with_equal_channels_reads_as_grayscale(binary, tmp_path):
    """A grayscale mask saved as RGB is converted (differing channels are refused: see the bad-input table)."""
    item = binary[0]
    rgb = tmp_path / "mask_rgb.png"
    Image.open(item["label"]).convert("RGB").save(rgb)
    ref = nuinsseg_eval_transforms()(item)["label"]
    out = nuinsseg_eval_transforms()({**item, "label": str(rgb)})["label"]
    assert out.shape == ref.shape == (1, *ref.shape[1:]) and torch.equal(out, ref)
    assert out.sum() > 0


def test_16_bit_tile_loads_by_its_bit_depth(tmp_path):
    values = np.arange(0, 65536, 1024, dtype=np.uint16).reshape(8, 8)
    values[-1, -1] = 65535
    Image.fromarray(values).save(tmp_path / "tile.png")
    Image.fromarray(np.where(values > 30000, 255, 0).astype(np.uint8)).save(tmp_path / "mask.png")
    out = nuinsseg_eval_transforms()({"image": str(tmp_path / "tile.png"), "label": str(tmp_path / "mask.png")})
    np.testing.assert_allclose(out["image"].numpy(), np.broadcast_to(values / 65535.0, (3, 8, 8)), atol=1e-7)
    assert out["label"].tolist() == [(values > 30000).astype(np.float32).tolist()]


def test_inference_config_datalist_and_preprocessing(root, binary):
    """The bundle's inference.json: every tile (image_files), loaded as the evaluation transforms load images."""
    from monai.bundle import ConfigParser

    bundle = Path(__file__).resolve().parents[1] / "bundles" / "nuinsseg_adversarial_segmentation"
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({"dataset_dir": str(root)})
    items = parser.get_parsed_content("datalist")
    assert [x["image"] for x in items] == [x["image"] for x in binary]
    out = parser.get_parsed_content("preprocessing")(items[0])
    assert set(out) == {"image"}
    ref = np.asarray(Image.open(items[0]["image"]).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(out["image"].numpy(), ref, atol=1e-6)
    assert out["image"].meta["filename_or_obj"] == items[0]["image"]  # SaveImaged names the prediction by it
