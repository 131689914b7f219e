"""The two records that cross the datasets boundary, and the constants adapters share."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from covbench.errors import CovbenchError

T = TypeVar("T")

# The paper's lung window in HU, and the one the "window255" volumes of COVID-19-CT-Seg were
# windowed with before being scaled to 0..255.
LUNG_WINDOW = (-1250.0, 250.0)
# Units of distances (ASSD, HD95, the NSD tolerance): millimetres where the data records a pixel
# spacing, pixels where it does not. Carried from `Case.spacing_unit` to the run folder and reports.
DISTANCE_UNITS = ("mm", "px")


def default_cache_root() -> Path:
    """Where generated phantoms and pre-processing caches go: `$COVBENCH_CACHE` or ~/.cache/covbench."""
    env = os.environ.get("COVBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "covbench"


@dataclass
class Case:
    """One patient volume as an adapter yields it.

    - `image`: (Z, H, W) float32, axial slices first; Z runs inferior -> superior, H anterior ->
      posterior, W patient right -> left (adapters reorient to this).
    - `lesion`: (Z, H, W) uint8 in {0, 1}; `lung`: the same or None when the source has no lung mask.
    - `spacing`: mm per voxel in the same (Z, H, W) order; with `spacing_unit` "px" (a source
      that records no pixel size, such as most 2D slice collections) 1 per pixel, so distances
      are in pixels and every output says so.
    - `intensity`: "hu" (Hounsfield units) or "window255" (already windowed to [-1250, 250] HU and
      scaled to 0..255, as the Radiopaedia volumes of COVID-19-CT-Seg ship), or "display" (0..255
      grey values of an unknown window, as 2D slice collections ship).
    - `source`: sub-collection name ("coronacases", "radiopaedia", "phantom", ...), used to balance
      splits and reported per source.
    - `split`: the part ("train", "val", "test") of the dataset's own split the case belongs to, or
      None; the `predefined` split strategy reads it.
    - `slice_offset`: number of the first slice, so slice `z` is reported as `slice_offset + z`
      (2D slice folders yield one case per slice and put the slice's number here).
    """

    case_id: str
    image: np.ndarray
    lesion: np.ndarray
    lung: np.ndarray | None
    spacing: tuple[float, float, float]
    source: str
    intensity: str = "hu"
    files: tuple[str, ...] = ()  # the files it was read from, for error messages and fingerprints
    split: str | None = None  # part of the dataset's predefined split, if it has one
    slice_offset: int = 0  # slice_index of z = slice_offset + z
    spacing_unit: str = "mm"  # "mm", or "px" when the source has no pixel spacing (DISTANCE_UNITS)


@dataclass
class SliceSet:
    """Pre-processed 2D slices, ready for training: what the engine consumes.

    Images are stored as uint8 (0..255 for [0, 1]) to keep the whole set small enough to live in
    Ray's object store or on a GPU.
    """

    images: np.ndarray  # (N, S, S) uint8
    masks: np.ndarray  # (N, S, S) uint8 in {0, 1}
    spacing: np.ndarray  # (N, 2) float32, effective mm per output pixel (row, col)
    patient: np.ndarray  # (N,) str, patient / case id
    slice_index: np.ndarray  # (N,) int32, index of the slice in its volume
    source: np.ndarray  # (N,) str

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class PredictionInput:
    """One file read for `covbench predict`: a Case in covbench's orientation (empty lesion mask),
    and how to write a (Z, H, W) bool mask back in the file's own geometry (-> the written file)."""

    path: Path
    case: Case
    write: Callable[[np.ndarray, Path], Path]


@dataclass(frozen=True)
class InputReader:
    """How a dataset adapter reads prediction inputs (`DatasetSpec.read_input`): the files it
    takes, read the way it reads its training data, so `covbench predict` needs no table of
    adapters. `read(path, lung=None)`; `check(path)` (optional) refuses a file cheaply before any
    input is predicted; `takes_lung`: whether `--lung` masks apply."""

    kind: str  # what the files are, for messages ("NIfTI", "image")
    suffixes: tuple[str, ...]  # file endings, lower case (".nii.gz", ".png", ...)
    read: Callable[..., PredictionInput]
    check: Callable[[Path], None] | None = None
    takes_lung: bool = False

    def accepts(self, path: Path) -> bool:
        return path.name.lower().endswith(self.suffixes)


def read_cases(
    items: Iterable[T],
    read: Callable[[T], Case],
    errors: list[CovbenchError],
    *,
    skip_bad: bool = False,
    bad: list[str] | None = None,
) -> Iterator[Case]:
    """Yield `read(item)` per item. Without `skip_bad` the first whole-dataset error or bad item
    raises (naming its file); with it, each is skipped, its message appended to `bad` (when given)
    and all listed in one warning at the end: the one skip-bad rule every adapter follows."""
    skipped: list[str] = [] if bad is None else bad
    if errors and not skip_bad:
        raise errors[0]
    skipped.extend(str(e) for e in errors)
    for item in items:
        try:
            case = read(item)
        except CovbenchError as exc:
            if not skip_bad:
                raise
            skipped.append(str(exc))
            continue
        yield case
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} bad case(s):\n  " + "\n  ".join(skipped), UserWarning, stacklevel=3
        )
