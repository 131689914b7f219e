"""Regression injection: every broken variant of benchmarks/regressions.py through the CI benchmark
and the gate (docs/reports.md, "The CI gate").

    python benchmarks/bench_gate.py reports/baselines/ci.json [--variants no_update,tiny_lr] [--work DIR]
    python benchmarks/bench_gate.py BASELINE --run "covbench run ..."   # another benchmark's baseline

Per variant: `covbench run` of the CI benchmark (`CI_RUN`, the line of .ci/run) with
`COVBENCH_TEST_PATCH=benchmarks/regressions.py:<variant>` (covbench.faults), then the gate against
BASELINE. A variant is caught when the gate fails the primary metric of every model; the script
prints a row per (variant, model) and exits 1 when any variant got through, 2 on bad input.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from regressions import VARIANTS  # noqa: E402

from covbench.faults import PATCH  # noqa: E402
from covbench.reports.compare import gate  # noqa: E402

#: The CI benchmark, exactly as .ci/run runs it (tests/test_compare.py checks the two agree).
CI_RUN = "covbench run --preset cpu --image-size 48 --epochs 24 --seeds 3 --models paper"


@dataclass
class Caught:
    variant: str
    model: str
    delta: float | None
    p_value: float | None
    verdict: str
    seconds: float


def inject(variant: str, baseline: Path, out: Path, run: str = CI_RUN) -> list[Caught]:
    """Run the benchmark with `variant` patched into every trial, gate it against `baseline`, and
    return the primary metric's row per model of the baseline. A run that fails outright is loud
    in CI anyway: it is reported as caught by the run (`run failed`)."""
    env = {**os.environ, PATCH: f"{HERE / 'regressions.py'}:{variant}"}
    started = time.perf_counter()
    done = subprocess.run([*shlex.split(run), "--out", str(out)], env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return [Caught(variant, "(all)", None, None, f"run failed (exit {done.returncode})", seconds)]
    result = gate(baseline, out, require_identity=True).result
    assert result is not None
    return [
        Caught(variant, r.model, r.delta, r.p_value, r.verdict, seconds)
        for r in result.rows
        if r.metric == result.primary
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("baseline", type=Path, help="the committed baseline of the CI benchmark")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma list (default: all)")
    ap.add_argument("--work", type=Path, default=None, help="where the run folders go (default: a temp dir)")
    ap.add_argument("--run", default=CI_RUN, help="the benchmark command of BASELINE (default: the CI one)")
    args = ap.parse_args(argv)
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        print(f"error: --variants {args.variants!r}: choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    if not args.baseline.is_file():
        print(f"error: {args.baseline}: no such baseline file", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="covbench-inject-"))
    escaped = []
    print(f"{'variant':16} {'model':8} {'delta':>8} {'p':>9} {'seconds':>7}  verdict")
    for variant in chosen:
        for c in inject(variant, args.baseline, work / variant, args.run):
            delta = "n/a" if c.delta is None else f"{c.delta:+.4f}"
            p = "n/a" if c.p_value is None else f"{c.p_value:.2g}"
            print(f"{c.variant:16} {c.model:8} {delta:>8} {p:>9} {c.seconds:7.0f}  {c.verdict}", flush=True)
            if c.verdict != "REGRESSED" and not c.verdict.startswith("run failed"):
                escaped.append(f"{c.variant}/{c.model}")
    if escaped:
        print(f"{len(escaped)} (variant, model) got through the gate: {', '.join(escaped)}")
        return 1
    print(f"all {len(chosen)} variants failed the gate on the primary metric for every model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
