"""The report's figures: which ones a run gets, which models each shows, and their captions, as
jobs that `covbench.reports.figure_workers` draws on the machine's spare cores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from covbench.errors import DamagedFile
from covbench.folder.layout import RunFolder
from covbench.folder.stored_config import StoredConfig
from covbench.reports import curves as training
from covbench.reports.figure_workers import Drawing, FigureJob
from covbench.reports.table import column_titles

MANY_MODELS = 8  # above this many models the report shows the verdict matrix, not every pair's row
MAX_PANEL_MODELS = 12  # boxplot panels and training curves: at most this many models (top + baseline)
MAX_OVERLAY_MODELS = 3  # qualitative overlays: the top models by the primary metric, plus the baseline
MAX_CURVE_MODELS = 6  # training-curve panels: the top models, the baseline and those that diverged


def baseline_model(order: list[str], config: StoredConfig | None) -> str | None:
    """The model every figure keeps whatever its rank: `unet` (the paper's reference) when the run
    has it, else the first model the run's configuration names, else None."""
    if "unet" in order:
        return "unet"
    named = config.settings.get("models") if config is not None else None
    return next((str(m) for m in named or [] if str(m) in order), None)


def shown_models(order: list[str], baseline: str | None, cap: int, also: list[str] = ()) -> list[str]:
    """At most `cap` models for a figure: the best by `order`, the baseline and then `also` kept
    (in `order`'s order); every model when there are no more than `cap`."""
    if len(order) <= cap:
        return list(order)
    keep = list(dict.fromkeys(m for m in [baseline, *also] if m in order))
    chosen = set(keep[:cap])
    for m in order:
        if len(chosen) >= cap:
            break
        chosen.add(m)
    return [m for m in order if m in chosen]


def _ranked(order: list[str] | None, names: list[str]) -> list[str]:
    return [m for m in order or [] if m in names] + [m for m in names if m not in (order or [])]


# ---- the jobs: module-level, so that a spawned worker can be handed them ----


def draw_matrix(folder: Path, verdict: dict, order: list[str], distance_unit: str) -> Drawing:
    from covbench.reports.matrix import verdict_matrix

    metric = verdict["metric"]
    title = column_titles(distance_unit).get(metric, metric)
    verdict_matrix(
        verdict, order, folder / f"verdicts_{metric}", f"{title} (primary): row model vs column model"
    )
    caption = (
        f"Verdict of each row model against each column model on {title} (primary; {verdict['family']}): "
        "better, worse, practically equivalent or undecided; models in Table 1's order, best first."
    )
    return Drawing([(folder / f"verdicts_{metric}.png", caption)])


def draw_boxplots(
    per_case: pd.DataFrame, models: list[str], folder: Path, unit: str, distance_unit: str, sort: bool,
    caption: str,
) -> Drawing:  # fmt: skip
    from covbench.reports import figures as fig

    fig.boxplots(per_case, models, folder / "boxplots", unit, distance_unit, sort_by_median=sort)
    return Drawing([(folder / "boxplots.png", caption)])


def draw_ranked_boxplot(
    per_case: pd.DataFrame, models: list[str], metric: str, folder: Path, unit: str, distance_unit: str
) -> Drawing:
    from covbench.reports import figures as fig

    fig.ranked_boxplot(per_case, models, metric, folder / f"boxplot_{metric}", unit, distance_unit)
    caption = f"Per-{unit} {metric} of every model, sorted by median (best at the top)."
    return Drawing([(folder / f"boxplot_{metric}.png", caption)])


def draw_blob(ranking: dict, metric: str, folder: Path, unit: str) -> Drawing:
    from covbench.reports import figures as fig

    fig.blob_plot(ranking, metric, folder / f"ranking_{metric}", unit)
    caption = f"Ranking stability of {metric} (primary): bootstrap over test {unit}s and seeds."
    return Drawing([(folder / f"ranking_{metric}.png", caption)])


def draw_cd(dice: Any, folder: Path, unit: str) -> Drawing:
    from covbench.reports import figures as fig

    fig.cd_diagram(dice, folder / "cd_dice", unit)
    caption = (
        "Critical-difference diagram of Dice over test slices: mean ranks and Wilcoxon-Holm groups "
        "(descriptive: slices of one patient are not independent)."
    )
    return Drawing([(folder / "cd_dice.png", caption)])


def draw_qualitative(
    run_dir: Path, slice_rows: pd.DataFrame, models: list[str], n_models: int, baseline: str | None,
    folder: Path,
) -> Drawing:  # fmt: skip
    from covbench.reports import figures as fig

    try:
        if not fig.qualitative(run_dir, slice_rows, models, folder / "qualitative"):
            return Drawing([])
    except DamagedFile as exc:
        return Drawing([], [f"qualitative overlays skipped: {exc}."])
    caption = "Best, median and worst test slices (Figure 6 style)."
    if len(models) < n_models:
        caption += f" {len(models)} of {n_models} models: the best and the baseline {baseline}."
    return Drawing([(folder / "qualitative.png", caption)])


def note_only(warning: str) -> Drawing:
    return Drawing([], [warning])


def draw_curves(
    folder: Path, curves: training.Curves, diverged: list[training.Divergence], order: list[str] | None,
    baseline: str | None,
) -> Drawing:  # fmt: skip
    """The training curves (docs/reports.md), when any trial logged its epochs: at most
    `MAX_CURVE_MODELS` panels (the baseline, models with a diverged trial, then the best)."""
    from covbench.reports import figures as fig

    if curves.frame.empty:
        return Drawing([])
    bad = {(d.model, d.seed, d.fold) for d in diverged}
    logged = sorted(curves.frame["model"].unique())
    shown = shown_models(
        _ranked(order, logged), baseline, MAX_CURVE_MODELS, sorted({d.model for d in diverged})
    )
    frame = curves.frame if len(shown) == len(logged) else curves.frame[curves.frame["model"].isin(shown)]
    fig.training_curves(frame, folder / "training_curves", bad)
    caption = (
        "Training loss (solid) and validation Dice (dashed) per epoch: mean over trials, band = min-max, "
        "a thin line per trial when a model has at most 5 (red: diverged); ▼ marks the epoch whose weights "
        "were evaluated (best validation Dice, or the final epoch without validation)."
    )
    if len(shown) < len(logged):
        caption += (
            f" {len(shown)} of {len(logged)} models shown (the best by the primary metric, the baseline "
            f"{baseline} and any with a diverged trial); every divergence is in the warnings."
        )
    if curves.missing:
        caption += f" No epoch log for: {', '.join(curves.missing)}."
    return Drawing([(folder / "training_curves.png", caption)])


def figure_jobs(
    run_dir: Path,
    folder: Path,
    slice_rows: pd.DataFrame,
    per_case: pd.DataFrame,
    tests: dict[str, Any],
    unit: str,
    distance_unit: str,
    primary: dict | None,
    order: list[str],
    baseline: str | None,
    curves: training.Curves,
    diverged: list[training.Divergence],
) -> list[FigureJob]:
    """Boxplots, ranking blob plot, critical-difference diagram, qualitative overlays and training
    curves, in the report's order. With many models the multi-metric boxplots and the overlays keep
    the best models by the primary metric and the baseline; the primary metric then gets a boxplot
    of every model, sorted by median."""
    names = sorted(per_case["model"].unique())
    ranked = _ranked(order, names)
    panel = shown_models(ranked, baseline, MAX_PANEL_MODELS)
    boxed = panel if len(panel) < len(names) else names
    caption = f"Per-{unit} distribution of every metric and model (Figure 5 style)."
    if len(panel) < len(names):
        caption = (
            f"Per-{unit} distribution of every metric for {len(panel)} of {len(names)} models (the best by "
            f"the primary metric and the baseline {baseline}), each panel sorted by median, best first."
        )
    sort = len(names) > MANY_MODELS
    jobs = [FigureJob(draw_boxplots, (per_case, boxed, folder, unit, distance_unit, sort, caption), 3.0)]
    metric = primary["metric"] if primary else None
    if len(panel) < len(names) and metric in per_case:
        jobs.append(
            FigureJob(draw_ranked_boxplot, (per_case, names, metric, folder, unit, distance_unit), 1.0)
        )
    if primary and primary.get("ranking"):
        jobs.append(FigureJob(draw_blob, (primary["ranking"], metric, folder, primary["unit"]), 0.5))
    if "dice" in tests and len(tests["dice"].mean_ranks) >= 2:
        jobs.append(FigureJob(draw_cd, (tests["dice"], folder, unit), 0.5))
    if RunFolder(run_dir).test_slices.exists():
        overlay = shown_models(ranked, baseline, MAX_OVERLAY_MODELS + (baseline is not None))
        overlay = overlay if len(overlay) < len(names) else names
        jobs.append(
            FigureJob(draw_qualitative, (run_dir, slice_rows, overlay, len(names), baseline, folder), 1.5)
        )
    else:
        note = "no test_slices.npz in the run folder (older run): qualitative overlays skipped."
        jobs.append(FigureJob(note_only, (note,), 0.0))
    jobs.append(FigureJob(draw_curves, (folder, curves, diverged, order, baseline), 3.0))
    return jobs
