"""One trial = one (model, seed, fold): build, train, predict the test slices, score them.

A trial is a plain function of (TrialSpec, TrialData) so the scheduler can run it in a Ray
worker or in-process. It never writes into the run folder: everything the report needs (the
record, the per-case rows, the epoch log, the compressed test predictions) returns by value with
its result, and the driver writes it. The only thing a trial writes is its resumable state
(covbench.training.checkpoint), to the run's storage: the trial's folder by default, or object storage
(`--storage`) on a cluster whose nodes share no disk.
"""

from __future__ import annotations

import io
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from covbench import registry
from covbench.config import RunConfig
from covbench.datasets import SliceSet
from covbench.faults import FaultHooks
from covbench.folder.layout import TRIALS, WEIGHTS
from covbench.folder.record import TrialRecord
from covbench.folder.storage import Storage
from covbench.metrics import batch_metrics, empty_case
from covbench.training import heartbeat
from covbench.training.checkpoint import Checkpointer, CheckpointPolicy, LoadOutcome
from covbench.training.health import assess
from covbench.training.loop import (
    Best,
    EpochEnd,
    TrainOptions,
    amp_choice,
    predict,
    seed_everything,
    train_model,
)


@dataclass(frozen=True)
class TrialSpec:
    model: str
    seed: int
    fold: int
    config: RunConfig
    key: str  # the run's key: configuration hash + data fingerprint (what a checkpoint must match)
    trial_dir: str
    threads: int = 1
    checkpoint: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    faults: FaultHooks = field(default_factory=FaultHooks)  # test-only, see covbench.faults
    storage: Storage | None = None  # where the run keeps checkpoints; None: the run folder itself

    @property
    def name(self) -> str:
        return Path(self.trial_dir).name

    def trial_storage(self) -> Storage:
        """This trial's place in the run's storage (its folder in the run folder by default)."""
        if self.storage is None:
            return Storage.local(Path(self.trial_dir))
        return self.storage.child(TRIALS, self.name)


@dataclass
class TrialData:
    """The pre-processed slices and this fold's split, shared by every trial (via Ray's object
    store, so each node receives it once)."""

    slices: SliceSet
    train: np.ndarray  # indices into slices
    val: np.ndarray
    test: np.ndarray


@dataclass
class TrialResult:
    """What a finished trial hands the driver (by value: the driver may be on another machine)."""

    record: TrialRecord  # without where and when it ran: the driver adds that (runner._timing)
    rows: list[dict[str, Any]]  # one per test slice: cases.csv
    epochs: list[dict[str, Any]] = field(default_factory=list)  # one per trained epoch: epochs.csv
    predictions: bytes = b""  # predictions.npz, compressed: the report's qualitative figures


