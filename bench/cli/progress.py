"""The live display of `covbench run`: a bar over trials, one line per finished or failed trial."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from covbench.folder.record import TrialRecord


class RunProgress:
    """Live display: a bar over trials with queued / running / done / failed counts and an ETA.
    `event` is the `on_event` callback of `covbench.execution.runner.execute`.

    "running" counts trials whose attempt announced itself from a worker (the scheduler's
    heartbeat files), not an estimate from free slots; a retried attempt shows as a retry."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = None
        self.total = self.done = self.failed = self.retries = 0
        self.running: set[str] = set()

    def __enter__(self) -> RunProgress:
        self.progress.__enter__()
        self.task = self.progress.add_task("preparing data", total=None)
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def _describe(self) -> str:
        left = self.total - self.done - self.failed
        running = min(left, len(self.running))
        text = f"trials: {left - running} queued, {running} running, {self.done} done, {self.failed} failed"
        return text + (f", {self.retries} retried" if self.retries else "")

    def _line(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def event(self, kind: str, info: dict) -> None:
        if kind == "status" and self.task is not None:  # "checking models", "preparing data"
            self.progress.update(self.task, description=info["message"])
        if kind == "start":
            self.total = info["total"]
            self.done = info["skipped"]
            if info.get("gpus"):  # how many trials share a GPU, and why (covbench.execution.packing)
                self._line(f"  GPUs: {info['packing']}")
            self.progress.update(
                self.task, total=self.total, completed=self.done, description=self._describe()
            )
        elif kind in {"started", "retry"}:
            self.running.add(info["trial"])
            if kind == "retry":
                self.retries += 1
                self._line(f"  ↻ {info['trial']}: worker lost, attempt {info['attempt']}")
            self.progress.update(self.task, description=self._describe())
        elif kind == "done":
            self.done += 1
            self.running.discard(info["trial"])
            r: TrialRecord = info["record"]
            gpus = f" GPU {','.join(map(str, r.gpu_ids))}" if r.gpu_ids else ""
            val = r.best_val_dice
            chosen = (
                f"final weights (epoch {r.best_epoch}, no validation)"
                if val is None or math.isnan(val)
                else f"final weights (epoch {r.best_epoch}, val Dice {val:.3f})"
                if r.selection == "final"
                else f"best val Dice {val:.3f} (epoch {r.best_epoch})"
            )
            self._line(
                f"  ✓ {info['trial']}: test Dice {info['test_dice']:.3f}, {chosen}, "
                f"{r.wall_seconds:.0f} s on {r.device}{gpus}"
            )
            for flag in (r.health or {}).get("flags", []):  # covbench.training.health
                self._line(f"    ⚠ training health: {flag}")
        elif kind == "round":  # rounds of seeds (covbench.execution.rounds): the look after a round
            self._line(f"  round {info['round']} ({info['seeds']}): {info['pairs']}")
        elif kind == "more":
            self.total += info["total"]
            self.progress.update(self.task, total=self.total, description=self._describe())
        elif kind == "failed":
            self.failed += 1
            self.running.discard(info["trial"])
            self._line(f"  ✗ {info['trial']}: {info['error']}")
        if self.task is not None and kind in {"done", "failed"}:
            self.progress.update(self.task, completed=self.done + self.failed, description=self._describe())
