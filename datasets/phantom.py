"""A deterministic synthetic chest-CT phantom, written in the COVID-19-CT-Seg release layout.

The phantom exists so that every test, CPU preset and CI job runs the real code path (NIfTI files ->
`covid_ct_seg` adapter -> pre-processing) without the real data. It is *not* anatomy: an ellipse
body with a fat ring, two lungs that grow and shrink over the slices (none in the first and last few
slices, so slice selection matters), a heart and a spine, vessels (thin bright tubes), and smooth 3D
ground-glass (-500 HU) and consolidation (0..+40 HU) blobs of varied size inside the lungs.

Layout, as the Zenodo record 3757476 ships it::

    dest/COVID-19-CT-Seg_20cases/coronacases_org_001.nii.gz             HU, int16
    dest/COVID-19-CT-Seg_20cases/radiopaedia_org_covid-19-pneumonia-101_90037_1-dcm.nii.gz
                                                                         windowed to [-1250, 250] HU
                                                                         and scaled to 0..255, uint8
    dest/Infection_Mask/coronacases_001.nii.gz                          {0, 1}
    dest/Lung_Mask/coronacases_001.nii.gz                               {0, 1 = left lung, 2 = right}

Spacing varies per patient: in-plane 0.6-0.9 mm at 512 px (scaled by 512/size so the field of view
stays 300-460 mm at any size), slice 1.5-5 mm. Coronacases phantoms are stored with an LPS-like affine
(diag(-x, -y, z)), Radiopaedia phantoms with an RAS affine, so the adapter's reorientation is always
exercised. Same arguments -> byte-identical files (gzip with mtime 0).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from covbench.datasets import covid_ct_seg
from covbench.datasets.base import LUNG_WINDOW, default_cache_root
from covbench.registry import DatasetSpec

GENERATOR_VERSION = 3  # bump when the phantom content changes, so caches are regenerated
IMAGE_DIR, LESION_DIR, LUNG_DIR = covid_ct_seg.IMAGE_DIR, covid_ct_seg.LESION_DIR, covid_ct_seg.LUNG_DIR


def phantom_names(i: int, n_patients: int) -> tuple[str, str]:
    """(image name, mask name) of phantom patient `i`, in the real naming scheme. The first half are
    Coronacases (HU), the rest Radiopaedia (windowed); numbers are invented, distinct from the real ones."""
    n_corona = (n_patients + 1) // 2
    if i < n_corona:
        return f"coronacases_org_{i + 1:03d}", f"coronacases_{i + 1:03d}"
    k = i - n_corona
    a, b, c = 101 + k, 90011 + 37 * k, k % 2
    return f"radiopaedia_org_covid-19-pneumonia-{a}_{b}_{c}-dcm", f"radiopaedia_{a}_{b}_{c}"


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ay: float, ax: float) -> np.ndarray:
    """Normalised radius: < 1 inside the ellipse."""
    return np.sqrt(((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2)


def _soft(r: np.ndarray, width: float) -> np.ndarray:
    """Smooth inside-weight of a shape given its normalised radius: 0.5 exactly on the boundary r = 1."""
    return 1.0 / (1.0 + np.exp(np.clip((r - 1.0) / width, -30, 30)))


def _span(lo: float, hi: float, size: int) -> slice:
    """Pixel index range covering normalised coordinates [lo, hi] (pixel i is at (i + 0.5) / size * 2 - 1)."""
    i0 = int(np.floor((lo + 1) / 2 * size - 0.5))
    i1 = int(np.ceil((hi + 1) / 2 * size - 0.5)) + 1
    return slice(min(max(i0, 0), size - 1), max(min(i1, size), 1))


def _interp(index: slice, size: int, n: int = 24) -> np.ndarray:
    """Linear interpolation weights (len(index), n) from an n-point grid spanning [0, size - 1]."""
    pos = np.arange(index.start, index.stop, dtype=np.float64) * (n - 1) / (size - 1)
    i0 = np.minimum(np.floor(pos).astype(int), n - 2)
    frac = (pos - i0).astype(np.float32)
    m = np.zeros((pos.size, n), np.float32)
    m[np.arange(pos.size), i0] = 1 - frac
    m[np.arange(pos.size), i0 + 1] = frac
    return m


@dataclass(frozen=True)
class _Grid:
    """Pixel-centre coordinates of one phantom patient: in-plane [-1, 1], slices 0..Z-1."""

    size: int
    n_slices: int

    @property
    def lin(self) -> np.ndarray:
        return (np.arange(self.size, dtype=np.float32) + 0.5) / self.size * 2 - 1

    @property
    def yy(self) -> np.ndarray:
        return self.lin[:, None]

    @property
    def xx(self) -> np.ndarray:
        return self.lin[None, :]

    @property
    def z_idx(self) -> np.ndarray:
        return np.arange(self.n_slices, dtype=np.float32)


def patient_volumes(rng: np.random.Generator, size: int, n_slices: int):
    """One phantom patient in the Case convention: arrays (Z, H, W), Z inferior -> superior,
    H anterior -> posterior, W patient right -> left. Returns HU image, lesion, lung labels, spacing.
    The parts are drawn in a fixed order from `rng` (the data fingerprint depends on it)."""
    sp_xy = rng.uniform(0.6, 0.9) * 512 / size  # drawn first: spacing does not depend on content
    sp_z = rng.uniform(1.5, 5.0)
    grid = _Grid(size, n_slices)
    hu, scale = _body(rng, grid)
    lung, (z_lo, z_hi) = _lungs(rng, grid, scale)
    is_lung = lung > 0
    hu[is_lung] = -850.0
    _vessels(rng, grid, hu, is_lung, z_lo, z_hi)
    lesion = _lesions(rng, grid, hu, is_lung)
    # --- partial volume and noise
    hu = ndimage.gaussian_filter(hu, sigma=(0, 0.6, 0.6))
    hu += rng.standard_normal(size=hu.shape, dtype=np.float32) * np.float32(rng.uniform(12, 25))
    return hu.astype(np.float32), lesion, lung, (float(sp_z), float(sp_xy), float(sp_xy))


def _body(rng: np.random.Generator, grid: _Grid) -> tuple[np.ndarray, float]:
    """Soft tissue with a fat ring and a spine, constant over z (a torso is roughly a cylinder)."""
    yy, xx = grid.yy, grid.xx
    scale = rng.uniform(0.88, 1.0)
    by, bx = 0.62 * scale, 0.86 * scale
    r_body = _ellipse(yy, xx, 0.04, 0.0, by, bx)
    r_inner = _ellipse(yy, xx, 0.04, 0.0, by - 0.06, bx - 0.06)
    slice2d = np.full((grid.size, grid.size), -1000.0, np.float32)
    slice2d = np.where(r_body < 1, -100.0, slice2d)
    slice2d = np.where(r_inner < 1, 40.0, slice2d)
    spine = _ellipse(yy, xx, 0.04 + by - 0.2, 0.0, 0.09, 0.08) < 1
    slice2d = np.where(spine, 450.0, slice2d).astype(np.float32)
    return np.repeat(slice2d[None], grid.n_slices, axis=0), scale


def _lungs(rng: np.random.Generator, grid: _Grid, scale: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Lung labels (2 right, 1 left), present between slices z_lo and z_hi, the cross-section
    following a smooth profile over z, around the heart."""
    yy, xx, z_idx, n_slices = grid.yy, grid.xx, grid.z_idx, grid.n_slices
    z_lo = int(round(n_slices * rng.uniform(0.12, 0.2)))
    z_hi = n_slices - 1 - int(round(n_slices * rng.uniform(0.1, 0.15)))
    t = np.clip((z_idx - z_lo + 0.5) / (z_hi - z_lo + 1), 0, 1)
    profile = np.where((z_idx >= z_lo) & (z_idx <= z_hi), np.clip(np.sin(np.pi * t**0.7), 0, 1) ** 0.5, 0.0)
    lung = np.zeros((n_slices, grid.size, grid.size), np.uint8)
    heart_r = _ellipse(yy, xx, 0.05 + rng.uniform(-0.03, 0.03), 0.1, 0.3, 0.24)
    present = (profile > 0.05)[:, None, None]
    outside_heart = heart_r[None] > (1 + 0.3 * (1 - t))[:, None, None]
    for label, side in ((2, -1.0), (1, 1.0)):  # 2 = right lung (small W), 1 = left lung (large W)
        cy = -0.02 + rng.uniform(-0.03, 0.03)
        cx = side * (0.36 + rng.uniform(-0.03, 0.03)) * scale
        ay, ax = 0.42 * scale * rng.uniform(0.9, 1.05), 0.25 * scale * rng.uniform(0.9, 1.05)
        # the slice-z ellipse is the base ellipse scaled by profile[z]: inside when r_base < profile[z]
        r_base = _ellipse(yy, xx, cy, cx, ay, ax)
        lung[present & (r_base[None] < profile[:, None, None]) & outside_heart] = label
    return lung, (z_lo, z_hi)


