"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s stress`, `nox -s bench`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("pytest", "-q", *session.posargs)


@nox.session(python="3.11")
def stress(session: nox.Session) -> None:
    """The process-level tests (`-m process`) several times, idle and with one busy process per
    core: catches a test that races the speed of training (docs/contributing.md). Options and
    pytest arguments: `nox -s stress -- --loaded 3 -- tests/test_lock.py`."""
    session.install("-e", ".[dev]")
    session.run("python", "scripts/stress_tests.py", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Print the performance figures of docs/performance.md (metrics, data, training, scheduling)."""
    session.install("-e", ".[dev]")
    for script in sorted(__import__("pathlib").Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)


@nox.session(python="3.11")
def bench_report(session: nox.Session) -> None:
    """Wall time and peak memory of `covbench report` at 10x5x1, 20x5x1, 50x10x5 (issue 37)."""
    session.install("-e", ".[dev]")
    session.run("python", "benchmarks/bench_report.py", *session.posargs)


@nox.session(python="3.11")
def gpu_check(session: nox.Session) -> None:
    """On one CUDA GPU: a few `paper` epochs per reference model, images/s, memory, projected
    protocol time (`nox -s gpu_check -- --tiny` runs it on a CPU)."""
    session.install("-e", ".")
    session.run("python", "scripts/gpu_check.py", *session.posargs)
