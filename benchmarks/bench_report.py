"""Wall time and peak memory of `covbench report` at leaderboard scale (issue 37).

Builds synthetic run folders shaped like the main job's (the real folder's config.json,
split.json, models.json, test slices, and every trial's record.json, cases.csv, epochs.csv and
predictions.npz cloned per model x seed x fold, Dice jittered per model so verdicts differ) in a
temporary folder, never in /work/runs, and times the real CLI in a child process.

    python benchmarks/bench_report.py [--source /work/runs/main-before] [--sizes 10x5x1,20x5x1,50x10x5]
        [--variants figures,no-figures,patient]

Goals (issue 37): 50x10x5 with figures in at most 60 s and 2 GiB, 10x5x1 in at most 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT_FILES = ("config.json", "split.json", "models.json", "environment.json", "test_slices.npz")


def build(source: Path, dest: Path, n_models: int, n_seeds: int, n_folds: int) -> Path:
    """A run folder of n_models x n_seeds x n_folds trials cloned from `source`'s first trial."""
    dest.mkdir(parents=True)
    for name in ROOT_FILES:
        if (source / name).exists():
            shutil.copy(source / name, dest / name)
    config = json.loads((dest / "config.json").read_text())
    models = [f"m{i:02d}" for i in range(n_models)]
    config.update(models=models, seeds=list(range(n_seeds)), folds=n_folds)
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    template = sorted((source / "trials").iterdir())[0]
    record = json.loads((template / "record.json").read_text())
    cases = pd.read_csv(template / "cases.csv")
    rng = np.random.default_rng(0)
    frames = []
    for i, model in enumerate(models):
        shift = 0.002 * i
        for seed in range(n_seeds):
            for fold in range(n_folds):
                trial = f"{model}__seed{seed}__fold{fold}"
                out = dest / "trials" / trial
                out.mkdir(parents=True)
                rec = dict(record, model=model, seed=seed, fold=fold, trial=trial)
                (out / "record.json").write_text(json.dumps(rec, indent=2))
                shutil.copy(template / "epochs.csv", out / "epochs.csv")
                if (template / "predictions.npz").exists():
                    shutil.copy(template / "predictions.npz", out / "predictions.npz")
                rows = cases.copy()
                rows["model"], rows["seed"], rows["fold"] = model, seed, fold
                noise = rng.normal(shift, 0.02, len(rows))
                rows["dice"] = np.clip(rows["dice"] + noise, 0.0, 1.0)
                rows.to_csv(out / "cases.csv", index=False)
                frames.append(rows)
    pd.concat(frames).to_csv(dest / "cases.csv", index=False)
    return dest


def _tree_rss_mib(pid: int) -> float:
    """Resident MiB of `pid` and every process below it (the report's figure workers), from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        me = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(me)
        rss[me] = int(fields[21])  # pages
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(run_dir: Path, *extra: str) -> tuple[float, float, float, float, int]:
    """Wall seconds, CPU seconds (user + system, the report's process and its workers), peak
    resident MiB of the report's process (`/usr/bin/time -v`), peak resident MiB of its whole
    process tree (sampled every 20 ms: the figure workers run beside it) and the exit status. On a
    shared machine the wall time carries the other jobs' load; the CPU time is what the report
    itself costs."""
    exe = Path(sys.executable).with_name("covbench")
    cmd = ["/usr/bin/time", "-v", str(exe), "report", str(run_dir), *extra]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tree = 0.0
    while child.poll() is None:
        tree = max(tree, _tree_rss_mib(child.pid))
        time.sleep(0.02)
    stdout, stderr = child.communicate()
    wall = time.perf_counter() - start
    peak = cpu = 0.0
    for line in stderr.splitlines():
        if "Maximum resident set size" in line:
            peak = int(line.split()[-1]) / 1024
        if "User time (seconds)" in line or "System time (seconds)" in line:
            cpu += float(line.split()[-1])
    if child.returncode:
        print(stderr[-2000:], file=sys.stderr)
    return wall, cpu, peak, max(tree, peak), child.returncode


VARIANTS = {
    "figures": (),
    "no-figures": ("--no-figures",),
    "patient": ("--no-figures", "--unit", "patient"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/work/runs/main-before"))
    parser.add_argument("--sizes", default="10x5x1,20x5x1,50x10x5")
    parser.add_argument(
        "--variants",
        default="figures,no-figures,patient",
        help=f"comma-separated, of {', '.join(VARIANTS)} (patient: --no-figures --unit patient)",
    )
    parser.add_argument(
        "--figures", action="store_true", help="(kept for old command lines: figures is a variant)"
    )
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; expected some of {', '.join(VARIANTS)}")
    print("models x seeds x folds | variant | wall s | CPU s | peak MiB | peak MiB, all processes | rc")
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        for size in args.sizes.split(","):
            m, s, f = (int(x) for x in size.split("x"))
            run_dir = build(args.source, Path(tmp) / size, m, s, f)
            for name in variants:
                wall, cpu, peak, tree, rc = measure(run_dir, *VARIANTS[name])
                label = " ".join(VARIANTS[name]) or "figures"
                print(
                    f"{size} | {label} | {wall:.1f} | {cpu:.1f} | {peak:.0f} | {tree:.0f} | {rc}", flush=True
                )


if __name__ == "__main__":
    main()