def _vessels(
    rng: np.random.Generator, grid: _Grid, hu: np.ndarray, is_lung: np.ndarray, z_lo: int, z_hi: int
) -> None:
    """Ten thin straight tubes through the lungs, slightly tilted over z, drawn into `hu`; each is
    computed in the box its trajectory sweeps (lung slices only), so real-size phantoms stay fast."""
    lin, yy, xx, size, n_slices = grid.lin, grid.yy, grid.xx, grid.size, grid.n_slices
    zc = (z_lo + z_hi) / 2
    zs = slice(z_lo, z_hi + 1)
    zb = grid.z_idx[zs]
    hh, ww = np.nonzero(is_lung[int(round(zc))])  # the middle slice always holds lung
    for _ in range(10):
        j = rng.integers(len(hh))
        y0, x0 = lin[hh[j]], lin[ww[j]]
        dy, dx = rng.uniform(-0.3, 0.3, size=2) / n_slices
        rad = rng.uniform(0.012, 0.025)
        cy_z = y0 + dy * (zb - zc)
        cx_z = x0 + dx * (zb - zc)
        rows = _span(cy_z.min() - 2.5 * rad, cy_z.max() + 2.5 * rad, size)
        cols = _span(cx_z.min() - 2.5 * rad, cx_z.max() + 2.5 * rad, size)
        r = np.sqrt(
            (yy[rows][None] - cy_z[:, None, None]) ** 2 + (xx[:, cols][None] - cx_z[:, None, None]) ** 2
        )
        box = (zs, rows, cols)
        w = _soft(r / rad, 0.15) * is_lung[box]
        hu[box] += w * (40.0 - hu[box])


