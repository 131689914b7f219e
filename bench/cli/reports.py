"""`covbench report | compare | track | history`: the commands over finished run folders; the work is
in `covbench.reports`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from covbench.cli.common import ERRORS, console, fail, folder_warnings, say, warn


def print_report(run_dir: Path, unit: str = "slice", figures: bool = True) -> None:
    """Write the run folder's report files and print Table 1 and where the files are."""
    from covbench.reports.report import write_report

    report = write_report(run_dir, unit=unit, figures=figures)
    console.print(report.markdown, highlight=False, markup=False, soft_wrap=True)
    files = ", ".join(p.relative_to(run_dir).as_posix() for p in report.paths)
    say(f"report files in {run_dir}: {files}")


def report(
    run_dir: Annotated[Path, typer.Argument(help="a covbench run folder")],
    unit: Annotated[
        str, typer.Option(help="case unit: 'slice' (test slices) or 'patient' (reassembled test volumes)")
    ] = "slice",
    figures: Annotated[bool, typer.Option(help="draw the PNG/SVG figures")] = True,
) -> None:
    """Write Table 1 (Markdown, LaTeX, CSV, HTML), significance tests, figures and summary.json
    again from a stored run folder."""
    from covbench.lock import run_lock

    try:
        with run_lock(run_dir, create=False), folder_warnings():  # not while a run writes the folder
            print_report(run_dir, unit, figures)
    except ERRORS as exc:
        raise fail(exc) from None


def compare(
    baseline: Annotated[Path, typer.Argument(help="baseline summary.json or run folder")],
    current: Annotated[Path, typer.Argument(help="current summary.json or run folder")],
    tolerance: Annotated[
        list[str] | None,
        typer.Option(help="METRIC=VALUE, repeatable; default per metric: max(floor, 2 x seed SD)"),
    ] = None,
    metrics: Annotated[str | None, typer.Option(help="comma list of metrics to check (default: all)")] = None,
    update: Annotated[bool, typer.Option(help="after printing, replace BASELINE with CURRENT")] = False,
) -> None:
    """Compare a run with a baseline of the same benchmark. Exit 0: passed; 1: a metric got worse
    beyond its tolerance (or went missing); 2: bad input, or BASELINE is another benchmark.
    With GITHUB_STEP_SUMMARY set, the Markdown verdict is appended there too."""
    from covbench.reports.compare import append_step_summary, gate, parse_metrics, parse_tolerances

    def step_summary(title: str, body: str) -> None:
        try:
            append_step_summary(f"### covbench compare: {title}\n\n{body}")
        except OSError as exc:  # the job page is a convenience; the exit code is the verdict
            warn(f"GITHUB_STEP_SUMMARY not written ({exc})")

    try:
        done = gate(baseline, current, parse_tolerances(tolerance), parse_metrics(metrics), update=update)
    except ERRORS as exc:
        step_summary("refused (exit 2)", str(exc))
        raise fail(exc) from None
    if done.note:
        say(done.note, err=True)
    result = done.result
    if result is not None:
        console.print(result.markdown(), highlight=False, markup=False, soft_wrap=True)
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
