"""The two records that cross the datasets boundary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Case:
    """One patient volume as an adapter yields it.

    - `image`: (Z, H, W) float32, axial slices first; Z runs inferior -> superior, H anterior ->
      posterior, W patient right -> left (adapters reorient to this).
    - `lesion`: (Z, H, W) uint8 in {0, 1}; `lung`: the same or None when the source has no lung mask.
    - `spacing`: mm per voxel in the same (Z, H, W) order.
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


@dataclass
class SliceSet:
    """Pre-processed 2D slices, ready for training: what the engine consumes.

    Images are stored as uint8 (0..255 for [0, 1]) to keep the whole set small enough to live in
    Ray's object store or on a GPU; `float_images()` gives the [0, 1] view.
    """

    images: np.ndarray  # (N, S, S) uint8
    masks: np.ndarray  # (N, S, S) uint8 in {0, 1}
    spacing: np.ndarray  # (N, 2) float32, effective mm per output pixel (row, col)
    patient: np.ndarray  # (N,) str, patient / case id
    slice_index: np.ndarray  # (N,) int32, index of the slice in its volume
    source: np.ndarray  # (N,) str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray) -> SliceSet:
        return SliceSet(
            self.images[index],
            self.masks[index],
            self.spacing[index],
            self.patient[index],
            self.slice_index[index],
            self.source[index],
        )

    def float_images(self) -> np.ndarray:
        return self.images.astype(np.float32) / 255.0
