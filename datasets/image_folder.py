"""Adapter for folders of 2D slices: `images/` and `masks/` paired by file stem.

Layouts read (the second keeps the dataset's own split, for `--split predefined`)::

    DATA_DIR/images/<stem>.<png|jpg|jpeg|tif|tiff|bmp|npy>     DATA_DIR/train/images/...  train/masks/...
    DATA_DIR/masks/<stem>.<...>                                DATA_DIR/test/images/...   test/masks/...
                                                               (and optionally val/)

Each slice is one `Case` of depth 1 whose `slice_offset` is the stem when it is a number. Images are
read as one grey channel: 8-bit files are "display" intensities (window unknown), other dtypes (16-bit
PNG/TIFF, .npy) are taken as HU unless `intensity` says otherwise. Masks are binary: {0, 1} or
{0, 255} by default, or any of `mask_labels` (lesion = label > 0); palette PNGs give their indices.

Patient ids and pixel spacing come from a CSV (`meta_csv`, default `DATA_DIR/slices.csv` when
present) with a `stem` column and optional `patient`, `spacing` or `spacing_row`/`spacing_col`
columns; otherwise each slice is its own patient and `spacing` applies to every slice. Without
either, the pixel size is unknown: the slices get spacing 1 with `spacing_unit` "px", and every
distance (ASSD, HD95, the NSD tolerance) is reported in pixels, never as millimetres. A CSV that
gives a spacing for some slices but not others is refused (the units would mix).
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covbench.datasets.base import Case, InputReader, PredictionInput
from covbench.errors import CovbenchError
from covbench.registry import DatasetSpec

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")  # supported file endings
PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class SliceFiles:
    part: str | None  # predefined split part, None for a flat images/ + masks/ folder
    stem: str
    image: Path
    mask: Path | None


def _listing(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith("."):
            if p.stem in files:
                raise CovbenchError(f"{p}: two files with stem {p.stem!r} ({files[p.stem].name}, {p.name})")
            files[p.stem] = p
    return files


def find_slices(data_dir: Path) -> tuple[list[SliceFiles], list[CovbenchError]]:
    """Every image with its mask (None when missing), and the layout problems found."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CovbenchError(f"{data_dir}: data folder does not exist")
    if (data_dir / "images").is_dir():
        roots: list[tuple[str | None, Path]] = [(None, data_dir)]
    else:
        roots = [(p, data_dir / p) for p in PARTS if (data_dir / p / "images").is_dir()]
    if not roots:
        raise CovbenchError(f"{data_dir}: no images/ folder (nor train/images/, test/images/)")
    found: list[SliceFiles] = []
    errors: list[CovbenchError] = []
    for part, root in roots:
        images = _listing(root / "images")
        masks = _listing(root / "masks") if (root / "masks").is_dir() else {}
        if not images:
            raise CovbenchError(f"{root / 'images'}: no image files ({', '.join(SUFFIXES)})")
        for stem, image in images.items():
            mask = masks.get(stem)
            if mask is None:
                errors.append(CovbenchError(f"{image}: image without a mask (masks/{stem}.* not found)"))
            found.append(SliceFiles(part, stem, image, mask))
    return found, errors


def read_plane(path: Path, *, mask: bool = False) -> np.ndarray:
    """One 2D array from an image file: grey values for images, label indices for masks."""
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()  # decode now: a truncated file fails here, not later
                if im.mode == "P" and not mask:
                    im = im.convert("L")
                elif im.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr") and not mask:
                    im = im.convert("L")
                arr = np.asarray(im)
    except Exception as exc:  # PIL.UnidentifiedImageError, OSError (truncated), ValueError (npy)
        raise CovbenchError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # colour mask (or .npy image): must be grey
        if not (arr[..., 0] == arr[..., 1]).all() or not (arr[..., 0] == arr[..., 2]).all():
            raise CovbenchError(f"{path}: {'mask' if mask else 'image'} has colour channels; expected grey")
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise CovbenchError(f"{path}: expected a 2D image, got shape {arr.shape}")
    return arr


def _read_meta(path: Path) -> dict[str, dict[str, str]]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise CovbenchError(f"{path}: cannot read ({exc.strerror})") from None
    if rows and "stem" not in rows[0]:
        raise CovbenchError(f"{path}: needs a 'stem' column (got {', '.join(rows[0])})")
    return {r["stem"]: r for r in rows}


