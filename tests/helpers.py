"""Waiting without racing the machine: the helpers every process-level test shares.

A test that acts on a running `covbench run` never guesses how long training takes. It holds the
trials at a known point (`COVBENCH_TEST_HOLD`, covbench.faults), waits for a condition with a
generous bound (`wait_for`), acts, then releases them. Bounds are there to turn a hang into a
failure, not to time anything: a loaded machine may be slow, and the test still passes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from covbench import faults

T = TypeVar("T")
# Bounds turn a hang into a failure; they never time anything. A shared 2-core machine with a load
# average of 20-35 took more than 120 s to start a held `covbench run` and more than 300 s for a
# two-node Ray run (docs/contributing.md), hence these.
BOUND_S = 600.0  # one condition: a file, a lock, a held trial, a process's exit
RUN_BOUND_S = 1800.0  # a whole child process that starts Ray and trains (subprocess.run timeout)
POLL_S = 0.05

# A process that takes a run folder's lock and keeps it until the test kills it or closes its stdin.
LOCK_HOLDER = """
import sys
from covbench.folder.lock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def wait_for(condition: Callable[[], T], what: str, timeout: float = BOUND_S, every: float = POLL_S) -> T:
    """Poll `condition` until it returns something true, and return that; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Hold:
    """The test's side of `COVBENCH_TEST_HOLD`: trials that stop at the end of their first epoch
    until released. `env()` arms a child process; `arm(monkeypatch)` arms this one's runs."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        return {**(os.environ if base is None else base), faults.HOLD: str(self.folder)}

    def arm(self, monkeypatch: Any) -> Hold:
        monkeypatch.setenv(faults.HOLD, str(self.folder))
        return self

    def held(self) -> dict[str, dict[str, Any]]:
        return faults.held(self.folder)

    def wait_held(self, n: int = 1, timeout: float = BOUND_S) -> dict[str, dict[str, Any]]:
        """Wait until `n` trials hold; they are all certainly running (and not finished)."""

        def enough() -> dict[str, dict[str, Any]] | None:
            held = self.held()
            return held if len(held) >= n else None

        return wait_for(enough, f"{n} held trial(s) in {self.folder}", timeout)

    def release(self, trial: str | None = None) -> None:
        faults.release(self.folder, trial)


@contextmanager
def running(cmd: list[str], **popen: Any) -> Iterator[subprocess.Popen]:
    """A child process not left behind when the block ends, however it ends: interrupted like
    Ctrl-C (a `covbench run` then stops its Ray instance), killed if that does not end it."""
    with subprocess.Popen(cmd, **popen) as proc:  # closes its pipes and waits for it on exit
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


@contextmanager
def lock_holder(run_dir: Path) -> Iterator[subprocess.Popen]:
    """Another process holding `run_dir`'s lock for as long as the block runs."""
    cmd = [sys.executable, "-c", LOCK_HOLDER, str(run_dir)]
    with running(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
