"""Write the report of a run folder: summary.json, Table 1 (Markdown, LaTeX, CSV, HTML), the
significance tests, warnings about what the tests cannot show, and the figures.

Reads only the run folder. The slice unit writes `summary.json`, `table.*`, `report.*` and
`figures/`; the patient unit the same names with a `-patient` suffix, so both can sit side by side
and `compare` keeps reading the slice-level `summary.json` a run writes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covbench.errors import CovbenchError
from covbench.metrics import HIGHER_IS_BETTER, METRICS
from covbench.reports.aggregate import UNITS, case_means, empty_case_counts, patient_rows, summarize
from covbench.reports.stats import ALPHA, BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, MetricTests, compare_models
from covbench.reports.table import COLUMNS, MARK_LEGEND, build_table, to_csv, to_html, to_latex, to_markdown
from covbench.store import read_json, write_json, write_text

MIN_PATIENTS = 12  # below this many independent test patients, the report warns
MIN_WILCOXON = 6  # with fewer paired cases no two-sided Wilcoxon signed-rank p can reach 0.05


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


def trial_extras(records: list[dict], checks: dict | None = None) -> dict[str, dict]:
    """Parameters (M), forward GFLOPs per image (from the run's contract check, `models.json`) and
    training time per trial (mean, SD over seeds) per model."""
    extra: dict[str, dict] = {}
    checked = (checks or {}).get("models", {})
    for model in sorted({r["model"] for r in records}):
        rs = [r for r in records if r["model"] == model]
        times = np.array([float(r["train_seconds"]) for r in rs])
        flops = checked.get(model, {}).get("flops_per_image")
        extra[model] = {
            "params_m": rs[0]["parameters"] / 1e6,
            "gflops": flops / 1e9 if flops is not None else math.nan,
            "train_seconds": (float(times.mean()), float(times.std(ddof=1)) if times.size > 1 else math.nan),
        }
    return extra


def suffix(unit: str) -> str:
    return "" if unit == "slice" else f"-{unit}"


def _patient_of(key: str) -> str:
    """Slice-split keys are "<patient>#<slice>"; patient-split keys are patient ids."""
    return re.sub(r"#\d+$", "", str(key))


def check_warnings(run_dir: Path, rows: pd.DataFrame, unit: str, tests: dict[str, MetricTests]) -> list[str]:
    """What a reader must know before believing the tests: too few independent units, and
    patients whose slices sit in both training and test."""
    out: list[str] = []
    patients = sorted(set(rows["patient"].astype(str))) if "patient" in rows else []
    if len(patients) < MIN_PATIENTS:
        independent = (
            "the slices of one patient are correlated, so the slice-level tests overstate the evidence"
            if unit == "slice"
            else "few independent units: the tests have little power"
        )
        out.append(
            f"only {len(patients)} test patient(s) (fewer than {MIN_PATIENTS}); {independent}. "
            "Read the p-values as descriptive."
        )
    n_cases = max((t.n_cases for t in tests.values()), default=0)
    if 0 < n_cases < MIN_WILCOXON:
        out.append(
            f"only {n_cases} paired test {unit}(s): no Wilcoxon signed-rank test can reach p < {ALPHA} "
            f"with fewer than {MIN_WILCOXON}, so 'not significantly different' means 'untestable' here."
        )
    split_path = run_dir / "split.json"
    if split_path.exists():
        split = read_json(split_path)
        leaked_set: set[str] = set()
        for k, manifest in enumerate(split.get("folds") or [split]):  # k-fold: each fold's own train part
            fold = int(manifest.get("fold", k))
            tested = (
                set(rows.loc[rows["fold"] == fold, "patient"].astype(str)) if "patient" in rows else set()
            )
            leaked_set |= {_patient_of(key) for key in manifest.get("train", [])} & tested
        leaked = sorted(leaked_set)
        if leaked or split.get("unit") == "slice" or split.get("strategy") == "paper":
            shown = ", ".join(leaked[:5]) + (" ..." if len(leaked) > 5 else "")
            out.append(
                f"slices of {len(leaked)} test patient(s) ({shown or 'by the slice-level split'}) are also "
                f"in training (split '{split.get('strategy')}'): scores are optimistic and not comparable "
                "with patient-level splits."
            )
    else:
        out.append(f"{split_path} not found: cannot check that test patients were kept out of training.")
    if unit == "patient" and "surface_3d" in rows and not rows["surface_3d"].all():
        out.append(
            "the run folder holds no slice thickness: patient-level ASSD, HD95 and NSD are not computed "
            "(Dice, sensitivity, specificity, precision and MAE are exact volume values, pooled over voxels)."
        )
    if (
        unit == "patient"
        and "slice_gaps" in rows
        and rows["surface_3d"].any()
        and int(rows["slice_gaps"].max()) > 0
    ):
        n = int((rows.groupby("patient")["slice_gaps"].max() > 0).sum())
        out.append(
            f"{n} patient volume(s) miss slices that pre-processing dropped; their kept slices were "
            "stacked as if contiguous, which shortens 3D surface distances across the gap."
        )
    return out


def captions(unit: str, n_cases: int, n_patients: int, n_seeds: int, surface_3d: bool) -> tuple[str, str]:
    if unit == "slice":
        what = f"{n_cases} test slices from {n_patients} patient(s)"
    else:
        surface = (
            "ASSD, HD95 and NSD are 3D surface distances using the slice thickness"
            if surface_3d
            else "ASSD, HD95 and NSD are n/a: the run folder holds no slice thickness"
        )
        what = (
            f"{n_cases} test patients, each scored on the volume of its test slices (confusion counts and "
            f"absolute errors pooled over its voxels; {surface})"
        )
    case = (
        f"Mean ± SD over {what}; each case's value is first averaged over {n_seeds} seed(s). "
        f"n per metric and the empty-mask rules applied are in summary.json. {MARK_LEGEND} "
        "Params: millions of trainable parameters; train time: seconds per trial, mean ± SD over seeds."
    )
    seed = (
        f"Mean over {n_seeds} seed(s) of each seed's mean over the test {unit}s ± SD between seeds "
        "(training variability, not case variability)."
    )
    return case, seed


def _markdown_tests(tests: dict[str, dict], unit: str) -> list[str]:
    lines = []
    for metric, t in tests.items():
        f = (
            f"Friedman χ² = {t['friedman_statistic']:.2f}, p = {t['friedman_p']:.3g}"
            if t.get("friedman_p") is not None
            else "Friedman n/a"
        )
        ties = ", ".join(t.get("tied_with_best") or []) or "none"
        best = (
            f"best **{t['best']}**, not significantly different from it: {ties}"
            if t.get("best")
            else "no best (fewer than two models with values)"
        )
        lines.append(f"- **{COLUMNS.get(metric, metric)}** ({t['n_cases']} paired {unit}s): {f}; {best}")
    lines += [
        "",
        "| Metric | Pair (a − b) | Mean difference [95% CI] | W | p | p (Holm) | r (rank-biserial) |",
        "|---|---|---|---|---|---|---|",
    ]

    def num(x: float | None, fmt: str) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    for metric, t in tests.items():
        for p in t["pairs"]:
            cells = [
                COLUMNS.get(metric, metric),
                f"{p['a']} − {p['b']}",
                f"{num(p['mean_difference'], '+.4f')} "
                f"[{num(p['ci_low'], '+.4f')}, {num(p['ci_high'], '+.4f')}]",
                num(p["statistic"], ".1f"),
                num(p["p_value"], ".3g"),
                num(p["p_adjusted"], ".3g"),
                num(p["rank_biserial"], "+.2f"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"_Wilcoxon signed-rank (zero differences dropped), Holm-adjusted over the pairs of each metric, "
        f"α = {ALPHA}; r > 0: a larger; 95% CI: percentile bootstrap over {unit}s "
        f"({BOOTSTRAP_SAMPLES} resamples, seed {BOOTSTRAP_SEED})._",
    ]
    return lines


def write_report(run_dir: Path, unit: str = "slice", figures: bool = True) -> Report:
    """Everything a reader needs to believe (or doubt) the ranking, from the run folder alone."""
    run_dir = Path(run_dir)
    if unit not in UNITS:
        raise CovbenchError(f"--unit must be one of {', '.join(UNITS)}, got {unit!r}")
    slice_rows = load_rows(run_dir)
    if unit == "slice":
        rows = slice_rows
    else:
        config_path = run_dir / "config.json"
        threshold = float(read_json(config_path).get("threshold", 0.5)) if config_path.exists() else 0.5
        rows = patient_rows(run_dir, threshold)
    records = load_records(run_dir)
    per_case = case_means(rows)
    models = summarize(rows)
    tests = {
        m: compare_models(
            per_case, m, HIGHER_IS_BETTER[m], means={k: v[m]["mean"] for k, v in models.items() if m in v}
        )
        for m in METRICS
        if m in rows.columns
    }
    seeds = sorted({int(s) for s in rows["seed"].unique()})
    n_cases = int(per_case["case"].nunique())
    n_patients = int(rows["patient"].nunique()) if "patient" in rows else n_cases
    surface_3d = bool(rows["surface_3d"].all()) if "surface_3d" in rows else unit == "slice"
    caption, seed_caption = captions(unit, n_cases, n_patients, len(seeds), surface_3d)
    warnings = check_warnings(run_dir, rows, unit, tests)
    test_dicts = {m: t.to_dict() for m, t in tests.items()}
    summary = {
        "unit": unit,
        "models": models,
        "aggregation": caption,
        "seed_aggregation": seed_caption,
        "empty_cases": empty_case_counts(rows),
        "tests": test_dicts,
        "higher_is_better": {m: HIGHER_IS_BETTER[m] for m in tests},
        "alpha": ALPHA,
        "bootstrap": {"samples": BOOTSTRAP_SAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95},
        "n_trials": len(records),
        "n_cases": n_cases,
        "n_patients": n_patients,
        "seeds": seeds,
        "warnings": warnings,
        "per_case": _per_case_values(per_case),
    }
    models_json = run_dir / "models.json"
    extra = trial_extras(records, read_json(models_json) if models_json.exists() else None)
    table = build_table(summary, caption, extra=extra)
    seed_table = build_table(summary, seed_caption, view="seed", extra=extra)
    sfx = suffix(unit)
    paths: list[Path] = []

    def put(name: str, text: str) -> None:
        write_text(run_dir / name, text)
        paths.append(run_dir / name)

    figure_list: list[tuple[Path, str]] = []
    if figures:
        figure_list = _figures(run_dir, slice_rows, per_case, tests, unit, warnings)
        paths += [p.with_suffix(s) for p, _ in figure_list for s in (".png", ".svg")]
    title = f"covbench report: {run_dir.name} ({unit} level)"
    lines = [f"# {title}", ""]
    for w in warnings:
        lines += [f"> **Warning:** {w}", ""]
    lines += ["## Table 1", "", to_markdown(table), f"_{caption}_", ""]
    lines += ["## Seed view", "", to_markdown(seed_table), f"_{seed_caption}_", ""]
    lines += ["## Significance", "", *_markdown_tests(test_dicts, unit), ""]
    if figure_list:
        lines += ["## Figures", ""] + [f"![{c}]({p.relative_to(run_dir).as_posix()})" for p, c in figure_list]
    markdown = "\n".join(lines) + "\n"
    write_json(run_dir / f"summary{sfx}.json", summary)
    paths.append(run_dir / f"summary{sfx}.json")
    put(f"table{sfx}.md", to_markdown(table))
    put(f"table{sfx}.tex", to_latex(table, label=f"tab:covbench-{unit}"))
    put(f"table{sfx}.csv", to_csv(table))
    put(f"table-seeds{sfx}.csv", to_csv(seed_table))
    put(f"report{sfx}.md", markdown)
    from covbench.reports.html import page

    notes = [
        f"Run folder: {run_dir.resolve()}",
        f"Trials: {len(records)}; seeds: {', '.join(map(str, seeds))}.",
        "Direction per metric: "
        + ", ".join(f"{COLUMNS[m]} {'↑' if HIGHER_IS_BETTER[m] else '↓'}" for m in tests),
    ]
    put(
        f"report{sfx}.html",
        page(title, warnings, to_html(table), to_html(seed_table), test_dicts, unit, figure_list, notes),
    )
    return Report(summary, markdown, paths)


def _per_case_values(per_case: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {metric: {case: value}}}: lets `compare` pair two runs case by case."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for model, group in per_case.groupby("model", sort=True):
        keys = group["fold"].astype(str) + "/" + group["case"].astype(str)
        out[str(model)] = {
            m: {k: float(v) for k, v in zip(keys, group[m], strict=True) if np.isfinite(v)}
            for m in METRICS
            if m in group
        }
    return out


def _figures(
    run_dir: Path,
    slice_rows: pd.DataFrame,
    per_case: pd.DataFrame,
    tests: dict[str, MetricTests],
    unit: str,
    warnings: list[str],
) -> list[tuple[Path, str]]:
    from covbench.reports import figures as fig

    folder = run_dir / f"figures{suffix(unit)}"
    model_names = sorted(per_case["model"].unique())
    out = []
    fig.boxplots(per_case, model_names, folder / "boxplots", unit)
    out.append(
        (folder / "boxplots.png", f"Per-{unit} distribution of every metric and model (Figure 5 style).")
    )
    if "dice" in tests and len(tests["dice"].mean_ranks) >= 2:
        fig.cd_diagram(tests["dice"], folder / "cd_dice", unit)
        out.append(
            (
                folder / "cd_dice.png",
                "Critical-difference diagram of Dice: mean ranks and Wilcoxon-Holm groups.",
            )
        )
    if (run_dir / "test_slices.npz").exists():
        if fig.qualitative(run_dir, slice_rows, model_names, folder / "qualitative"):
            out.append((folder / "qualitative.png", "Best, median and worst test slices (Figure 6 style)."))
    else:
        warnings.append("no test_slices.npz in the run folder (older run): qualitative overlays skipped.")
    return out
