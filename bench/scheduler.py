"""Ray behind a few verbs. This is the only module that imports `ray`.

`RayExecutor` runs every trial by default, CPU presets and tests included, so the code path
researchers use on a GPU cluster is the one CI exercises. `InProcessExecutor` has the same verbs
and exists only to step through a trial under a debugger (`covbench run --debug`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resources:
    """What one trial asks the scheduler for."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass
class Finished:
    """A trial that left the scheduler: `result` on success, `error` (a string) on failure."""

    tag: Any
    result: Any = None
    error: str | None = None


class RayExecutor:
    """Start (or join) Ray, ship shared data once, run trials as Ray tasks, stream results back."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None):
        import ray

        self._ray = ray
        self.started_here = False
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS")
            kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            else:
                kwargs.update(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False)
                if num_gpus is not None:
                    kwargs["num_gpus"] = num_gpus
            ray.init(**kwargs)
            self.started_here = True
        self._pending: dict[Any, Any] = {}
        self._remote: dict[Callable[..., Any], Any] = {}

    def resources(self) -> dict[str, float]:
        """Total CPUs and GPUs of the cluster (a machine without GPUs reports none)."""
        total = self._ray.cluster_resources()
        return {"cpus": float(total.get("CPU", 0)), "gpus": float(total.get("GPU", 0))}

    def put(self, obj: Any) -> Any:
        """Place `obj` in the object store once; tasks receive a zero-copy view of its arrays."""
        return self._ray.put(obj)

    def submit(
        self, tag: Any, fn: Callable[..., Any], *args: Any, resources: Resources, max_retries: int = 2
    ) -> None:
        """Queue `fn(*args)` as a task; a dead worker is retried `max_retries` times, an exception
        raised by `fn` is not (a retry would not fix a bug)."""
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(fn)
        task = self._remote[fn].options(
            num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=max_retries, retry_exceptions=False
        )
        self._pending[task.remote(*args)] = tag

    def pending(self) -> int:
        return len(self._pending)

    def as_completed(self) -> Iterator[Finished]:
        """Yield each submitted task as soon as it finishes, in completion order."""
        while self._pending:
            done, _ = self._ray.wait(list(self._pending), num_returns=1)
            ref = done[0]
            tag = self._pending.pop(ref)
            try:
                yield Finished(tag, result=self._ray.get(ref))
            except Exception as exc:  # the task's own error, or a worker that died too often
                cause = getattr(exc, "cause", None) or exc
                yield Finished(tag, error=f"{type(cause).__name__}: {cause}".strip().splitlines()[-1][:500])

    def cancel_all(self) -> None:
        for ref in list(self._pending):
            self._ray.cancel(ref, force=True)
        self._pending.clear()

    def shutdown(self) -> None:
        """Stop Ray only if this executor started it (tests and clusters keep theirs)."""
        if self.started_here:
            self._ray.shutdown()


class InProcessExecutor:
    """Same verbs, no Ray: each trial runs in this process when its result is asked for."""

    def __init__(self, **_: Any):
        self._queue: list[tuple[Any, Callable[..., Any], tuple[Any, ...]]] = []

    def resources(self) -> dict[str, float]:
        import torch

        return {"cpus": float(os.cpu_count() or 1), "gpus": float(torch.cuda.device_count())}

    def put(self, obj: Any) -> Any:
        return obj

    def submit(
        self, tag: Any, fn: Callable[..., Any], *args: Any, resources: Resources, max_retries: int = 0
    ) -> None:
        self._queue.append((tag, fn, args))

    def pending(self) -> int:
        return len(self._queue)

    def as_completed(self) -> Iterator[Finished]:
        while self._queue:
            tag, fn, args = self._queue.pop(0)
            try:
                yield Finished(tag, result=fn(*args))
            except Exception as exc:
                yield Finished(tag, error=f"{type(exc).__name__}: {exc}")

    def cancel_all(self) -> None:
        self._queue.clear()

    def shutdown(self) -> None:
        pass
