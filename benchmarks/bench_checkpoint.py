"""What checkpointing costs a trial: the share of the epoch loop outside training and validation,
the bytes written and the finished trial folder's size (issue 13's CPU figure).

    python benchmarks/bench_checkpoint.py                     # the issue's command, in a temp folder
    python benchmarks/bench_checkpoint.py --checkpoint-every 0 # a checkpoint every epoch, to compare
    python benchmarks/bench_checkpoint.py --analyse RUN_DIR    # figures of an existing run folder
    python benchmarks/bench_checkpoint.py --local-s3           # checkpoints on a local S3 server (moto)
    python benchmarks/bench_checkpoint.py --storage s3://B/P   # ... or on any storage URL

The default run is `covbench run --models unet --seeds 1 --preset smoke --width 64 --image-size 32
--epochs 15`: a paper-width U-Net (31 M parameters) on tiny images, so that the checkpoint of a
large model weighs against short epochs, as on a fast GPU. Loop = record.json `train_seconds`
(includes handing the final weights to the writer); train + val = the sum of epochs.csv
`train_s + val_s`; the rest is what the trial loop spends on anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from covbench.config import PRESETS, build_config
from covbench.execution.runner import execute


def analyse(run_dir: Path) -> list[dict]:
    rows = []
    for trial in sorted((run_dir / "trials").glob("*")):
        record = json.loads((trial / "record.json").read_text())
        log = pd.read_csv(trial / "epochs.csv")
        inside = float((log["train_s"] + log["val_s"]).sum())
        loop = float(record["train_seconds"])
        rows.append(
            {
                "trial": trial.name,
                "epochs": len(log),
                "loop_s": round(loop, 2),
                "train_val_s": round(inside, 2),
                "outside_share": round(1 - inside / loop, 4) if loop else None,
                "ckpt_s_sum": round(float(log["ckpt_s"].sum()), 3) if "ckpt_s" in log else None,
                "checkpoint_writes": record.get("checkpoint_writes"),
                "bytes_written_mb": round((record.get("checkpoint_bytes_written") or 0) / 1e6, 1),
                "folder_mb": round(sum(p.stat().st_size for p in trial.iterdir()) / 1e6, 1),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--checkpoint-every", type=float, default=None, help="seconds (default: covbench's)")
    ap.add_argument("--analyse", type=Path, help="only report on this run folder")
    ap.add_argument("--storage", help="keep checkpoints there (covbench run --storage)")
    ap.add_argument("--local-s3", action="store_true", help="... on a moto S3 server started here")
    args = ap.parse_args(argv)
    if args.analyse:
        rows = analyse(args.analyse)
    else:
        cfg = build_config(
            models=["unet"], n_seeds=1, preset=PRESETS["smoke"], epochs=args.epochs, width=args.width,
            image_size=args.image_size,
        )  # fmt: skip
        options = {} if args.checkpoint_every is None else {"checkpoint_every": args.checkpoint_every}
        with ExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            if args.local_s3:
                args.storage = f"s3://{stack.enter_context(_local_s3())}/bench"
            if args.storage:
                from covbench.folder.storage import Storage

                options["storage"] = Storage.parse(args.storage)
                print(f"checkpoints in {args.storage}")
            execute(cfg, Path(tmp) / "run", **options)
            rows = analyse(Path(tmp) / "run")
    for r in rows:
        share = "-" if r["outside_share"] is None else f"{r['outside_share']:.1%}"
        print(
            f"{r['trial']}: {r['epochs']} epochs, loop {r['loop_s']} s, train+val {r['train_val_s']} s, "
            f"outside {share}; checkpoint on the training thread {r['ckpt_s_sum']} s, "
            f"{r['checkpoint_writes']} writes, {r['bytes_written_mb']} MB written; folder {r['folder_mb']} MB"
        )
    return rows


def _local_s3():
    """A bucket on moto's real server in this process (the tests' own, tests/s3server.py)."""
    from contextlib import contextmanager

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from s3server import environment, threaded_server

    @contextmanager
    def bucket():
        with threaded_server() as server, environment(server.env):
            yield server.bucket("bench")

    return bucket()


if __name__ == "__main__":
    main()
