"""Write the report of a run folder: summary.json, Table 1 (Markdown, LaTeX, CSV, HTML), the
significance tests, warnings about what the tests cannot show, and the figures.

Reads only the run folder. The slice unit writes `summary.json`, `table.*`, `report.*` and
`figures/`; the patient unit the same names with a `-patient` suffix, so both can sit side by side
and `compare` keeps reading the slice-level `summary.json` a run writes.
"""

from __future__ import annotations

import math
import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from warnings import warn  # `warnings` names the report's list of warnings here

import numpy as np
import pandas as pd

from covbench.errors import CovbenchError, DamagedFile, RunFolderWarning, quote
from covbench.folder.io import done_trials, read_csv, read_json, write_text
from covbench.folder.layout import RunFolder
from covbench.folder.record import TrialRecord
from covbench.folder.stored_config import StoredConfig, read_stored_config
from covbench.metrics import HIGHER_IS_BETTER, METRICS
from covbench.reports import curves as training
from covbench.reports import health
from covbench.reports.aggregate import (
    UNITS,
    case_means,
    empty_case_counts,
    patient_rows,
    summarize,
)
from covbench.reports.figure_workers import FigureJob, FigureWorkers, spare_cores
from covbench.reports.inference import PRIMARY, ROPE
from covbench.reports.json_text import write_summary
from covbench.reports.report_figures import MANY_MODELS, baseline_model, draw_matrix, figure_jobs
from covbench.reports.rounds import apply_rounds, read_rounds, rounds_markdown
from covbench.reports.stats import ALPHA, BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, MetricTests, compare_models
from covbench.reports.table import (
    MARK_LEGEND,
    Table,
    build_table,
    column_titles,
    primary_order,
    significance_table,
    test_summaries,
    to_csv,
    to_html,
    to_latex,
    to_markdown,
    verdict_lines,
    verdict_table,
)
from covbench.reports.verdicts import UnitValues, detectable_statement, unit_values, verdicts

MIN_PATIENTS = 12  # below this many independent test patients, the report warns
MIN_WILCOXON = 6  # with fewer paired cases no two-sided Wilcoxon signed-rank p can reach 0.05


@dataclass
class Report:
    summary: dict
    markdown: str
    paths: list[Path]


def load_rows(run_dir: Path) -> pd.DataFrame:
    path = RunFolder(run_dir).cases
    if not path.exists():
        raise CovbenchError(f"{path} not found: is {run_dir} a covbench run folder with finished trials?")
    try:
        return read_csv(path, ("model", "seed", "fold", "case"))
    except DamagedFile as exc:
        raise CovbenchError(
            f"{exc}; `covbench run --resume {run_dir}` writes it again from the trials' own rows"
        ) from None


def run_config(run_dir: Path) -> StoredConfig | None:
    """config.json as stored; None when there is none, or (with a warning) when it is damaged: the
    report needs only its key, threshold and version history, and the next run writes it again."""
    try:
        return read_stored_config(run_dir)
    except DamagedFile as exc:
        warn(f"{exc}: the report assumes threshold 0.5 and no version change", RunFolderWarning, stacklevel=2)
        return None


def run_threshold(stored: StoredConfig | None) -> float:
    """The probability threshold the run's trials scored with (0.5 when config.json is missing)."""
    return float(stored.config.threshold) if stored is not None else 0.5


def version_notes(stored: StoredConfig | None) -> list[str]:
    """A run continued with --allow-version-change holds trials trained by different code."""
    notes = []
    for change in stored.version_changes if stored is not None else []:
        was = ", ".join(f"{k} {v or '(absent)'}" for k, v in (change.get("from") or {}).items())
        now = ", ".join(f"{k} {v or '(absent)'}" for k, v in (change.get("to") or {}).items())
        notes.append(
            f"this run was continued on {change.get('at')} with other code ({was} before, {now} after; "
            "--allow-version-change): its trials were not all trained by the same versions."
        )
    return notes


def trial_extras(records: list[TrialRecord], checks: dict | None = None) -> dict[str, dict]:
    """Parameters (M), forward GFLOPs per image (from the run's contract check, `models.json`) and
    training time per trial (mean, SD over seeds) per model."""
    extra: dict[str, dict] = {}
    checked = (checks or {}).get("models", {})
    for model in sorted({r.model for r in records}):
        rs = [r for r in records if r.model == model]
        times = np.array([float(r.train_seconds) for r in rs])
        flops = checked.get(model, {}).get("flops_per_image")
        extra[model] = {
            "params_m": rs[0].parameters / 1e6,
            "gflops": flops / 1e9 if flops is not None else math.nan,
            "train_seconds": (float(times.mean()), float(times.std(ddof=1)) if times.size > 1 else math.nan),
        }
    return extra


