"""One trial = one (model, seed, fold): build, train, predict the test slices, score them.

A trial is a plain function of (TrialSpec, TrialData) so the scheduler can run it in a Ray
worker or in-process. It writes only inside its own trial folder; the driver writes the
record that marks it done.
"""

from __future__ import annotations

import csv
import os
import platform
import time
from dataclasses import asdict, dataclass
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
    path = _checkpoint_path(spec)
    if not path.exists():
        return None
    # Only files covbench wrote itself, and never with pickle: weights_only refuses arbitrary objects.
    return torch.load(path, map_location="cpu", weights_only=True)


def run_trial(spec: TrialSpec, data: TrialData) -> TrialResult:
    cfg = spec.config
    started = time.time()
    torch.set_num_threads(max(1, spec.threads))
    seed_everything(spec.seed, cfg.get("deterministic", True))
    trial_dir = Path(spec.trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)

    model_spec = registry.get_model(spec.model)
    options = dict(cfg.get("model_options", {}).get(spec.model, {}))
    width = options.pop("width", None) or model_spec.scaled_width(cfg.get("width"))
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
        }
        tmp = _checkpoint_path(spec).with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, _checkpoint_path(spec))

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
        )
    finally:
        log_file.close()

    t_eval = time.perf_counter()
    model.load_state_dict(result.best_state)
    prob = predict(model, test_x, int(cfg["batch_size"]) * 2, device)[:, 0].numpy()
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
        "threads": spec.threads,
        "epochs": result.epochs_run,
        "resumed_from_epoch": start_epoch,
        "best_epoch": result.best_epoch,
        "best_val_dice": result.best_val_dice,
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
