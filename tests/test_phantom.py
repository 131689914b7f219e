"""The synthetic phantom: deterministic bytes, real layout and naming, plausible content."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from covbench.datasets import covid_ct_seg
from covbench.datasets.phantom import ensure_phantom, generate_phantom, phantom_names

SMALL = {"n_patients": 4, "size": 64, "n_slices": 16}


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = _digests(generate_phantom(tmp_path / "a", seed=3, **SMALL))
    b = _digests(generate_phantom(tmp_path / "b", seed=3, **SMALL))
    c = _digests(generate_phantom(tmp_path / "c", seed=4, **SMALL))
    assert a == b
    assert len(a) == 3 * SMALL["n_patients"] + 1
    images = [k for k in a if k.startswith(covid_ct_seg.IMAGE_DIR)]
    assert all(a[k] != c[k] for k in images)


def test_release_layout_and_naming(tmp_path):
    root = generate_phantom(tmp_path, **SMALL)
    assert (root / "PHANTOM.md").read_text().lower().count("synthetic") >= 1
    names = sorted(p.name for p in (root / covid_ct_seg.IMAGE_DIR).iterdir())
    assert names[:2] == ["coronacases_org_001.nii.gz", "coronacases_org_002.nii.gz"]
    assert all(
        n.startswith("radiopaedia_org_covid-19-pneumonia-") and n.endswith("-dcm.nii.gz") for n in names[2:]
    )
    for i in range(SMALL["n_patients"]):
        image, mask = phantom_names(i, SMALL["n_patients"])
        assert covid_ct_seg.mask_name(image) == mask
        assert (root / covid_ct_seg.LESION_DIR / f"{mask}.nii.gz").is_file()
        assert (root / covid_ct_seg.LUNG_DIR / f"{mask}.nii.gz").is_file()


def test_content_reads_back_through_the_adapter(tmp_path):
    cases = list(covid_ct_seg.load(generate_phantom(tmp_path, n_patients=4, size=96, n_slices=24)))
    assert [c.intensity for c in cases] == ["hu", "hu", "window255", "window255"]
    assert [c.source for c in cases] == ["coronacases"] * 2 + ["radiopaedia"] * 2
    spacings = {c.spacing for c in cases}
    assert len(spacings) == 4  # varies per patient
    for c in cases:
        assert c.image.shape == (24, 96, 96)
        assert 1.5 <= c.spacing[0] <= 5.0 and c.spacing[1] == c.spacing[2]
        assert 0.6 * 512 / 96 <= c.spacing[1] <= 0.9 * 512 / 96
        assert not (c.lesion.astype(bool) & ~c.lung.astype(bool)).any()  # lesions inside the lungs
        lung_slices = c.lung.any(axis=(1, 2))
        assert not lung_slices[:2].any() and not lung_slices[-2:].any()  # no lung at the ends
        assert c.lesion.any(axis=(1, 2))[lung_slices].mean() >= 0.3
        if c.intensity == "hu":
            assert c.image.min() <= -1000 and np.median(c.image[c.lung > 0]) < -400
        else:
            assert 0 <= c.image.min() and c.image.max() <= 255
        # the patient's right lung (label 2) lies on the image's left (small W)
        z = int(np.nonzero(lung_slices)[0].mean())
        assert c.lung[z, :, : 96 // 2].sum() > 0 and c.lung[z, :, 96 // 2 :].sum() > 0


def test_ensure_phantom_generates_once(tmp_path):
    first = ensure_phantom(tmp_path, **SMALL)
    stamp = {p: p.stat().st_mtime_ns for p in first.rglob("*.nii.gz")}
    again = ensure_phantom(tmp_path, **SMALL)
    assert again == first
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*.nii.gz")} == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary folder left behind
    assert ensure_phantom(tmp_path, seed=1, **SMALL) != first


def test_ensure_phantom_rejects_unknown_options(tmp_path):
    with pytest.raises(TypeError):
        ensure_phantom(tmp_path, patients=3)


def test_phantom_spec_reads_through_the_real_adapter(tmp_path):
    from covbench.datasets.phantom import SPEC

    assert SPEC.name == "phantom" and not SPEC.needs_data_dir
    cases = list(SPEC.load(tmp_path, **SMALL))
    assert len(cases) == 4 and all(c.files for c in cases)


@pytest.mark.process
def test_default_phantom_lesion_share_and_speed(tmp_path):
    import time

    start = time.process_time()  # CPU seconds: what the generator costs, not how busy the machine is
    root = generate_phantom(tmp_path)
    assert time.process_time() - start < 10
    cases = list(covid_ct_seg.load(root))
    assert len(cases) == 8 and cases[0].image.shape == (24, 128, 128)
    lung = np.concatenate([c.lung.any(axis=(1, 2)) for c in cases])
    lesion = np.concatenate([c.lesion.any(axis=(1, 2)) for c in cases])
    share = lesion[lung].mean()
    assert 0.55 <= share <= 0.9, share  # most lung slices have lesion, some do not
    assert not lesion[~lung].any()
    areas = np.concatenate([c.lesion.sum(axis=(1, 2)) for c in cases])
    areas = areas[areas > 0]
    assert areas.min() < 40 and areas.max() > 400, (areas.min(), areas.max())  # small and large lesions
