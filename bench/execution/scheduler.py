"""Ray behind a few verbs. This is the only module that imports `ray`.

`RayExecutor` runs every trial by default, CPU presets and tests included, so the code path
researchers use on a GPU cluster is the one CI exercises. `InProcessExecutor` has the same verbs
and exists only to step through a trial under a debugger (`covbench run --debug`).

Why plain Ray tasks and not Ray Tune: a trial here is a fixed (model, seed, fold) with nothing to
search, so Tune's search/stop machinery would only add a second results store beside the run
folder. Tasks give what is needed - resources per trial, retries of dead workers
(`max_retries`), streaming results (`ray.wait`) - and resume is the run folder's job (a trial
folder with a record is done; one with a checkpoint continues).

Quiet and contained by default (`ray_defaults`): usage statistics stay off unless the user turned
them on, and a Ray instance started here runs with token authentication, set explicitly so that
Ray does not print its "Token authentication is enabled..." notice. Token auth is what keeps a
local run private: Ray's processes listen on all interfaces even when the node address is the
loopback one, and without a token anyone who reaches those ports can run code as this user.

How "running" is known: each task, on entering its worker, announces its attempt to the driver's
attempt board (`AttemptBoard`, a Ray actor pinned to the driver's node) and the driver reads the
board while it waits, so the progress display counts trials that really started, and a retried
attempt is seen as one. Nothing is read from files on the worker: a cluster whose nodes share no
disk shows the same thing as one machine.

How a stalled trial ends: while the attempt runs, the trial sends a beat to the board at every step
of progress (covbench.training.heartbeat, at most once a second). `as_completed(stall_timeout=S)` ends an
attempt whose beat count has not changed for S seconds, by the driver's clock: its task is
cancelled with force (Ray kills the worker process; a cancelled task is not retried) and it comes
back as failed with the reason "stalled". An attempt whose worker died on this host (pid gone) is
waiting for its retry, not stalled.

What workers import: Ray puts the driver's working directory at the front of every worker's
`sys.path` (`JobConfig._py_driver_sys_path`), where the driver itself, started as the `covbench`
script, never looks. A plugin folder under development or a stray `covbench.py` there would then
be imported by the trials instead of the installed package. A Ray instance is therefore joined or
started from an empty folder of covbench's own (`neutral_cwd`), so the path Ray adds holds nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covbench.errors import CovbenchError, TrialFailure
from covbench.training import heartbeat as beats

STALLED = "stalled"  # Finished.reason of an attempt ended by the stall watch


@dataclass(frozen=True)
class Resources:
    """What one trial asks the scheduler for."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass
class Finished:
    """A trial that left the scheduler: `result` on success, `error` (a string) on failure.
    `placement` says where and when the (last) attempt ran; see `_placement`."""

    tag: Any
    result: Any = None
    error: str | None = None
    placement: dict[str, Any] = field(default_factory=dict)
    submitted: float = 0.0
    collected: float = 0.0
    reason: str | None = None  # why it failed when known: STALLED, or the trial's TrialFailure.reason


