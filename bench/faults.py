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
- `COVBENCH_TEST_PATCH=<file.py>:<name>`: every trial runs inside `name()` of that file, a context
  manager that monkeypatches training or evaluation from outside the product code (the regression
  injection of benchmarks/regressions.py). Undone when the trial ends, so a reused Ray worker is
  clean for the next run.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import os
import signal
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

KILL_ONCE = "COVBENCH_TEST_KILL_ONCE"
FAIL = "COVBENCH_TEST_FAIL"
PATCH = "COVBENCH_TEST_PATCH"


@dataclass(frozen=True)
class FaultHooks:
    kill_once_marker: str | None = None
    fail_pattern: str | None = None
    patch: str | None = None  # COVBENCH_TEST_PATCH

    @classmethod
    def from_env(cls) -> FaultHooks:
        env = os.environ
        return cls(env.get(KILL_ONCE) or None, env.get(FAIL) or None, env.get(PATCH) or None)

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

    def patched(self) -> AbstractContextManager:
        """`COVBENCH_TEST_PATCH=FILE.py:NAME`: the context manager `NAME()` of FILE (loaded by path,
        so it needs not be importable in the worker), entered around the trial's training and
        evaluation; a no-op context when unset."""
        if not self.patch:
            return nullcontext()
        path, sep, name = self.patch.rpartition(":")
        if not sep or not path.endswith(".py"):
            raise RuntimeError(f"{PATCH}={self.patch}: expected FILE.py:NAME")
        module_name = "covbench_test_patch_" + hashlib.sha256(path.encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None or not os.path.isfile(path):
            raise RuntimeError(f"{PATCH}={self.patch}: no such file {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        factory = getattr(module, name, None)
        if factory is None:
            raise RuntimeError(f"{PATCH}={self.patch}: {path} defines no {name!r}")
        return factory()
