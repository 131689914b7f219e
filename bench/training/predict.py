"""Segment new images with a finished run: the run's pre-processing, its evaluated weights (a seed
ensemble by default), and masks written back in the input's geometry.

    predictor = load_predictor(run_dir, "unet")            # every finished seed of unet
    written = predict_files(predictor, [Path("ct.nii.gz")], Path("out"))

What a run can take follows from its dataset: its adapter's `DatasetSpec.read_input`
(`covbench.datasets.base.InputReader`) says which files it reads and reads them the way it read
its training data (NIfTI volumes through `nifti.read_volume` for `phantom`, `covid-ct-seg`,
`nnunet`, `mosmed`, `covid19-20`; 2D image files through `image_folder.read_plane` for
`image-folder`, colour becoming grey as in training); a run on an adapter without one is refused.
Inputs are pre-processed with the run's `PreprocessConfig`, and
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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from covbench import registry
from covbench.config import RunConfig
from covbench.datasets import covid_ct_seg, nifti
from covbench.datasets.base import InputReader, PredictionInput
from covbench.datasets.preprocess import PreprocessConfig, SliceGeometry, preprocess_case_geometry
from covbench.errors import CovbenchError, DamagedFile
from covbench.folder.io import done_trials
from covbench.folder.layout import WEIGHTS
from covbench.folder.storage import Storage
from covbench.folder.stored_config import read_stored_config
from covbench.training.loop import TrainOptions, predict


def input_kind(path: Path) -> str | None:
    """What a file is, for messages about an input the run's adapter does not read: the kind of
    the first registered dataset whose reader takes it, or None."""
    for name in registry.list_datasets():
        reader = registry.get_dataset(name).read_input
        if reader is not None and reader.accepts(path):
            return reader.kind
    return None


def input_stem(path: Path) -> str:
    return nifti.strip_suffix(path.name) or path.stem


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
    def reader(self) -> InputReader:
        """How the run's adapter reads inputs (load_predictor checked it has one)."""
        return registry.get_dataset(self.config.dataset).read_input

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
        stored = read_stored_config(run_dir)
    except DamagedFile as exc:
        raise CovbenchError(f"{exc}; cannot tell how the run pre-processed its data") from None
    if stored is None:
        raise CovbenchError(f"{run_dir}: no config.json (is it a covbench run folder?)")
    cfg = stored.config
    if model not in cfg.models:
        raise CovbenchError(
            f"--model {model!r}: {run_dir} trained {', '.join(cfg.models)}; choose one of those"
        )
    if registry.get_dataset(cfg.dataset).read_input is None:
        raise CovbenchError(
            f"{run_dir} was trained on dataset {cfg.dataset!r}, whose adapter declares no way to read "
            "prediction inputs (DatasetSpec.read_input); covbench predict cannot read inputs for it"
        )
    trials = [
        (tdir, rec)
        for tdir, rec in done_trials(run_dir, str(stored.key) if stored.key else None)
        if rec.model == model and (seed is None or rec.seed == seed)
    ]
    if not trials:
        which = f"model {model!r}" + (f" seed {seed}" if seed is not None else "")
        raise CovbenchError(f"{run_dir}: no finished trial of {which}; run or resume it first")
    device = device or (torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu"))
    spec = registry.get_model(model)
    members = []
    for tdir, rec in trials:
        network = spec.create(in_channels=1, classes=1, width=rec.width, **rec.options)
        weights = rec.weights or WEIGHTS
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
        members.append(Member(int(rec.seed), int(rec.fold), network.to(device).eval()))
    return Predictor(run_dir, model, cfg, members, device)


Input = PredictionInput  # the name this module used


def list_inputs(path: Path, reader: InputReader) -> list[Path]:
    """The input files: `path` itself, or the files in the folder `path` the run's adapter reads
    (`reader.suffixes`). A file of another kind than the run's, or one the reader's `check`
    refuses (e.g. a NIfTI volume with more than one channel), is refused before any is predicted."""
    path = Path(path)
    if not path.exists():
        raise CovbenchError(f"--input {path}: no such file or folder")
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and reader.accepts(p)
    )  # fmt: skip
    if not files:
        raise CovbenchError(f"--input {path}: no {reader.kind} files ({', '.join(reader.suffixes)}) there")
    for f in files:
        if not reader.accepts(f):
            found = input_kind(f)
            if found is None:
                raise CovbenchError(f"--input {f}: not a {reader.kind} file ({', '.join(reader.suffixes)})")
            what = {"NIfTI": "a NIfTI volume", "image": "an image file"}.get(found, f"a {found} file")
            raise CovbenchError(
                f"--input {f}: {what}, but the run was trained on {reader.kind} inputs; "
                "predict with a run of the same kind"
            )
        if reader.check is not None:
            reader.check(f)
    stems = [input_stem(f) for f in files]
    twice = next((s for s in stems if stems.count(s) > 1), None)
    if twice is not None:
        raise CovbenchError(f"--input {path}: two inputs named {twice!r} would write the same output")
    return files


def read_input(path: Path, lung: Path | None = None, *, reader: InputReader) -> PredictionInput:
    """One input read by the run's adapter (`Predictor.reader`); `--lung` only where it takes one."""
    if lung is not None and not reader.takes_lung:
        raise CovbenchError(f"--lung {lung}: lung masks are for NIfTI volumes, not for {path.name}")
    return reader.read(path, lung) if reader.takes_lung else reader.read(path)


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
        item = read_input(path, lung_for(path, lung, len(files) > 1), reader=predictor.reader)
        result = predict_case(predictor, item)
        out_dir.mkdir(parents=True, exist_ok=True)
        target = item.write(result.mask, out_dir)
        written.append(target)
        if on_written is not None:
            on_written(path, target)
    return written
