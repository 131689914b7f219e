"""`covbench compare BASELINE CURRENT`: did the primary metric of any model really get worse?

Each side is a `summary.json` or a run folder holding one. The decision uses the inference of the
honest verdicts (`covbench.reports.inference.difference`) on the benchmark's fixed test set: per
model and metric, the seeds x units matrices of both sides (`unit_values`) over the units both hold;
each independently trained seed is summarised by its mean over those units, and the seeds of each
side are the replicates (`gate_test`: the gate asks whether this code got worse on this benchmark,
whose test set the identity fixes, not whether it would on new patients). A **regression** is a
drop that is significant (two-sided p < alpha) AND larger than the metric's floor (`FLOORS`, the
region of practical equivalence: 0.01 Dice), so float noise across processors (~1e-4) never fails.

* The **primary** metric (the summary's `primary`, default Dice) decides: each model is tested at
  alpha. `compare` prints, per model, the smallest drop it would detect with 80 % power.
* **Secondary** metrics are reported; one fails the gate only when its drop exceeds its floor and
  its p-value, Holm-adjusted over every secondary (model, metric) of the comparison, is below alpha.
* A (model, metric) missing from the current side fails (a metric that silently disappears is how
  a regression hides); one missing from the baseline is reported as new.
* A side with fewer than 2 seeds cannot estimate seed noise; the comparison says so (the inference
  then borrows the other side's seed variance; with one seed a side the units become the
  replicates, paired).
* **Numbers changed**: apart from the verdict, every number of the two sides is compared exactly,
  and any change is reported (not a failure: CPU runs are deterministic, a reviewer wants to know).

A summary without `unit_values` (written by an older covbench) is read from its run folder's
cases.csv when it lies in one; a loose one is refused with one line saying to re-run `covbench
report` (or to replace it with `--update`).

Before comparing, `gate` (the whole `covbench compare` command) checks that both sides are the same
benchmark (`covbench.reports.identity.check_comparable`): a baseline of another benchmark is
refused, exit 2.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from covbench.errors import CovbenchError, quote
from covbench.folder.io import read_json, write_json
from covbench.folder.layout import RunFolder
from covbench.folder.lock import run_lock
from covbench.folder.manifest import now_iso
from covbench.metrics import HIGHER_IS_BETTER, METRICS
from covbench.reports.identity import Incomparable, check_comparable, summary_identity
from covbench.reports.inference import ALPHA, POWER, PRIMARY, ROPE, Difference, difference, holm
from covbench.reports.summary_check import check_schema, validate_summary
from covbench.reports.table import column_titles, distance_unit_of

#: The smallest drop per metric that may fail the gate: the region of practical equivalence of the
#: honest verdicts (0.01 Dice; 0.5 mm ASSD, 1 mm HD95). `--tolerance dice=0.02` replaces one.
FLOORS: dict[str, float] = dict(ROPE)

IMPROVED, WITHIN, REGRESSED, MISSING, NEW = "improved", "within noise", "REGRESSED", "MISSING", "new"
PRIMARY_ROLE, SECONDARY_ROLE = "primary", "secondary"


@dataclass
class Row:
    model: str
    metric: str
    baseline: float | None  # mean over the paired values (the summary's mean when unpaired)
    current: float | None
    tolerance: float  # the floor: a smaller drop never fails
    p_value: float | None  # two-sided, current vs baseline (inference.difference)
    verdict: str
    role: str = SECONDARY_ROLE
    test: Difference | None = None  # None: a side holds no per-seed values of this metric
    p_adjusted: float | None = None  # Holm over the secondary tests; the primary's own p otherwise
    units: int = 0  # test units both sides hold in every seed (each seed's mean is over these)

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline

    @property
    def detectable(self) -> float | None:
        """Smallest true drop this test detects with 80 % power at alpha."""
        if self.test is None:
            return None
        d = self.test.detectable(POWER, ALPHA)
        return d if math.isfinite(d) else None


@dataclass(frozen=True)
class Changes:
    """Which numbers differ between the two sides at all (exact comparison)."""

    compared: int
    changed: int
    largest: float  # largest absolute change
    where: str  # where the largest change is, e.g. "unet dice seed 1 unit 0/p3"

    def line(self) -> str:
        if not self.changed:
            return f"Numbers unchanged: all {self.compared} values identical on both sides."
        return (
            f"Numbers changed: {self.changed} of {self.compared} values differ (largest |change| "
            f"{self.largest:.3g}, {self.where}); not a failure by itself."
        )


@dataclass
class Comparison:
    baseline: str
    current: str
    rows: list[Row] = field(default_factory=list)
    distance_unit: str = "mm"  # of ASSD and HD95 on both sides ("mm" or "px")
    primary: str = PRIMARY
    unit: str = "patient"  # the paired test unit of unit_values
    notes: list[str] = field(default_factory=list)  # e.g. a side with too few seeds
    changes: Changes | None = None

    @property
    def failed(self) -> list[Row]:
        """Rows that make the comparison fail: regressions and metrics the current side lost."""
        return [r for r in self.rows if r.verdict in (REGRESSED, MISSING)]

    def detectable(self) -> dict[str, float | None]:
        """Per model: the smallest drop of the primary metric detected with 80 % power."""
        return {r.model: r.detectable for r in self.rows if r.metric == self.primary}

    def markdown(self) -> str:
        def num(x: float | None, fmt: str = ".4f") -> str:
            return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)

        lines = [
            f"Baseline: `{self.baseline}`  ",
            f"Current: `{self.current}`",
            "",
            "| Model | Metric | Baseline | Current | Delta | 95 % CI | p | Floor | Verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        titles = column_titles(self.distance_unit)
        for r in self.rows:
            arrow = "↑" if HIGHER_IS_BETTER.get(r.metric, True) else "↓"
            verdict = f"**{r.verdict}**" if r in self.failed else r.verdict
            name = f"{titles.get(r.metric, r.metric)} {arrow}" + (
                " (primary)" if r.role == PRIMARY_ROLE else ""
            )
            ci = "n/a" if r.test is None else f"{r.test.ci_low:+.4f} .. {r.test.ci_high:+.4f}"
            p = num(r.p_value, ".3g")
            if r.role == SECONDARY_ROLE and r.p_adjusted is not None:
                p += f" (Holm {num(r.p_adjusted, '.3g')})"
            cells = [r.model, name, num(r.baseline), num(r.current), num(r.delta, "+.4f"), ci, p]
            cells += [num(r.tolerance, ".3g"), verdict]
            lines.append("| " + " | ".join(cells) + " |")
        failed = self.failed
        title = titles.get(self.primary, self.primary)
        units = max((r.units for r in self.rows), default=0)
        lines += [
            "",
            f"Decision: a drop of the primary metric ({title}) fails when it is significant (p < "
            f"{ALPHA:g}; the seeds of each side as replicates, each seed's mean over the same {units} "
            f"test {self.unit}s) and larger than its "
            f"floor; secondary metrics fail only with Holm-adjusted p < {ALPHA:g} over "
            f"{sum(r.role == SECONDARY_ROLE and r.test is not None for r in self.rows)} secondary tests.",
        ]
        detect = self.detectable()
        if detect:
            lines.append(
                f"Smallest drop of {title} this gate detects with {POWER:.0%} power: "
                + ", ".join(f"{m} {num(d)}" for m, d in detect.items())
                + "."
            )
        lines += [f"Note: {n}" for n in self.notes]
        if self.changes is not None:
            lines.append(self.changes.line())
        lines += [
            "",
            f"{len(failed)} of {len(self.rows)} checks failed."
            if failed
            else f"All {len(self.rows)} checks passed.",
        ]
        return "\n".join(lines) + "\n"


def summary_path(path: Path, option: str) -> Path:
    """A summary.json, or the one inside a run folder."""
    path = Path(path)
    if path.is_dir():
        path = RunFolder(path).summary
        if not path.exists():
            raise CovbenchError(
                f"{option} {path.parent}: no summary.json; run `covbench report {path.parent}` first"
            )
    elif not path.exists():
        raise CovbenchError(f"{option} {path}: no such file or run folder")
    return path


def load_summary(path: Path, option: str = "summary") -> dict:
    p = summary_path(path, option)
    try:
        data = read_json(p)
    except (OSError, ValueError) as exc:
        raise CovbenchError(f"{option} {p}: not readable JSON ({exc})") from None
    check_schema(data, f"{option} {p}")  # before its fields: what a later schema means is unknown here
    validate_summary(data, f"{option} {p}")
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise CovbenchError(f"{option} {p}: not a covbench summary (no 'models')")
    return data


def parse_tolerances(items: list[str] | None) -> dict[str, float]:
    """["dice=0.02", "assd=1"] -> {"dice": 0.02, "assd": 1.0}; errors name the option."""
    out: dict[str, float] = {}
    for item in items or []:
        metric, sep, value = item.partition("=")
        metric = metric.strip().lower()
        if not sep:
            raise CovbenchError(f"--tolerance {quote(item)}: expected METRIC=VALUE, e.g. dice=0.02")
        if metric not in METRICS:
            raise CovbenchError(
                f"--tolerance {quote(item)}: unknown metric {quote(metric)}; choose from {', '.join(METRICS)}"
            )
        try:
            tol = float(value)
        except ValueError:
            raise CovbenchError(f"--tolerance {quote(item)}: {quote(value)} is not a number") from None
        if not (math.isfinite(tol) and tol >= 0):
            raise CovbenchError(f"--tolerance {quote(item)}: must be a non-negative number")
        out[metric] = tol
    return out


def parse_metrics(text: str | None) -> list[str] | None:
    """ "dice,assd" -> ["dice", "assd"]; None -> every metric."""
    if text is None:
        return None
    chosen = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise CovbenchError(
            f"--metrics {quote(text)}: unknown {quote(unknown) if unknown else 'empty list'}; "
            f"choose from {', '.join(METRICS)}"
        )
    return chosen


def _value(entry: dict | None, key: str) -> float | None:
    v = (entry or {}).get(key)
    return float(v) if _finite(v) else None


def unit_values_from_run(run_dir: Path) -> dict:
    """`unit_values` of a slice-level run folder from its cases.csv, for a summary written before
    covbench stored them: per (model, metric, seed) the mean over each test patient's slices (the
    independent unit; a slice when the data names no patients), keyed "fold/patient"."""
    from covbench.reports.report import load_rows

    rows = load_rows(run_dir)
    has_patients = "patient" in rows and rows["patient"].notna().all()
    unit_col = "patient" if has_patients else "case"
    rows = rows.assign(_unit=rows["fold"].astype(str) + "/" + rows[unit_col].astype(str))
    metrics = [m for m in METRICS if m in rows]
    means = rows.groupby(["model", "seed", "_unit"], sort=True)[metrics].mean()  # NaN-skipping
    values: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (model, seed, unit), row in means.iterrows():
        for metric in metrics:
            v = float(row[metric])
            if math.isfinite(v):
                per_seed = values.setdefault(str(model), {}).setdefault(metric, {})
                per_seed.setdefault(str(int(seed)), {})[str(unit)] = v
    return {"unit": "patient" if has_patients else "slice", "values": values}


def with_unit_values(summary: dict, summary_file: Path, option: str) -> dict:
    """The summary with its per-seed per-unit values; derived from the run folder beside an older
    summary that lacks them; refused in one line where there is none to derive them from."""
    if isinstance(summary.get("unit_values"), dict):
        return summary
    run_dir = Path(summary_file).parent
    if summary.get("unit", "slice") == "slice" and RunFolder(run_dir).cases.is_file():
        return {**summary, "unit_values": unit_values_from_run(run_dir)}
    raise CovbenchError(
        f"{option} {summary_file}: no per-seed values (unit_values; written by an older covbench): "
        "re-run `covbench report` on its run folder, or replace the baseline with --update"
    )


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def seed_matrix(summary: dict, model: str, metric: str) -> dict[str, dict[str, float]]:
    """{seed: {unit: value}} of one model and metric ({} when the summary holds none)."""
    per_seed = ((summary.get("unit_values") or {}).get("values") or {}).get(model, {}).get(metric) or {}
    return {
        str(seed): {str(u): float(v) for u, v in units.items() if _finite(v)}
        for seed, units in per_seed.items()
    }


def paired_matrices(base: dict, cur: dict, model: str, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(current, baseline) seeds x units over the units every seed of both sides holds, in one
    order; None when a side holds no values or no unit is shared."""
    b, c = seed_matrix(base, model, metric), seed_matrix(cur, model, metric)
    if not b or not c:
        return None
    units = sorted(set.intersection(*(set(v) for v in (*b.values(), *c.values()))))
    if not units:
        if not set().union(*b.values()) & set().union(*c.values()):  # not one unit id in common
            raise CovbenchError(
                f"{model} {metric}: the two sides name their test units differently (baseline e.g. "
                f"{quote(min(set().union(*b.values()), default='none'))}, current e.g. "
                f"{quote(min(set().union(*c.values()), default='none'))}); "
                "re-create the baseline with --update"
            )
        return None

    def matrix(side: dict[str, dict[str, float]]) -> np.ndarray:
        return np.array([[side[s][u] for u in units] for s in sorted(side, key=_seed_order)])

    return matrix(c), matrix(b)


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), "") if seed.lstrip("-").isdigit() else (0, seed)


