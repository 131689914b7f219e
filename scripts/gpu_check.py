"""GPU check: a few epochs of the `paper` preset for each reference model on one GPU.

    python scripts/gpu_check.py                          # on a CUDA machine (or: nox -s gpu_check)
    python scripts/gpu_check.py --concurrent 1,2,4       # + aggregate throughput of packed trials
    python scripts/gpu_check.py --tiny [--concurrent 1,2] # the same code paths on a CPU (tests)

For each model it runs covbench's real trial loop (`covbench.training.loop.train_model` with the
`TrainOptions` a trial uses: bf16 autocast, channels-last, data resident on the GPU, fused Adam,
cuDNN autotuning unless `--deterministic`) on the built-in phantom pre-processed at the preset's
size, and prints training and validation images/s (the first epoch is a warm-up and not timed),
peak GPU memory, what one checkpoint costs the training thread (host copy; the write itself runs
in the background: covbench.training.checkpoint) and the projected wall time of the full protocol: models x
seeds x epochs on the paper's slice counts (1304 train, 386 val, 422 test per split), with one
checkpoint per `DEFAULT_CHECKPOINT_SECONDS`.

`--concurrent 1,2,4` then runs, per model and per N, N seeds of that model at once on one GPU
through the real Ray path (`covbench.execution.runner.execute` with `gpus_per_trial=1/N`), and prints the
aggregate training images/s of the N trials (the sum of each trial's median epoch throughput
after its warm-up epoch), the speed-up over N=1, and the projected protocol with the best N.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from covbench import registry
from covbench.config import DEFAULT_CHECKPOINT_SECONDS, PRESETS, build_config
from covbench.datasets.splits import split_indices
from covbench.execution.runner import execute, prepare_data
from covbench.execution.scheduler import RayExecutor
from covbench.training.checkpoint import Checkpointer, CheckpointPolicy
from covbench.training.loop import EpochEnd, TrainOptions, predict, resolve_amp, seed_everything, train_model
from covbench.training.trial import slice_tensors

REFERENCE_MODELS = ("unet", "unetpp", "resunet")
PAPER_SLICES = {"train": 1304, "val": 386, "test": 422}  # Salehi et al. 2023, slice-level split


def _device(tiny: bool) -> torch.device | None:
    if torch.cuda.is_available():
        return torch.device("cuda:0")
    return torch.device("cpu") if tiny else None


def _gib(nbytes: float) -> float:
    return round(nbytes / 2**30, 2)


def check_model(
    name: str,
    data: tuple[torch.Tensor, ...],
    cfg: Any,
    device: torch.device,
    *,
    epochs: int,
    full_epochs: int,
    compile: bool,
    deterministic: bool,
) -> dict[str, Any]:
    """Train `name` for 1 warm-up + `epochs` timed epochs; throughput, memory and checkpoint cost."""
    tx, ty, vx, vy, test_x = data
    spec = registry.get_model(name)
    width = spec.scaled_width(cfg.width)
    seed_everything(0, deterministic)
    model = spec.create(in_channels=1, classes=1, width=width)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    options = replace(TrainOptions.from_config(cfg, seed=0), epochs=epochs + 1, compile=compile)
    with tempfile.TemporaryDirectory() as tmp:
        # A checkpoint after every epoch (interval 0), to time each one as a trial's would be.
        checkpointer = Checkpointer(Path(tmp), "gpu-check", CheckpointPolicy(0))
        blocked: list[float] = []

        def checkpoint(end: EpochEnd) -> None:
            blocked.append(checkpointer.after_epoch(end))

        try:
            result = train_model(model, (tx, ty), (vx, vy), options, device, on_epoch=checkpoint)
        finally:
            checkpointer.close()
        stats = checkpointer.stats
    eval_bs = options.eval_batch(device)
    predict(model, test_x[:eval_bs], eval_bs, device)  # warm-up of the eval shapes
    if cuda:
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    predict(model, test_x, eval_bs, device)
    test_s = time.perf_counter() - t
    timed = result.history[1:]
    train_ips = statistics.median(len(tx) / r["train_s"] for r in timed)
    val_ips = statistics.median(len(vx) / r["val_s"] for r in timed) if len(vx) else float("inf")
    test_ips = len(test_x) / test_s if test_s > 0 else float("inf")
    ckpt_blocked = statistics.median(blocked[1:] or blocked)
    ckpt_write = stats.write_s / max(stats.writes, 1)
    # one epoch at the paper's slice counts, then a whole trial: 250 epochs, one checkpoint per
    # DEFAULT_CHECKPOINT_SECONDS of training (its host copy; the write overlaps training), the test
    epoch_s = PAPER_SLICES["train"] / train_ips + PAPER_SLICES["val"] / val_ips
    writes = 1 + int(full_epochs * epoch_s // DEFAULT_CHECKPOINT_SECONDS)
    trial_s = full_epochs * epoch_s + writes * ckpt_blocked + PAPER_SLICES["test"] / test_ips
    return {
        "model": name,
        "width": width,
        "parameters": registry.count_parameters(model),
        "train_images_per_s": round(train_ips, 1),
        "val_images_per_s": round(val_ips, 1),
        "test_images_per_s": round(test_ips, 1),
        "warmup_epoch_s": round(result.history[0]["train_s"] + result.history[0]["val_s"], 2),
        "checkpoint_s": round(ckpt_blocked, 3),  # on the training thread, per checkpoint
        "checkpoint_write_s": round(ckpt_write, 3),  # in the background writer, per checkpoint
        "checkpoint_mb": round(stats.bytes_written / max(stats.writes, 1) / 1e6, 1),
        "peak_gpu_memory_gib": _gib(torch.cuda.max_memory_allocated(device)) if cuda else None,
        "peak_gpu_reserved_gib": _gib(torch.cuda.max_memory_reserved(device)) if cuda else None,
        "paper_epoch_s": round(epoch_s, 3),
        "paper_checkpoints": writes,
        "paper_trial_s": round(trial_s, 1),
        "final_train_loss": round(result.history[-1]["train_loss"], 4),
    }


def concurrent_throughput(cfg: Any, name: str, n: int, gpus: float, epochs: int) -> dict[str, Any]:
    """N seeds of `name` at once through covbench's own run path; the aggregate throughput."""
    run_cfg = replace(cfg, models=(name,), seeds=tuple(range(n)), epochs=epochs + 1)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        outcome = execute(run_cfg, Path(tmp) / "run", gpus_per_trial=gpus / n if gpus else None)
        wall = time.perf_counter() - t
        if outcome.failed:
            raise RuntimeError(f"concurrent check of {name} x{n} failed: {outcome.failed}")
        per_trial = []
        for log in sorted((Path(tmp) / "run" / "trials").glob("*/epochs.csv")):
            rows = pd.read_csv(log).iloc[1:]  # the first epoch is a warm-up
            record = json.loads((log.parent / "record.json").read_text())
            per_trial.append(float((record["n_train"] / rows["train_s"]).median()))
    return {"model": name, "trials": n, "aggregate_train_images_per_s": round(sum(per_trial), 1),
            "per_trial_images_per_s": [round(x, 1) for x in per_trial], "wall_s": round(wall, 1)}  # fmt: skip


