"""Adapter for COVID-19-CT-Seg (Ma et al., Zenodo record 3757476) and the phantom that mimics it.

Reads the release layout (the extracted archives)::

    DATA_DIR/COVID-19-CT-Seg_20cases/<image>.nii[.gz]
    DATA_DIR/Infection_Mask/<mask>.nii[.gz]           lesion {0, 1}
    DATA_DIR/Lung_Mask/<mask>.nii[.gz]                lungs {0, 1, 2} (optional)
    DATA_DIR/Lung_and_Infection_Mask/<mask>.nii[.gz]  {0, 1, 2 lungs, 3 infection} (used when one
                                                      of the two above is missing)

Each folder may also be left as the zip archive Zenodo serves (`Infection_Mask.zip`, ...): its
members are read in place, without extracting.

Pairing rule: `coronacases_org_001` <-> `coronacases_001`,
`radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm` <-> `radiopaedia_4_85506_1`. The mask name is the
case id; the part before the first `_` is the source. Coronacases volumes are in HU ("hu"); Radiopaedia
volumes ship lung-windowed to [-1250, 250] HU and scaled to 0..255 ("window255"); pre-processing
brings both to the same scale.

Every volume is reoriented to the `Case` convention (Z, H, W): Z inferior -> superior, H anterior ->
posterior, W patient right -> left (radiological display), with spacing in the same order.
"""

from __future__ import annotations

import gzip
import io
import math
import re
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from covbench.datasets.base import Case
from covbench.datasets.preprocess import check_intensity
from covbench.errors import CovbenchError
from covbench.registry import DatasetSpec

IMAGE_DIR = "COVID-19-CT-Seg_20cases"
LESION_DIR = "Infection_Mask"
LUNG_DIR = "Lung_Mask"
COMBINED_DIR = "Lung_and_Infection_Mask"
SUFFIXES = (".nii.gz", ".nii")  # supported file endings
LESION_LABELS = (0, 1)
# Voxels per volume: 512 x 512 x 2048, four times the longest COVID-19-CT-Seg scan. Pre-processing
# holds a float32 copy (2 GiB at the limit) plus the masks; beyond it the process would be killed.
MAX_VOXELS = 512 * 512 * 2048
_HEADER_BYTES = 540  # a NIfTI-2 header; NIfTI-1 uses the first 348
LUNG_LABELS = (0, 1, 2)
COMBINED_LABELS = (0, 1, 2, 3)


def strip_suffix(name: str) -> str | None:
    """File name without its NIfTI ending, or None when it is not a NIfTI file."""
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def mask_name(image_name: str) -> str:
    """The mask (and case id) for an image name, by the release's naming rule."""
    m = re.fullmatch(r"radiopaedia_org_covid-19-pneumonia-(\d+)_(\d+)_(\d+)-dcm", image_name)
    if m:
        return "radiopaedia_{}_{}_{}".format(*m.groups())
    return image_name.replace("_org_", "_", 1)


def source_of(case_id: str) -> str:
    return case_id.split("_", 1)[0]


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


@dataclass(frozen=True)
class CaseFiles:
    case_id: str
    image: Path | ZipMember
    lesion: Path | ZipMember | None  # Infection_Mask file
    lung: Path | ZipMember | None  # Lung_Mask file
    combined: Path | ZipMember | None  # Lung_and_Infection_Mask file

    def paths(self) -> tuple[Path | ZipMember, ...]:
        return tuple(p for p in (self.image, self.lesion, self.lung, self.combined) if p is not None)


def _nifti_files(folder: Path) -> dict[str, Path | ZipMember]:
    """{stem: file} of the folder, or of `<folder>.zip` when only the archive is there."""
    files: dict[str, Path | ZipMember] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            stem = strip_suffix(p.name)
            if stem is not None and p.is_file() and not p.name.startswith("."):
                files.setdefault(stem, p)  # .nii.gz sorts before .nii: prefer the compressed file
        return files
    archive = folder.with_name(folder.name + ".zip")
    if archive.is_file():
        try:
            with zipfile.ZipFile(archive) as zf:
                names = sorted(i.filename for i in zf.infolist() if not i.is_dir())
        except (zipfile.BadZipFile, OSError) as exc:
            raise CovbenchError(f"{archive}: not a readable zip archive ({exc})") from None
        for name in names:
            base = name.rsplit("/", 1)[-1]
            stem = strip_suffix(base)
            if stem is not None and not name.startswith("__MACOSX") and not base.startswith("."):
                files.setdefault(stem, ZipMember(archive, name))
    return files


def find_cases(data_dir: Path) -> tuple[list[CaseFiles], list[CovbenchError]]:
    """Pair images with their masks. Returns the complete cases and one error per unpaired image.
    Each sub-folder may also be its zip archive as downloaded (`Infection_Mask.zip`...)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CovbenchError(f"{data_dir}: data folder does not exist")
    image_dir = data_dir / IMAGE_DIR
    images = _nifti_files(image_dir)
    if not image_dir.is_dir() and not image_dir.with_name(IMAGE_DIR + ".zip").is_file():
        raise CovbenchError(
            f"{image_dir}: folder missing; expected the COVID-19-CT-Seg archives or their folders "
            f"({IMAGE_DIR}/, {LESION_DIR}/, {LUNG_DIR}/) - see `covbench data download covid-ct-seg`"
        )
    if not images:
        raise CovbenchError(f"{image_dir}: no .nii or .nii.gz files")
    lesions = _nifti_files(data_dir / LESION_DIR)
    lungs = _nifti_files(data_dir / LUNG_DIR)
    combined = _nifti_files(data_dir / COMBINED_DIR)
    cases, errors = [], []
    for stem, path in images.items():
        cid = mask_name(stem)
        lesion, lung, comb = lesions.get(cid), lungs.get(cid), combined.get(cid)
        if lesion is None and comb is None:
            errors.append(
                CovbenchError(f"{path}: image without a lesion mask ({LESION_DIR}/{cid}.nii.gz not found)")
            )
            continue
        cases.append(CaseFiles(cid, path, lesion, lung, comb))
    return cases, errors


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


def read_volume(path: Path | ZipMember) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Read a NIfTI volume in the `Case` orientation: (array (Z, H, W), spacing (Z, H, W) in mm,
    affine of the canonical (RAS+) image, for comparing image and mask geometry).

    Refused before any voxel is read: a zero or non-finite pixel size in the header, more than
    `MAX_VOXELS` voxels."""
    try:
        _check_header(_stored_header(path), path)
        img = _open(path)
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