def number_changes(base: dict, cur: dict) -> Changes:
    """Every metric number of both sides (summary statistics and per-seed per-unit values),
    compared exactly: a number on one side only counts as changed."""

    def flat(summary: dict) -> dict[str, float]:
        out: dict[str, float] = {}
        for model, entry in (summary.get("models") or {}).items():
            for metric in METRICS:
                for key, v in (entry.get(metric) or {}).items():
                    if isinstance(v, int | float):
                        out[f"{model} {metric} {key}"] = float(v)
        for model, per_metric in ((summary.get("unit_values") or {}).get("values") or {}).items():
            for metric, per_seed in per_metric.items():
                for seed, units in per_seed.items():
                    for unit, v in units.items():
                        out[f"{model} {metric} seed {seed} unit {unit}"] = float(v)
        return out

    b, c = flat(base), flat(cur)
    keys = sorted(set(b) | set(c))
    changed, largest, where = 0, 0.0, ""
    for k in keys:
        if k not in b or k not in c:
            changed += 1
            where = where or f"{k} on one side only"
            continue
        x, y = b[k], c[k]
        if x == y or (math.isnan(x) and math.isnan(y)):
            continue
        changed += 1
        gap = abs(y - x)
        if math.isfinite(gap) and gap > largest or not where:
            largest, where = (gap if math.isfinite(gap) else largest), k
    return Changes(len(keys), changed, largest, where)


