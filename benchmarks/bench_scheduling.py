"""What Ray scheduling costs per trial, and how many trials really run at once.

Plain script: runs `covbench run` (the library call, through a local Ray instance it starts) for
3 models x 5 seeds on the smoke preset, then reads the trial records back:

    python benchmarks/bench_scheduling.py [--models unet,unetpp,resunet] [--seeds 5]
        [--preset smoke] [--epochs N] [--cpus-per-trial 1] [--out DIR]

Per trial (seconds, from record.json):
- in-trial overhead = wall - train - eval: model build, tensor conversion, checkpoint and
  prediction writes (the trial function's own bookkeeping);
- wrapper = trial start - worker start: the scheduler's wrapper in the worker (placement lookup,
  heartbeat file write);
- queue = worker start - submit: waiting for a free slot, starting a worker process (and
  importing torch) the first time a slot is used, and fetching the arguments (the shared slices
  come from the object store, once per node);
- start latency = worker start - max(submit, the moment a slot freed up): the k-th trial to start
  (k > slots) took the slot of the (k - slots)-th trial to finish; this isolates Ray's dispatch
  (plus a worker process start, the first time a slot is used) from waiting for a free slot;
- return = driver collect - worker finish: result transfer plus the driver's polling interval;
- driver-observed overhead = (collect - submit) - wall - queue: what scheduling adds to a trial
  once it has a slot (wrapper + return).

Concurrency comes from the workers' start/finish times: the maximum number of trials in flight and
the time-weighted mean between the first start and the last finish, next to the slots Ray had.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from covbench.config import PRESETS, build_config
from covbench.execution.runner import execute


def concurrency(spans: list[tuple[float, float]]) -> tuple[int, float, float]:
    """(max in flight, time-weighted mean in flight, span seconds) of (start, end) intervals."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = best = 0
    area = 0.0
    last = events[0][0]
    for t, step in events:
        area += now * (t - last)
        last = t
        now += step
        best = max(best, now)
    span = events[-1][0] - events[0][0]
    return best, area / span if span > 0 else float(best), span


def start_latency(records: list[dict], n_slots: int) -> list[float]:
    """Seconds from "a slot is free" (or submission, if later) to the worker starting the trial."""
    by_start = sorted(records, key=lambda r: r["worker_started"])
    finishes = sorted(r["worker_finished"] for r in records)
    out = []
    for k, r in enumerate(by_start):
        free = finishes[k - n_slots] if k >= n_slots else r["submitted"]
        out.append(r["worker_started"] - max(r["submitted"], free))
    return out


def _row(name: str, values: list[float]) -> str:
    return (
        f"{name:<26} mean {statistics.mean(values):7.3f}  median {statistics.median(values):7.3f}  "
        f"max {max(values):7.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="unet,unetpp,resunet")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--preset", default="smoke", choices=sorted(PRESETS))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a fresh temp dir)")
    args = parser.parse_args()

    cfg = build_config(
        models=args.models.split(","), n_seeds=args.seeds, preset=PRESETS[args.preset], epochs=args.epochs
    )
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-sched-")) / "run"
    marks: dict[str, float] = {}

    def on_event(kind: str, info: dict) -> None:
        marks.setdefault(kind, time.time())
        if kind == "status":
            marks.setdefault(info["message"], time.time())
        if kind == "start":
            marks["slots"] = info["slots"]

    t0 = time.time()
    outcome = execute(cfg, out, cpus_per_trial=args.cpus_per_trial, on_event=on_event)
    total = time.time() - t0
    records = [json.loads(p.read_text()) for p in sorted(out.glob("trials/*/record.json"))]
    if outcome.failed or not records:
        raise SystemExit(f"trials failed: {outcome.failed}")

    in_trial = [r["wall_seconds"] - r["train_seconds"] - r["eval_seconds"] for r in records]
    wrapper = [r["started"] - r["worker_started"] for r in records]
    queue = [r["queue_seconds"] for r in records]
    ret = [r["return_seconds"] for r in records]
    latency = start_latency(records, int(marks["slots"]))
    first = sorted(records, key=lambda r: r["worker_started"])[: int(marks["slots"])]
    driver = [r["collected"] - r["submitted"] - r["wall_seconds"] - r["queue_seconds"] for r in records]
    peak, mean, span = concurrency([(r["worker_started"], r["worker_finished"]) for r in records])
    env = json.loads((out / "environment.json").read_text())

    print(
        f"covbench scheduling benchmark: {len(records)} trials ({args.models} x {args.seeds} seeds), ", end=""
    )
    print(f"preset {args.preset}, epochs {cfg.epochs}, {args.cpus_per_trial:g} CPU per trial")
    print(f"host {env['host']}: Ray resources {env['ray_resources']}, slots {marks.get('slots')}")
    print(f"run folder {out}")
    phases = sorted((t, name) for name, t in marks.items() if isinstance(t, float) and name != "slots")
    steps = [f"{name} {t - t0:.1f}" for t, name in phases if name not in ("status", "started", "done")]
    print(f"driver timeline (s after the call): {', '.join(steps)}")
    print(f"wall {total:.1f} s; trials {span:.1f} s from the first worker start to the last finish")
    print(f"trial wall time: mean {statistics.mean(r['wall_seconds'] for r in records):.3f} s, "
          f"train {statistics.mean(r['train_seconds'] for r in records):.3f} s, "
          f"eval {statistics.mean(r['eval_seconds'] for r in records):.3f} s")  # fmt: skip
    print("per-trial seconds:")
    print("  " + _row("in-trial overhead", in_trial))
    print("  " + _row("wrapper (heartbeat)", wrapper))
    print("  " + _row("queue (slot + worker)", queue))
    print("  " + _row("start latency (all)", latency))
    print("  " + _row("start latency (warm slot)", latency[len(first) :] or [0.0]))
    print("  " + _row("return to driver", ret))
    print("  " + _row("driver-observed overhead", driver))
    print(
        f"concurrency: max {peak} trials at once, time-weighted mean {mean:.2f} (slots {marks.get('slots')})"
    )


if __name__ == "__main__":
    main()