def choose_gpus_per_trial(requested: float | None, cluster_gpus: float) -> float:
    """GPUs each trial asks for: 1 where the cluster has GPUs, 0 where it has none.

    A GPU request on a cluster without GPUs would queue forever, so it is refused; Ray accepts
    fractions below 1 (several trials share a GPU) or whole numbers, nothing in between.
    """
    if requested is None:
        return 1.0 if cluster_gpus >= 1 else 0.0
    if requested < 0:
        raise CovbenchError(f"--gpus-per-trial must be 0 or more, got {requested}")
    if requested > 0 and cluster_gpus == 0:
        raise CovbenchError(
            f"--gpus-per-trial {requested:g} but the Ray cluster has no GPUs (a trial would wait forever)"
        )
    if requested > 1 and requested != int(requested):
        raise CovbenchError(
            f"--gpus-per-trial must be a fraction below 1 or a whole number, got {requested:g}"
        )
    if requested > cluster_gpus:
        raise CovbenchError(
            f"--gpus-per-trial {requested:g} is more than the cluster's {cluster_gpus:g} GPUs"
        )
    return float(requested)


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds on a cluster address nothing listens on (Ray itself retries for minutes).

    'auto' and 'local' are left to Ray, which fails fast when it finds no running instance."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):
        return
    if address.startswith("ray://"):
        try:
            import grpc  # noqa: F401  (what Ray Client needs beyond Ray Core)
        except ImportError:
            raise CovbenchError(
                f"--address {address}: Ray Client needs gRPC; pip install 'covbench[client]' "
                "(or run the driver on the head node with --address auto)"
            ) from None
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise CovbenchError(f"--address {address}: expected 'auto', host:port or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise CovbenchError(
            f"--address {address}: no Ray cluster reachable at {host}:{port} ({exc})"
        ) from None


def slots(resources: dict[str, float], per_trial: Resources) -> int:
    """How many trials fit at once (the estimate the progress display uses before attempts start)."""
    fits = resources["cpus"] / per_trial.cpus if per_trial.cpus > 0 else float("inf")
    if per_trial.gpus > 0:
        fits = min(fits, resources["gpus"] / per_trial.gpus)
    return max(1, int(fits + 1e-9))


def ray_defaults(starting_local: bool) -> None:
    """Environment for Ray, set before `import ray` and inherited by every Ray process it starts.

    - `RAY_USAGE_STATS_ENABLED=0` unless set: a benchmark run reports nothing to anyone.
    - `RAY_AUTH_MODE=token` unless set, for an instance started here: Ray's own default for a new
      local instance is token auth too (a token in ~/.ray/auth_token, created when missing), but
      left implicit it logs "Token authentication is enabled..." on every run. Ray reads the mode
      once, when it is imported, so it is set only if `ray` is not imported yet (otherwise Ray
      enables it itself, notice included). Joining a cluster keeps Ray's own choice, which must
      match how that cluster was started.
    - `RAY_worker_niceness=0` unless set, for an instance started here: Ray runs its workers at
      nice 15 by default, below everything else on the machine. Trials are this program's work: on
      a workstation with one other busy process per core, nice-15 trials got a few per cent of the
      CPU and a smoke run took many times longer (docs/performance.md, "Trials and other work").
      A cluster started with `ray start` keeps its own setting."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if starting_local:
        os.environ.setdefault("RAY_worker_niceness", "0")
    if starting_local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")


class AttemptBoard:
    """The driver's record of every attempt: which number it is, where it runs, how far it got.

    Run as a Ray actor on the driver's node (`RayExecutor`); workers call `start` and `beat`, the
    driver reads `snapshot`. Keyed by the submission token, so a retry of a lost worker is attempt
    2 of the same submission, wherever it lands."""

    def __init__(self) -> None:
        self._attempts: dict[str, dict[str, Any]] = {}

    def start(self, token: str, info: dict[str, Any]) -> int:
        """Record a new attempt of submission `token`; its number (1 for the first)."""
        number = self._attempts.get(token, {}).get("attempt", 0) + 1
        self._attempts[token] = {**info, "attempt": number, "beats": 0}
        return number

    def beat(self, token: str) -> None:
        if token in self._attempts:
            self._attempts[token]["beats"] += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {token: dict(info) for token, info in self._attempts.items()}

    def forget(self, token: str) -> None:
        self._attempts.pop(token, None)


def free_gpu_memory() -> float | None:
    """Free bytes of the first visible CUDA device, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(0)
    return float(free)


def _placement(gpu_ids: list[Any]) -> dict[str, Any]:
    return {
        "gpu_ids": [str(g) for g in gpu_ids],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "host": platform.node(),
        "pid": os.getpid(),
    }