def gate_test(current: np.ndarray, baseline: np.ndarray) -> Difference:
    """current - baseline on the benchmark's fixed test set. The gate asks whether this code got
    worse on this benchmark, not whether it would on new patients: the test units are fixed by the
    benchmark identity, so the replicates are the independently trained seeds, each summarised by
    its mean over the shared units (Welch-Satterthwaite over seeds, `inference.difference` with one
    column). With one seed on each side there is no seed noise to estimate, and the units become
    the replicates (paired over units)."""
    if max(current.shape[0], baseline.shape[0]) < 2:
        return difference(current, baseline)
    return difference(current.mean(axis=1, keepdims=True), baseline.mean(axis=1, keepdims=True))


def explain(result: Comparison) -> str:
    """`covbench compare --explain`: the figures the gate's decision rests on, computed from the
    two sides (docs/reports.md quotes this output rather than typing numbers in): per model, the SD
    of a seed's mean of the primary metric on each side, the test's df and the smallest drop it
    detects with 80 % power, and the condition under which the stated error rate holds."""
    lines = [
        f"Explain ({result.primary}, alpha {ALPHA:g}, power {POWER:.0%}): the replicates are the seeds; "
        "each seed is its mean over the shared test units.",
        "| Model | seeds baseline / current | seed-mean SD baseline / current | df | detectable drop |",
        "|---|---|---|---|---|",
    ]
    for r in result.rows:
        if r.metric != result.primary or r.test is None:
            continue
        c = r.test.components
        sd_cur = math.sqrt(c.seed_var_a * r.test.n_seeds_a) if r.test.n_seeds_a > 1 else math.nan
        sd_base = math.sqrt(c.seed_var_b * r.test.n_seeds_b) if r.test.n_seeds_b > 1 else math.nan
        detect = r.detectable
        lines.append(
            f"| {r.model} | {r.test.n_seeds_b} / {r.test.n_seeds_a} | {sd_base:.4f} / {sd_cur:.4f} | "
            f"{r.test.df:.1f} | {'n/a' if detect is None else format(detect, '.4f')} |"
        )
    lines.append(
        "Condition: the chance-failure rate (<= alpha/2 per model for a quality-neutral change) assumes "
        "roughly symmetric seed noise; a training recipe whose seeds sometimes diverge can fail or pass "
        "by chance more often (docs/calibration.md, extended grid)."
    )
    return "\n".join(lines) + "\n"


