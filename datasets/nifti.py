"""Reading NIfTI volumes in covbench's (Z, H, W) orientation, checked before any voxel is read, and
the checks every NIfTI adapter shares (image / mask geometry, label values, intensity convention).

Used by the COVID-19-CT-Seg adapter, the NIfTI-folder adapters (nnU-Net, MosMedData, COVID-19-20)
and `covbench predict`'s NIfTI inputs.
"""

from __future__ import annotations

import gzip
import io
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np

from covbench.datasets.base import Case, InputReader, PredictionInput
from covbench.errors import CovbenchError

SUFFIXES = (".nii.gz", ".nii")  # supported file endings

# Voxels per volume: 512 x 512 x 2048, four times the longest COVID-19-CT-Seg scan. Pre-processing
# holds a float32 copy (2 GiB at the limit) plus the masks; beyond it the process would be killed.
MAX_VOXELS = 512 * 512 * 2048
_HEADER_BYTES = 540  # a NIfTI-2 header; NIfTI-1 uses the first 348


def strip_suffix(name: str) -> str | None:
    """File name without its NIfTI ending, or None when it is not a NIfTI file."""
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


@dataclass(frozen=True)
class ZipMember:
    """A NIfTI file inside one of the record's zip archives, read without extracting it."""

    archive: Path
    member: str

    @property
    def name(self) -> str:
        return self.member.rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return f"{self.archive}:{self.member}"


def _open(path: Path | ZipMember):
    if isinstance(path, ZipMember):
        with zipfile.ZipFile(path.archive) as zf:
            data = zf.read(path.member)
        if path.member.endswith(".gz"):
            data = gzip.decompress(data)
        return nib.Nifti1Image.from_bytes(data)
    return nib.load(str(path))


def _stored_header(path: Path | ZipMember) -> nib.Nifti1Header:
    """The header exactly as stored, read from the first bytes only. nibabel's loader quietly
    turns a zero pixdim into 1 (a made-up millimetre), and the shape is needed before any voxel
    is read."""
    if isinstance(path, ZipMember):
        with zipfile.ZipFile(path.archive) as zf, zf.open(path.member) as f:
            stream = gzip.GzipFile(fileobj=f) if path.member.endswith(".gz") else f
            raw = stream.read(_HEADER_BYTES)
    else:
        with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as f:
            raw = f.read(_HEADER_BYTES)
    size = int.from_bytes(raw[:4], "little")
    if size not in (348, 540):
        size = int.from_bytes(raw[:4], "big")
    klass = nib.Nifti2Header if size == 540 else nib.Nifti1Header
    return klass.from_fileobj(io.BytesIO(raw), check=False)


def _check_header(hdr: nib.Nifti1Header, path: Path | ZipMember) -> None:
    """Refuse what nibabel would silently patch or what would not fit in memory."""
    shape = tuple(int(n) for n in hdr.get_data_shape())
    voxels = math.prod(shape)
    if voxels > MAX_VOXELS:
        raise CovbenchError(
            f"{path}: volume of {' x '.join(map(str, shape))} = {voxels / 1e6:,.0f} M voxels exceeds the "
            f"limit of {MAX_VOXELS / 1e6:,.0f} M per volume (its float32 copy alone would need "
            f"{4 * voxels / 2**30:,.1f} GiB); crop or resample it first"
        )
    zooms = [float(z) for z in hdr["pixdim"][1 : 1 + min(len(shape), 3)]]
    bad = [f"{ax} = {z:g}" for ax, z in zip("xyz", zooms, strict=False) if not (math.isfinite(z) and z != 0)]
    if bad:
        raise CovbenchError(
            f"{path}: pixel size {', '.join(bad)} mm in the header (pixdim {zooms}); nibabel would read "
            "it as 1 mm and every distance would be made up - write the real spacing into the header"
        )


