"""Calibration of the rounds of seeds (`covbench run --max-seeds`, covbench.reports.sequential) by
simulation: false "better" over all looks under no true difference, and power and expected seeds
against the fixed design of equal power at true differences of 0.02 and 0.05 Dice.

The data model is bench_calibration.py's (y = delta [m = A] + v[m, p] + w[m, s] + e[m, s, p, k],
slice SD of a difference 0.1, 10 slices a patient). Each simulated dataset draws `max` seeds per
model up front; look k uses the first seeds of round k. The per-look test is covbench's
(`inference.differences`: the code `verdicts` runs, one pair so Holm is the identity) at the level
the stopping rule spends (`sequential.nominal_alpha`, information from `inference.estimate_design`),
and futility is `sequential.conditional_power`, as `sequential.look` does in a run.

The fixed design of equal power: the smallest seeds per model whose planned power
(`inference.Design.power` at the true variance components) reaches the sequential design's power.

    python benchmarks/bench_sequential.py               # the table in docs/reports.md
    python benchmarks/bench_sequential.py --quick       # a few scenarios
    python benchmarks/bench_sequential.py --at-power    # the saving at 80 % power of a fixed design
    python benchmarks/bench_sequential.py --extended    # heavy, skewed, diverging seeds, ci.json
    python benchmarks/bench_sequential.py --normal-theory --datasets 200000   # the z-test bound
    python benchmarks/bench_sequential.py --equivalence # false "equivalent" at the margin
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

from covbench.reports.inference import ALPHA, ROPE, Design, differences, estimate_design
from covbench.reports.sequential import (
    FUTILITY_FROM,
    FUTILITY_POWER,
    Rule,
    conditional_power,
    spent,
    variance_ratio,
)

DEFAULT = Rule(2, 2, 3)  # the defaults a run gets (spending, guard)

FIRSTS = (2, 3, 5)
MAXES = (10, 20, 30)
PATIENTS = (3, 10, 40)
ICCS = (0.0, 0.5)
SEED_SDS = (0.005, 0.02)
TAU, SLICES = 0.1, 10


def simulate(rng, n, seeds, patients, icc, seed_sd, delta):
    """Per-patient means (n, seeds, patients) of both models (slice noise averaged exactly)."""
    out = []
    for shift in (delta, 0.0):
        v = rng.normal(0.0, np.sqrt(icc * TAU**2 / 2), (n, 1, patients))
        w = rng.normal(0.0, seed_sd, (n, seeds, 1))
        e = rng.normal(0.0, np.sqrt((1 - icc) * TAU**2 / 2 / SLICES), (n, seeds, patients))
        out.append(shift + v + w + e)
    return out


def run_rule(a, b, rule: Rule, margin=ROPE["dice"]):
    """(verdict sign: +1 A better, -1 B better, 0 none; seeds per model used; declared practically
    equivalent) per dataset, as
    `sequential.look` decides: the look's level and the final one from `Rule.look_levels`, the
    seeds guard from `Rule.guards`."""
    n, _, patients = a.shape
    sign = np.zeros(n)
    same = np.zeros(n, bool)
    used = np.full(n, rule.max_seeds)
    open_ = np.ones(n, bool)
    informations: list[float] = []
    for k in range(1, rule.rounds + 1):
        s = rule.round_seeds(k)
        idx = np.flatnonzero(open_)
        if idx.size == 0:
            break
        last = s >= rule.max_seeds
        informations.append(1.0 if last else s / rule.max_seeds)
        level, final = rule.look_levels(informations)
        batch = differences(a[idx, :s], b[idx, :s])
        if last:
            t_var = np.ones(idx.size)
        else:
            t_var = np.array(
                [
                    variance_ratio(estimate_design([a[i, :s], b[i, :s]]), s, rule.max_seeds, patients)
                    for i in idx
                ]
            )
        equivalent = batch.p_equivalence(margin) < level
        better = (batch.p_value < level) & ~equivalent & (not rule.guards(s, s, last))
        sign[idx[better]] = np.sign(batch.estimate[better])
        same[idx[equivalent]] = True
        decided = better | equivalent
        cp = conditional_power(
            batch.estimate, batch.se, t_var, batch.df, final, margin, rule.futility_assumes
        )
        futile = (np.maximum(*cp) < rule.futility) & ~decided & (k >= FUTILITY_FROM)
        stop = decided | futile | last
        used[idx[stop]] = s
        open_[idx[stop]] = False
    return sign, used, same


def fixed_seeds(design: Design, delta: float, patients: int, power: float, most: int = 200) -> int | None:
    """Smallest seeds per model whose planned power at `delta` reaches `power`."""
    for s in range(2, most + 1):
        if design.power(delta, s, patients) >= power:
            return s
    return None


def extended(args) -> None:
    """The extended seed behaviours of the verdict calibration (benchmarks/calibration_grid.py:
    heavy-tailed, skewed and diverging seeds of one model, the CI baseline's real structure)
    under rounds of seeds: false 'better' over all looks and the seeds it spends."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from calibration_grid import Scenario, reals_of

    reals, _ = reals_of(Path(__file__).resolve().parents[1] / "reports" / "baselines" / "ci.json", [])
    rng = np.random.default_rng(args.seed)
    print("| scenario | first | max | false 'better' over all looks | mean seeds per model |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for first, most in ((3, 10), (3, 20), (5, 30)):
        rule = _rule(args, first, most)
        scenarios = [
            Scenario("heavy-tailed seeds (t3)", most, most, seed_law="heavy", sigma_w_a=0.02),
            Scenario("skewed seeds (gamma)", most, most, seed_law="skewed", sigma_w_a=0.02),
            Scenario("diverging 15% by 0.1", most, most, seed_law="diverging", diverge=0.15, drop=0.1),
            Scenario("diverging 20% by 0.13", most, most, seed_law="diverging", diverge=0.2, drop=0.13),
            Scenario("3 patients, seed SD 0.02", most, most, patients=3, sigma_v=0.05, sigma_w=0.02),
            Scenario("resampled ci.json resunet vs unet", most, most, source="ci.json"),
        ]
        for sc in scenarios:
            a, b = sc.simulate(rng, args.datasets, 0.0, reals)
            sign, used, _ = run_rule(a, b, rule)
            false = float((sign != 0).mean())
            worst = max(worst, false)
            print(f"| {sc.name} | {first} | {most} | {false:.3f} | {used.mean():.1f} |", flush=True)
    print(f"\nlargest false 'better' over all looks {worst:.3f} ({args.datasets} datasets a scenario)")


def _rule(args, first: int, most: int) -> Rule:
    return Rule(
        first,
        args.step or first,
        most,
        futility=args.futility,
        spending=args.spending,
        min_better=args.min_better,
        futility_under=args.futility_under,
    )


def at_power(args, grid) -> None:
    """The issue's saving: a difference the fixed design of half the maximum seeds detects with 80 %
    power (`Design.detectable` at the true components); the rule's power and expected seeds there,
    against that fixed design and against the fixed design of the rule's own power."""
    rng = np.random.default_rng(args.seed)
    print(
        "| first | max | patients | ICC | seed SD | false 'better' | fixed seeds at 80 % | delta | power "
        "| E[seeds] | E[seeds] / fixed | fixed of equal power | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    worst, ratios, shares = 0.0, [], []
    for first, most, patients, icc, seed_sd in grid:
        rule = _rule(args, first, most)
        design = Design(icc * TAU**2 / 2, seed_sd**2, (1 - icc) * TAU**2 / 2 / SLICES)
        n80 = most // 2
        delta = design.detectable(n80, patients)
        a, b = simulate(rng, args.datasets, most, patients, icc, seed_sd, 0.0)
        false = float((run_rule(a, b, rule)[0] != 0).mean())
        worst = max(worst, false)
        a, b = simulate(rng, args.datasets, most, patients, icc, seed_sd, delta)
        sign, used, _ = run_rule(a, b, rule)
        power, seeds = float((sign > 0).mean()), float(used.mean())
        fixed = fixed_seeds(design, delta, patients, power) if power > ALPHA else None
        ratio = seeds / fixed if fixed else float("nan")
        shares.append(seeds / n80)
        if fixed and power >= 0.8:
            ratios.append(ratio)
        print(
            f"| {first} | {most} | {patients} | {icc} | {seed_sd} | {false:.3f} | {n80} | {delta:.3f} "
            f"| {power:.2f} | {seeds:.1f} | {seeds / n80:.2f} | {fixed or '-'} | {ratio:.2f} |",
            flush=True,
        )
    at80 = (
        f"median {np.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f}, "
        f"{len(ratios)} scenarios, "
        f"{sum(r <= 0.6 for r in ratios)} at or below 0.6)"
        if ratios
        else "no scenario reached 80 % power"
    )
    print(
        f"\n{len(grid)} scenarios x {args.datasets} datasets ({args.spending}, futility {args.futility} "
        f"under {args.futility_under}, min_better {args.min_better}, step {args.step or 'first'}): "
        f"largest false 'better' {worst:.3f}; E[seeds] / fixed design at 80 % median {np.median(shares):.2f} "
        f"(max {max(shares):.2f}); / fixed design of equal power where power >= 0.8: {at80}"
    )


def equivalence(args, grid) -> None:
    """False "practically equivalent" over all looks: the true difference sits on the margin
    (ROPE, 0.01 Dice), where TOST (Schuirmann 1987) at each look's level should claim equivalence at
    most about alpha of the time (group-sequential equivalence tests: Jennison & Turnbull 2000, ch. 6)."""
    rng = np.random.default_rng(args.seed)
    margin = ROPE["dice"]
    print("| first | max | patients | ICC | seed SD | false 'equivalent' at the margin | mean seeds |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for first, most, patients, icc, seed_sd in grid:
        a, b = simulate(rng, args.datasets, most, patients, icc, seed_sd, margin)
        _, used, same = run_rule(a, b, _rule(args, first, most))
        worst = max(worst, float(same.mean()))
        print(
            f"| {first} | {most} | {patients} | {icc} | {seed_sd} | {same.mean():.3f} | {used.mean():.1f} |"
        )
    print(f"\n{len(grid)} scenarios x {args.datasets} datasets ({args.spending}): largest {worst:.3f}")


def normal_theory(args) -> None:
    """The bound of any such rule: a z test (variance known) at the same exact boundaries, K equally
    spaced looks, the maximum information giving 80 % power; its expected information at that
    alternative over the fixed design's of 80 % power (Brownian motion, `--datasets` paths)."""
    from scipy import optimize, stats

    from covbench.reports.sequential import boundaries

    rng = np.random.default_rng(args.seed)
    fixed = (stats.norm.isf(ALPHA / 2) + stats.norm.isf(0.2)) ** 2
    print("| spending | looks | max / fixed | E / fixed at the 80 % alternative |")
    print("|---|---|---|---|")
    for looks in (3, 5, 10):
        t = np.arange(1, looks + 1) / looks
        paths = np.cumsum(rng.normal(size=(args.datasets, looks)) * np.sqrt(np.diff(t, prepend=0.0)), axis=1)
        c = boundaries(t, ALPHA, args.spending)

        def run(drift, t=t, paths=paths, c=c, looks=looks):
            cross = np.abs((paths + drift * t) / np.sqrt(t)) > c
            first = np.where(cross.any(axis=1), cross.argmax(axis=1), looks - 1)
            return cross.any(axis=1).mean(), t[first].mean()

        drift = optimize.brentq(lambda x: run(x)[0] - 0.8, 1.0, 6.0, xtol=1e-4)
        print(
            f"| {args.spending} | {looks} | {drift**2 / fixed:.3f} | {run(drift)[1] * drift**2 / fixed:.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=2000, help="simulated datasets per scenario")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=20261206)
    parser.add_argument("--spending", default=DEFAULT.spending, help="Rule.spending, e.g. exact-hsd(-2)")
    parser.add_argument("--futility", type=float, default=FUTILITY_POWER)
    parser.add_argument("--min-better", type=int, default=DEFAULT.min_better, help="Rule.min_better")
    parser.add_argument("--futility-under", default=DEFAULT.futility_under, choices=("trend", "design"))
    parser.add_argument(
        "--step", type=int, default=None, help="seeds a round after the first (default: first)"
    )
    parser.add_argument("--extended", action="store_true", help="the extended seed behaviours instead")
    parser.add_argument("--at-power", action="store_true", help="at the difference 80 %% power finds")
    parser.add_argument("--normal-theory", action="store_true", help="the z-test bound of the saving")
    parser.add_argument("--equivalence", action="store_true", help="false 'equivalent' at the margin")
    args = parser.parse_args()
    spent(0.5, spending=args.spending)  # an unknown name fails here, before any simulation
    if args.extended:
        extended(args)
        return
    if args.normal_theory:
        normal_theory(args)
        return
    grid = list(itertools.product(FIRSTS, MAXES, PATIENTS, ICCS, SEED_SDS))
    if args.quick:
        grid = [(3, 10, 10, 0.5, 0.02), (2, 30, 3, 0.0, 0.005), (5, 20, 40, 0.5, 0.02)]
    if args.equivalence:
        equivalence(args, grid)
        return
    if args.at_power:  # where seeds matter: seed SD 0.02, 10 or 40 patients (3 patients: df-bound)
        at_power(
            args, grid if args.quick else list(itertools.product(FIRSTS, MAXES, (10, 40), ICCS, (0.02,)))
        )
        return
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    print(
        "| first | max | patients | ICC | seed SD | false 'better' | power 0.02 | E[seeds] 0.02 "
        "| fixed seeds | ratio | power 0.05 | E[seeds] 0.05 | fixed seeds | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    worst, ratios = 0.0, []
    for first, most, patients, icc, seed_sd in grid:
        rule = _rule(args, first, most)
        a, b = simulate(rng, args.datasets, most, patients, icc, seed_sd, 0.0)
        sign, _, _ = run_rule(a, b, rule)
        false = float((sign != 0).mean())
        worst = max(worst, false)
        design = Design(icc * TAU**2 / 2, seed_sd**2, (1 - icc) * TAU**2 / 2 / SLICES)
        cells = [f"{first}", f"{most}", f"{patients}", f"{icc}", f"{seed_sd}", f"{false:.3f}"]
        for delta in (0.02, 0.05):
            a, b = simulate(rng, args.datasets, most, patients, icc, seed_sd, delta)
            sign, used, _ = run_rule(a, b, rule)
            power, seeds = float((sign > 0).mean()), float(used.mean())
            fixed = fixed_seeds(design, delta, patients, power) if power > ALPHA else None
            ratio = seeds / fixed if fixed else float("nan")
            if fixed and power >= 0.8:
                ratios.append(ratio)
            cells += [f"{power:.2f}", f"{seeds:.1f}", str(fixed or "-"), f"{ratio:.2f}" if fixed else "-"]
        print("| " + " | ".join(cells) + " |", flush=True)
    summary = f"max {max(ratios):.2f}, median {np.median(ratios):.2f}" if ratios else "no scenario at 80 %"
    print(
        f"\n{len(grid)} scenarios x {args.datasets} datasets: largest false 'better' over all looks "
        f"{worst:.3f} (alpha {ALPHA}, {args.spending}, futility below {args.futility} conditional power, "
        f"min_better {args.min_better}); seeds / fixed design of equal power where power >= 0.8: {summary}; "
        f"{time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