def _decide(gain: float, p: float, floor: float) -> str:
    """A change counts when it is significant and beyond the floor, in the metric's better direction."""
    if p < ALPHA and gain < -floor:
        return REGRESSED
    if p < ALPHA and gain > floor:
        return IMPROVED
    return WITHIN


NOT_TESTED = "not tested"


def check_units(baseline: dict, current: dict, names: tuple[str, str]) -> str:
    """Refuse two summaries of different case or distance units; return the distance unit."""
    if baseline.get("unit", "slice") != current.get("unit", "slice"):
        raise CovbenchError(
            f"cannot compare a {baseline.get('unit', 'slice')}-level baseline with a "
            f"{current.get('unit', 'slice')}-level summary"
        )
    # a distance in pixels is not a distance in mm: never call one a regression of the other
    base_unit, cur_unit = distance_unit_of(baseline), distance_unit_of(current)
    if base_unit != cur_unit:
        raise CovbenchError(
            f"{names[0]} has distances in {base_unit}, {names[1]} in {cur_unit} (one dataset has a pixel "
            "spacing, the other none): ASSD and HD95 cannot be compared; use a baseline of the same data"
        )
    return cur_unit


def compare(
    baseline: dict,
    current: dict,
    tolerances: dict[str, float] | None = None,
    metrics: list[str] | None = None,
    names: tuple[str, str] = ("baseline", "current"),
    primary: str | None = None,
) -> Comparison:
    """Compare two summaries holding `unit_values`; the CLI turns `Comparison.failed` into exit 1."""
    floors = {**FLOORS, **(tolerances or {})}
    cur_unit = check_units(baseline, current, names)
    for name, side in zip(names, (baseline, current), strict=True):
        if not isinstance(side.get("unit_values"), dict):
            raise CovbenchError(f"{name}: no per-seed values (unit_values); re-run `covbench report`")
    units = {side["unit_values"].get("unit") for side in (baseline, current)}
    if len(units) > 1:
        raise CovbenchError(
            f"{names[0]} pairs {'/'.join(map(str, units))} units with {names[1]}: re-run both reports"
        )
    primary = primary or current.get("primary") or baseline.get("primary") or PRIMARY
    base_models, cur_models = baseline["models"], current["models"]
    result = Comparison(*names, distance_unit=cur_unit, primary=primary, unit=str(units.pop() or "patient"))
    for model in sorted(set(base_models) | set(cur_models)):
        b_entry, c_entry = base_models.get(model, {}), cur_models.get(model, {})
        tracked = [m for m in METRICS if m in b_entry or m in c_entry]
        for metric in [m for m in tracked if metrics is None or m in metrics or m == primary]:
            role = PRIMARY_ROLE if metric == primary else SECONDARY_ROLE
            bv, cv = _value(b_entry.get(metric), "mean"), _value(c_entry.get(metric), "mean")
            row = Row(model, metric, bv, cv, floors.get(metric, 0.0), None, NEW, role)
            if cv is None and bv is not None:
                row.verdict = MISSING
            elif bv is not None:
                pair = paired_matrices(baseline, current, model, metric)
                if pair is None:
                    row.verdict = MISSING if role == PRIMARY_ROLE else NOT_TESTED
                else:
                    row.test, row.units = gate_test(*pair), pair[0].shape[1]
                    row.current, row.baseline = float(pair[0].mean()), float(pair[1].mean())
                    row.p_value = row.p_adjusted = row.test.p_value
            result.rows.append(row)
    if not result.rows:
        raise CovbenchError("the two summaries share no model and metric to compare")
    tested = [r for r in result.rows if r.test is not None]
    secondary = [r for r in tested if r.role == SECONDARY_ROLE]
    for r, adjusted in zip(secondary, holm([r.test.p_value for r in secondary]), strict=True):
        r.p_adjusted = adjusted
    for r in tested:
        sign = 1.0 if HIGHER_IS_BETTER.get(r.metric, True) else -1.0
        r.verdict = _decide(sign * r.test.estimate, r.p_adjusted, r.tolerance)
    result.notes = seed_notes(result, names)
    result.changes = number_changes(baseline, current)
    return result