def _check_labels(arr: np.ndarray, labels: tuple[int, ...], path) -> None:
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


def _check_geometry(ref: tuple[np.ndarray, np.ndarray, Path], other: tuple[np.ndarray, np.ndarray, Path]):
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


def _binary(mask: np.ndarray) -> np.ndarray:
    """A checked label volume (view) -> contiguous uint8 {0, 1}, in one copy plus one in-place pass."""
    out = np.ascontiguousarray(mask, dtype=np.uint8)  # labels are small non-negative integers here
    np.minimum(out, 1, out=out)
    return out


def read_case(files: CaseFiles) -> Case:
    """Read and check one case: geometry, labels, finite intensities.

    Each volume is copied once, from the reoriented view straight into a C-contiguous array."""
    view, spacing, aff = read_volume(files.image)
    if view.dtype.kind == "f":
        finite = np.isfinite(view)
        if not finite.all():
            raise CovbenchError(f"{files.image}: {int(finite.size - finite.sum())} NaN or infinite voxels")
        del finite
    image = np.ascontiguousarray(view, dtype=np.float32)
    del view
    ref = (image, aff, files.image)
    lesion = lung = None
    if files.combined is not None and (files.lesion is None or files.lung is None):
        comb, _, aff_c = read_volume(files.combined)
        _check_geometry(ref, (comb, aff_c, files.combined))
        _check_labels(comb, COMBINED_LABELS, files.combined)
        lesion = np.ascontiguousarray(comb == 3, dtype=np.uint8)
        lung = _binary(comb)  # lesions lie inside the lungs
    if files.lesion is not None:
        les, _, aff_l = read_volume(files.lesion)
        _check_geometry(ref, (les, aff_l, files.lesion))
        _check_labels(les, LESION_LABELS, files.lesion)
        lesion = _binary(les)
    if files.lung is not None:
        lu, _, aff_u = read_volume(files.lung)
        _check_geometry(ref, (lu, aff_u, files.lung))
        _check_labels(lu, LUNG_LABELS, files.lung)
        lung = _binary(lu)  # 1 = left, 2 = right lung: one lung region is enough here
    if lung is not None and not lung.any():
        raise CovbenchError(f"{files.lung or files.combined}: lung mask is empty")
    assert lesion is not None  # find_cases guarantees a lesion source
    source = source_of(files.case_id)
    intensity = intensity_of(source, image)
    check_intensity(image, lung, intensity, str(files.image))  # HU + 1024 stored raw, say
    return Case(
        case_id=files.case_id,
        image=image,
        lesion=lesion,
        lung=lung,
        spacing=spacing,
        source=source,
        intensity=intensity,
        # real files only (a zip member counts as its archive), so fingerprints can read them
        files=tuple(dict.fromkeys(str(p.archive if isinstance(p, ZipMember) else p) for p in files.paths())),
    )


def case_files(data_dir: Path, **_: object) -> list[Path]:
    """Every file `load` would read (the archive for members of a zip), for the data fingerprint."""
    cases, _ = find_cases(Path(data_dir))
    found = {p.archive if isinstance(p, ZipMember) else p for c in cases for p in c.paths()}
    return sorted(found)


def load(data_dir: Path, *, skip_bad: bool = False, bad: list[str] | None = None) -> Iterator[Case]:
    """Yield one `Case` per image in `data_dir`, sorted by file name.

    A bad input (unpaired image, unreadable file, zero pixel size, more than `MAX_VOXELS` voxels,
    mismatched geometry, unexpected labels, non-finite voxels, empty lung mask, intensities that are
    neither HU nor the 0..255 lung window) raises `CovbenchError` naming the file; with `skip_bad` the case is
    skipped instead, its message appended to `bad` (when given) and listed in one warning at the end.
    """
    cases, errors = find_cases(Path(data_dir))
    skipped: list[str] = [] if bad is None else bad
    if errors and not skip_bad:
        raise errors[0]
    skipped.extend(str(e) for e in errors)
    for files in cases:
        try:
            case = read_case(files)
        except CovbenchError as exc:
            if not skip_bad:
                raise
            skipped.append(str(exc))
            continue
        yield case
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} bad case(s):\n  " + "\n  ".join(skipped), UserWarning, stacklevel=2
        )


SPEC = DatasetSpec(
    name="covid-ct-seg",
    load=load,
    title="COVID-19-CT-Seg: 20 CT volumes with lung and infection masks",
    reference="Ma J. et al., Toward data-efficient learning: a benchmark for COVID-19 CT lung and "
    "infection segmentation, Med Phys 2021; Zenodo record 3757476",
    needs_data_dir=True,
    default_split="patient",
    case_files=case_files,
    skips_bad=True,
)