def _spacing(row: dict[str, str] | None, path: Path) -> tuple[float, float] | None:
    """The (row, col) mm spacing the CSV gives for a slice, or None when it gives none."""
    if row is None:
        return None
    try:
        if row.get("spacing_row") and row.get("spacing_col"):
            sp = (float(row["spacing_row"]), float(row["spacing_col"]))
        elif row.get("spacing"):
            sp = (float(row["spacing"]),) * 2
        else:
            return None
    except ValueError:
        raise CovbenchError(f"{path}: bad spacing for stem {row['stem']!r}") from None
    if not all(np.isfinite(sp)) or min(sp) <= 0:
        raise CovbenchError(f"{path}: spacing must be positive for stem {row['stem']!r}")
    return sp


def read_slice(
    files: SliceFiles,
    *,
    patient: str,
    source: str,
    spacing: tuple[float, float],
    slice_offset: int,
    intensity: str | None = None,
    mask_labels: Sequence[int] | None = None,
    spacing_unit: str = "mm",
) -> Case:
    """Read and check one image/mask pair."""
    if files.mask is None:
        raise CovbenchError(f"{files.image}: image without a mask")
    image = read_plane(files.image)
    mask = read_plane(files.mask, mask=True)
    if image.shape != mask.shape:
        raise CovbenchError(
            f"{files.mask}: shape {mask.shape} differs from image {files.image.name} {image.shape}"
        )
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        n = int((~np.isfinite(image)).sum())
        raise CovbenchError(f"{files.image}: {n} NaN or infinite pixels")
    values = np.unique(mask)
    allowed = [(0, 1), (0, 255)] if mask_labels is None else [tuple(mask_labels)]
    if not any(np.isin(values, a).all() for a in allowed):
        bad = [v for v in values if not any(v in a for a in allowed)] or list(values)
        labels = " or ".join(str(list(a)) for a in allowed)
        raise CovbenchError(
            f"{files.mask}: mask values {', '.join(f'{v:g}' for v in bad[:5])} outside the labels {labels}"
        )
    if intensity is None:
        intensity = "display" if image.dtype == np.uint8 else "hu"
    return Case(
        case_id=patient,
        image=image.astype(np.float32)[None],
        lesion=(mask > 0).astype(np.uint8)[None],
        lung=None,
        spacing=(1.0, *spacing),
        source=source,
        intensity=intensity,
        files=(str(files.image), str(files.mask)),
        split=files.part,
        slice_offset=slice_offset,
        spacing_unit=spacing_unit,
    )


def case_files(data_dir: Path, meta_csv: Path | None = None, **_: object) -> list[Path]:
    """Every file `load` reads, for the data fingerprint."""
    data_dir = Path(data_dir)
    found, _errors = find_slices(data_dir)
    paths = [p for f in found for p in (f.image, f.mask) if p is not None]
    meta = Path(meta_csv) if meta_csv is not None else data_dir / "slices.csv"
    return paths + ([meta] if meta.is_file() else [])


