"""Report figures (PNG + SVG): boxplots per metric and model (Figure 5 of Salehi et al.), a
critical-difference diagram (mean ranks, Wilcoxon-Holm cliques, descriptive), a blob plot of the
ranking's stability, and qualitative overlays of the best, median and worst test slices (Figure 6).

Uses matplotlib's object API (`Figure`, no pyplot): no global backend or figure state, so it is
safe in any process and never opens a window.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from covbench.folder.io import atomic_path
from covbench.folder.layout import RunFolder
from covbench.metrics import HIGHER_IS_BETTER
from covbench.reports.aggregate import load_predictions, load_test_slices
from covbench.reports.stats import ALPHA, MetricTests, cliques
from covbench.reports.table import COLUMNS, column_titles

PALETTE = ["#1b6ca8", "#e07b39", "#3a9b5c", "#b5446e", "#7b6cb0", "#8c6d31", "#4d4d4d", "#17becf"]


def model_colors(models: list[str]) -> dict[str, str]:
    """One colour per model, by sorted name, so every figure of a report agrees."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted(models))}


def save(fig: Figure, stem: Path) -> list[Path]:
    """`stem`.png and `stem`.svg, each written atomically; SVG without a date so reruns diff clean.
    A figure with a layout engine (every report figure is constrained) already keeps its artists on
    the canvas, so only one without is cropped to a tight box: that costs a layout pass per file,
    about a tenth of a report's drawing time."""
    paths = []
    crop = {} if fig.get_layout_engine() is not None else {"bbox_inches": "tight"}
    for ext, kw in (("png", {"dpi": 150}), ("svg", {"metadata": {"Date": None}})):
        path = stem.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, **crop, **kw)
        paths.append(path)
    return paths


def _direction(metric: str) -> str:
    return "higher is better" if HIGHER_IS_BETTER.get(metric, True) else "lower is better"


MAX_POINTS = 400  # boxes draw their cases as points up to this many cases a box (and 8 boxes)


def _median_order(data: list[np.ndarray], metric: str) -> list[int]:
    """Indices of `data`'s boxes by median, best first in the metric's direction (empty last)."""
    higher = HIGHER_IS_BETTER.get(metric, True)
    med = [float(np.median(d)) if d.size else math.nan for d in data]
    return sorted(range(len(data)), key=lambda k: (math.isnan(med[k]), -med[k] if higher else med[k], k))