def suffix(unit: str) -> str:
    return "" if unit == "slice" else f"-{unit}"


def _patient_of(key: str) -> str:
    """Slice-split keys are "<patient>#<slice>"; patient-split keys are patient ids."""
    return re.sub(r"#\d+$", "", str(key))


def check_warnings(
    run_dir: Path,
    rows: pd.DataFrame,
    unit: str,
    tests: dict[str, MetricTests],
    uv: UnitValues | None = None,
) -> list[str]:
    """What a reader must know before believing the tests: too few independent units, and
    patients whose slices sit in both training and test."""
    out: list[str] = []
    patients = sorted(set(rows["patient"].astype(str))) if "patient" in rows else []
    if uv is not None and not uv.grouped:
        out.append(
            "the data names no patients (every test unit holds one slice): each slice is treated as an "
            "independent unit; if several slices come from one patient, the verdicts overstate the evidence."
        )
    elif len(patients) < MIN_PATIENTS:
        out.append(
            f"only {len(patients)} test patient(s) (fewer than {MIN_PATIENTS}): the verdicts are made per "
            "patient and can only show large differences; the slice-level tests below are descriptive "
            "(the slices of one patient are correlated). `covbench plan` says what a question needs."
        )
    n_cases = max((t.n_cases for t in tests.values()), default=0)
    if 0 < n_cases < MIN_WILCOXON:
        out.append(
            f"only {n_cases} paired test {unit}(s): no slice-level Wilcoxon signed-rank test can reach "
            f"p < {ALPHA} with fewer than {MIN_WILCOXON}, so its 'not separated' means 'untestable' here."
        )
    split_path = RunFolder(run_dir).split
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


def run_distance_unit(run_dir: Path) -> str:
    """The unit of the run's distances, as the runner recorded it in split.json: "mm", or "px"
    when the data had no pixel spacing. Run folders written before it was recorded are mm."""
    path = RunFolder(run_dir).split
    unit = read_json(path).get("distance_unit", "mm") if path.exists() else "mm"
    if unit not in ("mm", "px"):
        raise CovbenchError(f"{path}: distance_unit {quote(unit)}; expected 'mm' or 'px'")
    return str(unit)


def run_test_dataset(run_dir: Path) -> dict[str, Any] | None:
    """What a `--test-dataset` run tested on (split.json's `test_dataset`: dataset, folder,
    fingerprint, cases); None when the test part was a part of the training dataset."""
    path = RunFolder(run_dir).split
    found = read_json(path).get("test_dataset") if path.exists() else None
    return found if isinstance(found, dict) else None


def tested_on_sentence(test: dict[str, Any]) -> str:
    where = f" at {test['data_dir']}" if test.get("data_dir") else ""
    return (
        f"Tested on dataset {test.get('dataset')!r}{where} ({test.get('n_cases')} patients, fingerprint "
        f"{str(test.get('fingerprint'))[:12]}), which no model trained or was validated on."
    )


def _markdown_tests(
    tests: dict[str, dict], unit: str, distance_unit: str = "mm", compact: bool = False
) -> list[str]:
    strong = lambda name: f"**{name}**"  # noqa: E731
    lines = ["- " + line for line in test_summaries(tests, unit, strong, distance_unit=distance_unit)]
    if compact:
        return lines
    table = significance_table(tests, unit, distance_unit)
    return [*lines, "", to_markdown(table), f"_{table.caption}_"]


def previous_primary(run_dir: Path) -> str:
    """The primary metric the folder's last report declared (`--primary` once is enough), else Dice."""
    path = RunFolder(run_dir).summary
    try:
        found = read_json(path).get("primary") if path.exists() else None
    except (DamagedFile, AttributeError):
        found = None
    return found if found in METRICS else PRIMARY


