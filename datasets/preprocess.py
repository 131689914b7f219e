"""The paper's pre-processing (Salehi et al. 2023), each step switchable and recorded.

Per case, in this order:
1. slice selection: keep slices with at least `min_lung_pixels` lung pixels (the lung mask; without
   one, an estimate: air enclosed by the body; a single-slice case without lung mask, as 2D slice
   collections yield, is kept) and, with `lesion_only`, only slices with lesion;
2. window: HU volumes are clipped to `window` and scaled to 0..255; "window255" volumes (already
   windowed to [-1250, 250] HU and scaled) are brought to the same scale, so the same anatomy gives
   the same uint8 slice in either convention; "display" images (0..255, window unknown) pass through;
3. CLAHE (OpenCV, on uint8, whole slice, as in the paper);
4. crop to the lung bounding box plus `crop_margin` pixels (the body bounding box without a lung
   mask). The box is the union over the kept slices of the case - one box per volume - so
   neighbouring slices keep the same scale and the effective spacing is constant within a case;
5. resize to `image_size` (INTER_AREA for images, INTER_NEAREST for masks).

Images stay uint8 (the trial scales them to [0, 1]). Each slice keeps its effective
spacing (row, col) = original in-plane spacing x crop size / output size.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from scipy import ndimage

from covbench.datasets.base import LUNG_WINDOW, Case, SliceSet
from covbench.errors import CovbenchError

SOURCE_WINDOW = LUNG_WINDOW  # the window of "window255" volumes (COVID-19-CT-Seg Radiopaedia)
INTENSITIES = ("hu", "window255", "display")


@dataclass(frozen=True)
class PreprocessConfig:
    """Every parameter of the pre-processing; `to_dict()` is what runs record and what keys the cache."""

    image_size: int = 224  # output slices are image_size x image_size
    window: tuple[float, float] | None = LUNG_WINDOW  # HU window; None: no windowing
    clahe: bool = True  # contrast-limited adaptive histogram equalisation
    clahe_clip: float = 2.0  # CLAHE clip limit
    clahe_grid: int = 8  # CLAHE tiles per side
    crop_to_lung: bool = True  # crop to the lung (or body) bounding box before resizing
    crop_margin: int = 4  # pixels added around the box, at the original resolution
    select_slices: bool = True  # keep only slices that contain lung
    lesion_only: bool = False  # keep only slices that contain lesion
    min_lung_pixels: int = 64  # a slice "contains lung" from this many lung pixels (original resolution)

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise CovbenchError(f"image_size must be >= 8, got {self.image_size}")
        if self.window is not None:
            lo, hi = self.window
            if not hi > lo:
                raise CovbenchError(f"window must be (low, high) with high > low, got {self.window}")
            object.__setattr__(self, "window", (float(lo), float(hi)))
        if self.clahe_clip <= 0 or self.clahe_grid < 1:
            raise CovbenchError(
                f"CLAHE needs clip > 0 and grid >= 1, got {self.clahe_clip}, {self.clahe_grid}"
            )
        if self.crop_margin < 0 or self.min_lung_pixels < 1:
            raise CovbenchError("crop_margin must be >= 0 and min_lung_pixels >= 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["window"] = None if self.window is None else list(self.window)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        d = dict(d)
        if d.get("window") is not None:
            d["window"] = tuple(d["window"])
        return cls(**d)


# Air-filled lung in HU: healthy parenchyma is about -850; lungs full of COVID-19 lesions read
# higher, but their median stays well below soft tissue (0..+60). Outside this range the volume is
# in a convention covbench does not know (raw stored values without their rescale, a display
# window), and every windowed slice would saturate.
LUNG_HU_RANGE = (-1100.0, -300.0)
AIR_HU = -500.0  # a chest CT without a lung mask must hold voxels darker than this (air)
_SAMPLE = 1_000_000  # voxels sampled for the check: a median needs no more


def to_hu(values: np.ndarray, intensity: str) -> np.ndarray:
    """Stored values -> HU for the two CT conventions ("hu" as is, "window255" back through the
    [-1250, 250] HU window it was scaled from)."""
    v = np.asarray(values, dtype=np.float64)
    if intensity == "window255":
        return v * ((SOURCE_WINDOW[1] - SOURCE_WINDOW[0]) / 255.0) + SOURCE_WINDOW[0]
    return v


def check_intensity(image: np.ndarray, lung: np.ndarray | None, intensity: str, name: str) -> None:
    """Refuse a CT volume whose values do not look like CT in its stated convention.

    With a lung mask: the median inside the lungs, read in `intensity`, must be air-filled lung
    (`LUNG_HU_RANGE`). Without one: the volume must hold air (its darkest 1 % below `AIR_HU`).
    "display" images (8-bit grey of an unknown window) are not checked: there is nothing to
    check them against. Raises `CovbenchError` naming the file, the convention and what was seen.
    """
    if intensity not in ("hu", "window255") or image.size == 0:
        return
    if lung is not None and lung.any():
        # a strided sample of the volume, then its lung voxels: no full-size temporaries
        flat, in_lung = image.reshape(-1), lung.reshape(-1)
        step = max(1, flat.size // (8 * _SAMPLE))
        inside = flat[::step][in_lung[::step] > 0]
        if inside.size == 0:  # a lung too small for the sample
            inside = flat[in_lung > 0]
        median = float(to_hu(np.median(inside), intensity))
        lo, hi = LUNG_HU_RANGE
        if lo <= median <= hi:
            return
        raise CovbenchError(
            f"{name}: lung voxels read {median:+.0f} HU (median inside the lung mask, {intensity!r} "
            f"convention), not air-filled lung ({lo:.0f} to {hi:.0f} HU); the volume is neither in HU "
            "nor in the 0..255 [-1250, 250] HU window (raw stored values without their rescale "
            "intercept, e.g. HU + 1024?): convert it first"
        )
    flat = image.reshape(-1)
    step = max(1, flat.size // _SAMPLE)
    darkest = float(to_hu(np.percentile(flat[::step], 1.0), intensity))
    if darkest >= AIR_HU:
        raise CovbenchError(
            f"{name}: no air in the volume (darkest 1 % of voxels read {darkest:+.0f} HU in the "
            f"{intensity!r} convention, air is about -1000 HU); the volume is neither in HU nor in the "
            "0..255 [-1250, 250] HU window (raw stored values without their rescale intercept?): "
            "convert it first"
        )


def _round_u8(y: np.ndarray) -> np.ndarray:
    """Clip to 0..255 and round, in place on a float32 temporary, then cast."""
    np.clip(y, 0, 255, out=y)
    np.rint(y, out=y)
    return y.astype(np.uint8)


def to_uint8(image: np.ndarray, intensity: str, window: tuple[float, float] | None) -> np.ndarray:
    """Window and scale to uint8 0..255, identically for HU and already-windowed ("window255") data.

    One float32 temporary the size of the input (in-place arithmetic after that)."""
    if intensity not in INTENSITIES:
        raise CovbenchError(f"unknown intensity convention {intensity!r}; expected one of {INTENSITIES}")
    if intensity == "display" or window is None:
        if intensity == "hu":  # no window asked for: scale the source window so uint8 still fits
            window = SOURCE_WINDOW
        else:
            return _round_u8(np.array(image, dtype=np.float32))
    lo, hi = window
    if intensity == "window255":
        if (lo, hi) == SOURCE_WINDOW:  # the same window: no round trip through HU, exact
            return _round_u8(np.array(image, dtype=np.float32))
        # back to HU; values outside [-1250, 250] were clipped by the data's authors
        y = np.array(image, dtype=np.float32)
        y *= np.float32((SOURCE_WINDOW[1] - SOURCE_WINDOW[0]) / 255.0)
        y += np.float32(SOURCE_WINDOW[0])
    else:
        y = np.array(image, dtype=np.float32)
    y -= np.float32(lo)
    y *= np.float32(255.0 / (hi - lo))
    return _round_u8(y)


_SLICE_STRUCT = np.zeros((3, 3, 3), bool)
_SLICE_STRUCT[1] = ndimage.generate_binary_structure(2, 1)  # 2D connectivity inside each slice


def estimate_body_lung(u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(body, lung) estimates for a volume without a lung mask: Otsu threshold over the whole volume,
    body = tissue with holes filled per slice, lung = enclosed air, opened to drop noise."""
    thr, _ = cv2.threshold(u8.reshape(-1, u8.shape[-1]), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    tissue = u8 > thr
    body = ndimage.binary_fill_holes(tissue, structure=_SLICE_STRUCT)
    lung = ndimage.binary_opening(body & ~tissue, structure=_SLICE_STRUCT, iterations=2)
    return body, lung


def _box(region: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """Bounding box (r0, r1, c0, c1), end exclusive, of a (Z, H, W) region, padded and clipped."""
    h, w = region.shape[1:]
    rows, cols = np.nonzero(region.any(axis=(0, 2)))[0], np.nonzero(region.any(axis=(0, 1)))[0]
    if rows.size == 0:
        return 0, h, 0, w
    return (
        max(int(rows[0]) - margin, 0),
        min(int(rows[-1]) + 1 + margin, h),
        max(int(cols[0]) - margin, 0),
        min(int(cols[-1]) + 1 + margin, w),
    )


def _case_name(case: Case) -> str:
    return case.files[0] if case.files else case.case_id


@dataclass(frozen=True)
class SliceGeometry:
    """Where a case's pre-processed slices came from in its (Z, H, W) volume: the kept slices and
    the crop box (r0, r1, c0, c1), end exclusive. Enough to put a per-slice prediction back into
    the input's geometry (`covbench predict`)."""

    shape: tuple[int, int, int]
    kept: np.ndarray  # z of each pre-processed slice
    box: tuple[int, int, int, int]

    def restore(self, maps: np.ndarray) -> np.ndarray:
        """(N, S, S) per-slice maps (probabilities) -> a (Z, H, W) float32 volume: each map resized
        back into the crop box with linear interpolation; zero outside the box and on the slices
        selection dropped. The inverse of the resize is not exact (INTER_AREA loses detail)."""
        r0, r1, c0, c1 = self.box
        out = np.zeros(self.shape, np.float32)
        if len(maps) != len(self.kept):
            raise ValueError(f"{len(maps)} maps for {len(self.kept)} kept slices")
        for z, m in zip(self.kept, maps, strict=True):
            out[z, r0:r1, c0:c1] = cv2.resize(
                np.asarray(m, np.float32), (c1 - c0, r1 - r0), interpolation=cv2.INTER_LINEAR
            )
        return out


def preprocess_case(case: Case, cfg: PreprocessConfig = PreprocessConfig()) -> SliceSet:
    """One case -> its selected, enhanced, cropped and resized slices."""
    return preprocess_case_geometry(case, cfg)[0]


def preprocess_case_geometry(
    case: Case, cfg: PreprocessConfig = PreprocessConfig()
) -> tuple[SliceSet, SliceGeometry]:
    """`preprocess_case`, and where its slices came from (to map predictions back)."""
    if case.image.ndim != 3 or case.lesion.shape != case.image.shape:
        raise CovbenchError(
            f"{_case_name(case)}: image {case.image.shape} and lesion {case.lesion.shape} "
            "must have the same (Z, H, W) shape"
        )
    z_all, h, w = case.image.shape
    if case.lung is not None:  # selection from the mask alone: only kept slices are windowed
        lung_pixels = np.count_nonzero(case.lung.reshape(z_all, -1), axis=1)
        body = u8_all = None
    else:
        u8_all = to_uint8(case.image, case.intensity, cfg.window)
        body, lung_est = estimate_body_lung(u8_all)
        lung_pixels = np.count_nonzero(lung_est.reshape(z_all, -1), axis=1)

    keep = np.ones(z_all, bool)
    # A lone 2D slice without a lung mask was selected by whoever curated the collection; the
    # enclosed-air estimate is unreliable on such tightly cropped display images, so it stays.
    if cfg.select_slices and not (case.lung is None and z_all == 1):
        keep &= lung_pixels >= cfg.min_lung_pixels
    if cfg.lesion_only:
        keep &= case.lesion.reshape(z_all, -1).any(axis=1)
    idx = np.nonzero(keep)[0]
    if idx.size == 0:
        what = "lung" + (" and lesion" if cfg.lesion_only else "")
        where = "lung mask" if case.lung is not None else "estimated lung (no lung mask)"
        raise CovbenchError(
            f"{_case_name(case)}: no slices left after selection (no slice with {what}; {where})"
        )

    if cfg.crop_to_lung:
        region = (case.lung[idx] if body is None else body[idx]).any(axis=0)[None]
        r0, r1, c0, c1 = _box(region, cfg.crop_margin)
    else:
        r0, r1, c0, c1 = 0, h, 0, w
    if u8_all is not None:
        u8 = u8_all[idx]
    else:  # window slice by slice: no full-volume float temporaries
        u8 = np.empty((idx.size, h, w), np.uint8)
        for n, z in enumerate(idx):
            u8[n] = to_uint8(case.image[z], case.intensity, cfg.window)
    size = cfg.image_size
    clahe = cv2.createCLAHE(clipLimit=cfg.clahe_clip, tileGridSize=(cfg.clahe_grid, cfg.clahe_grid))
    images = np.empty((idx.size, size, size), np.uint8)
    masks = np.empty((idx.size, size, size), np.uint8)
    lesion = case.lesion
    for n, z in enumerate(idx):
        sl = clahe.apply(u8[n]) if cfg.clahe else u8[n]
        images[n] = cv2.resize(sl[r0:r1, c0:c1], (size, size), interpolation=cv2.INTER_AREA)
        m = np.ascontiguousarray(lesion[z, r0:r1, c0:c1], dtype=np.uint8)
        masks[n] = cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST)
    np.minimum(masks, 1, out=masks)
    sp = np.array([case.spacing[1] * (r1 - r0) / size, case.spacing[2] * (c1 - c0) / size], np.float32)
    n = idx.size
    geometry = SliceGeometry((z_all, h, w), idx, (r0, r1, c0, c1))
    return SliceSet(
        images=images,
        masks=masks,
        spacing=np.repeat(sp[None], n, axis=0),
        patient=np.full(n, case.case_id, dtype=object).astype(str),
        slice_index=(idx + case.slice_offset).astype(np.int32),
        source=np.full(n, case.source, dtype=object).astype(str),
    ), geometry


def concat_slicesets(parts: list[SliceSet], size: int) -> SliceSet:
    if not parts:
        return SliceSet(
            np.zeros((0, size, size), np.uint8),
            np.zeros((0, size, size), np.uint8),
            np.zeros((0, 2), np.float32),
            np.zeros(0, str),
            np.zeros(0, np.int32),
            np.zeros(0, str),
        )
    return SliceSet(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.masks for p in parts]),
        np.concatenate([p.spacing for p in parts]),
        np.concatenate([p.patient for p in parts]),
        np.concatenate([p.slice_index for p in parts]),
        np.concatenate([p.source for p in parts]),
    )


def preprocess_cases(
    cases: Iterable[Case],
    cfg: PreprocessConfig = PreprocessConfig(),
    *,
    skip_bad: bool = False,
    bad: list[str] | None = None,
) -> SliceSet:
    """Pre-process every case and concatenate. A case with no slice left raises `CovbenchError`
    (or, with `skip_bad`, is skipped, appended to `bad` and listed in a warning)."""
    parts: list[SliceSet] = []
    skipped: list[str] = []
    for case in cases:
        try:
            parts.append(preprocess_case(case, cfg))
        except CovbenchError as exc:
            if not skip_bad:
                raise
            skipped.append(str(exc))
    if bad is not None:
        bad.extend(skipped)
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} case(s) in pre-processing:\n  " + "\n  ".join(skipped),
            UserWarning,
            stacklevel=2,
        )
    if not parts:
        raise CovbenchError("no slices: every case was empty or skipped")
    return concat_slicesets(parts, cfg.image_size)