def _run_attempt(board: Any, token: str, fn: Callable[..., Any], *args: Any) -> tuple[Any, dict[str, Any]]:
    """What a Ray worker runs: announce the attempt to the driver's board, call `fn`, return its
    result with placement. The attempt number survives a dead worker because the board keeps it."""
    import ray

    started = time.time()
    gpu_ids = ray.get_gpu_ids()
    if not gpu_ids:
        # Ray leaves CUDA_VISIBLE_DEVICES unset for a task that asked for no GPU, so torch would see
        # (and use) every GPU of the node: hide them, a trial uses only what it was granted.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    info = _placement(gpu_ids)
    info.update(node_id=ray.get_runtime_context().get_node_id(), token=token, worker_started=started)
    info["attempt"] = ray.get(board.start.remote(token, info))
    beats.attach(lambda: board.beat.remote(token))  # the trial's progress (stall watch)
    try:
        result = fn(*args)
    finally:
        beats.attach(None)
    info["worker_finished"] = time.time()
    return result, info


def _without_beats(beat: dict[str, Any]) -> dict[str, Any]:
    """An attempt's placement as the records keep it (the beat count is the board's business)."""
    return {k: v for k, v in beat.items() if k != "beats"}


def _failure_reason(exc: BaseException) -> str | None:
    """The trial's own reason for failing (covbench.errors.TrialFailure), under Ray's wrapper too."""
    cause = getattr(exc, "cause", None) or exc
    return cause.reason if isinstance(cause, TrialFailure) else None


