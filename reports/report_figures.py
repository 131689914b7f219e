"""The report's figures: which ones a run gets, which models each shows, their captions, and
drawing them on the machine's spare cores.

Matplotlib lays out and renders in Python under the GIL, and at small scale drawing every figure as
PNG and SVG is most of a report's time (docs/performance.md). The figures are independent, so a
spawned worker process draws some while the report's own process draws the others; the results
are put back in the figures' fixed order, so what is written never depends on which process drew
what. Spawned, never forked: the run's own report is written in the driver process that held Ray
and torch. A worker that cannot start leaves the figures to the report's own process.
"""

from __future__ import annotations

import os
import sys
import types
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from covbench.errors import DamagedFile
from covbench.folder.layout import RunFolder
from covbench.folder.stored_config import StoredConfig
from covbench.reports import curves as training
from covbench.reports.table import column_titles

MANY_MODELS = 8  # above this many models the report shows the verdict matrix, not every pair's row
MAX_PANEL_MODELS = 12  # boxplot panels and training curves: at most this many models (top + baseline)
MAX_OVERLAY_MODELS = 3  # qualitative overlays: the top models by the primary metric, plus the baseline
MAX_CURVE_MODELS = 6  # training-curve panels: the top models, the baseline and those that diverged
MAX_WORKERS = 3  # a report has at most four figures heavy enough to be worth a process of their own


@dataclass
class Drawing:
    """What one figure job gives the report: (PNG path, caption) per figure, and warnings."""

    figures: list[tuple[Path, str]]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FigureJob:
    """One figure to draw: a module-level function (a worker receives it by name) and its
    arguments. `cost` orders the jobs, heaviest first; 0 means "no drawing, run it in place"."""

    draw: Callable[..., Drawing]
    args: tuple
    cost: float = 1.0

    def run(self) -> Drawing:
        return self.draw(*self.args)


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


# ---- drawing them ----


def spare_cores() -> int:
    """Worker processes worth starting beside the report's own: one per other core, at most
    MAX_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(MAX_WORKERS, cores - 1))


def _ready() -> None:
    """A worker's first task: import what drawing needs while the report computes its verdicts."""
    import covbench.reports.figures  # noqa: F401
    import covbench.reports.matrix  # noqa: F401


def _run_in_worker(job: FigureJob) -> tuple[Drawing, list[tuple[str, type[Warning]]]]:
    """A job in a worker; its warnings travel back with it, to be raised again by the report."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drawing = job.run()
    return drawing, [(str(w.message), w.category) for w in caught]


@contextmanager
def _no_main_script() -> Iterator[None]:
    """While workers start: a spawned process re-runs the parent's main script (as `__mp_main__`)
    unless that has no file. The figure jobs live in covbench, so a worker never needs it, and a
    researcher's script calling `write_report` without an `if __name__ == "__main__"` guard would
    otherwise run again inside every worker."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class FigureWorkers:
    """Up to `count` spawned workers that draw figure jobs beside this process. Started on
    entering, so that they import matplotlib while the report computes its verdicts; with count 0,
    or where no process can start, every figure is drawn in this process."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> FigureWorkers:
        if self.count > 0:
            try:
                self._pool = ProcessPoolExecutor(max_workers=self.count, mp_context=get_context("spawn"))
                with _no_main_script():  # each submit here starts one worker
                    for _ in range(self.count):
                        self._pool.submit(_ready)
            except (OSError, RuntimeError):  # no process could be started here
                self._pool = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def draw(self, jobs: list[FigureJob]) -> list[Drawing]:
        """Every job's drawing, in the jobs' order. The heaviest go first; each worker holds one job
        at a time and this process takes the next itself, so neither waits while work is left."""
        done: list[Drawing | None] = [None] * len(jobs)
        pending = deque(sorted((i for i, j in enumerate(jobs) if j.cost > 0), key=lambda i: -jobs[i].cost))
        running: dict[Future, int] = {}

        def collect(futures: list[Future]) -> None:
            for future in futures:
                drawing, caught = future.result()
                for message, category in caught:
                    warnings.warn(message, category, stacklevel=2)
                done[running.pop(future)] = drawing

        def feed() -> None:
            while self._pool is not None and pending and len(running) < self.count:
                with _no_main_script():  # a submit may start a worker that has not started yet
                    running[self._pool.submit(_run_in_worker, jobs[pending[0]])] = pending[0]
                pending.popleft()

        try:
            feed()
            while pending:
                i = pending.popleft()
                done[i] = jobs[i].run()
                collect([f for f in running if f.done()])
                feed()
            collect(list(running))
        except BrokenProcessPool:  # a worker died: what it held and what is left are drawn here
            self._pool = None
        return [d if d is not None else jobs[i].run() for i, d in enumerate(done)]
