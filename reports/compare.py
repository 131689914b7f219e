"""`covbench compare BASELINE CURRENT`: did any tracked metric get worse by more than its noise?

Each side is a `summary.json` or a run folder holding one. For every (model, metric) of either
side: baseline and current mean, the delta, a tolerance, a paired Wilcoxon p-value when both sides
stored per-case values for the same cases, and a verdict. The direction of "worse" comes from
`covbench.metrics.HIGHER_IS_BETTER`.

Tolerance per metric = max(absolute floor, 2 x the SD between seeds), the seed SD taken from the
baseline (from the current side when the baseline has one seed); `--tolerance dice=0.02`
replaces it. A (model, metric) missing from the current side fails the comparison (a metric that
silently disappears is how a regression hides); one missing from the baseline is reported as new.

Before comparing, `gate` (the whole `covbench compare` command) checks that both sides are the same
benchmark (`covbench.reports.identity.check_comparable`): a baseline of another benchmark is
refused, exit 2.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from covbench.errors import CovbenchError
from covbench.lock import run_lock
from covbench.manifest import now_iso
from covbench.metrics import HIGHER_IS_BETTER, METRICS
from covbench.reports.identity import Incomparable, check_comparable, summary_identity
from covbench.reports.summary_check import validate_summary
from covbench.reports.table import column_titles, distance_unit_of
from covbench.store import read_json, write_json

#: Absolute tolerance floors: a change smaller than these is never called a regression.
FLOORS: dict[str, float] = {
    "dice": 0.01,
    "nsd": 0.01,
    "sensitivity": 0.01,
    "specificity": 0.01,
    "precision": 0.01,
    "mae": 0.005,  # fraction of pixels
    "assd": 0.5,  # mm
    "hd95": 1.0,  # mm
}
SEED_SD_FACTOR = 2.0

IMPROVED, WITHIN, REGRESSED, MISSING, NEW = "improved", "within tolerance", "REGRESSED", "MISSING", "new"


@dataclass
class Row:
    model: str
    metric: str
    baseline: float | None
    current: float | None
    tolerance: float
    p_value: float | None
    verdict: str

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


@dataclass
class Comparison:
    baseline: str
    current: str
    rows: list[Row] = field(default_factory=list)
    distance_unit: str = "mm"  # of ASSD and HD95 on both sides ("mm" or "px")

    @property
    def failed(self) -> list[Row]:
        """Rows that make the comparison fail: regressions and metrics the current side lost."""
        return [r for r in self.rows if r.verdict in (REGRESSED, MISSING)]

    def markdown(self) -> str:
        def num(x: float | None, fmt: str = ".4f") -> str:
            return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)

        lines = [
            f"Baseline: `{self.baseline}`  ",
            f"Current: `{self.current}`",
            "",
            "| Model | Metric | Baseline | Current | Delta | Tolerance | p-value | Verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        titles = column_titles(self.distance_unit)
        for r in self.rows:
            arrow = "↑" if HIGHER_IS_BETTER.get(r.metric, True) else "↓"
            verdict = f"**{r.verdict}**" if r in self.failed else r.verdict
            cells = [r.model, f"{titles.get(r.metric, r.metric)} {arrow}", num(r.baseline), num(r.current)]
            cells += [num(r.delta, "+.4f"), num(r.tolerance), num(r.p_value, ".3g"), verdict]
            lines.append("| " + " | ".join(cells) + " |")
        failed = self.failed
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
        path = path / "summary.json"
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
            raise CovbenchError(f"--tolerance {item!r}: expected METRIC=VALUE, e.g. dice=0.02")
        if metric not in METRICS:
            raise CovbenchError(
                f"--tolerance {item!r}: unknown metric {metric!r}; choose from {', '.join(METRICS)}"
            )
        try:
            tol = float(value)
        except ValueError:
            raise CovbenchError(f"--tolerance {item!r}: {value!r} is not a number") from None
        if not (math.isfinite(tol) and tol >= 0):
            raise CovbenchError(f"--tolerance {item!r}: must be a non-negative number")
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
            f"--metrics {text!r}: unknown {unknown or 'empty list'}; choose from {', '.join(METRICS)}"
        )
    return chosen


def _value(entry: dict | None, key: str) -> float | None:
    v = (entry or {}).get(key)
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def tolerance(metric: str, base: dict | None, cur: dict | None, overrides: dict[str, float]) -> float:
    if metric in overrides:
        return overrides[metric]
    sd = _value(base, "seed_sd")
    if sd is None:
        sd = _value(cur, "seed_sd")
    return max(FLOORS.get(metric, 0.0), SEED_SD_FACTOR * sd if sd is not None else 0.0)


def paired_p(base: dict, cur: dict, model: str, metric: str) -> float | None:
    """Wilcoxon signed-rank p over the cases both sides hold, or None when they hold none."""
    a = (base.get("per_case") or {}).get(model, {}).get(metric)
    b = (cur.get("per_case") or {}).get(model, {}).get(metric)
    if not a or not b:
        return None
    common = sorted(set(a) & set(b))
    if not common:
        return None
    x = np.array([a[k] for k in common])
    y = np.array([b[k] for k in common])
    if np.all(x == y):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small samples / ties: scipy warns, the p stands
        return float(stats.wilcoxon(x, y, zero_method="wilcox").pvalue)


def compare(
    baseline: dict,
    current: dict,
    tolerances: dict[str, float] | None = None,
    metrics: list[str] | None = None,
    names: tuple[str, str] = ("baseline", "current"),
) -> Comparison:
    """Compare two summaries; the CLI turns `Comparison.failed` into exit code 1."""
    overrides = tolerances or {}
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
    base_models, cur_models = baseline["models"], current["models"]
    result = Comparison(*names, distance_unit=cur_unit)
    for model in sorted(set(base_models) | set(cur_models)):
        b_entry, c_entry = base_models.get(model, {}), cur_models.get(model, {})
        tracked = [m for m in METRICS if m in b_entry or m in c_entry]
        for metric in [m for m in tracked if metrics is None or m in metrics]:
            b, c = b_entry.get(metric), c_entry.get(metric)
            bv, cv = _value(b, "mean"), _value(c, "mean")
            tol = tolerance(metric, b, c, overrides)
            if cv is None and bv is not None:
                verdict = MISSING
            elif bv is None:
                verdict = NEW
            else:
                gain = (cv - bv) * (1 if HIGHER_IS_BETTER.get(metric, True) else -1)
                verdict = REGRESSED if gain < -tol else IMPROVED if gain > tol else WITHIN
            p = paired_p(baseline, current, model, metric) if bv is not None and cv is not None else None
            result.rows.append(Row(model, metric, bv, cv, tol, p, verdict))
    if not result.rows:
        raise CovbenchError("the two summaries share no model and metric to compare")
    return result


def update_baseline(baseline_path: Path, current: dict, current_path: Path, identity: dict | None) -> Path:
    """Replace the baseline file with the current summary, recording where it came from and its
    benchmark `identity` (`summary_identity` of CURRENT)."""
    baseline_path = Path(baseline_path)
    if baseline_path.is_dir():
        raise CovbenchError(f"--update: {baseline_path} is a folder; name the baseline summary file")
    source = Path(current_path)
    run_dir = source if source.is_dir() else source.parent
    env_path = run_dir / "environment.json"
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
    return run_lock(folder, create=False) if (folder / "config.json").is_file() else nullcontext()


def summary_digest(summary: dict) -> str:
    """sha256 of a summary's per-model numbers: what `track` dedups on and a gate record names."""
    return hashlib.sha256(json.dumps(summary["models"], sort_keys=True).encode()).hexdigest()


