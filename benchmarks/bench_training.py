"""Training throughput: covbench's trial loop (`covbench.training.loop.train_model`) vs a minimal hand loop.

Plain script (also run by `nox -s bench`), torch pinned to one thread like a trial with
`--cpus-per-trial 1`:

    python benchmarks/bench_training.py [--models unet,unetpp,resunet] [--epochs 2] [--repeats 5]
    python benchmarks/bench_training.py --device cuda --preset paper --repeats 3   # on a GPU

Both loops get the same pre-processed data (the `cpu` preset's phantom: 64 px slices, its
patient split), the same model (ModelSpec.scaled_width of the preset width, the same seed), batch
size, Adam learning rate and soft Dice loss, and both validate once per epoch and keep the best
weights, since the protocol selects the checkpoint by validation Dice. The hand loop is what a
researcher writes in twenty lines: randperm, index, forward, loss, backward, step; then a
no_grad pass over the validation slices. Per model it prints covbench / hand throughput ratios:

- ratio: the whole loop (training + per-epoch validation), training images per second of process
  CPU time. With one thread, CPU time is what an idle core would take; wall time on a shared
  machine mostly measures the neighbours (the `cpu busy` column says how much);
- wall ratio: the same on wall-clock time;
- train-phase ratio: the training steps alone, wall time (the hand loop times its phases;
  covbench's loop logs them per epoch as `train_s` and `val_s`).

On CUDA (`--device cuda`, or `auto` where a GPU is visible) both loops run with the device
options of a trial: data resident on the GPU, channels-last, bf16 autocast with the loss in float32
(covbench.training.loop.resolve_amp). Process CPU time then means nothing, so the wall-clock ratio is the
measure, each phase ending with a `torch.cuda.synchronize()`.

The two loops alternate (covbench, hand, hand, covbench, ...) so that load from other processes
falls on both alike; each is preceded by an untimed warm-up. Ratios are medians over the
repeat pairs; the best-of-repeats throughputs and their ratio are printed too.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from covbench import registry  # noqa: E402
from covbench.config import PRESETS, build_config  # noqa: E402
from covbench.datasets.splits import split_indices  # noqa: E402
from covbench.execution.runner import prepare_data  # noqa: E402
from covbench.training.loop import (  # noqa: E402
    TrainOptions,
    autocast,
    resolve_amp,
    seed_everything,
    train_model,
)
from covbench.training.trial import slice_tensors  # noqa: E402

Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_loop(
    model: nn.Module,
    data: Data,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    eval_batch: int,
    device: torch.device,
) -> tuple[float, float]:
    """The minimal loop a researcher writes for the same protocol; returns (train s, val s). On a
    GPU it uses the same device options as the trial loop (channels-last, bf16 autocast)."""
    tx, ty, vx, vy = data
    cuda = device.type == "cuda"
    dtype = resolve_amp("auto", device)
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_state = -1.0, None
    train_s = val_s = 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(tx))
        for i in range(0, len(tx), batch_size):
            b = perm[i : i + batch_size]
            x, y = tx[b], ty[b]
            opt.zero_grad()
            with autocast(device, dtype):
                out = model(x)
            heads = out if isinstance(out, list) else [out]
            losses = []
            for h in heads:
                p = torch.sigmoid(h.float())
                losses.append(1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1))
            loss = sum(losses) / len(losses)
            loss.backward()
            opt.step()
        _sync(device)
        t1 = time.perf_counter()
        model.eval()
        dices = []
        with torch.no_grad():
            for i in range(0, len(vx), eval_batch):
                with autocast(device, dtype):
                    logits = model(vx[i : i + eval_batch])
                pred = (torch.sigmoid(logits.float()) >= 0.5).float()
                y = vy[i : i + eval_batch]
                inter, tot = (pred * y).sum((1, 2, 3)), pred.sum((1, 2, 3)) + y.sum((1, 2, 3))
                dices.append(torch.where(tot > 0, 2 * inter / tot.clamp(min=1), torch.ones_like(tot)))
        dice = float(torch.cat(dices).mean())  # one host sync per validation, as covbench's
        if dice > best:
            best, best_state = dice, {k: v.detach().clone() for k, v in model.state_dict().items()}
        t2 = time.perf_counter()
        train_s += t1 - t0
        val_s += t2 - t1
    assert best_state is not None
    return train_s, val_s


def covbench_loop(
    model: nn.Module,
    data: Data,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    eval_batch: int,
    device: torch.device,
) -> tuple[float, float]:
    """covbench's real trial loop on the same inputs; returns (train s, val s) from its log rows."""
    tx, ty, vx, vy = data
    options = TrainOptions(epochs=epochs, batch_size=batch_size, lr=lr, seed=0, eval_batch_size=eval_batch)
    result = train_model(model, (tx, ty), (vx, vy), options, device)
    _sync(device)
    return sum(r["train_s"] for r in result.history), sum(r["val_s"] for r in result.history)


