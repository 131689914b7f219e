"""A trial's resumable state in the run's storage, written off the training's critical path.

The storage (covbench.folder.storage) is the trial's folder in the run folder by default, or a prefix on
object storage (`--storage s3://...`) when the cluster's nodes share no disk: a retry or a resume
on any node then finds the checkpoint there. The code below only names files; the storage makes
every write atomic and durable.

Lifecycle of one trial folder:

1. `load()` at the start: `weights.pt` (training finished) or `checkpoint.pt` (training half done)
   of this configuration, or nothing. A file that cannot be read, or does not fit the model, is
   set aside as `<name>.corrupt` and the trial starts over: a damaged file never fails a trial
   twice (`LoadOutcome.note` says what happened; the trial records it).
2. `after_epoch()` after every epoch: on the schedule of `CheckpointPolicy` it copies model, Adam
   state and best weights to host memory (the only part on the critical path) and hands them to a
   writer thread, which saves them under a unique temporary name, fsyncs and renames.
3. `finish()` when training ends: the evaluated weights alone go to `weights.pt` (in the
   background, while the trial predicts the test slices), and the Adam checkpoint is deleted once
   they are durable: a finished trial keeps what a user needs, a quarter of the bytes for U-Net.
4. `close()` waits for the writer and re-raises its error, if any.

Why a schedule and not every epoch: a checkpoint only bounds the work a killed worker loses. The
old per-epoch `torch.save` of ~0.5 GB (U-Net) cost 33 % of a paper epoch on an H200 and wrote
~1 TB per paper run. Lightning saves every epoch by default, nnU-Net v2 every 50 epochs (minutes
to hours); covbench writes after the first epoch (a write problem shows at once, and a trial
killed early resumes), then whenever `every_seconds` (default 120 s) have passed since the last
write, so a kill loses at most ~2 minutes of one trial, at a cost of one host copy per write.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from covbench.config import CheckpointPolicy
from covbench.faults import FaultHooks
from covbench.folder.layout import CHECKPOINT, WEIGHTS
from covbench.folder.storage import Storage
from covbench.training.loop import Best, EpochEnd, ResumeFrom

FORMAT = 3  # 3 adds the epoch log; 2 and 1 (the per-epoch checkpoint) have the same keys, still loadable
_REQUIRED_WEIGHTS = ("state", "best_epoch", "best_val_dice", "config_key")
_REQUIRED = ("model", "optimizer", "epoch", "best_val_dice", "best_epoch", "best_state", "config_key")


@dataclass
class LoadOutcome:
    """What `load` found: where to continue (the model then holds the checkpoint's weights),
    finished weights, or nothing; `note` when a file was set aside."""

    resume: ResumeFrom | None = None
    finished: Best | None = None  # training already complete: evaluate these weights
    note: str | None = None
    epoch_log: list[dict[str, Any]] = field(default_factory=list)  # epochs.csv rows up to that point


@dataclass
class CheckpointStats:
    blocked_s: float = 0.0  # on the training thread: host copies and waits for the writer
    write_s: float = 0.0  # in the writer thread
    bytes_written: int = 0
    epochs_written: list[int] = field(default_factory=list)

    @property
    def writes(self) -> int:
        return len(self.epochs_written)


def to_host(obj: Any, copy: bool = True) -> Any:
    """Every tensor of a (nested) state dict in host memory; other values as they are. `copy`
    copies CPU tensors too (a live model's weights change under the writer); without it, tensors
    already on the CPU are shared (the best weights: replaced, never changed in place)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=copy)
    if isinstance(obj, dict):
        return {k: to_host(v, copy) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_host(v, copy) for v in obj)
    return obj


def _durable_save(state: dict[str, Any], storage: Storage, name: str) -> int:
    """torch.save to the storage, atomically (a reader sees the old file or the new one, never half
    of one); the bytes written."""
    return storage.save_torch(state, name)


def _log(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The epoch log a checkpoint carries (none in a file of a covbench from before format 3)."""
    log = state.get("epoch_log")
    return [dict(row) for row in log] if isinstance(log, list) else []


class Checkpointer:
    def __init__(
        self,
        trial: Path | Storage,
        config_key: str,
        policy: CheckpointPolicy | None = None,
        faults: FaultHooks | None = None,
    ) -> None:
        """`trial`: where this trial's files live, a local folder or a storage location."""
        self.storage = trial if isinstance(trial, Storage) else Storage.local(Path(trial))
        self.name = self.storage.uri.rstrip("/").rsplit("/", 1)[-1]  # the trial's name, for the test seam
        self.key = config_key
        self.policy = policy or CheckpointPolicy()
        self.faults = faults or FaultHooks()
        self.stats = CheckpointStats()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="covbench-checkpoint")
        self._pending: Future | None = None
        self._last_write = -float("inf")
        self._started_now = False  # a write began at the last after_epoch
        self._epoch = 0  # the last epoch after_epoch saw (for the test seam)

    # -- 1. load ---------------------------------------------------------------------------

    def load(self, model: nn.Module) -> LoadOutcome:
        """Where this trial continues; damaged or ill-fitting files are set aside (see module doc)."""
        self.storage.remove_stale_temporaries()  # of a writer killed mid-save
        notes: list[str] = []
        finished = self._read(WEIGHTS, _REQUIRED_WEIGHTS, notes)
        if finished is not None and finished["config_key"] == self.key:
            if self._fits(model, finished["state"], None, WEIGHTS, notes):
                self.storage.remove(CHECKPOINT)  # left by a kill before its removal
                best = Best(float(finished["best_val_dice"]), int(finished["best_epoch"]), finished["state"])
                return LoadOutcome(finished=best, note="; ".join(notes) or None, epoch_log=_log(finished))
        state = self._read(CHECKPOINT, _REQUIRED, notes)
        if state is None or state["config_key"] != self.key:
            return LoadOutcome(note="; ".join(notes) or None)  # another configuration's: start over
        if not self._fits(model, state["model"], state["optimizer"], CHECKPOINT, notes):
            return LoadOutcome(note="; ".join(notes))
        best = Best(float(state["best_val_dice"]), int(state["best_epoch"]), state["best_state"])
        resume = ResumeFrom(int(state["epoch"]), state["optimizer"], best, state.get("scaler"))
        self._last_write = time.monotonic()  # the file on disk is recent enough: no write at once
        return LoadOutcome(resume=resume, note="; ".join(notes) or None, epoch_log=_log(state))

    def _read(self, name: str, required: tuple[str, ...], notes: list[str]) -> dict[str, Any] | None:
        try:
            # Only files covbench wrote itself, never with pickle: weights_only refuses arbitrary objects.
            state = self.storage.load_torch(name)
            if state is None:
                return None
            missing = [k for k in required if k not in state] if isinstance(state, dict) else ["all"]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
        except Exception as exc:  # truncated, empty, not a torch file, wrong content: all the same
            notes.append(self._damaged(name, exc))
            return None
        return state

    def _fits(
        self, model: nn.Module, weights: dict[str, Any], optimizer: dict[str, Any] | None, name: str,
        notes: list[str],
    ) -> bool:  # fmt: skip
        """Load the saved weights into the model if they fit it (and the Adam state its parameters);
        otherwise set the file aside and leave the model as it was."""
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            model.load_state_dict(weights)
            if optimizer is not None:
                torch.optim.Adam(model.parameters()).load_state_dict(optimizer)
        except Exception as exc:
            model.load_state_dict(initial)  # a failed load has copied the tensors that did fit
            notes.append(self._damaged(name, exc))
            return False
        return True

    def _damaged(self, name: str, exc: BaseException) -> str:
        reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:200]
        moved = self.storage.set_aside(name, why=f"could not be used ({reason}); the trial starts over")
        return f"{name} could not be used ({reason}); set aside as {moved}, trial starts over"

    # -- 2. after each epoch ---------------------------------------------------------------

    def due(self) -> bool:
        """After the first epoch of a fresh trial, then every `policy.every_seconds`."""
        return time.monotonic() - self._last_write >= self.policy.every_seconds

    def after_epoch(self, end: EpochEnd, log: Sequence[dict[str, Any]] = ()) -> float:
        """Start a checkpoint write when one is due; the seconds this cost the training thread.
        `log` (the epoch log so far) travels with the checkpoint: a resumed trial's epochs.csv is
        whole even when the attempt that wrote the first epochs ran on a lost node."""
        epoch = self._epoch = int(end.row["epoch"])
        self._started_now = False
        if not self.due():
            return 0.0
        t = time.perf_counter()
        self._wait()  # one write in flight at most: the host copy below is the next one's input
        state = to_host(
            {
                "format": FORMAT,
                "model": end.model.state_dict(),
                "optimizer": end.optimizer.state_dict(),
                "epoch": epoch,
                "best_val_dice": end.best.val_dice,
                "best_epoch": end.best.epoch,
                "config_key": self.key,
                "epoch_log": [dict(row) for row in log],
                **({"scaler": end.scaler.state_dict()} if end.scaler is not None else {}),
            }
        )
        state["best_state"] = to_host(end.best.state, copy=False)
        self._last_write = time.monotonic()
        self._submit(state, CHECKPOINT, epoch)
        self._started_now = True
        blocked = time.perf_counter() - t
        self.stats.blocked_s += blocked
        return blocked

    def fault_point(self) -> None:
        """The test seam (covbench.faults), called once the epoch is logged: with a kill or a hold
        armed, wait until a checkpoint started this epoch is on disk, then let the hooks kill the
        worker or hold the trial (named by its folder)."""
        if not (self.faults.kill_armed or self.faults.hold_armed):
            return
        if self._started_now:
            self._wait()
            self.faults.after_checkpoint()
        self.faults.at_epoch_end(self.name, self._epoch)

    # -- 3. training finished --------------------------------------------------------------

    def finish(self, best: Best, epoch: int, log: Sequence[dict[str, Any]] = ()) -> float:
        """Write the evaluated weights in the background; the Adam checkpoint goes once they are on
        disk. Returns the seconds it cost the calling thread (a host copy)."""
        t = time.perf_counter()
        self._wait()
        state = {
            "format": FORMAT,
            "state": to_host(best.state, copy=False),
            "epoch": epoch,
            "best_epoch": best.epoch,
            "best_val_dice": best.val_dice,
            "config_key": self.key,
            "epoch_log": [dict(row) for row in log],
        }
        self._submit(state, WEIGHTS, epoch, then_remove=CHECKPOINT)
        blocked = time.perf_counter() - t
        self.stats.blocked_s += blocked
        return blocked

    # -- 4. close --------------------------------------------------------------------------

    def close(self) -> None:
        """Wait for the last write (re-raising its error) and stop the writer thread."""
        try:
            t = time.perf_counter()
            self._wait()
            self.stats.blocked_s += time.perf_counter() - t
        finally:
            self._writer.shutdown(wait=True)

    def _submit(self, state: dict[str, Any], name: str, epoch: int, then_remove: str | None = None) -> None:
        def write() -> None:
            t = time.perf_counter()
            self.stats.bytes_written += _durable_save(state, self.storage, name)
            if then_remove is not None:
                self.storage.remove(then_remove)
            self.stats.write_s += time.perf_counter() - t
            self.stats.epochs_written.append(epoch)

        self._pending = self._writer.submit(write)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()
