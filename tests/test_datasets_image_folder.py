"""The image-folder adapter: layout, pairing, bad inputs, and the real COVID-SemiSeg slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covbench.datasets import image_folder
from covbench.datasets.preprocess import PreprocessConfig, preprocess_cases
from covbench.errors import CovbenchError

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "covid_semiseg"


def _slice(rng, h=60, w=50):
    img = rng.integers(0, 255, (h, w), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[10:20, 10:25] = 255
    return img, mask


def _write(root: Path, part: str | None, stem: str, img, mask, img_ext=".png", mask_ext=".png"):
    base = root / part if part else root
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "masks").mkdir(parents=True, exist_ok=True)
    for arr, sub, ext in ((img, "images", img_ext), (mask, "masks", mask_ext)):
        if arr is None:
            continue
        path = base / sub / f"{stem}{ext}"
        if ext == ".npy":
            np.save(path, arr)
        else:
            Image.fromarray(arr).save(path)


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for part, stems in (("train", ["3", "10", "2"]), ("test", ["7", "8"])):
        for s in stems:
            _write(tmp_path, part, s, *_slice(rng))
    return tmp_path


def test_layout_pairing_and_split(folder):
    cases = list(image_folder.load(folder))
    assert [c.case_id for c in cases] == ["2", "3", "10", "7", "8"]  # numeric order per part
    assert [c.split for c in cases] == ["train"] * 3 + ["test"] * 2
    c = cases[0]
    assert c.image.shape == (1, 60, 50) and c.image.dtype == np.float32 and c.intensity == "display"
    assert c.lesion.dtype == np.uint8 and c.lesion.sum() == 150 and c.lesion.max() == 1
    assert c.lung is None and c.spacing == (1.0, 1.0, 1.0) and c.slice_offset == 2
    assert c.source == folder.name


def test_flat_layout_npy_tif_and_options(tmp_path):
    rng = np.random.default_rng(1)
    img, mask = _slice(rng)
    _write(tmp_path, None, "a", (img.astype(np.int16) * 4 - 1000), mask // 255, ".npy", ".tif")
    (cases,) = [list(image_folder.load(tmp_path, spacing=(0.7, 0.8), source="mine"))]
    (c,) = cases
    assert c.intensity == "hu" and c.split is None and c.spacing == (1.0, 0.7, 0.8) and c.source == "mine"
    assert c.image.min() < -900 and c.lesion.sum() == 150


def test_meta_csv_patients_and_spacing(folder):
    (folder / "slices.csv").write_text(
        "stem,patient,spacing\n2,p1,0.5\n3,p1,0.5\n10,p2,0.8\n7,p3,0.6\n8,p3,0.6\n"
    )
    cases = list(image_folder.load(folder))
    assert [c.case_id for c in cases] == ["p1", "p1", "p2", "p3", "p3"]
    assert cases[2].spacing == (1.0, 0.8, 0.8)
    s = preprocess_cases(cases, PreprocessConfig(image_size=32))
    assert list(s.slice_index) == [2, 3, 10, 7, 8] and list(s.patient[:2]) == ["p1", "p1"]
    assert image_folder.case_files(folder)[-1].name == "slices.csv"


def test_palette_masks_give_indices(tmp_path):
    rng = np.random.default_rng(2)
    img, _ = _slice(rng)
    mask = np.zeros(img.shape, np.uint8)
    mask[5:10, 5:10], mask[20:30, 20:30] = 1, 2
    pal = Image.fromarray(mask, mode="P")
    pal.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    _write(tmp_path, None, "s", img, None)
    pal.save(tmp_path / "masks" / "s.png")
    with pytest.raises(CovbenchError, match=r"s\.png: mask values 2 outside the labels"):
        list(image_folder.load(tmp_path))
    (c,) = image_folder.load(tmp_path, mask_labels=(0, 1, 2))
    assert c.lesion.sum() == 25 + 100


# --- bad input -------------------------------------------------------------------------------------


def test_missing_and_empty(tmp_path):
    with pytest.raises(CovbenchError, match="does not exist"):
        list(image_folder.load(tmp_path / "nope"))
    with pytest.raises(CovbenchError, match="no images/ folder"):
        list(image_folder.load(tmp_path))
    (tmp_path / "images").mkdir()
    with pytest.raises(CovbenchError, match="images: no image files"):
        list(image_folder.load(tmp_path))


def test_image_without_mask(folder):
    (folder / "train" / "masks" / "3.png").unlink()
    with pytest.raises(CovbenchError, match=r"train/images/3\.png: image without a mask"):
        list(image_folder.load(folder))


def test_shape_mismatch(folder):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folder / "test" / "masks" / "7.png")
    with pytest.raises(CovbenchError, match=r"7\.png: shape \(10, 10\) differs from image 7\.png"):
        list(image_folder.load(folder))


def test_mask_values_outside_labels(folder):
    m = np.zeros((60, 50), np.uint8)
    m[0, 0], m[1, 1] = 128, 255
    Image.fromarray(m).save(folder / "train" / "masks" / "10.png")
    with pytest.raises(CovbenchError, match=r"10\.png: mask values 128 outside the labels"):
        list(image_folder.load(folder))


def test_unreadable_and_truncated_images(folder):
    (folder / "train" / "images" / "2.png").write_bytes(b"not an image")
    with pytest.raises(CovbenchError, match=r"2\.png: cannot read image"):
        list(image_folder.load(folder))
    good = folder / "train" / "images" / "3.png"
    (folder / "train" / "images" / "2.png").unlink()
    (folder / "train" / "masks" / "2.png").unlink()
    good.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CovbenchError, match=r"3\.png: cannot read image"):
        list(image_folder.load(folder))


def test_nan_pixels(tmp_path):
    img = np.zeros((8, 8), np.float32)
    img[2, 2] = np.nan
    _write(tmp_path, None, "n", img, np.zeros((8, 8), np.uint8), ".npy")
    with pytest.raises(CovbenchError, match=r"n\.npy: 1 NaN or infinite pixels"):
        list(image_folder.load(tmp_path))


def test_duplicate_stems(folder):
    Image.fromarray(np.zeros((60, 50), np.uint8)).save(folder / "train" / "images" / "3.jpg")
    with pytest.raises(CovbenchError, match="two files with stem '3'"):
        list(image_folder.load(folder))


def test_skip_bad(folder):
    (folder / "train" / "masks" / "3.png").unlink()
    (folder / "test" / "images" / "8.png").write_bytes(b"junk")
    bad: list[str] = []
    with pytest.warns(UserWarning, match="skipped 2 bad slice"):
        cases = list(image_folder.load(folder, skip_bad=True, bad=bad))
    assert [c.case_id for c in cases] == ["2", "10", "7"] and len(bad) == 2


# --- the real slices -------------------------------------------------------------------------------


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real/covid_semiseg not present")
def test_real_covid_semiseg():
    cases = list(image_folder.load(REAL))
    assert len(cases) == 98
    assert sum(c.split == "train" for c in cases) == 50 and sum(c.split == "test" for c in cases) == 48
    assert all(c.lesion.any() for c in cases)  # every doctor-labelled slice has lesion
    s = preprocess_cases(cases, PreprocessConfig(image_size=64))
    assert len(s) == 98 and s.images.shape == (98, 64, 64)
    assert 0.005 < s.masks.mean() < 0.4