def boxplots(
    per_case: pd.DataFrame,
    models: list[str],
    stem: Path,
    unit: str = "slice",
    distance_unit: str = "mm",
    sort_by_median: bool = False,
) -> list[Path]:
    """One panel per metric; a box per model over the test cases (each averaged over seeds), with
    the cases drawn as points because test sets can be small (not when boxes are many or large).
    ASSD / HD95 panels are titled in `distance_unit` (px when the data had no pixel spacing).
    `sort_by_median`: each panel's boxes by median, best first (many models)."""
    titles_of = column_titles(distance_unit)
    metrics = [m for m in COLUMNS if m in per_case.columns]
    cols = 4
    rows = math.ceil(len(metrics) / cols)
    width = 3.2 if len(models) <= 8 else 0.3 * len(models) + 0.8
    fig = Figure(
        figsize=(width * cols, 3.0 * rows + 0.4 + (0.6 if len(models) > 8 else 0)), layout="constrained"
    )
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colors = model_colors(models)
    rng = np.random.default_rng(0)  # jitter only; fixed so reruns draw the same figure
    groups = {str(m): g for m, g in per_case.groupby("model", sort=False)}
    all_models = models
    for ax, metric in zip(axes, metrics, strict=False):
        data = []
        for model in all_models:
            g = groups.get(model)
            v = g[metric].to_numpy(dtype=float) if g is not None else np.array([])
            data.append(v[np.isfinite(v)])
        models = all_models
        if sort_by_median:
            ranked = _median_order(data, metric)
            data, models = [data[k] for k in ranked], [all_models[k] for k in ranked]
        positions = np.arange(1, len(models) + 1)
        box = ax.boxplot(
            [d if d.size else [np.nan] for d in data],
            positions=positions,
            widths=0.55,
            patch_artist=True,
            showfliers=False,
            medianprops={"color": "black"},
        )
        for k, patch in enumerate(box["boxes"]):
            patch.set_facecolor(colors[models[k]])
            patch.set_alpha(0.45)
        points = len(models) <= 8 and max((d.size for d in data), default=0) <= MAX_POINTS
        for k, d in enumerate(data if points else []):
            ax.scatter(
                positions[k] + rng.uniform(-0.15, 0.15, d.size),
                d,
                s=8,
                color=colors[models[k]],
                alpha=0.8,
                linewidths=0,
                zorder=3,
            )
        many = len(models) > 8
        ax.set_xticks(
            positions,
            models,
            rotation=90 if many else 30 if len(models) > 3 else 0,
            ha="center" if many or len(models) <= 3 else "right",
            fontsize=7 if many else None,
        )
        ax.set_title(f"{titles_of[metric]}\n({_direction(metric)})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    n = per_case["case"].nunique() if "case" in per_case else 0
    fig.suptitle(f"Per-{unit} values over {n} test {unit}s (each averaged over seeds)", fontsize=11)
    return save(fig, stem)


def ranked_boxplot(
    per_case: pd.DataFrame,
    models: list[str],
    metric: str,
    stem: Path,
    unit: str = "slice",
    distance_unit: str = "mm",
) -> list[Path]:
    """One horizontal box per model for one metric, sorted by median (best at the top): every
    model of a leaderboard-sized run on one readable page (names on the y axis)."""
    groups = {str(m): g for m, g in per_case.groupby("model", sort=False)}
    data = []
    for model in models:
        v = groups[model][metric].to_numpy(dtype=float) if model in groups else np.array([])
        data.append(v[np.isfinite(v)])
    ranked = _median_order(data, metric)
    data, names = [data[k] for k in ranked], [models[k] for k in ranked]
    colors = model_colors(models)
    k = len(names)
    fig = Figure(figsize=(7.0, 1.2 + 0.2 * k), layout="constrained")
    ax = fig.add_subplot()
    positions = np.arange(k, 0, -1)  # best at the top
    box = ax.boxplot([d if d.size else [np.nan] for d in data], positions=positions, widths=0.6,
                     orientation="horizontal", patch_artist=True, showfliers=False,
                     medianprops={"color": "black"})  # fmt: skip
    for j, patch in enumerate(box["boxes"]):
        patch.set_facecolor(colors[names[j]])
        patch.set_alpha(0.55)
    ax.set_yticks(positions, names, fontsize=7 if k > 25 else 9)
    ax.set_ylim(0.3, k + 0.7)
    ax.grid(axis="x", alpha=0.3)
    title = column_titles(distance_unit).get(metric, metric)
    ax.set_xlabel(f"{title} ({_direction(metric)})")
    n = per_case["case"].nunique() if "case" in per_case else 0
    fig.suptitle(
        f"{title} per test {unit} ({n} {unit}s, each averaged over seeds), sorted by median", fontsize=10
    )
    return save(fig, stem)


def cd_diagram(tests: MetricTests, stem: Path, unit: str = "slice") -> list[Path]:
    """Critical-difference diagram (Demšar 2006): models on a mean-rank axis (1 = best), joined by
    a bar when no pair in the group differs (Holm-adjusted Wilcoxon, the table's test)."""
    ranks = tests.mean_ranks
    order = sorted(ranks, key=lambda m: (ranks[m], m))
    k = len(order)
    fig = Figure(figsize=(7.5, 1.6 + 0.32 * k), layout="constrained")
    ax = fig.add_subplot()
    lo, hi = 1, max(k, 2)
    ax.set_xlim(lo - 0.3, hi + 0.3)
    ax.hlines(0, lo, hi, color="black", lw=1)
    for r in range(lo, hi + 1):
        ax.vlines(r, 0, 0.08, color="black", lw=1)
        ax.text(r, 0.12, str(r), ha="center", va="bottom", fontsize=9)
    half = math.ceil(k / 2)
    colors = model_colors(order)
    for i, model in enumerate(order):
        left = i < half
        y = -0.35 - 0.3 * (i if left else k - 1 - i)
        x_text = lo - 0.2 if left else hi + 0.2
        ax.plot([ranks[model], ranks[model], x_text], [0, y, y], color=colors[model], lw=1.2)
        ax.text(
            x_text,
            y,
            f"{model} ({ranks[model]:.2f})",
            ha="right" if left else "left",
            va="center",
            fontsize=9,
        )
    for j, (a, b) in enumerate(cliques(tests, order)):
        y = -0.15 - 0.1 * j
        ax.hlines(y, ranks[order[a]] - 0.03, ranks[order[b]] + 0.03, color="black", lw=3.5)
    ax.set_ylim(-0.45 - 0.3 * half, 0.4)
    ax.axis("off")
    p = tests.friedman_p
    friedman = f"Friedman p = {p:.3g}" if p is not None else "Friedman n/a (fewer than 3 models)"
    title = COLUMNS.get(tests.metric, tests.metric)
    fig.suptitle(
        f"{title}: mean rank over {tests.n_cases} test {unit}s (1 = best); {friedman}\n"
        f"bars join models not significantly different (Wilcoxon, Holm, α = {ALPHA})",
        fontsize=9,
    )
    # Outer labels extend past the axis; widen the canvas rather than clip them.
    fig.set_size_inches(7.5 + 0.08 * max(len(m) for m in order), fig.get_figheight())
    return save(fig, stem)


def blob_plot(ranking: dict, metric: str, stem: Path, unit: str = "patient") -> list[Path]:
    """Ranking stability (challengeR's blob plot): for each model, a blob per rank whose area is
    the share of bootstrap resamples (patients and seeds) giving it that rank, with the median
    rank and the 95 % rank interval drawn over it; models in the order of the full ranking."""
    per_model = ranking["models"]
    order = sorted(per_model, key=lambda m: (per_model[m]["rank"], m))
    k = len(order)
    colors = model_colors(order)
    many = k > 12
    step = 0.28 if many else 1.1  # inches per model
    fig = Figure(figsize=(1.4 + step * k, 3.2 if not many else 1.6 + 0.14 * k), layout="constrained")
    ax = fig.add_subplot()
    samples = ranking["samples"]
    area = 900 if not many else 900 * (step / 1.1) ** 2
    for x, model in enumerate(order, start=1):
        info = per_model[model]
        counts = [(int(rank), count) for rank, count in info["rank_counts"].items() if count]
        if counts:  # one scatter per model: 50 models x 50 ranks stays 50 artists
            ranks, sizes = zip(*counts, strict=True)
            ax.scatter([x] * len(ranks), ranks, s=[area * c / samples for c in sizes], color=colors[model],
                       alpha=0.6, lw=0)  # fmt: skip
        ax.vlines(x, info["rank_low"], info["rank_high"], color="black", lw=1)
        ax.plot(x, info["median_rank"], marker="_", color="black", ms=14 if not many else 5, mew=2)
    ax.set_xticks(range(1, k + 1), order, rotation=90 if many else 20, fontsize=7 if many else None)
    ax.set_yticks(range(1, k + 1) if not many else range(1, k + 1, 5 if k > 30 else 2))
    ax.set_ylim(k + 0.6, 0.4)
    ax.set_ylabel("rank (1 = best)")
    ax.grid(axis="y", color="#d0d7de", lw=0.6)
    title = COLUMNS.get(metric, metric)
    fig.suptitle(
        f"{title}: rank in {samples} bootstrap resamples of {unit}s and seeds\n"
        f"blob area = share of resamples; line = 95 % interval, tick = median; "
        f"Kendall's τ to the full ranking {ranking['kendall_tau_mean']:.2f}",
        fontsize=8,
    )
    return save(fig, stem)


def pick_cases(rows: pd.DataFrame, metric: str = "dice") -> dict[str, str]:
    """Best, median and worst test slice with a lesion by `metric` averaged over models and seeds."""
    lesion = rows[rows["empty_case"].isin(["normal", "missed"])] if "empty_case" in rows else rows
    score = (
        lesion.groupby("case")[metric]
        .mean()
        .dropna()
        .sort_values(ascending=not HIGHER_IS_BETTER.get(metric, True), kind="stable")
    )
    if score.empty:
        return {}
    median = score.iloc[(score - score.median()).abs().to_numpy().argmin()]
    median_case = score.index[(score == median).to_numpy().argmax()]
    return {"best": str(score.index[0]), "median": str(median_case), "worst": str(score.index[-1])}


def qualitative(
    run_dir: Path, rows: pd.DataFrame, models: list[str], stem: Path, threshold: float = 0.5
) -> list[Path]:
    """Rows: best / median / worst slice; columns: CT, ground truth, each model's prediction
    (lowest seed). Ground truth in green outline, prediction filled red."""
    run_dir = Path(run_dir)
    seed = int(rows["seed"].min())
    rows = rows[rows["seed"] == seed]  # pick by the Dice the panels show
    chosen = pick_cases(rows)
    if not chosen:
        return []
    slices = load_test_slices(run_dir)
    keys = np.char.add(
        np.char.add(slices["patient"].astype(str), ":"), np.char.zfill(slices["slice_index"].astype(str), 4)
    )
    preds = {}
    for model in models:
        folds = sorted(set(rows.loc[rows["model"] == model, "fold"].astype(int)))
        if not folds:
            continue
        pred = np.zeros(slices["mask"].shape, bool)  # every fold's test slices (k-fold covers all)
        for fold in folds:
            prob, where = load_predictions(RunFolder(run_dir).trial_of(model, seed, fold).path, slices)
            pred[where] = prob >= threshold
        preds[model] = pred
    cols = 2 + len(preds)
    fig = Figure(figsize=(2.1 * cols, 2.3 * len(chosen) + 0.5), layout="constrained")
    axes = fig.subplots(len(chosen), cols, squeeze=False)
    for r, (label, case) in enumerate(chosen.items()):
        i = int(np.flatnonzero(keys == case)[0])
        image, mask = slices["image"][i], slices["mask"][i].astype(bool)
        panels = [("CT", None), ("ground truth", mask)] + [(m, p[i]) for m, p in preds.items()]
        for c, (title, overlay) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if c >= 1 and mask.any():
                ax.contour(mask, levels=[0.5], colors="#39d353", linewidths=1.0)
            if c >= 2 and overlay is not None and overlay.any():
                rgba = np.zeros((*overlay.shape, 4))
                rgba[overlay] = (0.9, 0.1, 0.1, 0.5)
                ax.imshow(rgba, interpolation="nearest")
            if c >= 2:
                d = rows.loc[
                    (rows["model"] == title) & (rows["seed"] == seed) & (rows["case"] == case), "dice"
                ]
                title = f"{title}\nDice {d.iloc[0]:.2f}" if len(d) and np.isfinite(d.iloc[0]) else title
            elif c == 0:
                title = f"{label}: {case}"
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        f"Best, median and worst test slices with lesion by Dice (mean over models), seed {seed}\n"
        f"green outline: ground truth; red: prediction (threshold {threshold})",
        fontsize=9,
    )
    return save(fig, stem)


