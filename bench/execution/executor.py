"""The contract a trial executor meets: the verbs the runner uses, nothing Ray-specific.

`covbench.execution.scheduler.RayExecutor` (the default) and `InProcessExecutor` (`--debug`) implement it; a
third one (Ray job submission, a Slurm array) needs exactly these members. Trials are plain
picklable functions of (trial spec, run folder), so an executor only moves calls and results.
tests/test_executor.py checks that both executors conform, signatures included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from covbench.execution.scheduler import Finished, Resources


@runtime_checkable
class Executor(Protocol):
    """Runs submitted calls somewhere and streams back a `Finished` per call."""

    address: str | None  # the cluster joined, for the run manifest; None for a local one

    def resources(self) -> dict[str, float]:
        """Total {"cpus", "gpus"} the executor can hand out (decides GPUs per trial, parallelism)."""
        ...

    def gpu_memory(self, timeout: float = 60.0) -> float | None:
        """Free bytes on one GPU as a trial would see it, or None when unknown (decides how many
        trials share a GPU: covbench.execution.packing)."""
        ...

    def nodes(self) -> list[dict[str, Any]]:
        """The machines, each {"host", "ip", "resources"}, for the run manifest."""
        ...

    def unseen_by_nodes(self, path: Path, timeout: float = 60.0) -> list[str]:
        """The nodes on which `path` does not exist (a run folder the workers cannot see)."""
        ...

    def put(self, obj: Any) -> Any:
        """Ship `obj` once (the slices); pass the returned handle to `submit` instead of `obj`."""
        ...

    def submit(
        self,
        tag: Any,
        fn: Callable[..., Any],
        *args: Any,
        resources: Resources,
        max_retries: int = 2,
    ) -> None:
        """Queue `fn(*args)` under `tag`; retry a lost worker (never an exception of `fn`) up to
        `max_retries` times; each attempt tells the driver when it starts (see scheduler)."""
        ...

    def pending(self) -> int:
        """Calls submitted and not yet yielded."""
        ...

    def as_completed(
        self,
        on_started: Callable[[Any, dict[str, Any]], None] | None = None,
        poll_seconds: float = 0.5,
        stall_timeout: float | None = None,
    ) -> Iterator[Finished]:
        """Yield a `Finished` per call in completion order, calling `on_started(tag, placement)`
        when an attempt begins; a failed call is a `Finished` with `error`, never an exception.
        An attempt without progress for `stall_timeout` seconds is ended (reason "stalled")."""
        ...

    def drain_ready(self) -> list[Finished]:
        """The calls already finished, without waiting (used on Ctrl-C)."""
        ...

    def cancel_all(self) -> None:
        """Stop every queued or running call; their trial folders keep their last checkpoint."""
        ...

    def shutdown(self) -> None:
        """Release what this executor started (and only that)."""
        ...