GATE_FILE = "gate.json"


def record_gate(current_file: Path, current: dict, result: Comparison) -> Path | None:
    """Write the verdict into CURRENT's run folder, so `covbench track` can mark a flagged run.

    Only for a summary inside a run folder (config.json beside it); a loose summary file is left alone.
    """
    run_dir = Path(current_file).parent
    if not (run_dir / "config.json").is_file():
        return None
    record = {
        "baseline": result.baseline,
        "passed": not result.failed,
        "failed": [{"model": r.model, "metric": r.metric, "verdict": r.verdict} for r in result.failed],
        "summary_sha256": summary_digest(current),
        "date": now_iso(),
    }
    with run_folder_lock(run_dir):
        write_json(run_dir / GATE_FILE, record)
    return run_dir / GATE_FILE


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
) -> Gate:
    """`covbench compare BASELINE CURRENT`: compare the two, record the verdict in CURRENT's run
    folder (gate.json) for `covbench track`, and with `update` replace BASELINE by CURRENT.

    With `update`, a BASELINE that does not exist yet is created, and one of another benchmark is
    replaced, both without a comparison; without `update` another benchmark is refused
    (Incomparable, exit 2)."""
    cur = load_summary(current, "CURRENT")
    cur_file = summary_path(current, "CURRENT")
    if update and not Path(baseline).exists():  # the first baseline: nothing to compare with yet
        update_baseline(baseline, cur, current, summary_identity(cur, cur_file))
        return Gate(None, "created")
    base = load_summary(baseline, "BASELINE")
    base_file = summary_path(baseline, "BASELINE")
    base_id, cur_id = summary_identity(base, base_file), summary_identity(cur, cur_file)
    try:
        note = check_comparable(base_id, cur_id, base_file, cur_file)
    except Incomparable as exc:
        if not update:
            raise
        update_baseline(baseline, cur, current, cur_id)  # asked for: the benchmark itself changed
        return Gate(None, "replaced", changed=exc.detail)
    result = compare(base, cur, tolerances, metrics, names=(str(baseline), str(current)))
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
