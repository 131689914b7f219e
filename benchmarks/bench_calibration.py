"""Calibration of covbench's verdicts by simulation: how often does it declare a winner when there
is none, and how often does it find a true difference?

Each simulated dataset is two architectures with `seeds` trained networks each, scored on
`patients` test patients of `slices` slices:

    y[m, s, p, k] = delta * [m = A] + v[m, p] + w[m, s] + e[m, s, p, k]

v: architecture x patient effect, w: seed (shifts every case of one network), e: network x slice
noise. `icc` is the share of the slice-level difference variance that sits between patients
(the within-patient correlation of the paired differences), `tau` the slice-level SD of a
difference (0.1 Dice). The verdict is covbench's (`covbench.reports.inference.differences`, the
code the reports run): "A better" / "B better" when p < alpha and not practically equivalent.
"before" is the test covbench used until 2026-12: Wilcoxon over seed-averaged slices.

    python benchmarks/bench_calibration.py                # the full grid (docs/reports.md), minutes
    python benchmarks/bench_calibration.py --quick        # a few scenarios
    python benchmarks/bench_calibration.py --grid extended [--run RUN_DIR ...]
        # issue 33's grid: unequal seeds, skewed / diverging seeds, resampled real structures,
        # the rule before 2026-12-06 (benchmarks/rule_before.py) against today's
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

from covbench.reports.inference import ALPHA, ROPE, differences

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from calibration_grid import Scenario, reals_of  # noqa: E402
from calibration_grid import grid as extended_grid  # noqa: E402
from rule_before import differences_before  # noqa: E402

ICCS = (0.0, 0.1, 0.3, 0.5)
SEED_SDS = (0.0, 0.005, 0.01, 0.02)
SEEDS = (3, 5, 10)
PATIENTS = (3, 10, 20, 40)
DELTAS = (0.0, 0.02, 0.05)


def simulate(rng, n, seeds, patients, icc, seed_sd, delta, slices=10, tau=0.1):
    """Per-patient means (n, seeds, patients) of both models, and slice values for 'before'."""
    out = []
    for shift in (delta, 0.0):
        v = rng.normal(0.0, np.sqrt(icc * tau**2 / 2), (n, 1, patients, 1))
        w = rng.normal(0.0, seed_sd, (n, seeds, 1, 1))
        e = rng.normal(0.0, np.sqrt((1 - icc) * tau**2 / 2), (n, seeds, patients, slices))
        out.append(shift + v + w + e)
    return out


def verdict_rates(a_slices, b_slices, margin=ROPE["dice"], alpha=ALPHA, rule=differences):
    """(share 'A better', share 'B better') of covbench's verdict over the simulated datasets
    (slice values (n, seeds, patients, slices), or per-patient values (n, seeds, patients))."""
    a, b = (x.mean(axis=3) if x.ndim == 4 else x for x in (a_slices, b_slices))
    batch = rule(a, b)
    decided = (batch.p_value < alpha) & ~(batch.p_equivalence(margin) < alpha)
    return float((decided & (batch.estimate > 0)).mean()), float((decided & (batch.estimate < 0)).mean())


def before_rate(a_slices, b_slices, alpha=ALPHA):
    """The old test: Wilcoxon signed-rank over slices, each averaged over seeds."""
    d = (a_slices.mean(axis=1) - b_slices.mean(axis=1)).reshape(a_slices.shape[0], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = stats.wilcoxon(d, axis=1).pvalue
    return float((p < alpha).mean())


def extended(args) -> None:
    """Issue 33's grid: false 'better' and power, the rule before 2026-12-06 against today's."""
    rng = np.random.default_rng(args.seed)
    reals, from_runs = reals_of(ROOT / "reports" / "baselines" / "ci.json", args.run)
    scenarios = extended_grid(args.quick) + from_runs
    t0 = time.perf_counter()
    print("| scenario | false 'better' before | false 'better' now | power at 0.02 before / now "
          "| power at 0.05 before / now |")  # fmt: skip
    print("|---|---|---|---|---|")
    worst = worst_before = 0.0
    for sc in scenarios:
        a, b = sc.simulate(rng, args.datasets, 0.0, reals)
        before, now = sum(verdict_rates(a, b, rule=differences_before)), sum(verdict_rates(a, b))
        power = []
        for delta in DELTAS[1:]:
            a, b = sc.simulate(rng, args.datasets, delta, reals)
            power.append((verdict_rates(a, b, rule=differences_before)[0], verdict_rates(a, b)[0]))
        worst, worst_before = max(worst, now), max(worst_before, before)
        print(
            f"| {sc.name} | {before:.3f} | {now:.3f} | {power[0][0]:.3f} / {power[0][1]:.3f} | "
            f"{power[1][0]:.3f} / {power[1][1]:.3f} |"
        )
    print(
        f"\n{len(scenarios)} scenarios x {args.datasets} datasets: largest false-verdict rate {worst:.3f} "
        f"(before: {worst_before:.3f}) at alpha = {ALPHA}; {time.perf_counter() - t0:.0f} s"
    )


def seed_sweep(args) -> None:
    """How many seeds a diverging recipe needs: no test on a pair's own seeds can tell a model
    whose seeds sometimes diverge, observed when none did, from a better model; only the chance of
    that event, (1 - p) ** seeds, shrinks (docs/calibration.md, "Diverging seeds")."""
    rng = np.random.default_rng(args.seed)
    reals, _ = reals_of(ROOT / "reports" / "baselines" / "ci.json", [])
    print("| A's seeds diverge | seeds per model | P(none of A's diverged) | false 'A better' "
          "| false 'B better' | false 'better' |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for seeds in (3, 5, 10, 20, 30):
        for pi, drop in ((0.15, 0.1), (0.2, 0.13)):
            sc = Scenario(f"{pi:.0%} by {drop}", seeds, seeds, seed_law="diverging", diverge=pi, drop=drop)
            a_better, b_better = verdict_rates(*sc.simulate(rng, args.datasets, 0.0, reals))
            print(f"| {sc.name} | {seeds} | {(1 - pi) ** seeds:.3f} | {a_better:.3f} | {b_better:.3f} "
                  f"| {a_better + b_better:.3f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=1000, help="simulated datasets per scenario")
    parser.add_argument("--quick", action="store_true", help="four scenarios, for a smoke check")
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--grid", choices=("normal", "extended", "seeds"), default="normal")
    parser.add_argument(
        "--run", type=Path, action="append", default=[], help="a run folder whose structures to resample"
    )
    args = parser.parse_args()
    if args.grid == "extended":
        extended(args)
        return
    if args.grid == "seeds":
        seed_sweep(args)
        return
    rng = np.random.default_rng(args.seed)
    grid = list(itertools.product(ICCS, SEED_SDS, SEEDS, PATIENTS))
    if args.quick:
        grid = [(0.0, 0.0, 3, 3), (0.5, 0.02, 10, 3), (0.3, 0.01, 5, 20), (0.5, 0.02, 3, 40)]
    t0 = time.perf_counter()
    print("| ICC | seed SD | seeds | patients | false 'better' (covbench) | rule before 2026-12-06 "
          "| before (slice Wilcoxon) | power at 0.02 (before / now) "
          "| power at 0.05 (before / now) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    worst = worst_rule = worst_before = 0.0
    for icc, seed_sd, seeds, patients in grid:
        a, b = simulate(rng, args.datasets, seeds, patients, icc, seed_sd, 0.0)
        false = sum(verdict_rates(a, b))
        old_rule = sum(verdict_rates(a, b, rule=differences_before))
        before = before_rate(a, b)
        power = []
        for delta in DELTAS[1:]:
            a, b = simulate(rng, args.datasets, seeds, patients, icc, seed_sd, delta)
            power.append((verdict_rates(a, b, rule=differences_before)[0], verdict_rates(a, b)[0]))
        worst, worst_rule, worst_before = (
            max(worst, false),
            max(worst_rule, old_rule),
            max(worst_before, before),
        )
        print(
            f"| {icc} | {seed_sd} | {seeds} | {patients} | {false:.3f} | {old_rule:.3f} | {before:.3f} | "
            f"{power[0][0]:.3f} / {power[0][1]:.3f} | {power[1][0]:.3f} / {power[1][1]:.3f} |"
        )
    print(
        f"\n{len(grid)} scenarios x {args.datasets} datasets: largest false-verdict rate {worst:.3f} "
        f"(rule before 2026-12-06: {worst_rule:.3f}; slice Wilcoxon: {worst_before:.3f}) at alpha = {ALPHA}; "
        f"{time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