def read_volume(
    path: Path | ZipMember, channel: int | None = None
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Read a NIfTI volume in the `Case` orientation: (array (Z, H, W), spacing (Z, H, W) in mm,
    affine of the canonical (RAS+) image, for comparing image and mask geometry).

    A 4D image (X, Y, Z, C), as the Medical Segmentation Decathlon ships multi-modal data, needs
    `channel`; without one it is refused. Refused before any voxel is read: a zero or non-finite
    pixel size in the header, more than `MAX_VOXELS` voxels."""
    try:
        _check_header(_stored_header(path), path)
        img = _open(path)
        if len(img.shape) == 4 and img.shape[3] > 1:
            n = int(img.shape[3])
            if channel is None:
                raise CovbenchError(
                    f"{path}: 4D image of shape {tuple(img.shape)} ({n} channels) and no channel chosen; "
                    "choose one with --dataset-option channel=K"
                )
            if not 0 <= channel < n:
                raise CovbenchError(f"{path}: channel {channel} chosen, the image has channels 0..{n - 1}")
            img = img.slicer[..., channel]
        if len(img.shape) > 3 and all(s == 1 for s in img.shape[3:]):
            img = img.slicer[(..., *([0] * (len(img.shape) - 3)))]
        if len(img.shape) != 3:
            raise CovbenchError(f"{path}: expected a 3D volume, got shape {img.shape}")
        # Reorient to RAS+: array axes (i, j, k) run left -> right, posterior -> anterior,
        # inferior -> superior. The flips this needs happen inside nibabel, on the array proxy.
        canon = nib.as_closest_canonical(img)
        data = np.asanyarray(canon.dataobj)
    except CovbenchError:
        raise
    except Exception as exc:  # truncated gzip (EOFError), bad header (ImageFileError), zlib.error...
        raise CovbenchError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc})") from None
    zi, zj, zk = (float(z) for z in canon.header.get_zooms()[:3])
    # (i, j, k) -> (k, j, i) = (Z, H, W); the spacing is reversed the same way.
    vol = data.transpose(2, 1, 0)
    # Flip H (posterior -> anterior becomes anterior -> posterior) and W (left -> right becomes
    # patient right -> left): the radiological display convention of the Case contract.
    vol = vol[:, ::-1, ::-1]
    return vol, (zk, zj, zi), canon.affine


def check_labels(arr: np.ndarray, labels: tuple[int, ...], path) -> None:
    """Every voxel is one of `labels` (0..k). min/max first: a full `np.isin` costs seconds on a CT."""
    k = max(labels)
    fractional = arr.dtype.kind == "f" and not np.array_equal(arr, np.floor(arr))
    if arr.min() >= 0 and arr.max() <= k and not fractional:
        return
    bad = (arr < 0) | (arr > k)
    if fractional:
        bad |= arr != np.floor(arr)
    found = np.unique(arr[bad])[:5]
    raise CovbenchError(
        f"{path}: mask values {', '.join(f'{v:g}' for v in found)} outside the labels {list(labels)}"
    )


def check_geometry(ref: tuple[np.ndarray, np.ndarray, Path], other: tuple[np.ndarray, np.ndarray, Path]):
    (a, aff_a, pa), (b, aff_b, pb) = ref, other
    if a.shape != b.shape:
        raise CovbenchError(f"{pb}: shape {b.shape} differs from image {pa.name} {a.shape} (Z, H, W)")
    voxel = float(np.min(np.linalg.norm(aff_a[:3, :3], axis=0)))
    rot = float(np.max(np.abs(aff_a[:3, :3] - aff_b[:3, :3])))
    shift = float(np.max(np.abs(aff_a[:3, 3] - aff_b[:3, 3])))
    if rot > 1e-3 * max(voxel, 1.0) or shift > 0.5 * voxel:
        raise CovbenchError(
            f"{pb}: affine differs from image {pa.name} "
            f"(max {rot:.3g} in direction/zoom, {shift:.3g} mm in origin)"
        )


def intensity_of(source: str, image: np.ndarray) -> str:
    if source == "radiopaedia":
        return "window255"
    if source == "coronacases":
        return "hu"
    # unknown source: an HU chest volume always has air below 0; a 0..255 volume was windowed
    return "window255" if float(image.min()) >= 0 and float(image.max()) <= 255 else "hu"


# --- prediction inputs (`covbench predict`) -------------------------------------------------


def check_channels(path: Path) -> None:
    """Refuse a multi-channel volume (a 4th axis longer than 1) before its voxels are read."""
    try:
        shape = nib.load(str(path)).shape
    except Exception as exc:
        raise CovbenchError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc})") from None
    extra = [int(n) for n in shape[3:] if n != 1]
    if len(shape) < 3 or extra:
        channels = int(np.prod(extra)) if extra else 0
        raise CovbenchError(
            f"{path}: shape {tuple(shape)}: "
            + (
                f"{channels} channels; the run's models take 1 (a grey CT volume)"
                if extra
                else "not a 3D volume"
            )
        )


def to_file_order(volume: np.ndarray, original: nib.Nifti1Image) -> np.ndarray:
    """Undo `read_volume`'s orientation: a (Z, H, W) array in covbench's convention -> the voxel
    order of `original`'s file, so it fits `original.affine`."""
    canon = volume[:, ::-1, ::-1].transpose(2, 1, 0)  # (Z, H, W) -> RAS+ (i, j, k)
    ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
    back = nib.orientations.ornt_transform(ras, nib.orientations.io_orientation(original.affine))
    return nib.orientations.apply_orientation(canon, back)


def input_stem(path: Path) -> str:
    return strip_suffix(path.name) or path.stem


def read_nifti_input(
    path: Path, lung: Path | None = None, *, source_of: Callable[[str], str] = lambda stem: ""
) -> PredictionInput:
    """A CT volume (and optionally its lung mask) as a Case with an empty lesion mask, and the
    writer that puts a (Z, H, W) mask back into the file's voxel order and affine.
    `source_of(stem)` names the sub-collection, which decides the intensity convention where the
    adapter knows it (`intensity_of`)."""
    from covbench.datasets.preprocess import check_intensity
    from covbench.folder.io import atomic_path

    check_channels(path)
    view, spacing, aff = read_volume(path)
    image = np.ascontiguousarray(view, dtype=np.float32)
    if not np.isfinite(image).all():
        raise CovbenchError(f"{path}: NaN or infinite voxels")
    lung_mask = None
    if lung is not None:
        check_channels(lung)
        lview, _, laff = read_volume(lung)
        check_geometry((image, aff, path), (lview, laff, lung))
        lung_mask = np.ascontiguousarray(lview > 0, dtype=np.uint8)
        if not lung_mask.any():
            raise CovbenchError(f"{lung}: lung mask is empty")
    stem = input_stem(path)
    source = source_of(stem) or "input"
    intensity = intensity_of(source, image)
    check_intensity(image, lung_mask, intensity, str(path))
    case = Case(
        stem, image, np.zeros(image.shape, np.uint8), lung_mask, spacing, source, intensity, (str(path),)
    )
    original = nib.load(str(path))

    def write(mask: np.ndarray, out_dir: Path) -> Path:
        data = to_file_order(mask.astype(np.uint8), original)
        if data.shape != original.shape[:3]:  # cannot happen unless read_volume's axes change
            raise AssertionError(f"mask shape {data.shape} for input {original.shape}")
        img = nib.Nifti1Image(np.ascontiguousarray(data), original.affine)
        img.set_qform(original.affine, code=int(original.header.get("qform_code", 1)) or 1)
        img.set_sform(original.affine, code=int(original.header.get("sform_code", 1)) or 1)
        target = out_dir / f"{stem}.nii.gz"
        with atomic_path(target) as tmp:
            tmp.write_bytes(gzip.compress(img.to_bytes(), mtime=0))
        return target

    return PredictionInput(path, case, write)


def nifti_input(source_of: Callable[[str], str] | None = None) -> InputReader:
    """The `read_input` of an adapter whose data are NIfTI CT volumes."""
    read = read_nifti_input if source_of is None else partial(read_nifti_input, source_of=source_of)
    return InputReader(kind="NIfTI", suffixes=SUFFIXES, read=read, check=check_channels, takes_lung=True)


NIFTI_INPUT = nifti_input()
