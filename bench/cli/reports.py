"""`covbench report | compare | track | history`: the commands over finished run folders; the work is
in `covbench.reports`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from covbench.cli.common import ERRORS, console, fail, folder_warnings, say, warn

if TYPE_CHECKING:
    from covbench.reports.report import Report


def print_report(
    run_dir: Path, unit: str = "slice", figures: bool = True, primary: str | None = None
) -> Report:
    """Write the run folder's report files and print Table 1 and where the files are."""
    from covbench.reports.figure_workers import FigureWorkers, spare_cores

    # the figure workers start first: they import matplotlib while this process imports the report
    with FigureWorkers(spare_cores() if figures else 0) as workers:
        from covbench.reports.report import write_report

        report = write_report(run_dir, unit=unit, figures=figures, primary=primary, workers=workers)
    console.print(report.markdown, highlight=False, markup=False, soft_wrap=True)
    files = ", ".join(p.relative_to(run_dir).as_posix() for p in report.paths)
    say(f"report files in {run_dir}: {files}")
    return report


def report(
    run_dir: Annotated[Path, typer.Argument(help="a covbench run folder")],
    unit: Annotated[
        str, typer.Option(help="case unit: 'slice' (test slices) or 'patient' (reassembled test volumes)")
    ] = "slice",
    figures: Annotated[bool, typer.Option(help="draw the PNG/SVG figures")] = True,
    primary: Annotated[
        str | None,
        typer.Option(
            help="the metric whose verdicts are the headline (default: the folder's last, else dice)"
        ),
    ] = None,
) -> None:
    """Write the verdicts, Table 1 (Markdown, LaTeX, CSV, HTML), slice-level tests, figures and
    summary.json again from a stored run folder."""
    from covbench.folder.lock import run_lock

    try:
        with run_lock(run_dir, create=False), folder_warnings():  # not while a run writes the folder
            print_report(run_dir, unit, figures, primary)
    except ERRORS as exc:
        raise fail(exc) from None


def plan(
    run_dir: Annotated[Path, typer.Argument(help="a finished covbench run folder")],
    metric: Annotated[str, typer.Option(help="the metric to plan for")] = "dice",
    delta: Annotated[float, typer.Option(help="the true difference the next run must detect")] = 0.01,
    power: Annotated[float, typer.Option(help="the chance of detecting it")] = 0.8,
    unit: Annotated[
        str, typer.Option(help="'slice' (per-slice values, averaged per patient) or 'patient' (volumes)")
    ] = "slice",
) -> None:
    """Seeds and test patients needed to detect DELTA with POWER, from this run's variance
    components; and the smallest difference this run itself can detect."""
    from covbench.reports.plan import plan as make_plan

    try:
        result = make_plan(run_dir, metric, delta, power, unit=unit)
    except ERRORS as exc:
        raise fail(exc) from None
    console.print(result.markdown(), highlight=False, markup=False, soft_wrap=True)


