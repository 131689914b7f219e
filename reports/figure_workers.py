"""Drawing a report's figures on the machine's spare cores.

Matplotlib lays out and renders in Python under the GIL, and at small scale drawing every figure as
PNG and SVG is most of a report's time (docs/performance.md). The figures are independent, so a
spawned worker process draws some while the report's own process draws the others; the results
are put back in the figures' fixed order, so what is written never depends on which process drew
what. Spawned, never forked: the run's own report is written in the driver process that held Ray
and torch. A worker that cannot start, or dies, leaves its figures to the report's own process.

Standard library only, so that the command line can start the workers before it imports the
report (the workers import matplotlib meanwhile); the jobs are in `covbench.reports.report_figures`.
"""

from __future__ import annotations

import os
import sys
import threading
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
    import covbench.reports.report_figures  # noqa: F401


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
        if self._pool is not None:  # every job is in by now; the workers exit on their own
            self._pool.shutdown(wait=False, cancel_futures=True)

    def draw(self, jobs: list[FigureJob]) -> list[Drawing]:
        """Every job's drawing, in the jobs' order. One queue, heaviest first: a worker is handed
        the next job the moment it finishes one (from the pool's callback thread), and this
        process takes the next one itself between its own, so nobody idles while work is left."""
        queue = deque(sorted((i for i, j in enumerate(jobs) if j.cost > 0), key=lambda i: -jobs[i].cost))
        handed: dict[Future, int] = {}
        busy = [0]  # jobs held by workers and not finished
        changed = threading.Condition()

        def hand_out(finished: Future | None = None) -> None:
            with changed:
                busy[0] -= finished is not None
                i = queue.popleft() if queue and self._pool is not None else None
                busy[0] += i is not None
                changed.notify_all()
            if i is None:
                return
            try:  # every worker started in __enter__: a submit here starts none
                future = self._pool.submit(_run_in_worker, jobs[i])
            except (BrokenProcessPool, RuntimeError):  # the pool is gone: this process draws it
                with changed:
                    queue.appendleft(i)
                    busy[0] -= 1
                    changed.notify_all()
                return
            with changed:
                handed[future] = i
            future.add_done_callback(hand_out)

        for _ in range(self.count if self._pool is not None else 0):
            hand_out()
        done: list[Drawing | None] = [None] * len(jobs)
        while True:
            with changed:
                i = queue.popleft() if queue else None
            if i is None:
                break
            done[i] = jobs[i].run()
        with changed:
            changed.wait_for(lambda: busy[0] == 0)
        for future, i in sorted(handed.items(), key=lambda item: item[1]):
            if isinstance(future.exception(), BrokenProcessPool):  # a worker died: drawn here below
                self._pool = None
                continue
            drawing, caught = future.result()  # a job's own error is raised as in this process
            for message, category in caught:
                warnings.warn(message, category, stacklevel=2)
            done[i] = drawing
        return [d if d is not None else jobs[i].run() for i, d in enumerate(done)]