def measure(
    name: str,
    data: Data,
    width: int | None,
    epochs: int,
    repeats: int,
    batch_size: int,
    lr: float,
    device: torch.device | None = None,
) -> dict:
    """Alternating timed runs of both loops for one model; throughputs and covbench/hand ratios."""
    device = device or torch.device("cpu")
    spec = registry.get_model(name)
    w = spec.scaled_width(width)
    if device.type == "cuda":  # resident on the GPU for both loops, as a trial does when it fits
        tx, ty, vx, vy = data
        cl = {"memory_format": torch.channels_last}
        data = (tx.to(device, **cl), ty.to(device), vx.to(device, **cl), vy.to(device))
    eval_batch = batch_size * (4 if device.type == "cuda" else 2)  # the trial loop's eval batch

    def run(loop: Callable[..., tuple[float, float]], n_epochs: int) -> dict[str, float]:
        seed_everything(0, deterministic=device.type != "cuda")
        model = spec.create(in_channels=1, classes=1, width=w)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        train_s, val_s = loop(
            model, data, epochs=n_epochs, batch_size=batch_size, lr=lr, eval_batch=eval_batch, device=device
        )
        return {
            "cpu": time.process_time() - cpu0,
            "wall": time.perf_counter() - wall0,
            "train": train_s,
            "val": val_s,
        }

    run(covbench_loop, 1)  # warm-up: oneDNN primitives, allocator
    run(hand_loop, 1)
    runs: dict[str, list[dict[str, float]]] = {"covbench": [], "hand": []}
    for r in range(repeats):
        pair = ("covbench", "hand") if r % 2 == 0 else ("hand", "covbench")
        for which in pair:
            runs[which].append(run(covbench_loop if which == "covbench" else hand_loop, epochs))
    n_img = len(data[0]) * epochs
    out: dict = {
        "model": name,
        "width": w,
        "epochs": epochs,
        "repeats": repeats,
        "images": n_img,
        "device": str(device),
    }
    # cpu: the whole loop on process CPU time (robust to other processes taking the cores);
    # wall: the whole loop on wall time; train: the training phase alone, wall time
    for measure_ in ("cpu", "wall", "train"):
        ips = {k: [n_img / t[measure_] for t in v] for k, v in runs.items()}
        ratios = [a / b for a, b in zip(ips["covbench"], ips["hand"], strict=True)]
        out[f"{measure_}_ratio_median"] = statistics.median(ratios)
        out[f"{measure_}_ratio_of_best"] = max(ips["covbench"]) / max(ips["hand"])
        for which in ("covbench", "hand"):
            out[f"{measure_}_ips_best_{which}"] = max(ips[which])
            out[f"{measure_}_ips_median_{which}"] = statistics.median(ips[which])
    for which in ("covbench", "hand"):
        out[f"val_share_{which}"] = statistics.median(t["val"] / (t["train"] + t["val"]) for t in runs[which])
    # the figure to quote: CPU time on a CPU (robust to neighbours), wall time on a GPU
    out["ratio"] = out["wall_ratio_median" if device.type == "cuda" else "cpu_ratio_median"]
    out["cpu_busy"] = statistics.median(t["cpu"] / t["wall"] for v in runs.values() for t in v)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="unet,unetpp,resunet")
    ap.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    ap.add_argument("--epochs", type=int, default=2, help="epochs per timed run")
    ap.add_argument("--repeats", type=int, default=6, help="timed runs per loop (alternating)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="auto: cuda if visible")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        print("bench_training: --device cuda but no CUDA GPU is visible")
        raise SystemExit(2)
    device = torch.device("cuda:0" if cuda else "cpu")
    if cuda:
        seed_everything(0, deterministic=False)  # cuDNN autotuning, the GPU default of a run
    models = args.models.split(",")
    preset = PRESETS[args.preset]
    cfg = build_config(models=models, n_seeds=1, preset=preset)
    prepared = prepare_data(cfg)
    index = split_indices(prepared.slices, prepared.folds[0])
    data = (*slice_tensors(prepared.slices, index["train"]), *slice_tensors(prepared.slices, index["val"]))
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} thread(s), device {device}; "
        f"preset {preset.name}: image {cfg.image_size}, batch {cfg.batch_size}, "
        f"width {cfg.width}, {len(data[0])} train / {len(data[2])} val slices; "
        f"{args.epochs} epochs x {args.repeats} alternating runs per loop"
    )
    header = (
        f"{'model':8} {'width':>5} {'covbench img/s':>14} {'hand img/s':>10} {'ratio':>6} {'(best)':>6} "
        f"{'wall ratio':>10} {'train-phase ratio':>17} {'val share':>9} {'cpu busy':>8}"
    )
    print(header)
    results = []
    for name in models:
        r = measure(name, data, cfg.width, args.epochs, args.repeats, cfg.batch_size, cfg.lr, device)
        results.append(r)
        print(
            f"{name:8} {r['width']:5d} {r['cpu_ips_best_covbench']:14.1f} {r['cpu_ips_best_hand']:10.1f} "
            f"{r['ratio']:6.3f} {r['cpu_ratio_of_best']:6.3f} {r['wall_ratio_median']:10.3f} "
            f"{r['train_ratio_median']:17.3f} {r['val_share_covbench']:9.1%} {r['cpu_busy']:8.0%}",
            flush=True,
        )
    print("img/s: training images per second of process CPU time, per-epoch validation included (best run)")
    print(
        "ratio: covbench / hand, median over alternating pairs, on CPU time (wall time on a GPU); "
        "(best): of the best runs"
    )
    print("wall ratio: the same on wall time; train-phase ratio: training steps alone (wall time);")
    print("val share: covbench's validation time / epoch time; cpu busy: CPU / wall time (1: no contention)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
