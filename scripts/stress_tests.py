"""Run the process-level tests several times in a row, idle and under CPU load, and time each round.

A test that races the speed of training passes on the machine where it was written and fails on
a faster one, or on the same one while something else runs. This script makes both moments
happen on purpose: rounds on an idle machine, then rounds with one busy process per core. Any
failing round fails the script (exit 1); the table shows wall and CPU seconds per round.

    python scripts/stress_tests.py                     # 1 idle round, 2 loaded rounds, `-m process`
    python scripts/stress_tests.py --idle 0 --loaded 3 -- tests/test_lock.py
    nox -s stress -- --loaded 3                        # the same, in nox's own environment

Everything after `--` goes to pytest instead of the default selection (`-m process`).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BUSY = "while True: pass"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Round:
    label: str
    returncode: int
    wall_s: float
    cpu_s: float  # pytest and the processes it waited for (Ray's own daemons are not all counted)
    summary: str


@contextmanager
def cpu_load(processes: int) -> Iterator[None]:
    """`processes` busy Python loops, stopped when the block ends."""
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(processes)]
    try:
        yield
    finally:
        for p in busy:
            p.kill()
        for p in busy:
            p.wait()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_round(label: str, pytest_args: list[str]) -> Round:
    cpu, t = _children_cpu(), time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
                          capture_output=True, text=True, cwd=REPO)  # fmt: skip
    wall, cpu = time.monotonic() - t, _children_cpu() - cpu
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0:  # the whole output, to read later; the end of it now
        log = Path(tempfile.gettempdir(), f"covbench-stress-{label.replace(' ', '-')}-{os.getpid()}.log")
        log.write_text(proc.stdout + proc.stderr)
        print(proc.stdout[-6000:] + proc.stderr[-2000:] + f"\n(all of it in {log})")
    return Round(label, proc.returncode, wall, cpu, lines[-1] if lines else proc.stderr.strip()[-200:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=1, help="rounds without extra load (default 1)")
    parser.add_argument("--loaded", type=int, default=2, help="rounds under CPU load (default 2)")
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 1,
                        help="busy processes during loaded rounds (default: one per core)")  # fmt: skip
    parser.add_argument("pytest_args", nargs="*", help="after --: what pytest runs (default -m process)")
    args = parser.parse_args(argv)
    pytest_args = args.pytest_args or ["-m", "process"]
    print(f"pytest {' '.join(pytest_args)}: {args.idle} idle round(s), {args.loaded} with {args.busy} busy "
          f"process(es), on {os.cpu_count()} cores", flush=True)  # fmt: skip
    rounds: list[Round] = []
    for i in range(args.idle):
        rounds.append(run_round(f"idle {i + 1}", pytest_args))
        print(_row(rounds[-1]), flush=True)
    for i in range(args.loaded):
        with cpu_load(args.busy):
            rounds.append(run_round(f"loaded {i + 1}", pytest_args))
        print(_row(rounds[-1]), flush=True)
    failed = [r.label for r in rounds if r.returncode != 0]
    passed = len(rounds) - len(failed)
    print(f"{passed} of {len(rounds)} rounds passed; failed: {', '.join(failed) or '-'}")
    return 1 if failed else 0


def _row(r: Round) -> str:
    return f"{r.label:>9}  rc {r.returncode}  {r.wall_s:7.1f} s wall  {r.cpu_s:7.1f} s CPU  {r.summary}"


if __name__ == "__main__":
    sys.exit(main())