def _lesions(rng: np.random.Generator, grid: _Grid, hu: np.ndarray, is_lung: np.ndarray) -> np.ndarray:
    """2-5 lesions drawn into `hu` (ground glass 60 %, consolidation 40 %), their mask returned:
    smooth deformed ellipsoids inside the lungs only. The deformation field is a smooth coarse
    (Z, 24, 24) noise, interpolated bilinearly in-plane inside each lesion's box."""
    lin, yy, xx, z_idx, size, n_slices = grid.lin, grid.yy, grid.xx, grid.z_idx, grid.size, grid.n_slices
    coarse = rng.standard_normal((n_slices, 24, 24)).astype(np.float32)
    coarse = ndimage.gaussian_filter(coarse, sigma=(1.0, 2.0, 2.0), mode="wrap")
    coarse /= coarse.std() + 1e-6
    reach = 1.0 + 0.18 * float(np.abs(coarse).max()) + 0.5  # r beyond this: no mask, weight < 1e-3
    lesion = np.zeros(is_lung.shape, np.uint8)
    lz, lh, lw = np.nonzero(is_lung)
    n_les = int(rng.integers(2, 6))
    for k in range(n_les):
        j = rng.integers(len(lz))
        cz, cy, cx = float(lz[j]), lin[lh[j]], lin[lw[j]]
        kind = rng.uniform()  # small 30 %, medium 40 %, large 30 % (radius as a fraction of the FOV)
        rad = rng.uniform(*((0.04, 0.07) if kind < 0.3 else (0.07, 0.12) if kind < 0.7 else (0.12, 0.2)))
        ry, rx = rad * rng.uniform(0.7, 1.3), rad * rng.uniform(0.7, 1.3)
        rz = rng.uniform(1.0, 2.0) + rad * n_slices * rng.uniform(0.4, 0.9)
        z0, z1 = max(int(np.floor(cz - reach * rz)), 0), min(int(np.ceil(cz + reach * rz)) + 1, n_slices)
        rows, cols = (
            _span(cy - reach * ry, cy + reach * ry, size),
            _span(cx - reach * rx, cx + reach * rx, size),
        )
        box = (slice(z0, z1), rows, cols)
        r = np.sqrt(
            ((z_idx[z0:z1, None, None] - cz) / rz) ** 2
            + ((yy[rows][None] - cy) / ry) ** 2
            + ((xx[:, cols][None] - cx) / rx) ** 2
        )
        field = _interp(rows, size) @ coarse[z0:z1] @ _interp(cols, size).T  # (Z, rows, cols)
        r = r + 0.18 * field * (k % 3 - 1 or 1)  # a different deformation per lesion, smooth in 3D
        w = _soft(r, 0.06) * is_lung[box]
        ggo = rng.uniform() < 0.6
        value = rng.uniform(-560, -440) if ggo else rng.uniform(-20, 40)
        hu[box] += w * (value - hu[box])
        lesion[box] |= ((r < 1) & is_lung[box]).astype(np.uint8)
    return lesion


