"""One trial = one (model, seed, fold): build, train, predict the test slices, score them.

A trial is a plain function of (TrialSpec, TrialData) so the scheduler can run it in a Ray
worker or in-process. It writes only inside its own trial folder; the driver writes the
record that marks it done.

Test hooks (read by the driver from its environment and carried in `TrialSpec.test_hooks`, so they
reach Ray workers that were started before the variable was set; never part of the config key):

- `COVBENCH_TEST_KILL_ONCE=<marker file>`: the first trial attempt that finishes an epoch while the
  marker does not exist creates it and SIGKILLs its own worker process, right after saving the epoch
  checkpoint. Exactly one kill per marker file: the retry finds the marker and carries on, resuming
  from the checkpoint. Only meaningful under Ray (in-process it would kill the driver).
- `COVBENCH_TEST_FAIL=<fnmatch pattern>`: every attempt of a trial whose name matches raises
  `RuntimeError` before training, i.e. a trial that always fails.
"""

from __future__ import annotations

import csv
import fnmatch
import math
import os
import platform
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from covbench import registry
from covbench.datasets import SliceSet
from covbench.metrics import batch_metrics, empty_case
from covbench.train import predict, seed_everything, train_model


@dataclass(frozen=True)
class TrialSpec:
    model: str
    seed: int
    fold: int
    config: dict[str, Any]  # RunConfig.to_dict()
    trial_dir: str
    threads: int = 1
    test_hooks: dict[str, str] = field(default_factory=dict)  # see the module docstring

    @property
    def name(self) -> str:
        return Path(self.trial_dir).name


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
    record: dict[str, Any]
    rows: list[dict[str, Any]]