def seed_notes(result: Comparison, names: tuple[str, str]) -> list[str]:
    """What the test could not see: a side whose seeds cannot estimate seed noise."""
    notes = []
    for r in result.rows:
        if r.metric != result.primary or r.test is None:
            continue
        few = [n for n, k in zip(names, (r.test.n_seeds_b, r.test.n_seeds_a), strict=True) if k < 2]
        if len(few) == 2:
            notes.append(
                f"{r.model}: one seed on each side, so seed noise cannot be estimated; the test counts "
                "test units only and cannot see training luck (make the baseline with --seeds 3 or more)"
            )
        elif few:
            notes.append(
                f"{r.model}: {few[0]} has one seed, too few to estimate seed noise; the other side's seed "
                "variance stands in for it"
            )
    return notes


def update_baseline(baseline_path: Path, current: dict, current_path: Path, identity: dict | None) -> Path:
    """Replace the baseline file with the current summary, recording where it came from and its
    benchmark `identity` (`summary_identity` of CURRENT)."""
    baseline_path = Path(baseline_path)
    if baseline_path.is_dir():
        raise CovbenchError(f"--update: {baseline_path} is a folder; name the baseline summary file")
    source = Path(current_path)
    run_dir = source if source.is_dir() else source.parent
    env_path = RunFolder(run_dir).environment
    env = read_json(env_path) if env_path.exists() else {}
    data = dict(current)
    data["baseline_of"] = {"run": run_dir.name, "git": env.get("git"), "updated": now_iso()}
    # the baseline outlives its run folder: keep what makes it comparable (covbench.reports.identity)
    if identity is not None:
        data["benchmark"] = identity
    with run_folder_lock(baseline_path.parent):
        write_json(baseline_path, data)
    return baseline_path


