"""A finished trial's record.json as a typed value.

The record is written by the driver (what the trial returned, plus where and when it ran) and read
by the manifest's index, the report and `predict`. Readers meet folders of every covbench version:
`from_dict` fills what an older record lacks with defaults and keeps keys it does not know in
`extra`, so reading never fails on an old folder and writing back loses nothing; `to_dict` gives
exactly the keys record.json holds today.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class TrialRecord:
    # what ran (covbench.training.trial.run_trial); every covbench version wrote these six, so the
    # defaults only ever fill in for a record.json that covbench did not write
    model: str = ""
    seed: int = 0
    fold: int = 0
    trial: str | None = None
    status: str | None = None  # "done"; what done means for a run: covbench.folder.io.done_for
    config_key: str | None = None  # str(covbench.folder.key.RunKey)
    parameters: int | None = None
    width: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the model's options as it was built
    device: str | None = None
    threads: int | None = None
    deterministic: bool | None = None
    eval_batch_size: int | None = None
    amp: str | None = None  # "bf16", "fp16" or "off": the precision it trained in
    epochs: int | None = None
    resumed_from_epoch: int | None = None
    best_epoch: int | None = None
    best_val_dice: float | None = None  # None when nothing was validated
    selection: str | None = None  # covbench.config.SELECTIONS; absent from older records (best_val)
    train_seconds: float | None = None
    eval_seconds: float | None = None
    wall_seconds: float | None = None
    started: float | None = None  # the worker's clock, seconds since the epoch
    finished: float | None = None
    weights: str | None = None  # a name in the trial's folder, or a storage URL
    checkpoint_writes: int | None = None
    checkpoint_epochs: int | None = None
    checkpoint_blocked_seconds: float | None = None
    checkpoint_write_seconds: float | None = None
    checkpoint_bytes_written: int | None = None
    checkpoint_every_seconds: float | None = None
    checkpoint_note: str | None = None  # a damaged checkpoint that was set aside
    peak_gpu_memory_gib: float | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    # covbench.training.health.Health.to_dict(); absent from older records
    health: dict[str, Any] | None = None
    # where and when the attempt ran (covbench.execution.runner._timing)
    attempts: int | None = None
    gpu_ids: list[Any] | None = None
    cuda_visible_devices: str | None = None
    host: str | None = None
    node_id: str | None = None
    pid: int | None = None
    last_progress: float | None = None
    submitted: float | None = None
    worker_started: float | None = None
    worker_finished: float | None = None
    collected: float | None = None
    queue_seconds: float | None = None
    return_seconds: float | None = None
    versions: dict[str, str] | None = None  # the code that trained it; absent from older records
    extra: dict[str, Any] = field(default_factory=dict)  # keys this covbench does not know

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialRecord:
        values = {k: v for k, v in data.items() if k in _KNOWN}
        return cls(**values, extra={k: v for k, v in data.items() if k not in _KNOWN})

    def to_dict(self) -> dict[str, Any]:
        out = {**self.extra, **{name: getattr(self, name) for name in _KNOWN}}
        if self.versions is None:
            del out["versions"]  # written only when known, as the runner always did
        return out


_KNOWN = frozenset(f.name for f in fields(TrialRecord)) - {"extra"}
