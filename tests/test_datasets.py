"""COVID-19-CT-Seg adapter, pre-processing, splits and fingerprints."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from covbench.datasets import covid_ct_seg
from covbench.datasets.base import Case
from covbench.datasets.fingerprint import fingerprint_files
from covbench.datasets.phantom import generate_phantom, write_nifti_gz
from covbench.datasets.preprocess import PreprocessConfig, preprocess_case, preprocess_cases, to_uint8
from covbench.datasets.splits import patient_split
from covbench.errors import CovbenchError

IMG, LES, LUNG = covid_ct_seg.IMAGE_DIR, covid_ct_seg.LESION_DIR, covid_ct_seg.LUNG_DIR


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    return generate_phantom(tmp_path_factory.mktemp("phantom"), n_patients=4, size=64, n_slices=16)


@pytest.fixture()
def data_dir(phantom_dir, tmp_path) -> Path:
    """A private copy to break."""
    return Path(shutil.copytree(phantom_dir, tmp_path / "data"))


# --- adapter ---------------------------------------------------------------------------------------


def test_mask_name_rule():
    assert covid_ct_seg.mask_name("coronacases_org_001") == "coronacases_001"
    assert (
        covid_ct_seg.mask_name("radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm") == "radiopaedia_4_85506_1"
    )
    assert covid_ct_seg.source_of("radiopaedia_4_85506_1") == "radiopaedia"


def test_round_trip_shapes_spacing_from_header(phantom_dir):
    cases = list(covid_ct_seg.load(phantom_dir))
    assert [c.case_id for c in cases] == sorted(c.case_id for c in cases)
    for c in cases:
        img = nib.load(c.files[0])
        assert c.image.shape == img.shape[::-1] and c.image.dtype == np.float32
        assert (
            c.lesion.dtype == np.uint8
            and c.lesion.shape == c.image.shape
            and set(np.unique(c.lesion)) <= {0, 1}
        )
        assert c.lung is not None and c.lung.max() == 1
        assert np.allclose(c.spacing, img.header.get_zooms()[::-1])
        assert c.lesion.any() and not (c.lesion > c.lung).any()


def _write_case(
    root: Path,
    image: np.ndarray,
    affine: np.ndarray,
    lesion=None,
    lung=None,
    name: str = "coronacases_org_001",
) -> None:
    for sub in (IMG, LES, LUNG):
        (root / sub).mkdir(parents=True, exist_ok=True)
    mask = covid_ct_seg.mask_name(name)
    write_nifti_gz(root / IMG / f"{name}.nii.gz", image, affine)
    write_nifti_gz(
        root / LES / f"{mask}.nii.gz", np.zeros(image.shape, np.uint8) if lesion is None else lesion, affine
    )
    if lung is not False:
        write_nifti_gz(
            root / LUNG / f"{mask}.nii.gz", np.ones(image.shape, np.uint8) if lung is None else lung, affine
        )


@pytest.mark.parametrize(
    ("affine", "expected_index", "expected_spacing"),
    [
        # RAS: i=0 is the patient's left, j=0 posterior, k=0 inferior -> Z first, H last, W last
        (np.diag([1.0, 2.0, 3.0, 1.0]), (0, 5, 6), (3.0, 2.0, 1.0)),
        # LPS-like: i=0 is the patient's right, j=0 anterior -> the Case origin
        (np.diag([-1.0, -2.0, 3.0, 1.0]), (0, 0, 0), (3.0, 2.0, 1.0)),
        # superior-first slices: k=0 is the top slice -> Z last
        (np.diag([-1.0, -2.0, -3.0, 1.0]), (3, 0, 0), (3.0, 2.0, 1.0)),
    ],
)
def test_orientation_made_canonical(tmp_path, affine, expected_index, expected_spacing):
    data = np.full((7, 6, 4), -850, np.int16)  # (i, j, k) with x, y, z extents 7, 6, 4; lung HU
    data[0, 0, 0] = 500  # one marked corner voxel
    _write_case(tmp_path, data, affine)
    (case,) = covid_ct_seg.load(tmp_path)
    assert case.image.shape == (4, 6, 7)
    assert tuple(np.argwhere(case.image == 500)[0]) == expected_index
    assert case.spacing == expected_spacing


def test_permuted_axes_made_canonical(tmp_path):
    data = np.full((6, 7, 4), -850, np.int16)  # stored (y, x, z); lung HU
    data[0, 0, 0] = 500
    affine = np.array([[0, -1.0, 0, 0], [-2.0, 0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1]])
    _write_case(tmp_path, data, affine)
    (case,) = covid_ct_seg.load(tmp_path)
    assert case.image.shape == (4, 6, 7) and case.spacing == (3.0, 2.0, 1.0)
    assert tuple(np.argwhere(case.image == 500)[0]) == (0, 0, 0)  # right, anterior, inferior


def test_both_intensity_conventions_give_identical_slices(tmp_path, phantom_dir):
    (case,) = [c for c in covid_ct_seg.load(phantom_dir) if c.intensity == "hu"][:1]
    v = to_uint8(case.image, "hu", (-1250.0, 250.0))  # the Radiopaedia convention, integer 0..255
    hu = (v.astype(np.float64) * 1500 / 255 - 1250).astype(np.float32)  # the same anatomy in HU
    store = lambda a: np.ascontiguousarray(a[:, ::-1, ::-1].transpose(2, 1, 0))  # noqa: E731 (RAS)
    affine = np.diag([*case.spacing[::-1], 1.0])
    lesion, lung = store(case.lesion), store(case.lung)
    _write_case(tmp_path, store(hu), affine, lesion, lung, "coronacases_org_001")
    _write_case(tmp_path, store(v), affine, lesion, lung, "radiopaedia_org_covid-19-pneumonia-9_99_0-dcm")
    a, b = covid_ct_seg.load(tmp_path)
    assert (a.intensity, b.intensity) == ("hu", "window255")
    sa, sb = preprocess_case(a), preprocess_case(b)
    assert len(sa) > 0
    np.testing.assert_array_equal(sa.images, sb.images)
    np.testing.assert_array_equal(sa.masks, sb.masks)
    np.testing.assert_array_equal(sa.spacing, sb.spacing)
    # and with a non-default window the two still agree (within one grey level before CLAHE)
    narrow = (-1000.0, 0.0)
    assert (
        np.abs(to_uint8(a.image, "hu", narrow).astype(int) - to_uint8(b.image, "window255", narrow)).max()
        <= 1
    )


# --- pre-processing --------------------------------------------------------------------------------


def _synthetic_case(lung: bool = True) -> Case:
    image = np.full((6, 100, 80), -1000.0, np.float32)
    image[:, 10:90, 5:75] = 40.0  # body
    lung_mask = np.zeros(image.shape, np.uint8)
    lung_mask[2:4, 20:60, 10:50] = 1  # lungs only in slices 2 and 3
    image[lung_mask > 0] = -850.0
    image += np.random.default_rng(0).normal(0, 20, image.shape).astype(np.float32)  # CT noise
    lesion = np.zeros(image.shape, np.uint8)
    lesion[3, 30:40, 20:30] = 1
    return Case(
        "p1", image, lesion, lung_mask if lung else None, (5.0, 0.5, 0.8), "phantom", "hu", ("p1.nii",)
    )


def test_preprocess_outputs():
    cfg = PreprocessConfig(image_size=32, crop_margin=4, min_lung_pixels=10)
    s = preprocess_case(_synthetic_case(), cfg)
    assert s.images.shape == (2, 32, 32) and s.images.dtype == np.uint8 and s.masks.dtype == np.uint8
    assert s.images.max() > 200 and s.images.min() < 100  # CLAHE keeps the lungs dark
    plain = preprocess_case(_synthetic_case(), dataclasses.replace(cfg, clahe=False))
    assert abs(int(plain.images[0, 16, 16]) - round(400 / 1500 * 255)) <= 8  # -850 HU in the window
    assert list(s.slice_index) == [2, 3]  # slices without lung dropped
    assert set(np.unique(s.masks)) <= {0, 1} and s.masks[0].sum() == 0 and s.masks[1].sum() > 0
    # crop rows 20-4 .. 60+4 (48 px), cols 10-4 .. 50+4 (48 px), resized to 32
    np.testing.assert_allclose(s.spacing, [[0.5 * 48 / 32, 0.8 * 48 / 32]] * 2, rtol=1e-6)
    assert list(s.patient) == ["p1", "p1"] and list(s.source) == ["phantom"] * 2
    # the lesion (rows 30-40, cols 20-30 of the crop origin 16, 6) lands where the scale puts it
    rows, cols = np.nonzero(s.masks[1])
    assert abs(rows.mean() - (35 - 16) * 32 / 48) < 1.5 and abs(cols.mean() - (25 - 6) * 32 / 48) < 1.5


def test_preprocess_options():
    case = _synthetic_case()
    assert list(preprocess_case(case, PreprocessConfig(image_size=32, lesion_only=True)).slice_index) == [3]
    everything = preprocess_case(
        case, PreprocessConfig(image_size=32, select_slices=False, crop_to_lung=False)
    )
    assert len(everything) == 6
    np.testing.assert_allclose(everything.spacing[0], [0.5 * 100 / 32, 0.8 * 80 / 32], rtol=1e-6)
    cfg = PreprocessConfig(image_size=16, window=(-1000, 0), clahe=False)
    assert cfg.to_dict()["window"] == [-1000.0, 0.0]
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg


def test_preprocess_without_lung_mask_estimates_it():
    s = preprocess_case(_synthetic_case(lung=False), PreprocessConfig(image_size=32, min_lung_pixels=10))
    assert list(s.slice_index) == [2, 3]
    # body box rows 10..90 (+4), cols 5..75 (+4)
    np.testing.assert_allclose(s.spacing[0], [0.5 * 88 / 32, 0.8 * 78 / 32], rtol=1e-6)


def test_no_slice_left_is_an_error_naming_the_file():
    case = _synthetic_case()
    case.lung[:] = 0
    with pytest.raises(CovbenchError, match=r"p1\.nii: no slices left"):
        preprocess_case(case)
    bad: list[str] = []
    with pytest.warns(UserWarning, match="skipped 1"):
        s = preprocess_cases(
            [case, _synthetic_case()], PreprocessConfig(image_size=32), skip_bad=True, bad=bad
        )
    assert len(s) == 2 and len(bad) == 1


def test_preprocess_phantom_fractions(phantom_dir):
    cases = list(covid_ct_seg.load(phantom_dir))
    s = preprocess_cases(cases, PreprocessConfig(image_size=64))
    n_lung = sum(int((c.lung.sum(axis=(1, 2)) >= 64).sum()) for c in cases)
    assert len(s) == n_lung < sum(c.image.shape[0] for c in cases)
    assert s.masks.any(axis=(1, 2)).mean() >= 0.3
    assert sorted(set(s.patient)) == sorted(c.case_id for c in cases)


# --- bad input -------------------------------------------------------------------------------------


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(CovbenchError, match="does not exist"):
        list(covid_ct_seg.load(tmp_path / "nope"))
    with pytest.raises(CovbenchError, match=f"{IMG}: folder missing"):
        list(covid_ct_seg.load(tmp_path))
    (tmp_path / IMG).mkdir()
    with pytest.raises(CovbenchError, match="no .nii or .nii.gz files"):
        list(covid_ct_seg.load(tmp_path))


def _first(data_dir: Path, sub: str) -> Path:
    return sorted((data_dir / sub).iterdir())[0]


def test_truncated_gzip(data_dir):
    p = _first(data_dir, IMG)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(CovbenchError, match=rf"{p.name}: cannot read NIfTI"):
        list(covid_ct_seg.load(data_dir))


def test_image_without_mask(data_dir):
    _first(data_dir, LES).unlink()
    with pytest.raises(CovbenchError, match="coronacases_org_001.nii.gz: image without a lesion mask"):
        list(covid_ct_seg.load(data_dir))


def _rewrite(path: Path, fn) -> None:
    img = nib.load(path)
    data, affine = fn(np.asarray(img.dataobj), img.affine.copy())
    write_nifti_gz(path, data, affine)


def test_shape_mismatch(data_dir):
    p = _first(data_dir, LES)
    _rewrite(p, lambda d, a: (d[:, :, :-1], a))
    with pytest.raises(CovbenchError, match=rf"{p.name}: shape .* differs from image"):
        list(covid_ct_seg.load(data_dir))


def test_affine_mismatch(data_dir):
    p = _first(data_dir, LUNG)

    def shift(d, a):
        a[:3, 3] += 20.0
        return d, a

    _rewrite(p, shift)
    with pytest.raises(CovbenchError, match=rf"{p.name}: affine differs"):
        list(covid_ct_seg.load(data_dir))


def test_mask_labels_outside(data_dir):
    p = _first(data_dir, LES)
    _rewrite(p, lambda d, a: (np.where(d > 0, 7, 0).astype(np.uint8), a))
    with pytest.raises(CovbenchError, match=rf"{p.name}: mask values 7 outside the labels \[0, 1\]"):
        list(covid_ct_seg.load(data_dir))


def test_nan_voxels(data_dir):
    p = _first(data_dir, IMG)

    def nan(d, a):
        d = d.astype(np.float32)
        d[3, 3, 3] = np.nan
        d[4, 4, 4] = np.inf
        return d, a

    _rewrite(p, nan)
    with pytest.raises(CovbenchError, match=rf"{p.name}: 2 NaN or infinite voxels"):
        list(covid_ct_seg.load(data_dir))


def test_empty_lung_mask(data_dir):
    p = _first(data_dir, LUNG)
    _rewrite(p, lambda d, a: (np.zeros_like(d), a))
    with pytest.raises(CovbenchError, match=rf"{p.name}: lung mask is empty"):
        list(covid_ct_seg.load(data_dir))


def test_not_a_nifti(data_dir):
    p = _first(data_dir, IMG)
    p.write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    with pytest.raises(CovbenchError, match=rf"{p.name}: cannot read NIfTI"):
        list(covid_ct_seg.load(data_dir))


def test_skip_bad_collects_and_warns(data_dir):
    _first(data_dir, LES).unlink()
    p = sorted((data_dir / IMG).iterdir())[1]
    p.write_bytes(b"\x1f\x8b garbage")
    bad: list[str] = []
    with pytest.warns(UserWarning, match="skipped 2 bad case"):
        cases = list(covid_ct_seg.load(data_dir, skip_bad=True, bad=bad))
    assert len(cases) == 2 and len(bad) == 2
    assert "image without a lesion mask" in bad[0] and p.name in bad[1]


def test_lung_from_combined_mask(data_dir):
    """Without Lung_Mask/, the lungs come from Lung_and_Infection_Mask/ (1, 2 lungs, 3 infection)."""
    comb = data_dir / covid_ct_seg.COMBINED_DIR
    comb.mkdir()
    for p in sorted((data_dir / LUNG).iterdir()):
        lung, les = nib.load(p), nib.load(data_dir / LES / p.name)
        d = np.where(np.asarray(les.dataobj) > 0, 3, np.asarray(lung.dataobj)).astype(np.uint8)
        write_nifti_gz(comb / p.name, d, lung.affine)
    expected = list(covid_ct_seg.load(data_dir))
    shutil.rmtree(data_dir / LUNG)
    got = list(covid_ct_seg.load(data_dir))
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a.lung, b.lung)
        np.testing.assert_array_equal(a.lesion, b.lesion)


# --- splits ----------------------------------------------------------------------------------------

IDS = [f"coronacases_{i:03d}" for i in range(1, 11)] + [f"radiopaedia_{i}" for i in range(10)]
SOURCES = [i.split("_")[0] for i in IDS]


def test_split_disjoint_complete_balanced():
    s = patient_split(IDS, SOURCES, seed=0)
    parts = [set(s[k]) for k in ("train", "val", "test")]
    assert [len(p) for p in parts] == [12, 4, 4]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(IDS)
    for part, n in zip(parts, (6, 2, 2), strict=True):
        assert sum(p.startswith("coronacases") for p in part) == n


def test_split_deterministic_and_order_free():
    rng = np.random.default_rng(1)
    order = rng.permutation(len(IDS))
    a = patient_split(IDS, SOURCES, seed=5)
    b = patient_split([IDS[i] for i in order], [SOURCES[i] for i in order], seed=5)
    assert a == b
    assert any(patient_split(IDS, SOURCES, seed=k) != a for k in range(6, 9))


def test_split_small_and_bad_inputs():
    s = patient_split(["a", "b", "c"], ["x"] * 3)
    assert all(len(v) == 1 for v in s.values())
    with pytest.raises(CovbenchError, match="at least 3 patients"):
        patient_split(["a", "b"], ["x", "x"])
    with pytest.raises(CovbenchError, match="sources"):
        patient_split(["a", "b", "c"], ["x"])
    with pytest.raises(CovbenchError, match="two sources"):
        patient_split(["a", "a", "b", "c"], ["x", "y", "x", "x"])
    with pytest.raises(CovbenchError, match="fractions"):
        patient_split(["a", "b", "c"], ["x"] * 3, fractions=(0.5, 0.5, 0.5))


# --- fingerprint -----------------------------------------------------------------------------------


def test_fingerprint(tmp_path, phantom_dir):
    files = sorted(phantom_dir.rglob("*.nii.gz"))
    fp = fingerprint_files(files)
    assert fp == fingerprint_files(reversed(files)) and len(fp) == 64
    moved = Path(shutil.copytree(phantom_dir, tmp_path / "elsewhere"))
    moved_files = sorted(moved.rglob("*.nii.gz"))
    assert fingerprint_files(moved_files) == fp
    moved_files[0].write_bytes(moved_files[0].read_bytes() + b"\0")
    assert fingerprint_files(moved_files) != fp
    with pytest.raises(CovbenchError):
        fingerprint_files([tmp_path / "missing.nii.gz", *files])


def test_dataset_specs_registered():
    from covbench.registry import get_dataset, reload

    reload()
    assert get_dataset("covid-ct-seg").needs_data_dir
    assert not get_dataset("phantom").needs_data_dir


def test_reads_the_zip_archives_directly(phantom_dir, tmp_path):
    import zipfile

    for sub in (IMG, LES, LUNG):
        with zipfile.ZipFile(tmp_path / f"{sub}.zip", "w") as zf:
            for p in sorted((phantom_dir / sub).iterdir()):
                zf.write(p, f"{sub}/{p.name}" if sub == IMG else p.name)
    from_zip = list(covid_ct_seg.load(tmp_path))
    from_dir = list(covid_ct_seg.load(phantom_dir))
    assert [c.case_id for c in from_zip] == [c.case_id for c in from_dir]
    for a, b in zip(from_zip, from_dir, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.lung, b.lung)
        assert a.spacing == b.spacing and all(Path(f).is_file() for f in a.files)
    assert sorted(p.name for p in covid_ct_seg.case_files(tmp_path)) == sorted(
        f"{s}.zip" for s in (IMG, LES, LUNG)
    )
    assert fingerprint_files(covid_ct_seg.case_files(tmp_path))


def test_fingerprint_memo_trusts_only_settled_files(tmp_path):
    import json
    import os
    import time

    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 10)
    old = time.time() - 100
    os.utime(f, (old, old))
    memo = tmp_path / "memo.json"
    fp = fingerprint_files([f], memo=memo)
    assert json.loads(memo.read_text())[str(f.resolve())][2]  # settled: memoised
    f.write_bytes(b"y" * 10)  # same size, new mtime: hashed again
    fresh = fingerprint_files([f], memo=memo)
    assert fresh != fp
    entry = json.loads(memo.read_text())[str(f.resolve())]
    assert entry[1] != f.stat().st_mtime_ns  # a file changed just now is not memoised (racy mtime)