def load(
    data_dir: Path,
    *,
    skip_bad: bool = False,
    bad: list[str] | None = None,
    meta_csv: Path | None = None,
    spacing: float | tuple[float, float] | None = None,
    source: str | None = None,
    intensity: str | None = None,
    mask_labels: Sequence[int] | None = None,
) -> Iterator[Case]:
    """Yield one single-slice `Case` per image, ordered by part and stem (numeric stems numerically).

    Bad inputs raise `CovbenchError` naming the file, or with `skip_bad` are skipped, appended to
    `bad` and listed in one warning at the end. `spacing` (mm, one number or (row, col)) applies
    to slices the CSV gives none for; with neither, distances are in pixels (`spacing_unit` "px").
    """
    data_dir = Path(data_dir)
    found, errors = find_slices(data_dir)
    meta_path = Path(meta_csv) if meta_csv is not None else data_dir / "slices.csv"
    if meta_csv is not None and not meta_path.is_file():
        raise CovbenchError(f"{meta_path}: metadata CSV not found")
    meta = _read_meta(meta_path) if meta_path.is_file() else {}
    if spacing is None:
        default_sp, default_unit = (1.0, 1.0), "px"
    else:
        default_sp = (float(spacing), float(spacing)) if np.isscalar(spacing) else tuple(map(float, spacing))
        if len(default_sp) != 2 or not all(np.isfinite(default_sp)) or min(default_sp) <= 0:
            raise CovbenchError(f"spacing must be one or two positive numbers (mm), got {spacing!r}")
        default_unit = "mm"
    spacings = {stem: _spacing(row, meta_path) for stem, row in meta.items()}  # parsed once
    given = {stem for stem, sp in spacings.items() if sp is not None}
    missing = next((f.stem for f in found if f.stem not in given), None)
    if default_unit == "px" and given and missing is not None:
        raise CovbenchError(
            f"{meta_path}: pixel spacing given for {len(given)} slice(s) but not for stem {missing!r}; "
            "give it for every slice, or for none (distances are then in pixels)"
        )
    source = source or data_dir.resolve().name
    stems_by_part: dict[str, set[str | None]] = {}
    for f in found:
        stems_by_part.setdefault(f.stem, set()).add(f.part)
    skipped: list[str] = [] if bad is None else bad
    if errors and not skip_bad:
        raise errors[0]
    skipped.extend(str(e) for e in errors)

    def order(f: SliceFiles):
        return (
            PARTS.index(f.part) if f.part else -1,
            not f.stem.isdigit(),
            int(f.stem) if f.stem.isdigit() else 0,
            f.stem,
        )

    for n, files in enumerate(sorted(found, key=order)):
        if files.mask is None:
            continue  # reported above
        row = meta.get(files.stem)
        patient = (row or {}).get("patient") or (
            files.stem if len(stems_by_part[files.stem]) == 1 else f"{files.part}-{files.stem}"
        )
        sp = spacings.get(files.stem)
        try:
            yield read_slice(
                files,
                patient=patient,
                source=source,
                spacing=default_sp if sp is None else sp,
                slice_offset=int(files.stem) if files.stem.isdigit() else n,
                intensity=intensity,
                mask_labels=mask_labels,
                spacing_unit=default_unit if sp is None else "mm",
            )
        except CovbenchError as exc:
            if not skip_bad:
                raise
            skipped.append(str(exc))
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} bad slice(s):\n  " + "\n  ".join(skipped), UserWarning, stacklevel=2
        )


def read_input(path: Path, lung: Path | None = None) -> PredictionInput:
    """A 2D image file for `covbench predict`, read as training images are read (colour -> grey);
    the mask is written back as a PNG of the image's size ({0, 255})."""
    import io

    from PIL import Image

    from covbench.folder.io import atomic_path

    if lung is not None:
        raise CovbenchError(f"--lung {lung}: lung masks are for NIfTI volumes, not for {path.name}")
    plane = read_plane(path)
    if plane.dtype.kind == "f" and not np.isfinite(plane).all():
        raise CovbenchError(f"{path}: NaN or infinite pixels")
    intensity = "display" if plane.dtype == np.uint8 else "hu"
    image = plane.astype(np.float32)[None]
    stem = path.stem
    case = Case(
        stem, image, np.zeros(image.shape, np.uint8), None, (1.0, 1.0, 1.0), "input", intensity, (str(path),)
    )

    def write(mask: np.ndarray, out_dir: Path) -> Path:
        target = out_dir / f"{stem}.png"
        buffer = io.BytesIO()
        Image.fromarray(mask[0].astype(np.uint8) * 255).save(buffer, format="PNG")
        with atomic_path(target) as tmp:
            tmp.write_bytes(buffer.getvalue())
        return target

    return PredictionInput(path, case, write)


def _check_input(path: Path) -> None:
    read_plane(path)  # a 2D image is small enough to read twice


IMAGE_INPUT = InputReader(kind="image", suffixes=SUFFIXES, read=read_input, check=_check_input)


SPEC = DatasetSpec(
    name="image-folder",
    load=load,
    title="2D slices: images/ and masks/ paired by file stem (optional train/ and test/ parts)",
    reference="e.g. COVID-SemiSeg (Fan et al., IEEE TMI 2020), from the MedSeg COVID-19 CT segmentation set",
    needs_data_dir=True,
    default_split="predefined",
    case_files=case_files,
    skips_bad=True,
    takes_spacing=True,
    read_input=IMAGE_INPUT,
)
