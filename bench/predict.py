"""Segment new images with a finished run: the run's pre-processing, its evaluated weights (a seed
ensemble by default), and masks written back in the input's geometry.

    predictor = load_predictor(run_dir, "unet")            # every finished seed of unet
    written = predict_files(predictor, [Path("ct.nii.gz")], Path("out"))

What a run can take follows from its dataset: NIfTI volumes (.nii, .nii.gz) for `phantom` and
`covid-ct-seg`, 2D image files for `image-folder` (`RUN_INPUTS`). Inputs are read the way the
run's adapter read its training data (`covid_ct_seg.read_volume`, `image_folder.read_plane`:
colour images become grey as in training), pre-processed with the run's `PreprocessConfig`, and
each trial's probabilities (flip TTA and the threshold as the run evaluated) are averaged.

Back to the input's geometry: each pre-processed slice's probabilities are resized into the crop
box (`SliceGeometry.restore`), slices that selection dropped stay background, then the volume is
turned from covbench's (Z, H, W) orientation back into the file's own voxel order, so the written
mask has the input's shape and affine. NIfTI masks hold {0, 1}, PNG masks {0, 255}.

A CT volume is cropped to its lung; without a lung mask (`lung=`) the lung is estimated as the
run's pre-processing does for data without one (air enclosed by the body), which may crop
differently from a training case that had a mask.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch import nn

from covbench import registry
from covbench.checkpoint import WEIGHTS
from covbench.config import RunConfig
from covbench.datasets import covid_ct_seg, image_folder
from covbench.datasets.base import Case
from covbench.datasets.preprocess import (
    PreprocessConfig,
    SliceGeometry,
    check_intensity,
    preprocess_case_geometry,
)
from covbench.errors import CovbenchError, DamagedFile
from covbench.run_folder import read_config
from covbench.storage import Storage
from covbench.store import atomic_path, done_trials
from covbench.train import TrainOptions, predict

NIFTI, IMAGE = "NIfTI", "image"
RUN_INPUTS = {"phantom": NIFTI, "covid-ct-seg": NIFTI, "image-folder": IMAGE}  # dataset -> input kind
IMAGE_SUFFIXES = image_folder.SUFFIXES


def input_kind(path: Path) -> str | None:
    """NIFTI, IMAGE, or None for a file of neither kind."""
    name = path.name.lower()
    if covid_ct_seg.strip_suffix(name) is not None:
        return NIFTI
    return IMAGE if path.suffix.lower() in IMAGE_SUFFIXES else None


def input_stem(path: Path) -> str:
    return covid_ct_seg.strip_suffix(path.name) or path.stem


@dataclass
class Member:
    """One trial of the ensemble: its seed, fold and network (evaluation mode, on the device)."""

    seed: int
    fold: int
    network: nn.Module


@dataclass
class Predictor:
    """A model of a finished run, ready to segment: the run's configuration and every selected
    trial's evaluated weights."""

    run_dir: Path
    model: str
    config: RunConfig
    members: list[Member]
    device: torch.device

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(image_size=self.config.image_size, **self.config.preprocess)

    @property
    def input_kind(self) -> str:
        return RUN_INPUTS[self.config.dataset]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S) uint8 pre-processed slices -> (N, S, S) float32 lesion probabilities, the mean
        over the members; each member predicts as its trial evaluated (batch, amp, TTA)."""
        x = torch.from_numpy(np.asarray(images)).float().div_(255.0).unsqueeze(1)
        batch = TrainOptions.from_config(self.config, 0).eval_batch(self.device)  # the trials' own
        total = np.zeros((len(images), *images.shape[1:]), np.float32)
        for member in self.members:
            prob = predict(member.network, x, batch, self.device, amp=self.config.amp, tta=self.config.tta)
            total += prob[:, 0].numpy()
        return total / len(self.members)


def load_predictor(
    run_dir: Path, model: str, seed: int | None = None, device: torch.device | None = None
) -> Predictor:
    """The finished trials of `model` in `run_dir` (of `seed` only, when given), loaded.

    Raises CovbenchError (one line): not a run folder, a model the run did not train, a dataset
    whose inputs `predict` does not know, no finished trial of the model (or seed), weights that
    are missing or do not fit."""
    run_dir = Path(run_dir)
    try:
        stored = read_config(run_dir)
    except DamagedFile as exc:
        raise CovbenchError(f"{exc}; cannot tell how the run pre-processed its data") from None
    if stored is None:
        raise CovbenchError(f"{run_dir}: no config.json (is it a covbench run folder?)")
    cfg = RunConfig.from_dict({k: v for k, v in stored.items() if not k.startswith("_")})
    if model not in cfg.models:
        raise CovbenchError(
            f"--model {model!r}: {run_dir} trained {', '.join(cfg.models)}; choose one of those"
        )
    if cfg.dataset not in RUN_INPUTS:
        raise CovbenchError(
            f"{run_dir} was trained on dataset {cfg.dataset!r}; covbench predict reads inputs of "
            f"{', '.join(RUN_INPUTS)} runs"
        )
    trials = [
        (tdir, rec)
        for tdir, rec in done_trials(run_dir, stored.get("_key"))
        if rec.get("model") == model and (seed is None or int(rec.get("seed", -1)) == seed)
    ]
    if not trials:
        which = f"model {model!r}" + (f" seed {seed}" if seed is not None else "")
        raise CovbenchError(f"{run_dir}: no finished trial of {which}; run or resume it first")
    device = device or (torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu"))
    spec = registry.get_model(model)
    members = []
    for tdir, rec in trials:
        network = spec.create(in_channels=1, classes=1, width=rec.get("width"), **(rec.get("options") or {}))
        weights = rec.get("weights") or WEIGHTS
        # in the trial's folder, or on the run's object storage (`covbench run --storage`)
        where, name = (
            (Storage.parse(weights.rsplit("/", 1)[0]), weights.rsplit("/", 1)[1])
            if "://" in weights
            else (Storage.local(tdir), weights)
        )
        path = where.url(name) if "://" in weights else tdir / name
        try:
            state = where.load_torch(name)
            if state is None:
                raise CovbenchError(f"{path}: the trial's evaluated weights are missing")
            network.load_state_dict(state["state"])
        except CovbenchError:
            raise
        except Exception as exc:  # not a torch file, truncated, another architecture's weights
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            raise CovbenchError(f"{path}: cannot load the trial's weights ({reason})") from None
        members.append(Member(int(rec["seed"]), int(rec.get("fold", 0)), network.to(device).eval()))
    return Predictor(run_dir, model, cfg, members, device)


@dataclass
class Input:
    """One input read for prediction: a Case in covbench's orientation, and how to write back."""

    path: Path
    case: Case
    write: Callable[[np.ndarray, Path], Path]  # (Z, H, W) bool mask, output folder -> written file


