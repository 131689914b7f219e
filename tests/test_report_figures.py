"""The report draws its figures on spare cores (reports/figure_workers.py): the same files as when
drawn in one process, in the same order, and a worker that dies or warns loses nothing."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from covbench.reports.figure_workers import Drawing, FigureJob, FigureWorkers, spare_cores
from covbench.reports.report_figures import note_only


def where_drawn(label: str) -> Drawing:
    """Module level, so that a spawned worker can import it by name."""
    return Drawing([(Path(f"{label}.png"), f"{label} in {os.getpid()}")])


def dies_in_a_worker(label: str) -> Drawing:
    if multiprocessing.parent_process() is not None:
        os._exit(3)  # a worker killed mid-job (out of memory, a signal)
    return where_drawn(label)


def warns(label: str) -> Drawing:
    warnings.warn(f"{label}: a glyph is missing", UserWarning, stacklevel=1)
    return where_drawn(label)


def _pids(drawings: list[Drawing]) -> list[int]:
    return [int(d.figures[0][1].rsplit(" ", 1)[1]) for d in drawings]


def test_jobs_come_back_in_their_order_whoever_drew_them():
    jobs = [
        FigureJob(where_drawn, ("light",), cost=1.0),
        FigureJob(note_only, ("a note",), cost=0.0),
        FigureJob(where_drawn, ("heavy",), cost=3.0),
    ]
    with FigureWorkers(1) as workers:
        drawn = workers.draw(jobs)
    assert [d.figures[0][0].name if d.figures else d.warnings[0] for d in drawn] == [
        "light.png",
        "a note",
        "heavy.png",
    ]
    light, heavy = _pids([drawn[0], drawn[2]])
    assert light == os.getpid() and heavy != os.getpid()  # the heaviest went to the worker first
    with FigureWorkers(0) as alone:
        assert set(_pids([d for d in alone.draw(jobs) if d.figures])) == {os.getpid()}


def test_a_worker_that_dies_leaves_its_figure_to_this_process():
    jobs = [FigureJob(dies_in_a_worker, ("lost",), cost=3.0), FigureJob(where_drawn, ("kept",), cost=1.0)]
    with FigureWorkers(1) as workers:
        drawn = workers.draw(jobs)
    assert [d.figures[0][0].name for d in drawn] == ["lost.png", "kept.png"]
    assert set(_pids(drawn)) == {os.getpid()}


def test_a_workers_warnings_are_raised_by_the_report():
    jobs = [FigureJob(warns, ("boxplots",), cost=3.0), FigureJob(where_drawn, ("other",), cost=1.0)]
    with FigureWorkers(1) as workers, pytest.warns(UserWarning, match="boxplots: a glyph is missing"):
        drawn = workers.draw(jobs)
    assert _pids(drawn)[0] != os.getpid()


def test_spare_cores_leave_one_for_the_report(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    assert spare_cores() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0}, raising=False)
    assert spare_cores() == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(64)), raising=False)
    assert spare_cores() == 3


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    """A spawned worker would import the parent's main script again; the figure workers never do."""
    script = tmp_path / "analysis.py"
    script.write_text(
        "import os\n"
        "from covbench.reports.figure_workers import FigureJob, FigureWorkers, Drawing\n"
        "from covbench.reports import report_figures\n"
        "print('top level ran', flush=True)\n"
        "with FigureWorkers(1) as workers:\n"
        "    drawn = workers.draw([FigureJob(report_figures.note_only, (str(os.getpid()),), 3.0),\n"
        "                          FigureJob(report_figures.note_only, ('parent',), 1.0)])\n"
        "print('drawn', [d.warnings for d in drawn], flush=True)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("top level ran") == 1, done.stdout + done.stderr
    assert "drawn" in done.stdout and "Traceback" not in done.stderr


def test_the_workers_module_is_light_enough_to_start_before_the_report():
    """The CLI starts the workers before importing the report: their module loads no pandas,
    numpy or matplotlib, or the head start is lost."""
    code = (
        "import sys, covbench.reports.figure_workers\n"
        "print(sorted(m for m in ('pandas', 'numpy', 'matplotlib', 'scipy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