def compare(
    baseline: Annotated[Path, typer.Argument(help="baseline summary.json or run folder")],
    current: Annotated[Path, typer.Argument(help="current summary.json or run folder")],
    tolerance: Annotated[
        list[str] | None,
        typer.Option(help="METRIC=VALUE, repeatable: the smallest drop that may fail (default: FLOORS)"),
    ] = None,
    metrics: Annotated[str | None, typer.Option(help="comma list of metrics to check (default: all)")] = None,
    update: Annotated[bool, typer.Option(help="after printing, replace BASELINE with CURRENT")] = False,
    explain: Annotated[
        bool,
        typer.Option(
            help="also print each model's seed-mean SD, df and detectable drop (the gate's figures)"
        ),
    ] = False,
    require_identity: Annotated[
        bool, typer.Option(help="refuse (exit 2) a side without a benchmark identity instead of a note (CI)")
    ] = False,
) -> None:
    """Compare a run with a baseline of the same benchmark. Exit 0: passed; 1: a significant drop
    beyond its floor (primary metric; secondary ones after Holm) or a metric went missing; 2: bad
    input, or BASELINE is another benchmark.
    With GITHUB_STEP_SUMMARY set, the Markdown verdict is appended there too."""
    from covbench.reports.compare import append_step_summary, gate, parse_metrics, parse_tolerances
    from covbench.reports.compare import explain as explain_figures

    def step_summary(title: str, body: str) -> None:
        try:
            append_step_summary(f"### covbench compare: {title}\n\n{body}")
        except OSError as exc:  # the job page is a convenience; the exit code is the verdict
            warn(f"GITHUB_STEP_SUMMARY not written ({exc})")

    try:
        done = gate(
            baseline, current, parse_tolerances(tolerance), parse_metrics(metrics),
            update=update, require_identity=require_identity,
        )  # fmt: skip
    except ERRORS as exc:
        step_summary("refused (exit 2)", str(exc))
        raise fail(exc) from None
    if done.note:
        say(done.note, err=True)
    result = done.result
    if result is not None:
        console.print(result.markdown(), highlight=False, markup=False, soft_wrap=True)
        if explain:
            console.print(explain_figures(result), highlight=False, markup=False, soft_wrap=True)
        if done.warning:
            warn(done.warning)
        verdict = f"REGRESSION, {len(result.failed)} check(s) failed (exit 1)" if result.failed else "passed"
        step_summary(verdict, result.markdown())
    if done.baseline == "created":
        say(f"baseline {baseline} created from {current}")
    elif done.baseline == "replaced":
        say(f"baseline {baseline} replaced by {current}, a different benchmark ({done.changed})")
    elif done.baseline == "updated":
        say(f"baseline {baseline} updated from {current}")
    elif result is not None and result.failed:
        say(
            f"regression: {len(result.failed)} check(s) failed against {baseline}; if intended, refresh "
            f"it with `covbench compare {baseline} {current} --update`",
            err=True,
        )
        raise typer.Exit(code=1)


def track(
    run_dir: Annotated[Path, typer.Argument(help="a covbench run folder with a summary.json")],
    history: Annotated[Path, typer.Option(help="SQLite history file (created if missing)")],
    benchmark: Annotated[
        str | None,
        typer.Option(help="series name (default: the series of this run's benchmark, else DATASET-PRESET)"),
    ] = None,
) -> None:
    """Append a run's summary, git commit, date and gate verdict to its benchmark's series in a
    history database; a name that stands for another benchmark is refused (docs/reports.md)."""
    from covbench.reports.history import track as track_run

    try:
        tracked = track_run(run_dir, history, benchmark)
    except ERRORS as exc:
        raise fail(exc) from None
    what = "new benchmark" if tracked.new_benchmark else "benchmark"
    gate = f"; gate: {tracked.gate}" if tracked.gate else ""
    note = f" ({tracked.note})" if tracked.note else ""
    say(f"tracked {run_dir} as run {tracked.run_id} of {what} {tracked.benchmark!r}{note} in {history}{gate}")


def history(
    file: Annotated[Path, typer.Argument(help="SQLite history file written by `covbench track`")],
    plots: Annotated[
        Path | None, typer.Option(help="folder for the plots (default: next to FILE, '<stem>-plots')")
    ] = None,
    benchmark: Annotated[str | None, typer.Option(help="only this benchmark's series (default: all)")] = None,
    last: Annotated[int, typer.Option(help="runs printed per benchmark, most recent; 0 = all")] = 10,
) -> None:
    """Print each benchmark's trend per metric (never a change between two benchmarks) and draw one
    plot per metric, one panel per benchmark."""
    from covbench.reports import history as hist

    try:
        points = hist.load_history(file, benchmark)
        benchmarks = hist.load_benchmarks(file)
        say(hist.trend_markdown(points, benchmarks, last))
        if points:
            folder = plots or hist.plots_folder(file)
            paths = hist.plot_history(points, folder, benchmarks)
            say(f"{len(paths)} plot files in {folder}")
    except ERRORS as exc:
        raise fail(exc) from None