def _error_text(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    lines = [line for line in f"{type(cause).__name__}: {cause}".strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(cause).__name__)[:500]


@dataclass
class _Pending:
    tag: Any
    token: str
    submitted: float
    attempt_seen: int = 0
    beat: dict[str, Any] | None = None  # the running attempt as the board last showed it
    beats: int = -1  # its beat count when last seen
    beat_changed: float = 0.0  # when that count last changed, by the driver's monotonic clock
    last_progress: float | None = None  # the same moment by the driver's wall clock (records)


def _alive_here(beat: dict[str, Any]) -> bool:
    """False only when the attempt ran on this host and its process is gone (a dead worker whose
    retry waits for a slot); True when alive or unknowable (another node)."""
    if beat.get("host") != platform.node() or not isinstance(beat.get("pid"), int):
        return True
    try:
        os.kill(beat["pid"], 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def neutral_cwd() -> Path:
    """An empty folder of covbench's own, to stand in as the working directory Ray hands to its
    workers (see the module docstring). Kept, not deleted: a local Ray instance's processes keep it
    as their working directory."""
    path = Path(tempfile.gettempdir()) / f"covbench-ray-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    for entry in path.iterdir():  # nothing may be imported from here
        raise CovbenchError(f"{path} should be empty (covbench starts Ray from it); remove {entry.name}")
    return path


@contextlib.contextmanager
def _from_neutral_cwd() -> Iterator[None]:
    """Run the block in `neutral_cwd()`, keeping the caller's SIGTERM handler (ray.init replaces
    it with one that raises SystemExit, which would make a preempted run look finished)."""
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    before = os.getcwd()
    os.chdir(neutral_cwd())
    try:
        yield
    finally:
        os.chdir(before)
        if main and sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)


class RayExecutor:
    """Start (or join) Ray, ship shared data once, run trials as Ray tasks, stream results back.

    Args:
        address: 'auto', 'ray://host:port' or a GCS address; None reads `RAY_ADDRESS`, and without
            it a local Ray instance is started with this machine's CPUs and GPUs.
        num_cpus, num_gpus: size of a local instance (ignored when joining a cluster). Tests give
            fake GPUs this way; Ray then hands out their ids exactly as it would real ones.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None):
        address = address or os.environ.get("RAY_ADDRESS")
        ray_defaults(starting_local=address in (None, "", "local"))  # before `import ray`
        import ray

        self._ray = ray
        self.started_here = False
        self.address: str | None = None  # the GCS address once connected (for the run manifest)
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
            if address:
                kwargs["address"] = address
                self.address = address
            else:
                # "local": always a new instance, even where `ray start` left a cluster on this
                # machine (Ray would otherwise join it, and refuse num_cpus)
                cpus = num_cpus or os.cpu_count() or 1
                kwargs.update(address="local", num_cpus=cpus, include_dashboard=False)
                if num_gpus is not None:
                    kwargs["num_gpus"] = num_gpus
            try:
                with _from_neutral_cwd():
                    ray.init(**kwargs)
            except ConnectionError as exc:
                raise CovbenchError(f"--address {address}: cannot join the Ray cluster ({exc})") from None
            self.started_here = True
        try:
            self.address = ray.get_runtime_context().gcs_address or self.address
        except Exception:  # a Ray Client (ray://) session has no local GCS client: keep the given one
            pass
        self._pending: dict[Any, _Pending] = {}
        self._remote = ray.remote(_run_attempt)
        self._board: Any = None  # the AttemptBoard actor, made at the first submit

    def _attempt_board(self) -> Any:
        """The board, on the driver's node (it lives and dies with the driver); no CPU of its own,
        so it never takes a trial's slot."""
        if self._board is None:
            options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0}
            try:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                here = self._ray.get_runtime_context().get_node_id()
                # hard: a "soft" affinity sends a zero-CPU actor away from a head without CPUs
                # (measured, Ray 2.5x), onto a worker node whose loss would take the board along
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(here, soft=False)
            except Exception:  # a Ray Client driver has no node of its own: anywhere will do
                pass
            self._board = self._ray.remote(AttemptBoard).options(**options).remote()
        return self._board

    def _board_snapshot(self) -> dict[str, dict[str, Any]]:
        if self._board is None:
            return {}
        try:
            return self._ray.get(self._board.snapshot.remote(), timeout=30)
        except Exception:  # a slow answer: the next poll asks again
            return {}

    def unseen_by_nodes(self, path: Path, timeout: float = 60.0) -> list[str]:
        """The nodes (as "host (ip)") on which `path` does not exist: one probe task pinned to each
        alive node. A node that cannot answer within `timeout` counts as not seeing it."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = self._ray.remote(os.path.exists)
        asked = {}
        for node in self._ray.nodes():
            if not node.get("Alive"):
                continue
            strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ref = probe.options(num_cpus=0, max_retries=0, scheduling_strategy=strategy).remote(str(path))
            asked[ref] = f"{node.get('NodeManagerHostname')} ({node.get('NodeManagerAddress')})"
        done, late = self._ray.wait(list(asked), num_returns=len(asked), timeout=timeout)
        unseen = [asked[ref] for ref in late]
        for ref in done:
            try:
                if not self._ray.get(ref):
                    unseen.append(asked[ref])
            except Exception:
                unseen.append(asked[ref])
        for ref in late:
            self._ray.cancel(ref, force=True)
        return sorted(unseen)

    def resources(self) -> dict[str, float]:
        """Total CPUs and GPUs of the cluster (a machine without GPUs reports none)."""
        total = self._ray.cluster_resources()
        return {"cpus": float(total.get("CPU", 0)), "gpus": float(total.get("GPU", 0))}

    def gpu_memory(self, timeout: float = 60.0) -> float | None:
        """Free bytes on a GPU as a one-GPU task sees it (None: no CUDA there, e.g. fake GPUs, or
        no answer in `timeout` s). Asked of a worker, not the driver, which may have no GPU."""
        task = self._ray.remote(num_gpus=1, max_retries=0)(free_gpu_memory)
        ref = task.remote()
        done, _ = self._ray.wait([ref], timeout=timeout)
        if not done:
            self._ray.cancel(ref, force=True)
            return None
        try:
            return self._ray.get(ref)
        except Exception:  # a node that cannot start the probe: decide without it
            return None

    def nodes(self) -> list[dict[str, Any]]:
        """Alive nodes with their addresses and resources, for the run manifest."""
        return [
            {
                "host": n.get("NodeManagerHostname"),
                "ip": n.get("NodeManagerAddress"),
                "node_id": n.get("NodeID"),
                "head": "node:__internal_head__" in (n.get("Resources") or {}),
                "resources": n.get("Resources"),
            }
            for n in self._ray.nodes()
            if n.get("Alive")
        ]

    def put(self, obj: Any) -> Any:
        """Place `obj` in the object store once; tasks receive a zero-copy view of its arrays."""
        return self._ray.put(obj)

    def submit(
        self,
        tag: Any,
        fn: Callable[..., Any],
        *args: Any,
        resources: Resources,
        max_retries: int = 2,
    ) -> None:
        """Queue `fn(*args)` as a task; a dead worker is retried `max_retries` times, an exception
        raised by `fn` is not (a retry would not fix a bug). Each attempt announces itself to the
        attempt board (see the module docstring)."""
        token = uuid.uuid4().hex
        task = self._remote.options(
            num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=max_retries, retry_exceptions=False
        )
        ref = task.remote(self._attempt_board(), token, fn, *args)
        self._pending[ref] = _Pending(tag, token, time.time())

    def pending(self) -> int:
        return len(self._pending)

    def _finish(self, ref: Any) -> Finished:
        p = self._pending.pop(ref)
        try:
            result, placement = self._ray.get(ref)
            out = Finished(p.tag, result=result, placement=placement)
        except Exception as exc:  # the task's own error, or a worker that died too often
            beat = self._board_snapshot().get(p.token) or p.beat or {}
            out = Finished(p.tag, error=_error_text(exc), placement=_without_beats(beat))
            out.reason = _failure_reason(exc)
        out.placement["last_progress"] = p.last_progress
        out.submitted, out.collected = p.submitted, time.time()
        self._forget(p.token)
        return out

    def _forget(self, token: str) -> None:
        if self._board is not None:
            self._board.forget.remote(token)

    def _poll(self, on_started: Callable[[Any, dict[str, Any]], None] | None) -> None:
        """Read the board once: report attempts that began, note when each one last progressed."""
        board = self._board_snapshot()
        now = time.monotonic()
        for p in self._pending.values():
            beat = board.get(p.token)
            if not beat:
                continue
            if beat.get("attempt", 0) > p.attempt_seen:
                p.attempt_seen, p.beat, p.beats = beat["attempt"], beat, -1
                if on_started is not None:
                    on_started(p.tag, _without_beats(beat))
            if beat.get("beats") != p.beats:
                p.beats, p.beat_changed, p.last_progress = beat.get("beats"), now, time.time()

    def _stalled(self, stall_timeout: float) -> list[Any]:
        """Refs of running attempts whose beat count has not changed for `stall_timeout` s."""
        now, out = time.monotonic(), []
        for ref, p in self._pending.items():
            if p.attempt_seen == 0:
                continue  # not started yet: queued work is not stalled
            if now - p.beat_changed > stall_timeout:
                if p.beat is not None and not _alive_here(p.beat):
                    p.beat_changed = now  # died; its retry is queued, and starts a new count
                    continue
                out.append(ref)
        return out

    def _end_stalled(self, ref: Any, stall_timeout: float) -> Finished:
        self._ray.cancel(ref, force=True)  # kills the worker process; not retried
        p = self._pending.pop(ref)
        error = (
            f"stalled: no progress (a training step, an epoch or an evaluation step) for "
            f"{stall_timeout:g} s (--stall-timeout); its worker was stopped"
        )
        placement = {**_without_beats(p.beat or {}), "last_progress": p.last_progress}
        out = Finished(p.tag, error=error, placement=placement, reason=STALLED)
        out.submitted, out.collected = p.submitted, time.time()
        self._forget(p.token)
        return out

    def as_completed(
        self,
        on_started: Callable[[Any, dict[str, Any]], None] | None = None,
        poll_seconds: float = 0.5,
        stall_timeout: float | None = None,
    ) -> Iterator[Finished]:
        """Yield each submitted task as soon as it finishes, in completion order; between
        completions, call `on_started(tag, placement)` for every attempt that began. With
        `stall_timeout`, an attempt without progress for that many seconds is ended and yielded
        as failed (`reason` STALLED)."""
        while self._pending:
            done, _ = self._ray.wait(list(self._pending), num_returns=1, timeout=poll_seconds)
            self._poll(on_started)
            if done:
                yield self._finish(done[0])
            if stall_timeout:
                for ref in self._stalled(stall_timeout):
                    yield self._end_stalled(ref, stall_timeout)

    def drain_ready(self) -> list[Finished]:
        """The tasks that have already finished, without waiting (used on Ctrl-C)."""
        if not self._pending:
            return []
        done, _ = self._ray.wait(list(self._pending), num_returns=len(self._pending), timeout=0)
        return [self._finish(ref) for ref in done]

    def cancel_all(self) -> None:
        """Kill every task still queued or running; their trial folders keep the last checkpoint."""
        for ref in list(self._pending):
            self._ray.cancel(ref, force=True)
        self._pending.clear()

    def shutdown(self) -> None:
        """Stop Ray only if this executor started it (tests and clusters keep theirs)."""
        if self._board is not None:
            with contextlib.suppress(Exception):
                self._ray.kill(self._board)
            self._board = None
        if self.started_here:
            self._ray.shutdown()


class InProcessExecutor:
    """Same verbs, no Ray: each trial runs in this process when its result is asked for."""

    def __init__(self, **_: Any):
        self._queue: list[tuple[Any, Callable[..., Any], tuple[Any, ...], float]] = []
        self.address = None

    def resources(self) -> dict[str, float]:
        import torch

        return {"cpus": float(os.cpu_count() or 1), "gpus": float(torch.cuda.device_count())}

    def gpu_memory(self, timeout: float = 60.0) -> float | None:
        return free_gpu_memory()

    def nodes(self) -> list[dict[str, Any]]:
        return [{"host": platform.node(), "ip": None, "resources": self.resources()}]

    def unseen_by_nodes(self, path: Path, timeout: float = 60.0) -> list[str]:
        return [] if path.exists() else [platform.node()]

    def put(self, obj: Any) -> Any:
        return obj

    def submit(
        self,
        tag: Any,
        fn: Callable[..., Any],
        *args: Any,
        resources: Resources,
        max_retries: int = 0,
    ) -> None:
        self._queue.append((tag, fn, args, time.time()))

    def pending(self) -> int:
        return len(self._queue)

    def as_completed(
        self,
        on_started: Callable[[Any, dict[str, Any]], None] | None = None,
        poll_seconds: float = 0.5,
        stall_timeout: float | None = None,  # not enforced: a trial in this process cannot be killed
    ) -> Iterator[Finished]:
        while self._queue:
            tag, fn, args, submitted = self._queue.pop(0)
            info = {**_placement([]), "attempt": 1, "worker_started": time.time()}
            if on_started is not None:
                on_started(tag, info)
            try:
                out = Finished(tag, result=fn(*args), placement=info)
                info["worker_finished"] = time.time()
            except Exception as exc:
                out = Finished(tag, error=f"{type(exc).__name__}: {exc}", placement=info)
                out.reason = _failure_reason(exc)
            out.submitted, out.collected = submitted, time.time()
            yield out

    def drain_ready(self) -> list[Finished]:
        return []

    def cancel_all(self) -> None:
        self._queue.clear()

    def shutdown(self) -> None:
        pass