def power_sentence(power: dict, distance_unit: str = "mm") -> str:
    """'This run can detect differences of at least X <metric> with 80 % power', or why not."""
    title = column_titles(distance_unit).get(power["metric"], power["metric"])
    x = power.get("detectable")
    if x is None or not math.isfinite(x):
        return (
            f"This run cannot estimate what difference of {title} it could detect (too few units or models)."
        )
    return (
        f"This run can detect differences of at least {x:.3g} {title} with {power['power']:.0%} power "
        f"({power['seeds']} seed(s) per model, {power['units']} test {power['unit']}s; α = {power['alpha']})."
    )


def many_models_note(n_models: int, verdicts: dict[str, dict], sfx: str, matrix: Path | None) -> str:
    """What the Markdown/HTML report shows instead of every pair's row when models are many."""
    n_pairs = sum(len(v.get("pairs", [])) for v in verdicts.values())
    where = "the verdict matrix below" if matrix is not None else "Table 1's marks against the best"
    return (
        f"{n_models} models: the pairwise verdicts of the primary metric are shown as {where}; "
        f"every (metric, pair) verdict ({n_pairs} rows) is in verdicts{sfx}.csv and summary{sfx}.json, "
        f"every slice-level test in tests{sfx}.csv."
    )


def _markdown_verdicts(
    verdicts: dict[str, dict],
    power: dict,
    uv: UnitValues,
    distance_unit: str,
    compact: str | None = None,
    matrix: tuple[Path, str] | None = None,
) -> list[str]:
    strong = lambda name: f"**{name}**"  # noqa: E731
    primary = next((m for m, v in verdicts.items() if v.get("primary")), None)
    lines = [
        f"Primary metric: **{column_titles(distance_unit).get(primary, primary)}**. "
        + power_sentence(power, distance_unit),
        "",
    ]
    if compact is None:
        lines += ["- " + line for line in verdict_lines(verdicts, strong, distance_unit=distance_unit)]
    else:
        lines += [compact]
        if matrix is not None:
            lines += ["", f"![{matrix[1]}]({matrix[0].as_posix()})", "", f"_{matrix[1]}_"]
    ranking = verdicts.get(primary, {}).get("ranking") if primary else None
    if ranking:
        lines += ["", "Ranking stability (bootstrap over test units and seeds):", ""]
        lines += ["| Model | rank | P(rank 1) | median rank | 95% rank interval |", "|---|---|---|---|---|"]
        for m, r in sorted(ranking["models"].items(), key=lambda kv: kv[1]["rank"]):
            lines.append(
                f"| {m} | {r['rank']:g} | {r['p_rank1']:.2f} | {r['median_rank']:g} | "
                f"{r['rank_low']:g}–{r['rank_high']:g} |"
            )
        lines += [
            "",
            f"Kendall's τ between resampled and full ranking: mean {ranking['kendall_tau_mean']:.2f}, "
            f"2.5 % quantile {ranking['kendall_tau_low']:.2f}.",
        ]
    if compact is None:
        table = verdict_table(verdicts, distance_unit)
        lines += ["", to_markdown(table), f"_{table.caption}_"]
    if uv.imputed or uv.left_out:
        lines += [
            "",
            f"Missing values: worst value given to {uv.imputed or 'none'}; units left out (undefined for "
            f"every model): {uv.left_out or 'none'} (docs/reports.md).",
        ]
    return lines


@dataclass
class _Evidence:
    """What the report says, read from the run folder and computed once, before anything is written."""

    run_dir: Path
    unit: str
    primary: str
    config: StoredConfig | None
    records: list[TrialRecord]
    curves: training.Curves
    diverged: list[training.Divergence]
    flags: list[health.SeedFlag]
    slice_rows: pd.DataFrame
    rows: pd.DataFrame
    per_case: pd.DataFrame
    models: dict
    tests: dict[str, MetricTests]
    seeds: list[int]
    n_cases: int
    n_patients: int
    caption: str
    seed_caption: str
    distance_unit: str
    test_dataset: dict[str, Any] | None
    uv: UnitValues
    power: dict
    warnings: list[str]  # one list: summary.json's, extended by the figures and the health checks
    test_dicts: dict[str, dict]
    verdict_dicts: dict[str, dict]
    rounds: dict | None
    dependent: list[health.Dependence]


@dataclass
class _Drawn:
    """What was drawn: the verdict matrix, the other figures, and (many models) the note that
    stands in for the pairwise rows, with the matrix shown beside it instead of among the figures."""

    matrix: tuple[Path, str] | None
    plots: list[tuple[Path, str]]
    compact: str | None

    @property
    def figures(self) -> list[tuple[Path, str]]:
        """The figures the report's Figures section links."""
        return ([self.matrix] if self.matrix is not None and self.compact is None else []) + self.plots

    @property
    def paths(self) -> list[Path]:
        drawn = ([self.matrix] if self.matrix is not None else []) + self.plots
        return [p.with_suffix(s) for p, _ in drawn for s in (".png", ".svg")]