def _tensors(slices: SliceSet, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
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


def _checkpoint_path(spec: TrialSpec) -> Path:
    return Path(spec.trial_dir) / "checkpoint.pt"


def _load_checkpoint(spec: TrialSpec) -> dict[str, Any] | None:
    """The last epoch checkpoint of this trial, or None when there is none for this config."""
    path = _checkpoint_path(spec)
    if not path.exists():
        return None
    # Only files covbench wrote itself, and never with pickle: weights_only refuses arbitrary objects.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("config_key") != spec.config.get("_key"):
        return None  # left by another configuration: start over rather than mix the two
    return state


def _trim_log(path: Path, last_epoch: int) -> None:
    """Drop epoch rows after the checkpoint (a kill between the log row and the checkpoint would
    otherwise leave a row the resumed run writes again)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or all(int(r["epoch"]) <= last_epoch for r in rows):
        return
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if int(r["epoch"]) <= last_epoch)
    os.replace(tmp, path)


def _kill_once(hooks: dict[str, str]) -> None:
    """`COVBENCH_TEST_KILL_ONCE`: die like an OOM-killed worker, once per marker file."""
    marker = hooks.get("COVBENCH_TEST_KILL_ONCE")
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def run_fold_trial(spec: TrialSpec, slices: SliceSet, parts: dict[str, np.ndarray]) -> TrialResult:
    """`run_trial` with the slices (shipped once per run) and this fold's indices passed apart,
    so K folds share one copy of the data in the object store."""
    return run_trial(spec, TrialData(slices, parts["train"], parts["val"], parts["test"]))


def run_trial(spec: TrialSpec, data: TrialData) -> TrialResult:
    cfg = spec.config
    started = time.time()
    pattern = spec.test_hooks.get("COVBENCH_TEST_FAIL")
    if pattern and fnmatch.fnmatchcase(spec.name, pattern):
        raise RuntimeError(f"COVBENCH_TEST_FAIL={pattern}: trial {spec.name} fails on purpose")
    torch.set_num_threads(max(1, spec.threads))
    seed_everything(spec.seed, cfg.get("deterministic", True))
    trial_dir = Path(spec.trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)

    model_spec = registry.get_model(spec.model)
    options = cfg.get("model_options", {}).get(spec.model, {})
    width, options = model_spec.run_arguments(cfg.get("width"), options)
    model = model_spec.create(in_channels=1, classes=1, width=width, **options)
    n_params = registry.count_parameters(model)
    device = pick_device()

    train_x, train_y = _tensors(data.slices, data.train)
    val_x, val_y = _tensors(data.slices, data.val)
    test_x, test_y = _tensors(data.slices, data.test)

    resume = _load_checkpoint(spec)
    start_epoch, optimizer_state, best = 0, None, (-1.0, -1, None)
    if resume is not None:
        model.load_state_dict(resume["model"])
        start_epoch = int(resume["epoch"])
        optimizer_state = resume["optimizer"]
        best = (float(resume["best_val_dice"]), int(resume["best_epoch"]), resume["best_state"])

    log_path = trial_dir / "epochs.csv"
    if resume is not None:
        _trim_log(log_path, start_epoch)
    log_mode = "a" if resume is not None and log_path.exists() else "w"
    log_file = log_path.open(log_mode, newline="")
    writer: csv.DictWriter | None = None

    def on_epoch(event: dict[str, Any]) -> None:
        nonlocal writer
        row = event["row"]
        if writer is None:
            writer = csv.DictWriter(log_file, fieldnames=list(row))
            if log_mode == "w":
                writer.writeheader()
        writer.writerow(row)
        log_file.flush()
        state = {
            "model": event["model"].state_dict(),
            "optimizer": event["optimizer"].state_dict(),
            "epoch": row["epoch"],
            "best_val_dice": row["best_val_dice"],
            "best_epoch": row["best_epoch"],
            "best_state": event["best_state"],
            "config_key": cfg.get("_key"),
        }
        tmp = _checkpoint_path(spec).with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, _checkpoint_path(spec))
        _kill_once(spec.test_hooks)

    try:
        result = train_model(
            model,
            train_x,
            train_y,
            val_x,
            val_y,
            epochs=int(cfg["epochs"]),
            batch_size=int(cfg["batch_size"]),
            lr=float(cfg["lr"]),
            seed=spec.seed,
            device=device,
            threshold=float(cfg.get("threshold", 0.5)),
            lr_schedule=cfg.get("lr_schedule", "constant"),
            on_epoch=on_epoch,
            start_epoch=start_epoch,
            optimizer_state=optimizer_state,
            best=best,
            amp=cfg.get("amp", "auto"),
            compile=bool(cfg.get("compile", False)),
            augment=cfg.get("augment", "none"),
            loss=cfg.get("loss", "dice"),
        )
    finally:
        log_file.close()

    t_eval = time.perf_counter()
    model.load_state_dict(result.best_state)
    tta = bool(cfg.get("tta", False))
    prob = predict(model, test_x, int(cfg["batch_size"]) * 2, device, tta=tta)[:, 0].numpy()
    pred = prob >= float(cfg.get("threshold", 0.5))
    target = test_y[:, 0].numpy().astype(bool)
    spacing = data.slices.spacing[data.test]
    metrics = batch_metrics(pred, target, spacing, probs=prob)
    eval_seconds = time.perf_counter() - t_eval

    # Quantised predictions for the report's qualitative figures; small enough to keep.
    np.savez_compressed(
        trial_dir / "predictions.npz",
        prob=np.round(prob * 255).astype(np.uint8),
        index=data.test.astype(np.int32),
    )

    rows = []
    sl = data.slices
    for k, (i, m) in enumerate(zip(data.test, metrics, strict=True)):
        rows.append(
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
        )
    record = {
        "model": spec.model,
        "seed": spec.seed,
        "fold": spec.fold,
        "trial": spec.name,
        "status": "done",
        "config_key": cfg.get("_key"),
        "parameters": n_params,
        "width": width,
        "options": options,
        "device": _device_label(device),
        "threads": torch.get_num_threads(),
        "epochs": result.epochs_run,
        "resumed_from_epoch": start_epoch,
        "best_epoch": result.best_epoch,
        # null, not NaN, when nothing was validated: record.json stays strict JSON
        "best_val_dice": None if math.isnan(result.best_val_dice) else result.best_val_dice,
        "train_seconds": result.train_seconds,
        "eval_seconds": eval_seconds,
        "wall_seconds": time.time() - started,
        "started": started,
        "finished": time.time(),
        "checkpoint": "checkpoint.pt",
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(data.test),
    }
    return TrialResult(record, rows)


def trial_spec_dict(spec: TrialSpec) -> dict[str, Any]:
    return asdict(spec)