def slice_tensors(slices: SliceSet, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(slices.images[index]).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(slices.masks[index]).float().unsqueeze(1)
    return x.contiguous(), y.contiguous()


def pick_device() -> torch.device:
    # Ray sets CUDA_VISIBLE_DEVICES to the GPUs it granted this task, so cuda:0 is ours.
    return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0")
        return f"cuda:{visible} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.node()})"


def run_fold_trial(spec: TrialSpec, slices: SliceSet, parts: dict[str, np.ndarray]) -> TrialResult:
    """`run_trial` with the slices (shipped once per run) and this fold's indices passed apart,
    so K folds share one copy of the data in the object store."""
    return run_trial(spec, TrialData(slices, parts["train"], parts["val"], parts["test"]))


@dataclass
class _Trained:
    best: Best
    resumed_from_epoch: int
    train_seconds: float
    checkpoint_note: str | None
    epochs: list[dict[str, Any]]  # the whole epoch log, earlier attempts' epochs included


def _build(spec: TrialSpec) -> registry.BuiltModel:
    options = spec.config.model_options.get(spec.model, {})
    return registry.build_model(registry.get_model(spec.model), spec.config.width, options)


def _train(
    spec: TrialSpec,
    model: nn.Module,
    data: TrialData,
    options: TrainOptions,
    device: torch.device,
    checkpointer: Checkpointer,
) -> _Trained:
    """Train from scratch, from the last checkpoint, or not at all (weights already final)."""
    loaded: LoadOutcome = checkpointer.load(model)
    if loaded.finished is not None:  # killed after training, during evaluation: just evaluate
        return _Trained(loaded.finished, options.epochs, 0.0, loaded.note, loaded.epoch_log)
    start = loaded.resume.epoch if loaded.resume is not None else 0  # the model holds its weights
    # the epochs up to the checkpoint come with it; later ones of a lost attempt are trained again
    log = [row for row in loaded.epoch_log if int(row["epoch"]) <= start]

    def on_epoch(end: EpochEnd) -> None:
        end.row["ckpt_s"] = 0.0
        log.append(end.row)  # before the checkpoint, which carries the log
        end.row["ckpt_s"] = checkpointer.after_epoch(end, log)  # seconds it took from training
        heartbeat.beat()
        checkpointer.fault_point()

    result = train_model(
        model,
        slice_tensors(data.slices, data.train),
        slice_tensors(data.slices, data.val),
        options,
        device,
        on_epoch=on_epoch,
        on_step=heartbeat.beat,  # progress for the driver's stall watch (covbench.training.heartbeat)
        resume=loaded.resume,
    )
    best = Best(result.best_val_dice, result.best_epoch, result.best_state)
    checkpointer.finish(best, result.epochs_run, log)  # written while the test slices are predicted
    return _Trained(best, start, result.train_seconds, loaded.note, log)


def _evaluate(
    spec: TrialSpec,
    model: nn.Module,
    best: Best,
    data: TrialData,
    options: TrainOptions,
    device: torch.device,
) -> tuple[list[dict[str, Any]], bytes]:
    """Predict the test slices with the selected weights, keep the predictions, score every slice."""
    model.load_state_dict(best.state)
    model.to(device)
    channels_last = options.uses_channels_last(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    test_x, test_y = slice_tensors(data.slices, data.test)
    heartbeat.beat()
    prob = predict(
        model,
        test_x,
        options.eval_batch(device),  # the batch validation used: one eval size per trial
        device,
        amp=options.amp,
        channels_last=channels_last,
        tta=spec.config.tta,
    )[:, 0].numpy()
    pred = prob >= options.threshold
    target = test_y[:, 0].numpy().astype(bool)
    heartbeat.beat()
    metrics = batch_metrics(pred, target, data.slices.spacing[data.test], probs=prob)
    heartbeat.beat()
    # Quantised predictions for the report's qualitative figures; small enough to send back.
    buffer = io.BytesIO()
    np.savez_compressed(buffer, prob=np.round(prob * 255).astype(np.uint8), index=data.test.astype(np.int32))
    sl = data.slices
    rows = [
        {
            "model": spec.model,
            "seed": spec.seed,
            "fold": spec.fold,
            "case": f"{sl.patient[i]}:{int(sl.slice_index[i]):04d}",
            "patient": str(sl.patient[i]),
            "slice": int(sl.slice_index[i]),
            "source": str(sl.source[i]),
            "empty_case": empty_case(pred[k], target[k]),
            **m,
        }
        for k, (i, m) in enumerate(zip(data.test, metrics, strict=True))
    ]
    return rows, buffer.getvalue()


def run_trial(spec: TrialSpec, data: TrialData) -> TrialResult:
    cfg = spec.config
    started = time.time()
    spec.faults.before_training(spec.name)
    torch.set_num_threads(max(1, spec.threads))
    seed_everything(spec.seed, cfg.deterministic)
    built = _build(spec)  # the first attempt in a worker imports the model's plugin here
    heartbeat.beat()
    device = pick_device()
    options = TrainOptions.from_config(cfg, spec.seed)
    checkpointer = Checkpointer(spec.trial_storage(), spec.key, spec.checkpoint, spec.faults)
    try:
        with spec.faults.patched():  # test-only: regression injection (covbench.faults)
            trained = _train(spec, built.model, data, options, device, checkpointer)
            t_eval = time.perf_counter()
            rows, predictions = _evaluate(spec, built.model, trained.best, data, options, device)
            eval_seconds = time.perf_counter() - t_eval
    finally:
        checkpointer.close()  # the weights are on disk before the trial counts as done
    stats = checkpointer.stats
    record = TrialRecord(
        model=spec.model,
        seed=spec.seed,
        fold=spec.fold,
        trial=spec.name,
        status="done",
        config_key=spec.key,
        parameters=built.parameters,
        width=built.width,
        options=built.options,
        device=_device_label(device),
        threads=torch.get_num_threads(),
        deterministic=cfg.deterministic,
        eval_batch_size=options.eval_batch(device),
        amp=amp_choice(options.amp, device),  # the precision this trial trained in on its device
        epochs=options.epochs,
        resumed_from_epoch=trained.resumed_from_epoch,
        best_epoch=trained.best.epoch,
        selection=options.selection,  # best_val, or final: best_val_dice is then the last epoch's
        # null, not NaN, when nothing was validated: record.json stays strict JSON
        best_val_dice=None if math.isnan(trained.best.val_dice) else trained.best.val_dice,
        train_seconds=trained.train_seconds,
        eval_seconds=eval_seconds,
        wall_seconds=time.time() - started,
        started=started,
        finished=time.time(),
        weights=WEIGHTS if spec.storage is None else checkpointer.storage.url(WEIGHTS),
        checkpoint_writes=stats.writes,
        checkpoint_epochs=stats.epochs_written,
        checkpoint_blocked_seconds=stats.blocked_s,
        checkpoint_write_seconds=stats.write_s,
        checkpoint_bytes_written=stats.bytes_written,
        checkpoint_every_seconds=spec.checkpoint.every_seconds,
        checkpoint_note=trained.checkpoint_note,
        peak_gpu_memory_gib=(
            round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None
        ),
        n_train=len(data.train),
        n_val=len(data.val),
        n_test=len(data.test),
        # training-health signals of the epoch log (covbench.training.health): an early selected epoch, a
        # validation collapse, loss spikes; the report names flagged seeds and what they change
        health=assess(trained.epochs, options.epochs, trained.best.epoch).to_dict(),
    )
    return TrialResult(record, rows, trained.epochs, predictions)