def write_report(
    run_dir: Path,
    unit: str = "slice",
    figures: bool = True,
    primary: str | None = None,
    workers: FigureWorkers | None = None,
) -> Report:
    """Everything a reader needs to believe (or doubt) the ranking, from the run folder alone.
    `workers`: figure workers already started (the CLI starts them before importing this module);
    without them, one per spare core is started here."""
    run_dir = Path(run_dir)
    if unit not in UNITS:
        raise CovbenchError(f"--unit must be one of {', '.join(UNITS)}, got {quote(unit)}")
    if primary is not None and primary not in METRICS:
        raise CovbenchError(f"--primary must be one of {', '.join(METRICS)}, got {quote(primary)}")
    own = FigureWorkers(spare_cores() if figures else 0) if workers is None else nullcontext(workers)
    with own as started:  # workers started here begin importing while the verdicts compute
        return _write(run_dir, unit, figures, primary or previous_primary(run_dir), started)


def _write(run_dir: Path, unit: str, figures: bool, primary: str, workers: FigureWorkers) -> Report:
    ev = _gather(run_dir, unit, primary)
    summary = _summary(ev)
    models_json = RunFolder(run_dir).models
    extra = trial_extras(ev.records, read_json(models_json) if models_json.exists() else None)
    order = primary_order(summary, ev.primary)  # Table 1's rows and every figure's models, best first
    baseline = baseline_model(order, ev.config)
    table = build_table(summary, ev.caption, extra=extra, order=order)
    seed_table = build_table(summary, ev.seed_caption, view="seed", extra=extra, order=order)
    sfx = suffix(unit)
    ev.warnings += [d.warning() for d in ev.diverged]  # the list summary["warnings"] holds: written below
    ev.warnings += [d.line() for d in ev.dependent if d.changed]
    drawn = _draw(ev, order, baseline, figures, workers)
    paths = list(drawn.paths)

    def put(name: str, text: str) -> None:
        write_text(run_dir / name, text)
        paths.append(run_dir / name)

    put(f"verdicts{sfx}.csv", verdicts_csv(ev.verdict_dicts))  # every pair, whatever the report shows
    put(f"tests{sfx}.csv", tests_csv(ev.test_dicts))
    title = f"covbench report: {run_dir.name} ({unit} level)"
    markdown = _markdown(ev, title, table, seed_table, drawn)
    write_summary(RunFolder(run_dir).summary_of(sfx), summary)  # write_json's bytes, faster
    paths.append(RunFolder(run_dir).summary_of(sfx))
    put(f"table{sfx}.md", to_markdown(table))
    put(f"table{sfx}.tex", to_latex(table, label=f"tab:covbench-{unit}"))
    put(f"table{sfx}.csv", to_csv(table))
    put(f"table-seeds{sfx}.csv", to_csv(seed_table))
    put(f"report{sfx}.md", markdown)
    put(f"report{sfx}.html", _html(ev, title, table, seed_table, drawn))
    return Report(summary, markdown, paths)


def _gather(run_dir: Path, unit: str, primary: str) -> _Evidence:
    """Read the run folder once and compute every test, verdict, caption and warning."""
    slice_rows = load_rows(run_dir)
    config = run_config(run_dir)
    key = str(config.key) if config is not None and config.key else None
    trials = done_trials(run_dir, key)  # this configuration's; damaged records set aside
    curves = training.load_curves(trials)  # epochs.csv of this configuration's trials
    diverged = training.divergences(curves)
    flags = health.seed_flags(trials, curves, diverged)  # training health (reports/health.py)
    rows = slice_rows if unit == "slice" else patient_rows(run_dir, run_threshold(config), trials)
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
    distance_unit = run_distance_unit(run_dir)
    if distance_unit == "px":
        caption += (
            " The data records no pixel spacing: ASSD and HD95 are in pixels, NSD's tolerance is in pixels."
        )
    test_dataset = run_test_dataset(run_dir)  # `--test-dataset`: every number is about that dataset
    if test_dataset is not None:
        caption = f"{tested_on_sentence(test_dataset)} {caption}"
    uv = unit_values(rows)
    verdict_map = verdicts(uv, slice_rows if unit == "slice" else None, primary)
    power = detectable_statement(uv, primary)
    warnings = check_warnings(run_dir, rows, unit, tests, uv) + version_notes(config)
    verdict_dicts = {m: v.to_dict() for m, v in verdict_map.items()}
    rounds = read_rounds(run_dir)
    if rounds is not None:
        apply_rounds(verdict_dicts, rounds)
    dependent = health.dependence(uv, primary, verdict_dicts, flags)
    health.mark_verdicts(verdict_dicts, dependent)
    return _Evidence(
        run_dir, unit, primary, config, [record for _, record in trials], curves, diverged, flags,
        slice_rows, rows, per_case, models, tests, seeds, n_cases, n_patients, caption, seed_caption,
        distance_unit, test_dataset, uv, power, warnings,
        {m: t.to_dict() for m, t in tests.items()}, verdict_dicts, rounds, dependent,
    )  # fmt: skip