def _print_concurrency(rows: list[dict[str, Any]]) -> None:
    print(f"{'model':8} {'trials':>6} {'aggregate img/s':>15} {'speed-up':>8} {'per trial img/s':>24}")
    single = {r["model"]: r["aggregate_train_images_per_s"] for r in rows if r["trials"] == 1}
    for r in rows:
        base = single.get(r["model"])
        r["speedup"] = round(r["aggregate_train_images_per_s"] / base, 2) if base else None
        per = ", ".join(f"{x:.0f}" for x in r["per_trial_images_per_s"])
        speed = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        agg = r["aggregate_train_images_per_s"]
        print(f"{r['model']:8} {r['trials']:6d} {agg:15.1f} {speed:>8} {per:>24}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(REFERENCE_MODELS))
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per model (after one warm-up epoch)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds of the projected protocol")
    ap.add_argument("--compile", action="store_true", help="torch.compile the models (adds compile time)")
    ap.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic cuDNN kernels (a run's GPU default is cuDNN autotuning: --no-deterministic)",
    )
    ap.add_argument(
        "--concurrent",
        default="",
        help="comma list of trials per GPU to measure through Ray, e.g. 1,2,4 (default: skip)",
    )
    ap.add_argument(
        "--tiny", action="store_true", help="smoke preset on whatever device there is (a CPU test)"
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    device = _device(args.tiny)
    if device is None:
        print("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); use --tiny on a CPU")
        raise SystemExit(2)
    preset = PRESETS["smoke" if args.tiny else "paper"]
    models = args.models.split(",")
    deterministic = args.deterministic or device.type != "cuda"
    cfg = build_config(models=models, n_seeds=args.seeds, preset=preset, deterministic=deterministic)
    full_epochs = PRESETS["paper"].epochs  # the projection is always the paper's protocol

    t0 = time.perf_counter()
    prepared = prepare_data(cfg)
    index = split_indices(prepared.slices, prepared.folds[0])
    tx, ty = slice_tensors(prepared.slices, index["train"])
    vx, vy = slice_tensors(prepared.slices, index["val"])
    test_x, _ = slice_tensors(prepared.slices, index["test"])
    data_s = time.perf_counter() - t0

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name = f"{props.name} ({_gib(props.total_memory):.0f} GiB)"
    else:
        name = f"cpu ({platform.node()})"
    print(
        f"gpu_check on {name}; torch {torch.__version__}, cuda {torch.version.cuda}; preset {preset.name}: "
        f"image {cfg.image_size}, batch {cfg.batch_size}, lr {cfg.lr}, width {cfg.width or 'paper'}; "
        f"autocast {resolve_amp('auto', device) or 'off'}, channels-last {device.type == 'cuda'}, "
        f"deterministic={deterministic}, compile={args.compile}"
    )
    print(
        f"data: phantom {prepared.n_cases} cases -> {len(tx)} train / {len(vx)} val / {len(test_x)} test "
        f"slices in {data_s:.1f} s; projection on {PAPER_SLICES} slices"
    )
    print(
        f"{'model':8} {'params':>11} {'train img/s':>11} {'val img/s':>9} {'peak GiB':>8} "
        f"{'ckpt s':>6} {'write s':>7} {'epoch s':>7} {'trial min':>9}"
    )
    rows = []
    for m in models:
        r = check_model(
            m,
            (tx, ty, vx, vy, test_x),
            cfg,
            device,
            epochs=args.epochs,
            full_epochs=full_epochs,
            compile=args.compile,
            deterministic=deterministic,
        )
        rows.append(r)
        peak = "-" if r["peak_gpu_memory_gib"] is None else f"{r['peak_gpu_memory_gib']:.2f}"
        print(
            f"{m:8} {r['parameters']:11,d} {r['train_images_per_s']:11.1f} {r['val_images_per_s']:9.1f} "
            f"{peak:>8} {r['checkpoint_s']:6.3f} {r['checkpoint_write_s']:7.2f} {r['paper_epoch_s']:7.2f} "
            f"{r['paper_trial_s'] / 60:9.1f}",
            flush=True,
        )
    total_s = args.seeds * sum(r["paper_trial_s"] for r in rows)
    out: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "preset": preset.name,
        "deterministic": deterministic,
        "compile": args.compile,
        "data_seconds": round(data_s, 1),
        "models": rows,
        "projected_protocol": {
            "models": len(models),
            "seeds": args.seeds,
            "epochs": full_epochs,
            "hours_one_trial_at_a_time": round(total_s / 3600, 2),
        },
    }
    print(
        f"projected full protocol ({len(models)} models x {args.seeds} seeds x {full_epochs} epochs, "
        f"one trial at a time on this device): {total_s / 3600:.2f} h"
    )
    if args.concurrent:
        out["concurrency"] = _concurrency(args, cfg, models, rows, device, out["projected_protocol"])
    out["check_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"this check took {out['check_seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


def _concurrency(
    args: Any, cfg: Any, models: list[str], rows: list[dict[str, Any]], device: torch.device,
    projection: dict[str, Any],
) -> list[dict[str, Any]]:  # fmt: skip
    """Aggregate throughput of 1, 2, ... trials per GPU; the best N per model projects the protocol."""
    counts = sorted({int(n) for n in args.concurrent.split(",")})
    gpus = 1.0 if device.type == "cuda" else 0.0
    keeper = RayExecutor()  # one Ray instance for every measurement (each run joins it)
    try:
        measured = [concurrent_throughput(cfg, m, n, gpus, args.epochs) for m in models for n in counts]
    finally:
        keeper.shutdown()
    _print_concurrency(measured)
    best_s = 0.0
    for r in rows:
        options = [c for c in measured if c["model"] == r["model"] and c["speedup"]]
        best = max(options, key=lambda c: c["speedup"], default=None)
        speedup = best["speedup"] if best else 1.0
        best_s += args.seeds * r["paper_trial_s"] / speedup
        print(f"{r['model']}: best {best['trials'] if best else 1} trial(s) per GPU, {speedup:.2f}x")
    projection["hours_packed"] = round(best_s / 3600, 2)
    print(f"projected full protocol with the best packing per model: {best_s / 3600:.2f} h")
    return measured


if __name__ == "__main__":
    main(sys.argv[1:])