def list_inputs(path: Path, kind: str) -> list[Path]:
    """The input files: `path` itself, or the files of kind NIFTI/IMAGE in the folder `path`.
    A file of another kind than the run's, or with more than one channel, is refused before any
    is predicted."""
    path = Path(path)
    if not path.exists():
        raise CovbenchError(f"--input {path}: no such file or folder")
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and input_kind(p)
    )  # fmt: skip
    if not files:
        raise CovbenchError(f"--input {path}: no NIfTI (.nii, .nii.gz) or image files there")
    for f in files:
        found = input_kind(f)
        if found is None:
            raise CovbenchError(
                f"--input {f}: neither NIfTI (.nii, .nii.gz) nor an image ({', '.join(IMAGE_SUFFIXES)})"
            )
        if found != kind:
            raise CovbenchError(
                f"--input {f}: {'a NIfTI volume' if found == NIFTI else 'an image file'}, but the run "
                f"was trained on {kind} inputs; predict with a run of the same kind"
            )
        if found == NIFTI:  # header only; a 2D image is small enough to read twice
            _nifti_channels(f)
        else:
            image_folder.read_plane(f)
    stems = [input_stem(f) for f in files]
    twice = next((s for s in stems if stems.count(s) > 1), None)
    if twice is not None:
        raise CovbenchError(f"--input {path}: two inputs named {twice!r} would write the same output")
    return files


def _nifti_channels(path: Path) -> None:
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
    """Undo `covid_ct_seg.read_volume`'s orientation: a (Z, H, W) array in covbench's convention
    -> the voxel order of `original`'s file, so it fits `original.affine`."""
    canon = volume[:, ::-1, ::-1].transpose(2, 1, 0)  # (Z, H, W) -> RAS+ (i, j, k)
    ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
    back = nib.orientations.ornt_transform(ras, nib.orientations.io_orientation(original.affine))
    return nib.orientations.apply_orientation(canon, back)


