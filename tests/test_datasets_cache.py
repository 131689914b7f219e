"""The pre-processed slice cache: keyed by data fingerprint and config, atomic, never partial."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from covbench.datasets import prepare as prep
from covbench.datasets.phantom import generate_phantom, write_nifti_gz
from covbench.datasets.prepare import prepare_slices
from covbench.datasets.preprocess import PreprocessConfig
from covbench.errors import CovbenchError

CFG = PreprocessConfig(image_size=32)


@pytest.fixture(scope="module")
def phantom_src(tmp_path_factory) -> Path:
    return generate_phantom(tmp_path_factory.mktemp("ph"), n_patients=4, size=48, n_slices=12)


@pytest.fixture()
def data(phantom_src, tmp_path) -> Path:
    return Path(shutil.copytree(phantom_src, tmp_path / "data"))


def _entries(cache: Path) -> list[str]:
    folder = cache / "slices"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_second_run_is_a_cache_hit_without_reading_data(data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = prepare_slices("covid-ct-seg", data, CFG, cache_dir=cache)
    assert not first.cache_hit and first.cache_path is not None and len(first.slices) > 0
    assert _entries(cache) == [first.cache_path.name]  # no temporary folder left

    def boom(*a, **k):
        raise AssertionError("pre-processing ran on a cache hit")

    monkeypatch.setattr(prep, "preprocess_cases", boom)
    second = prepare_slices("covid-ct-seg", data, CFG, cache_dir=cache)
    assert second.cache_hit and second.fingerprint == first.fingerprint and second.n_cases == 4
    for name in prep.FIELDS:
        np.testing.assert_array_equal(getattr(second.slices, name), getattr(first.slices, name))
    assert isinstance(second.slices.images, np.memmap)  # shared pages, not a private copy


def test_key_changes_with_config_and_content(data, tmp_path):
    cache = tmp_path / "cache"
    a = prepare_slices("covid-ct-seg", data, CFG, cache_dir=cache)
    b = prepare_slices("covid-ct-seg", data, PreprocessConfig(image_size=32, clahe=False), cache_dir=cache)
    assert not b.cache_hit and b.cache_path != a.cache_path
    img = sorted((data / "Infection_Mask").iterdir())[0]
    img.write_bytes(img.read_bytes())  # same bytes, new mtime: still a hit
    assert prepare_slices("covid-ct-seg", data, CFG, cache_dir=cache).cache_hit
    lesion = sorted((data / "Infection_Mask").iterdir())[-1]
    nii = nib.load(lesion)
    arr = np.asarray(nii.dataobj).copy()
    arr[0, 0, 0] = 1 - arr[0, 0, 0]  # other content: a miss
    write_nifti_gz(lesion, arr, nii.affine)
    c = prepare_slices("covid-ct-seg", data, CFG, cache_dir=cache)
    assert not c.cache_hit and c.fingerprint != a.fingerprint


def test_bad_input_writes_no_cache(data, tmp_path):
    cache = tmp_path / "cache"
    p = sorted((data / "COVID-19-CT-Seg_20cases").iterdir())[-1]
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(CovbenchError, match=rf"{p.name}: cannot read NIfTI"):
        prepare_slices("covid-ct-seg", data, CFG, cache_dir=cache)
    assert _entries(cache) == []
    with pytest.warns(UserWarning, match="skipped 1 bad case"):
        got = prepare_slices("covid-ct-seg", data, CFG, cache_dir=cache, skip_bad=True)
    assert got.n_cases == 3 and len(got.skipped) == 1 and p.name in got.skipped[0]
    with pytest.warns(UserWarning, match="cached data skipped 1"):
        again = prepare_slices("covid-ct-seg", data, CFG, cache_dir=cache, skip_bad=True)
    assert again.cache_hit and again.skipped == got.skipped


def test_no_slices_left_is_an_error_before_caching(data, tmp_path):
    cache = tmp_path / "cache"
    cfg = PreprocessConfig(image_size=32, min_lung_pixels=10**6)
    with pytest.raises(CovbenchError, match="no slices left after selection"):
        prepare_slices("covid-ct-seg", data, cfg, cache_dir=cache)
    assert _entries(cache) == []


def test_phantom_and_predefined_parts(tmp_path, monkeypatch):
    monkeypatch.setenv("COVBENCH_CACHE", str(tmp_path / "home-cache"))
    got = prepare_slices("phantom", None, CFG, options={"n_patients": 3, "size": 48, "n_slices": 12})
    assert got.n_cases == 3 and set(got.part_of.values()) == {None}
    assert got.cache_path is not None and got.cache_path.is_relative_to(tmp_path / "home-cache")
    with pytest.raises(CovbenchError, match="needs a data folder"):
        prepare_slices("covid-ct-seg", None, CFG)


def test_save_load_round_trip_and_damage(tmp_path, data):
    got = prepare_slices("covid-ct-seg", data, CFG, cache_dir=tmp_path / "c")
    (got.cache_path / "masks.npy").write_bytes(b"broken")
    with pytest.raises(CovbenchError, match="damaged slice cache"):
        prep.load_slices(got.cache_path)
