"""Fault injection for the test suite: the one seam through which tests make a trial fail, die or wait.

The resume and retry tests need real failures inside real Ray workers: a worker killed like an
out-of-memory victim, and a trial that always raises; the tests that interrupt a run need a trial
that is provably still running. The driver reads these environment variables
(`FaultHooks.from_env`) and ships them to every attempt inside `TrialSpec.faults`, so they reach
Ray workers started before the variable was set. They are never part of the configuration key, and
with none of them set every method here does nothing.

- `COVBENCH_TEST_KILL_ONCE=<marker file>`: the first trial attempt that has a checkpoint on disk
  while the marker does not exist creates it and SIGKILLs its own worker process. Exactly one kill
  per marker file: the retry finds the marker and carries on, resuming from that checkpoint. Only
  meaningful under Ray (in-process it would kill the driver).
- `COVBENCH_TEST_FAIL=<fnmatch pattern>`: every attempt of a trial whose name matches raises
  `RuntimeError` before training, i.e. a trial that always fails.
- `COVBENCH_TEST_HOLD=<folder>`: a trial stops at the end of the first epoch its attempt trains,
  once its checkpoint (if one was due) is on disk. It writes `<folder>/<trial>.held` (JSON: trial,
  epoch, attempt pid) and waits, polling, until `<folder>/<trial>.release` or `<folder>/release`
  exists (`release`). A test can then signal, kill or lose the run while it is certainly training,
  however fast the machine trains. Each trial holds once: a later attempt that finds its `.held`
  marker carries on. A hold never released gives up after `HOLD_LIMIT_S` with an error, so a test
  that forgot to release fails instead of hanging. In-process (no Ray) the driver itself holds:
  only another thread or process can release it.
- `COVBENCH_TEST_PATCH=<file.py>:<name>`: every trial runs inside `name()` of that file, a context
  manager that monkeypatches training or evaluation from outside the product code (the regression
  injection of benchmarks/regressions.py). Undone when the trial ends, so a reused Ray worker is
  clean for the next run.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import os
import signal
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KILL_ONCE = "COVBENCH_TEST_KILL_ONCE"
FAIL = "COVBENCH_TEST_FAIL"
PATCH = "COVBENCH_TEST_PATCH"
HOLD = "COVBENCH_TEST_HOLD"
HOLD_LIMIT_S = 3600.0  # far above any test's own bound: only a hold nobody releases reaches it
HOLD_POLL_S = 0.05


def held(folder: str | Path) -> dict[str, dict[str, Any]]:
    """The trials holding (or that held) in `folder`, by name: their `.held` markers."""
    out = {}
    for marker in sorted(Path(folder).glob("*.held")):
        try:
            out[marker.stem] = json.loads(marker.read_text())
        except (OSError, ValueError):  # being written: seen on the next poll
            continue
    return out


def release(folder: str | Path, trial: str | None = None) -> None:
    """Let one held trial (or, with no name, every trial, now and later) carry on."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    Path(folder, f"{trial}.release" if trial else "release").touch()


@dataclass(frozen=True)
class FaultHooks:
    kill_once_marker: str | None = None
    fail_pattern: str | None = None
    hold_folder: str | None = None  # COVBENCH_TEST_HOLD
    patch: str | None = None  # COVBENCH_TEST_PATCH

    @classmethod
    def from_env(cls) -> FaultHooks:
        env = os.environ
        return cls(
            kill_once_marker=env.get(KILL_ONCE) or None,
            fail_pattern=env.get(FAIL) or None,
            hold_folder=env.get(HOLD) or None,
            patch=env.get(PATCH) or None,
        )

    @property
    def kill_armed(self) -> bool:
        return bool(self.kill_once_marker)

    @property
    def hold_armed(self) -> bool:
        return bool(self.hold_folder)

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

    def at_epoch_end(self, trial: str, epoch: int) -> None:
        """`COVBENCH_TEST_HOLD`: hold the trial here until a test releases it, once per trial.
        Called by the checkpointer at each epoch's end, once its checkpoint (if any) is on disk."""
        if not self.hold_folder:
            return
        folder = Path(self.hold_folder)
        folder.mkdir(parents=True, exist_ok=True)
        note = json.dumps({"trial": trial, "epoch": epoch, "pid": os.getpid()})
        try:  # O_EXCL: one hold per trial; a later attempt finds the marker and carries on
            fd = os.open(folder / f"{trial}.held", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        with os.fdopen(fd, "w") as f:  # `held` skips a marker it reads half-written
            f.write(note)
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not ((folder / f"{trial}.release").exists() or (folder / "release").exists()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{HOLD}={folder}: trial {trial} was never released")
            time.sleep(HOLD_POLL_S)

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
