"""GPU check: a few epochs of the `paper` preset for each reference model on one GPU.

    python scripts/gpu_check.py                 # on a CUDA machine (or: nox -s gpu_check)
    python scripts/gpu_check.py --tiny          # the same code path on a CPU, in seconds (tests)

For each model it runs covbench's real trial loop (`covbench.train.train_model`, with the device
options a trial uses: bf16 autocast, channels-last, data resident on the GPU) on the built-in
phantom pre-processed at the preset's size, and prints training and validation images/s (the first
epoch is a warm-up and not timed: cuDNN autotuning, allocator, `torch.compile`), peak GPU memory,
the time to save one epoch checkpoint as a trial does, and the projected wall time of the full
protocol: models x seeds x epochs on the paper's slice counts (1304 train, 386 val, 422 test per
split), one trial at a time on this GPU. Budget: well under 8 minutes on one H100 (the phantom is
generated once, then ~4 short epochs per model).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from covbench import registry
from covbench.config import PRESETS, build_config
from covbench.datasets.splits import split_indices
from covbench.runner import prepare_data
from covbench.train import predict, resolve_amp, seed_everything, train_model
from covbench.trial import _tensors

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
    ckpt_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:

        def save_like_a_trial(event: dict[str, Any]) -> None:
            """The per-epoch checkpoint of covbench.trial: model, Adam state and best weights."""
            t = time.perf_counter()
            state = {
                "model": event["model"].state_dict(),
                "optimizer": event["optimizer"].state_dict(),
                "best_state": event["best_state"],
            }
            torch.save(state, Path(tmp) / "checkpoint.pt")
            ckpt_s.append(time.perf_counter() - t)

        result = train_model(
            model,
            tx,
            ty,
            vx,
            vy,
            epochs=epochs + 1,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            seed=0,
            device=device,
            lr_schedule=cfg.lr_schedule,
            compile=compile,
            on_epoch=save_like_a_trial,
        )
    eval_bs = cfg.batch_size * (4 if cuda else 2)
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
    ckpt = statistics.median(ckpt_s[1:] or ckpt_s)
    # one epoch at the paper's slice counts, then a whole trial: 250 epochs + the test prediction
    epoch_s = PAPER_SLICES["train"] / train_ips + PAPER_SLICES["val"] / val_ips + ckpt
    trial_s = full_epochs * epoch_s + PAPER_SLICES["test"] / test_ips
    return {
        "model": name,
        "width": width,
        "parameters": registry.count_parameters(model),
        "train_images_per_s": round(train_ips, 1),
        "val_images_per_s": round(val_ips, 1),
        "test_images_per_s": round(test_ips, 1),
        "warmup_epoch_s": round(result.history[0]["train_s"] + result.history[0]["val_s"], 2),
        "checkpoint_s": round(ckpt, 3),
        "peak_gpu_memory_gib": _gib(torch.cuda.max_memory_allocated(device)) if cuda else None,
        "peak_gpu_reserved_gib": _gib(torch.cuda.max_memory_reserved(device)) if cuda else None,
        "paper_epoch_s": round(epoch_s, 2),
        "paper_trial_s": round(trial_s, 1),
        "final_train_loss": round(result.history[-1]["train_loss"], 4),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(REFERENCE_MODELS))
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per model (after one warm-up epoch)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds of the projected protocol")
    ap.add_argument("--compile", action="store_true", help="torch.compile the models (adds compile time)")
    ap.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="non-deterministic run: let cuDNN autotune (covbench runs are deterministic by default)",
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
    cfg = build_config(models=models, n_seeds=args.seeds, preset=preset)
    full_epochs = PRESETS["paper"].epochs  # the projection is always the paper's protocol
    deterministic = not args.cudnn_benchmark

    t0 = time.perf_counter()
    prepared = prepare_data(cfg)
    index = split_indices(prepared.slices, prepared.folds[0])
    tx, ty = _tensors(prepared.slices, index["train"])
    vx, vy = _tensors(prepared.slices, index["val"])
    test_x, _ = _tensors(prepared.slices, index["test"])
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
        f"{'ckpt s':>6} {'epoch s':>7} {'trial min':>9}"
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
            f"{peak:>8} {r['checkpoint_s']:6.2f} {r['paper_epoch_s']:7.2f} {r['paper_trial_s'] / 60:9.1f}",
            flush=True,
        )
    total_s = args.seeds * sum(r["paper_trial_s"] for r in rows)
    out = {
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
        "check_seconds": round(time.perf_counter() - t0, 1),
    }
    print(
        f"projected full protocol ({len(models)} models x {args.seeds} seeds x {full_epochs} epochs, "
        f"one trial at a time on this device): {total_s / 3600:.2f} h; this check took "
        f"{out['check_seconds']:.0f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