def read_nifti(path: Path, lung: Path | None = None) -> Input:
    """A CT volume (and optionally its lung mask) as a Case with an empty lesion mask."""
    _nifti_channels(path)
    view, spacing, aff = covid_ct_seg.read_volume(path)
    image = np.ascontiguousarray(view, dtype=np.float32)
    if not np.isfinite(image).all():
        raise CovbenchError(f"{path}: NaN or infinite voxels")
    lung_mask = None
    if lung is not None:
        _nifti_channels(lung)
        lview, _, laff = covid_ct_seg.read_volume(lung)
        covid_ct_seg._check_geometry((image, aff, path), (lview, laff, lung))
        lung_mask = np.ascontiguousarray(lview > 0, dtype=np.uint8)
        if not lung_mask.any():
            raise CovbenchError(f"{lung}: lung mask is empty")
    stem = input_stem(path)
    source = covid_ct_seg.source_of(covid_ct_seg.mask_name(stem))
    intensity = covid_ct_seg.intensity_of(source, image)
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

    return Input(path, case, write)


def read_image(path: Path) -> Input:
    """A 2D image file, read as the image-folder adapter reads its training images."""
    plane = image_folder.read_plane(path)
    if plane.dtype.kind == "f" and not np.isfinite(plane).all():
        raise CovbenchError(f"{path}: NaN or infinite pixels")
    intensity = "display" if plane.dtype == np.uint8 else "hu"
    image = plane.astype(np.float32)[None]
    stem = input_stem(path)
    case = Case(
        stem, image, np.zeros(image.shape, np.uint8), None, (1.0, 1.0, 1.0), "input", intensity, (str(path),)
    )

    def write(mask: np.ndarray, out_dir: Path) -> Path:
        from PIL import Image

        target = out_dir / f"{stem}.png"
        buffer = io.BytesIO()
        Image.fromarray(mask[0].astype(np.uint8) * 255).save(buffer, format="PNG")
        with atomic_path(target) as tmp:
            tmp.write_bytes(buffer.getvalue())
        return target

    return Input(path, case, write)


def read_input(path: Path, lung: Path | None = None) -> Input:
    if input_kind(path) == NIFTI:
        return read_nifti(path, lung)
    if lung is not None:
        raise CovbenchError(f"--lung {lung}: lung masks are for NIfTI volumes, not for {path.name}")
    return read_image(path)


@dataclass
class Prediction:
    """One input's prediction in both geometries."""

    input: Input
    geometry: SliceGeometry
    probabilities: np.ndarray  # (N, S, S) pre-processed geometry, mean over members
    mask: np.ndarray  # (Z, H, W) bool, the input's geometry (covbench orientation)


def predict_case(predictor: Predictor, item: Input) -> Prediction:
    slices, geometry = preprocess_case_geometry(item.case, predictor.preprocess)
    prob = predictor.probabilities(slices.images)
    mask = geometry.restore(prob) >= predictor.config.threshold
    return Prediction(item, geometry, prob, mask)


def lung_for(path: Path, lung: Path | None, many: bool) -> Path | None:
    """The lung mask of one input: `lung` itself for a single input; for a folder of inputs, the
    file in the folder `lung` with the input's name or its release mask name (coronacases_org_001
    -> coronacases_001), or None when there is none."""
    if lung is None or not many:
        return lung
    stem = input_stem(path)
    for name in (stem, covid_ct_seg.mask_name(stem)):
        for suffix in covid_ct_seg.SUFFIXES:
            if (lung / f"{name}{suffix}").is_file():
                return lung / f"{name}{suffix}"
    return None


def predict_files(
    predictor: Predictor,
    files: list[Path],
    out_dir: Path,
    lung: Path | None = None,
    on_written: Callable[[Path, Path], Any] | None = None,
) -> list[Path]:
    """Segment every file into `out_dir` (one mask per input, each written atomically: a failure
    leaves the masks written so far whole, and no partial file)."""
    if lung is not None and len(files) > 1 and not lung.is_dir():
        raise CovbenchError(f"--lung {lung}: with a folder of inputs, give a folder of lung masks")
    if lung is not None and len(files) == 1 and not lung.is_file():
        raise CovbenchError(f"--lung {lung}: no such file")
    out_dir = Path(out_dir)
    written = []
    for path in files:
        item = read_input(path, lung_for(path, lung, len(files) > 1))
        result = predict_case(predictor, item)
        out_dir.mkdir(parents=True, exist_ok=True)
        target = item.write(result.mask, out_dir)
        written.append(target)
        if on_written is not None:
            on_written(path, target)
    return written