def run_folder_lock(folder: Path) -> AbstractContextManager:
    """The lock of `folder` when it is a run folder (config.json in it), so nothing is written into
    or read from a folder a run is writing (RunLocked, exit 2); no lock for any other folder."""
    folder = Path(folder)
    return run_lock(folder, create=False) if RunFolder(folder).config.is_file() else nullcontext()


def summary_digest(summary: dict) -> str:
    """sha256 of a summary's per-model numbers: what `track` dedups on and a gate record names."""
    return hashlib.sha256(json.dumps(summary["models"], sort_keys=True).encode()).hexdigest()


def record_gate(current_file: Path, current: dict, result: Comparison) -> Path | None:
    """Write the verdict into CURRENT's run folder, so `covbench track` can mark a flagged run.

    Only for a summary inside a run folder (config.json beside it); a loose summary file is left alone.
    """
    folder = RunFolder(Path(current_file).parent)
    if not folder.config.is_file():
        return None
    record = {
        "baseline": result.baseline,
        "passed": not result.failed,
        "failed": [{"model": r.model, "metric": r.metric, "verdict": r.verdict} for r in result.failed],
        "summary_sha256": summary_digest(current),
        "date": now_iso(),
    }
    with run_folder_lock(folder.root):
        write_json(folder.gate, record)
    return folder.gate


