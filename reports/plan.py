"""`covbench plan RUN`: how many seeds and test patients a question needs, from a finished run.

The run's per-unit values give the variance components of `covbench.reports.inference.Design`
(patient x model, seed, network x patient); the power of the verdict's two-sided t-test for a true
difference `delta` follows from the noncentral t with the design's Satterthwaite df. The formula is
checked against a Monte-Carlo simulation of the verdict itself in the tests (within 3 points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from covbench.errors import CovbenchError, quote
from covbench.metrics import METRICS
from covbench.reports.inference import ALPHA, POWER, Design
from covbench.reports.verdicts import run_design, unit_values

SEED_CHOICES = (3, 5, 10, 20)
MAX_UNITS = 5000


@dataclass
class PlanRow:
    seeds: int
    units_needed: int | None  # None: not reachable with any number of units (the seeds limit it)
    power_at_run_units: float


@dataclass
class Plan:
    metric: str
    delta: float
    power: float
    alpha: float
    unit: str
    run_seeds: int
    run_units: int
    design: Design
    detectable_now: float
    power_now: float
    rows: list[PlanRow] = field(default_factory=list)

    def markdown(self) -> str:
        d = self.design
        lines = [
            f"Variance components of {self.metric} per test {self.unit} (from the run): "
            f"{self.unit} x model SD {math.sqrt(d.sigma_v2):.4g}, seed SD {math.sqrt(d.sigma_w2):.4g}, "
            f"network x {self.unit} SD {math.sqrt(d.sigma_e2):.4g}.",
            f"This run ({self.run_seeds} seeds per model, {self.run_units} test {self.unit}s) detects "
            f"differences of at least {self.detectable_now:.3g} with {self.power:.0%} power; its power "
            f"for a difference of {self.delta:g} is {self.power_now:.0%}.",
            "",
            f"| seeds per model | test {self.unit}s needed for {self.delta:g} at {self.power:.0%} power "
            f"| power with {self.run_units} {self.unit}s |",
            "|---|---|---|",
        ]
        for r in self.rows:
            needed = str(r.units_needed) if r.units_needed is not None else f"not reachable (> {MAX_UNITS})"
            lines.append(f"| {r.seeds} | {needed} | {r.power_at_run_units:.0%} |")
        lines += [
            "",
            f"Two-sided test at α = {self.alpha}, each model's seeds as replicates, "
            f"{self.unit}s paired (docs/reports.md, 'Planning').",
        ]
        return "\n".join(lines) + "\n"


def units_needed(design: Design, seeds: int, delta: float, power: float, alpha: float) -> int | None:
    """The fewest test units giving `power` for `delta` with `seeds` per model (power grows with
    units, so a bisection over integers), or None when even MAX_UNITS do not suffice."""
    if design.power(delta, seeds, MAX_UNITS, alpha) < power:
        return None
    lo, hi = 2, MAX_UNITS
    if design.power(delta, seeds, lo, alpha) >= power:
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if design.power(delta, seeds, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def plan(
    run_dir: Path,
    metric: str = "dice",
    delta: float = 0.01,
    power: float = POWER,
    alpha: float = ALPHA,
    unit: str = "slice",
) -> Plan:
    """The plan for `metric` from the run folder's per-case rows (patient units where the data
    names patients)."""
    from covbench.reports.aggregate import patient_rows
    from covbench.reports.report import load_rows, run_config, run_threshold

    if metric not in METRICS:
        raise CovbenchError(f"--metric must be one of {', '.join(METRICS)}, got {quote(metric)}")
    if not (delta > 0 and math.isfinite(delta)):
        raise CovbenchError(f"--delta must be a positive number, got {delta}")
    if not 0 < power < 1:
        raise CovbenchError(f"--power must lie between 0 and 1, got {power}")
    run_dir = Path(run_dir)
    if unit == "patient":
        rows = patient_rows(run_dir, run_threshold(run_config(run_dir)))
    else:
        rows = load_rows(run_dir)
    uv = unit_values(rows)
    found = run_design(uv, metric)
    if found is None:
        raise CovbenchError(
            f"{run_dir}: {metric} needs at least two models with values on shared test units to estimate "
            "the variance components"
        )
    design, seeds, units = found
    if units < 2:
        raise CovbenchError(
            f"{run_dir}: only {units} test {uv.unit}: the {uv.unit} x model variance cannot be estimated, "
            "so no plan would be honest; plan from a run with at least 2 (better 10+) test units"
        )
    result = Plan(
        metric, delta, power, alpha, uv.unit, seeds, units, design,
        design.detectable(seeds, units, power, alpha), design.power(delta, seeds, units, alpha),
    )  # fmt: skip
    for s in sorted({seeds, *SEED_CHOICES}):
        result.rows.append(
            PlanRow(s, units_needed(design, s, delta, power, alpha), design.power(delta, s, units, alpha))
        )
    return result
