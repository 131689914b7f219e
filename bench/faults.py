"""Fault injection for the test suite: the one seam through which tests make a trial fail or die.

The resume and retry tests need real failures inside real Ray workers: a worker killed like an
out-of-memory victim, and a trial that always raises. The driver reads two environment variables
(`FaultHooks.from_env`) and ships them to every attempt inside `TrialSpec.faults`, so they reach
Ray workers started before the variable was set. They are never part of the configuration key, and
with neither variable set every method here does nothing.

- `COVBENCH_TEST_KILL_ONCE=<marker file>`: the first trial attempt that has a checkpoint on disk
  while the marker does not exist creates it and SIGKILLs its own worker process. Exactly one kill
  per marker file: the retry finds the marker and carries on, resuming from that checkpoint. Only
  meaningful under Ray (in-process it would kill the driver).
- `COVBENCH_TEST_FAIL=<fnmatch pattern>`: every attempt of a trial whose name matches raises
  `RuntimeError` before training, i.e. a trial that always fails.
"""

from __future__ import annotations

import fnmatch
import os
import signal
from dataclasses import dataclass

KILL_ONCE = "COVBENCH_TEST_KILL_ONCE"
FAIL = "COVBENCH_TEST_FAIL"


@dataclass(frozen=True)
class FaultHooks:
    kill_once_marker: str | None = None
    fail_pattern: str | None = None

    @classmethod
    def from_env(cls) -> FaultHooks:
        return cls(os.environ.get(KILL_ONCE) or None, os.environ.get(FAIL) or None)

    @property
    def kill_armed(self) -> bool:
        return bool(self.kill_once_marker)

    def before_training(self, trial: str) -> None:
        """`COVBENCH_TEST_FAIL`: fail a matching trial on purpose."""
        if self.fail_pattern and fnmatch.fnmatchcase(trial, self.fail_pattern):
            raise RuntimeError(f"{FAIL}={self.fail_pattern}: trial {trial} fails on purpose")

    def after_checkpoint(self) -> None:
        """`COVBENCH_TEST_KILL_ONCE`: die like an OOM-killed worker, once per marker file. Called
        by the checkpointer once a checkpoint is on disk (it waits for the write when armed)."""
        if not self.kill_once_marker:
            return
        try:
            os.close(os.open(self.kill_once_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)