def _summary(ev: _Evidence) -> dict:
    """summary.json (schema 2), which `compare`, `track` and the next report read."""
    return {
        "schema": 2,  # 2: verdicts, unit_values and primary added; every version-1 field kept
        "unit": ev.unit,
        "primary": ev.primary,
        "inference": {
            "unit": ev.uv.unit,
            "grouped": ev.uv.grouped,
            "alpha": ALPHA,
            "rope": {m: ROPE[m] for m in ev.verdict_dicts if m in ROPE},
            "imputed_worst": ev.uv.imputed,
            "left_out_undefined": ev.uv.left_out,
            "detectable": ev.power,
        },
        "verdicts": ev.verdict_dicts,
        "unit_values": ev.uv.to_json(),
        "distance_unit": ev.distance_unit,  # of ASSD, HD95 and the NSD tolerance: "mm" or "px"
        **({"test_dataset": ev.test_dataset} if ev.test_dataset is not None else {}),
        "models": ev.models,
        "aggregation": ev.caption,
        "seed_aggregation": ev.seed_caption,
        "empty_cases": empty_case_counts(ev.rows),
        "tests": ev.test_dicts,  # slice-level Friedman / Wilcoxon: descriptive (slices are not independent)
        "higher_is_better": {m: HIGHER_IS_BETTER[m] for m in ev.tests},
        "alpha": ALPHA,
        "bootstrap": {"samples": BOOTSTRAP_SAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95},
        "n_trials": len(ev.records),
        "n_cases": ev.n_cases,
        "n_patients": ev.n_patients,
        "seeds": ev.seeds,
        "warnings": ev.warnings,
        "per_case": _per_case_values(ev.per_case),
        **({"rounds": ev.rounds} if ev.rounds is not None else {}),  # rounds of seeds (reports/rounds.py)
        "health": health.to_json(ev.flags, ev.dependent),
    }


def _draw(
    ev: _Evidence, order: list[str], baseline: str | None, figures: bool, workers: FigureWorkers
) -> _Drawn:
    """The figures (none without `figures`); with more than MANY_MODELS models the verdict matrix
    stands in for the pairwise rows."""
    folder = ev.run_dir / f"figures{suffix(ev.unit)}"
    primary = ev.verdict_dicts.get(ev.primary)
    jobs = []
    if figures and len(order) >= 3 and (primary or {}).get("pairs"):
        jobs.append(FigureJob(draw_matrix, (folder, primary, order, ev.distance_unit), 1.0))
    if figures:
        jobs += figure_jobs(
            ev.run_dir, folder, ev.slice_rows, ev.per_case, ev.tests, ev.unit, ev.distance_unit, primary,
            order, baseline, ev.curves, ev.diverged,
        )  # fmt: skip
    drawings = workers.draw(jobs)
    matrix = drawings.pop(0).figures[0] if jobs and jobs[0].draw is draw_matrix else None
    compact = None
    if len(order) > MANY_MODELS:
        compact = many_models_note(len(order), ev.verdict_dicts, suffix(ev.unit), matrix)
    ev.warnings += [w for d in drawings for w in d.warnings]
    return _Drawn(matrix, [f for d in drawings for f in d.figures], compact)


