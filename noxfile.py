"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s bench`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("pytest", "-q", *session.posargs)


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
def gpu_check(session: nox.Session) -> None:
    """On one CUDA GPU: a few `paper` epochs per reference model, images/s, memory, projected
    protocol time (`nox -s gpu_check -- --tiny` runs it on a CPU)."""
    session.install("-e", ".")
    session.run("python", "scripts/gpu_check.py", *session.posargs)
