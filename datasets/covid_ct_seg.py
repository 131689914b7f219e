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

import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covbench.datasets.base import Case, read_cases
from covbench.datasets.nifti import (  # re-exported: the names this module always had
    MAX_VOXELS,
    SUFFIXES,
    ZipMember,
    check_geometry,
    check_labels,
    intensity_of,
    nifti_input,
    read_volume,
    strip_suffix,
)
from covbench.datasets.preprocess import check_intensity
from covbench.errors import CovbenchError
from covbench.registry import DatasetSpec

_check_geometry = check_geometry  # the old private names
_check_labels = check_labels
__all__ = ["MAX_VOXELS", "SUFFIXES", "ZipMember", "intensity_of", "read_volume", "strip_suffix"]

IMAGE_DIR = "COVID-19-CT-Seg_20cases"
LESION_DIR = "Infection_Mask"
LUNG_DIR = "Lung_Mask"
COMBINED_DIR = "Lung_and_Infection_Mask"
LESION_LABELS = (0, 1)
LUNG_LABELS = (0, 1, 2)
COMBINED_LABELS = (0, 1, 2, 3)


def mask_name(image_name: str) -> str:
    """The mask (and case id) for an image name, by the release's naming rule."""
    m = re.fullmatch(r"radiopaedia_org_covid-19-pneumonia-(\d+)_(\d+)_(\d+)-dcm", image_name)
    if m:
        return "radiopaedia_{}_{}_{}".format(*m.groups())
    return image_name.replace("_org_", "_", 1)


def source_of(case_id: str) -> str:
    return case_id.split("_", 1)[0]


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
        check_geometry(ref, (comb, aff_c, files.combined))
        check_labels(comb, COMBINED_LABELS, files.combined)
        lesion = np.ascontiguousarray(comb == 3, dtype=np.uint8)
        lung = _binary(comb)  # lesions lie inside the lungs
    if files.lesion is not None:
        les, _, aff_l = read_volume(files.lesion)
        check_geometry(ref, (les, aff_l, files.lesion))
        check_labels(les, LESION_LABELS, files.lesion)
        lesion = _binary(les)
    if files.lung is not None:
        lu, _, aff_u = read_volume(files.lung)
        check_geometry(ref, (lu, aff_u, files.lung))
        check_labels(lu, LUNG_LABELS, files.lung)
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
    yield from read_cases(cases, read_case, errors, skip_bad=skip_bad, bad=bad)


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
    read_input=nifti_input(lambda stem: source_of(mask_name(stem))),  # radiopaedia: window255
)
