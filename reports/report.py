"""Write the report of a run folder: summary.json, Table 1 and the significance tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from covbench.errors import CovbenchError
from covbench.metrics import METRICS
from covbench.reports.aggregate import case_means, empty_case_counts, summarize
from covbench.reports.stats import compare_models
from covbench.reports.table import markdown_table
from covbench.store import read_json, write_json, write_text

CAPTION = (
    "Mean ± SD over test cases; each case's value is first averaged over seeds. "
    "n per metric and the empty-mask rules applied are in summary.json."
)


@dataclass
class Report:
    summary: dict
    markdown: str
    paths: list[Path]


def load_rows(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "cases.csv"
    if not path.exists():
        raise CovbenchError(f"{path} not found: is {run_dir} a covbench run folder with finished trials?")
    return pd.read_csv(path)


def load_records(run_dir: Path) -> list[dict]:
    return [read_json(p) for p in sorted((run_dir / "trials").glob("*/record.json"))]


def trial_extras(records: list[dict]) -> dict[str, dict]:
    """Parameters (M) and mean training time per model, from the trial records."""
    extra: dict[str, dict] = {}
    for model in sorted({r["model"] for r in records}):
        rs = [r for r in records if r["model"] == model]
        extra[model] = {
            "Params (M)": f"{rs[0]['parameters'] / 1e6:.2f}",
            "Train (s)": f"{sum(r['train_seconds'] for r in rs) / len(rs):.0f}",
        }
    return extra


def write_report(run_dir: Path) -> Report:
    run_dir = Path(run_dir)
    rows = load_rows(run_dir)
    records = load_records(run_dir)
    per_case = case_means(rows)
    tests = {m: compare_models(per_case, m).to_dict() for m in METRICS if m in rows.columns}
    summary = {
        "models": summarize(rows),
        "aggregation": CAPTION,
        "empty_cases": empty_case_counts(rows),
        "tests": tests,
        "n_trials": len(records),
        "seeds": sorted({int(s) for s in rows["seed"].unique()}),
    }
    extra = trial_extras(records)
    table = markdown_table(summary, extra=extra)
    dice = tests.get("dice", {})
    lines = [f"# covbench report: {run_dir.name}", "", table, f"_{CAPTION}_", ""]
    if dice.get("friedman_p") is not None:
        lines.append(
            f"Friedman test on Dice over {dice['n_cases']} cases: "
            f"χ² = {dice['friedman_statistic']:.2f}, p = {dice['friedman_p']:.3g}"
        )
    for p in dice.get("pairs", []):
        lines.append(
            f"- Wilcoxon {p['a']} vs {p['b']} (Dice): p = {p['p_value']:.3g}, "
            f"Holm-adjusted p = {p['p_adjusted']:.3g}, mean difference {p['mean_difference']:+.4f}"
        )
    markdown = "\n".join(lines) + "\n"
    write_json(run_dir / "summary.json", summary)
    write_text(run_dir / "table.md", table)
    write_text(run_dir / "report.md", markdown)
    return Report(summary, markdown, [run_dir / "summary.json", run_dir / "table.md", run_dir / "report.md"])