MAX_SEED_LINES = 5  # up to this many trials per model, each is drawn as a thin line of its own


def training_curves(
    curves: pd.DataFrame, stem: Path, diverged: set[tuple[str, int, int]] = frozenset()
) -> list[Path]:
    """One panel per model: training loss (solid, left axis) and validation Dice (dashed, right
    axis) against epoch; the mean over the model's trials with a min-max band, a thin line per
    trial when there are at most `MAX_SEED_LINES`, and a marker at each trial's selected epoch
    (the weights that were evaluated). Trials in `diverged` ((model, seed, fold)) are drawn red."""
    models = sorted(curves["model"].unique())
    cols = min(3, len(models))
    rows = math.ceil(len(models) / cols)
    fig = Figure(figsize=(4.4 * cols, 3.2 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colors = model_colors(models)
    for ax, model in zip(axes, models, strict=False):
        data = curves[curves["model"] == model]
        trials = sorted(data.groupby(["seed", "fold"]).groups)
        has_val = bool(np.isfinite(data["val_dice"].to_numpy(float)).any())
        dice_ax = ax.twinx() if has_val else None
        for column, axis, style in (("train_loss", ax, "-"), ("val_dice", dice_ax, "--")):
            if axis is None:
                continue
            table = data.pivot_table(index="epoch", columns=["seed", "fold"], values=column, dropna=False)
            values = table.to_numpy(float)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs (a diverged seed)
                mean, lo, hi = np.nanmean(values, 1), np.nanmin(values, 1), np.nanmax(values, 1)
            epochs = table.index.to_numpy()
            axis.fill_between(epochs, lo, hi, color=colors[model], alpha=0.18, linewidth=0)
            axis.plot(epochs, mean, style, color=colors[model], lw=1.8)
            if len(trials) <= MAX_SEED_LINES:
                for k, trial in enumerate(table.columns):
                    bad = (model, int(trial[0]), int(trial[1])) in diverged
                    axis.plot(epochs, values[:, k], style, color="#c0392b" if bad else colors[model],
                              lw=0.7, alpha=0.9 if bad else 0.5)  # fmt: skip
        # the evaluated epoch of each trial, on the curve it was chosen by
        marks_ax, column = (dice_ax, "val_dice") if dice_ax is not None else (ax, "train_loss")
        chosen = data[data["epoch"] == data["selected_epoch"]]
        marks_ax.plot(chosen["epoch"], chosen[column], "v", color="black", ms=5, zorder=4)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("training loss (solid)")
        if dice_ax is not None:
            dice_ax.set_ylabel("validation Dice (dashed)")
            dice_ax.set_ylim(-0.02, 1.02)
        n_seeds = data["seed"].nunique()
        note = "" if has_val else "\nno validation: final epoch evaluated"
        ax.set_title(f"{model} ({n_seeds} seed{'s' if n_seeds != 1 else ''}){note}", fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[len(models) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Training curves: mean over trials, band = min-max, thin lines = single trials (red: diverged);\n"
        "▼ = the epoch whose weights were evaluated",
        fontsize=10,
    )
    return save(fig, stem)