@dataclass(frozen=True)
class Gate:
    """What `gate` did: compared the two sides (`result`) and/or wrote the baseline file."""

    result: Comparison | None  # None: the baseline was created or replaced without a comparison
    baseline: str | None = None  # what became of the baseline file: created, replaced, updated; None: kept
    note: str | None = None  # a side carries no benchmark identity, so comparability was not checked
    changed: str = ""  # how the benchmark changed, when the baseline was replaced
    warning: str | None = None  # the gate record could not be written (the verdict still stands)


def gate(
    baseline: Path,
    current: Path,
    tolerances: dict[str, float] | None = None,
    metrics: list[str] | None = None,
    *,
    update: bool = False,
    require_identity: bool = False,
) -> Gate:
    """`covbench compare BASELINE CURRENT`: compare the two, record the verdict in CURRENT's run
    folder (gate.json) for `covbench track`, and with `update` replace BASELINE by CURRENT.

    With `update`, a BASELINE that does not exist yet is created, and one of another benchmark is
    replaced, both without a comparison; without `update` another benchmark is refused
    (Incomparable, exit 2). With `require_identity` (the CI gate) a side without a benchmark
    identity is refused too, instead of compared with a note."""
    cur_file = summary_path(current, "CURRENT")
    cur = with_unit_values(load_summary(current, "CURRENT"), cur_file, "CURRENT")
    if update and not Path(baseline).exists():  # the first baseline: nothing to compare with yet
        update_baseline(baseline, cur, current, summary_identity(cur, cur_file))
        return Gate(None, "created")
    base = load_summary(baseline, "BASELINE")
    base_file = summary_path(baseline, "BASELINE")
    base_id, cur_id = summary_identity(base, base_file), summary_identity(cur, cur_file)
    try:
        note = check_comparable(base_id, cur_id, base_file, cur_file, required=require_identity)
    except Incomparable as exc:
        if not update:
            raise
        update_baseline(baseline, cur, current, cur_id)  # asked for: the benchmark itself changed
        return Gate(None, "replaced", changed=exc.detail)
    names = (str(baseline), str(current))
    check_units(base, cur, names)  # before the per-seed values: the first thing wrong is named
    try:
        base = with_unit_values(base, base_file, "BASELINE")
    except CovbenchError:
        if not update:
            raise
        update_baseline(baseline, cur, current, cur_id)  # an older baseline: nothing to test it with
        return Gate(None, "replaced", changed="the baseline held no per-seed values")
    result = compare(base, cur, tolerances, metrics, names=names)
    warning = None
    try:
        record_gate(cur_file, cur, result)
    except OSError as exc:
        warning = f"gate record not written next to {cur_file} ({exc})"
    if update:
        update_baseline(baseline, cur, current, cur_id)
    return Gate(result, "updated" if update else None, note, warning=warning)


def append_step_summary(markdown: str) -> Path | None:
    """Append to $GITHUB_STEP_SUMMARY (the job page of a GitHub Actions run) when it is set."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as f:
        f.write(markdown.rstrip("\n") + "\n\n")
    return Path(target)