def _markdown(ev: _Evidence, title: str, table: Table, seed_table: Table, drawn: _Drawn) -> str:
    lines = [f"# {title}", ""]
    if ev.test_dataset is not None:
        lines += [f"**{tested_on_sentence(ev.test_dataset)}** Verdicts and ranking are on its patients.", ""]
    for w in ev.warnings:
        lines += [f"> **Warning:** {w}", ""]
    if ev.rounds is not None:
        lines += ["## Rounds", "", *rounds_markdown(ev.rounds), ""]
    matrix = drawn.matrix
    matrix_md = (matrix[0].relative_to(ev.run_dir), matrix[1]) if matrix is not None else None
    verdict_md = _markdown_verdicts(
        ev.verdict_dicts, ev.power, ev.uv, ev.distance_unit, drawn.compact, matrix_md
    )
    lines += ["## Verdicts", "", *verdict_md, ""]
    lines += ["## Table 1", "", to_markdown(table), f"_{ev.caption}_", ""]
    lines += ["## Seed view", "", to_markdown(seed_table), f"_{ev.seed_caption}_", ""]
    lines += health.markdown(ev.flags, ev.dependent)
    tests_md = _markdown_tests(ev.test_dicts, ev.unit, ev.distance_unit, drawn.compact is not None)
    lines += ["## Slice-level tests (descriptive)", "", *tests_md, ""]
    if drawn.figures:
        links = [f"![{c}]({p.relative_to(ev.run_dir).as_posix()})" for p, c in drawn.figures]
        lines += ["## Figures", "", *links]
    return "\n".join(lines) + "\n"


def _html(ev: _Evidence, title: str, table: Table, seed_table: Table, drawn: _Drawn) -> str:
    from covbench.reports.html import page

    titles_of = column_titles(ev.distance_unit)
    notes = [
        f"Run folder: {ev.run_dir.resolve()}",
        f"Trials: {len(ev.records)}; seeds: {', '.join(map(str, ev.seeds))}.",
        "Direction per metric: "
        + ", ".join(f"{titles_of[m]} {'↑' if HIGHER_IS_BETTER[m] else '↓'}" for m in ev.tests),
        f"Distances (ASSD, HD95, NSD tolerance) in {ev.distance_unit}"
        + (": the data records no pixel spacing." if ev.distance_unit == "px" else "."),
    ]
    notes += [f"Seed flagged for its training (reports/health.py): {f.line()}" for f in ev.flags]
    return page(
        title,
        ev.warnings,
        to_html(table),
        to_html(seed_table),
        ev.test_dicts,
        ev.unit,
        drawn.figures,
        notes,
        distance_unit=ev.distance_unit,
        verdicts=ev.verdict_dicts,
        verdict_intro=power_sentence(ev.power, ev.distance_unit),
        compact=drawn.compact,
        verdict_figure=drawn.matrix if drawn.compact is not None else None,
    )


def _per_case_values(per_case: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {metric: {case: value}}}: lets `compare` pair two runs case by case."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for model, group in per_case.groupby("model", sort=True):
        keys = group["fold"].astype(str) + "/" + group["case"].astype(str)
        keys = keys.tolist()
        out[str(model)] = {
            m: _finite_items(keys, group[m].to_numpy(dtype=float)) for m in METRICS if m in group
        }
    return out


def _finite_items(keys: list[str], values: np.ndarray) -> dict[str, float]:
    """{key: value} of the finite values, one numpy test for the whole column."""
    finite = np.isfinite(values).tolist()
    return {k: v for k, v, ok in zip(keys, values.tolist(), finite, strict=True) if ok}


def verdicts_csv(verdict_dicts: dict[str, dict]) -> str:
    """Every (metric, pair) verdict as CSV, one row each: the full list a many-model report links to."""
    rows = []
    for metric, v in verdict_dicts.items():
        for p in v.get("pairs", []):
            flat = {k: val for k, val in p.items() if k != "clustering"}
            cl = p.get("clustering") or {}
            flat.update({f"clustering_{k}": val for k, val in cl.items()})
            rows.append({"metric": metric, "primary": bool(v.get("primary")), **flat})
    return pd.DataFrame(rows).to_csv(index=False) if rows else "metric,a,b,verdict\n"


def tests_csv(test_dicts: dict[str, dict]) -> str:
    """Every slice-level pairwise test as CSV (summary.json's `tests`, one row per metric and pair)."""
    rows = [{"metric": metric, **p} for metric, t in test_dicts.items() for p in t.get("pairs", [])]
    return pd.DataFrame(rows).to_csv(index=False) if rows else "metric,a,b,p_value\n"