def _to_storage(vol: np.ndarray, spacing: tuple[float, float, float], lps: bool):
    """Case-convention (Z, H, W) array -> NIfTI (i, j, k) array and affine.

    LPS-like storage (i: patient right -> left, j: anterior -> posterior): just transpose (Z, H, W) to
    (W, H, Z). RAS storage (i: left -> right, j: posterior -> anterior): flip H and W, then transpose.
    """
    sz, sy, sx = spacing
    nz, ny, nx = vol.shape
    if lps:
        data = vol.transpose(2, 1, 0)
        affine = np.diag([-sx, -sy, sz, 1.0])
        affine[:3, 3] = [sx * nx / 2, sy * ny / 2, -sz * nz / 2]
    else:
        data = vol[:, ::-1, ::-1].transpose(2, 1, 0)
        affine = np.diag([sx, sy, sz, 1.0])
        affine[:3, 3] = [-sx * nx / 2, -sy * ny / 2, -sz * nz / 2]
    return np.ascontiguousarray(data), affine


def _nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img.to_bytes()


def write_nifti_gz(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write `.nii.gz` byte-for-byte reproducibly: nibabel serialises to memory, gzip with mtime 0."""
    path.write_bytes(gzip.compress(_nifti_bytes(data, affine), compresslevel=6, mtime=0))


def write_patient(dest: Path, i: int, n_patients: int, volumes: tuple, *, compress: bool = True) -> None:
    """Write `volumes` (from `patient_volumes`) as phantom patient `i` of `n_patients` under `dest`.

    Coronacases (the first half) are stored as int16 HU with an LPS-like affine, Radiopaedia as
    lung-windowed uint8 with an RAS affine, as the real release ships them. `compress=False`
    writes plain `.nii`, which is faster for the real-size benchmark (benchmarks/bench_data.py).
    """
    hu, lesion, lung, spacing = volumes
    image_name, mask_name = phantom_names(i, n_patients)
    coronacases = image_name.startswith("coronacases")
    if coronacases:
        stored = np.rint(hu).clip(-1024, 3071).astype(np.int16)
    else:  # Radiopaedia convention: lung window [-1250, 250] -> 0..255
        lo, hi = LUNG_WINDOW
        stored = np.rint((hu.clip(lo, hi) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    for sub, name, vol in (
        (IMAGE_DIR, image_name, stored),
        (LESION_DIR, mask_name, lesion),
        (LUNG_DIR, mask_name, lung),
    ):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        data, affine = _to_storage(vol, spacing, lps=coronacases)
        if compress:
            write_nifti_gz(dest / sub / f"{name}.nii.gz", data, affine)
        else:
            (dest / sub / f"{name}.nii").write_bytes(_nifti_bytes(data, affine))


def generate_phantom(
    dest: Path, *, n_patients: int = 8, size: int = 128, n_slices: int = 24, seed: int = 0
) -> Path:
    """Write `n_patients` phantom volumes with lesion and lung masks under `dest`; return `dest`.

    Deterministic: the same arguments give byte-identical files. Patient `i` depends only on
    (seed, i, size, n_slices), so adding patients does not change the existing ones.
    """
    if n_patients < 1 or size < 32 or n_slices < 8:
        raise ValueError(
            f"phantom needs n_patients >= 1, size >= 32, n_slices >= 8; got {n_patients}, {size}, {n_slices}"
        )
    dest = Path(dest)
    for i in range(n_patients):
        rng = np.random.default_rng([seed, i, size, n_slices])
        write_patient(dest, i, n_patients, patient_volumes(rng, size, n_slices))
    (dest / "PHANTOM.md").write_text(
        "# Synthetic phantom - not patient data\n\n"
        "Generated by `covbench.datasets.phantom.generate_phantom` "
        f"(n_patients={n_patients}, size={size}, n_slices={n_slices}, seed={seed}, "
        f"generator version {GENERATOR_VERSION}).\n"
        "Ellipse bodies, lungs, vessels and smooth lesion blobs in the COVID-19-CT-Seg file layout and\n"
        "naming, so the real adapter can read them. Numbers are invented; no result on this data says\n"
        "anything about real CT.\n"
    )
    return dest


def ensure_phantom(cache_dir: Path | None = None, **kwargs) -> Path:
    """Generate the phantom once into `<cache_dir>/phantom-<hash of parameters>` and reuse it.

    `cache_dir` defaults to `$COVBENCH_CACHE` or `~/.cache/covbench`. Generation goes to a temporary
    sibling folder renamed into place, so a crash or a concurrent worker never leaves a half phantom.
    """
    params = {"n_patients": 8, "size": 128, "n_slices": 24, "seed": 0, **kwargs}
    unknown = set(params) - {"n_patients", "size", "n_slices", "seed"}
    if unknown:
        raise TypeError(f"ensure_phantom got unknown options {sorted(unknown)}")
    key = json.dumps({**params, "version": GENERATOR_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    final = root / f"phantom-{digest}"
    if (final / "PHANTOM.md").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".phantom-{digest}-", dir=root))
    try:
        generate_phantom(tmp, **params)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first (or a stale incomplete folder is in the way)
            if not (final / "PHANTOM.md").is_file():
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load(data_dir: Path | None = None, **options):
    """Dataset entry: the phantom read back through the real COVID-19-CT-Seg adapter.

    Options `n_patients`, `size`, `n_slices`, `seed` choose the phantom; `data_dir`, when given, is the
    cache root; other options go to `covid_ct_seg.load`.
    """
    params = {k: options.pop(k) for k in ("n_patients", "size", "n_slices", "seed") if k in options}
    return covid_ct_seg.load(ensure_phantom(data_dir, **params), **options)


def case_files(data_dir: Path | None = None, **options) -> list[Path]:
    """The phantom files `load` reads (generating them if needed), for the data fingerprint."""
    params = {k: options[k] for k in ("n_patients", "size", "n_slices", "seed") if k in options}
    return covid_ct_seg.case_files(ensure_phantom(data_dir, **params))


SPEC = DatasetSpec(
    name="phantom",
    load=load,
    title="Synthetic chest-CT phantom (COVID-19-CT-Seg layout)",
    reference="covbench synthetic data; layout of Ma et al., Zenodo 3757476",
    needs_data_dir=False,
    default_split="patient",
    case_files=case_files,
    skips_bad=True,  # passed on to covid_ct_seg.load
    read_input=covid_ct_seg.SPEC.read_input,  # its files are COVID-19-CT-Seg look-alikes
)
