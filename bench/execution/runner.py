"""`covbench run`: prepare the data once, fan trials out, collect results into the run folder.

One trial per (model, seed, fold), skipping those the run folder already has (covbench.folder.state
decides what is done and whether the folder fits this run). Trials share GPUs as covbench.execution.packing
decides, unless `--gpus-per-trial` says otherwise; each finished trial is recorded as it arrives.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from covbench import registry
from covbench.checks import check_config, models_record
from covbench.config import CheckpointPolicy, RunConfig
from covbench.datasets import SliceSet, cross
from covbench.datasets.prepare import Prepared, prepare_slices
from covbench.datasets.preprocess import PreprocessConfig
from covbench.datasets.splits import check_lesions, make_splits, split_indices
from covbench.errors import CovbenchError, RunFolderWarning
from covbench.execution.executor import Executor
from covbench.execution.interrupt import received, trap_signals
from covbench.execution.options import ExecutionOptions
from covbench.execution.packing import Packing, could_pack, largest_trial_memory, plan_packing
from covbench.execution.rounds import Rounds
from covbench.execution.scheduler import (
    Finished,
    InProcessExecutor,
    RayExecutor,
    Resources,
    slots,
)
from covbench.faults import FaultHooks
from covbench.folder.io import (
    trial_records,
    write_bytes,
    write_csv,
    write_json,
)
from covbench.folder.key import RunKey
from covbench.folder.layout import RunFolder, TrialFolder
from covbench.folder.manifest import code_versions, environment_manifest, now_iso
from covbench.folder.state import (
    check_data_key,
    check_run_dir,
    collect_cases,
    is_done,
    load_run_config,
    read_previous_environment,
    split_manifest,
    trial_index,
    write_test_slices,
    writing_run_folder,
)
from covbench.folder.storage import Storage
from covbench.folder.stored_config import StoredConfig
from covbench.training.loop import local_amp
from covbench.training.trial import TrialResult, TrialSpec, run_fold_trial


@dataclass
class RunOutcome:
    run_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    stopped_by: str | None = None  # what ended an interrupted run: a signal's name or an error
    wall_seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)  # code versions the trials ran with
    session_written: bool = False  # environment.json of this session is on disk (finalize it)
    manifest: dict[str, Any] = field(default_factory=dict)  # that environment.json, finalized at the end


def data_request(
    cfg: RunConfig, test: bool = False
) -> tuple[registry.DatasetSpec, dict[str, Any], PreprocessConfig]:
    """The dataset adapter, its options and the pre-processing this run asks for; `test`: those of
    its `--test-dataset`, pre-processed the same way (covbench.datasets.cross)."""
    name, given = (cfg.test_data["dataset"], cfg.test_data["options"]) if test else (cfg.dataset, {})
    spec = registry.get_dataset(name)
    options = dict(cfg.phantom) if not spec.needs_data_dir else {}
    options.update(given if test else cfg.dataset_options)  # the adapter refuses keys it lacks
    if cfg.spacing is not None and spec.takes_spacing:
        options["spacing"] = tuple(cfg.spacing)  # build_config checked the dataset takes it
    return spec, options, PreprocessConfig(image_size=cfg.image_size, **cfg.preprocess)


def prepare_data(cfg: RunConfig) -> Prepared:
    """Read the dataset through its adapter (or the pre-processing cache) and split it into folds;
    with `--test-dataset`, read that one too and test on all of its patients."""
    spec, options, pre = data_request(cfg)
    prepared = prepare_slices(spec, cfg.data_dir, pre, options=options)  # checks the data folder
    folds = split_folds(cfg, prepared.slices, prepared.part_of)
    if cfg.test_data:
        test_spec, test_options, _ = data_request(cfg, test=True)
        name, where = test_spec.name, cfg.test_data["data_dir"]
        try:
            test = prepare_slices(test_spec, where, pre, options=test_options)
        except CovbenchError as exc:  # which of the two datasets it is about
            raise CovbenchError(f"--test-dataset {name}: {exc}") from None
        folds = cross.cross_manifests(folds, test, name, cross.fingerprint_record(name, where, test))
        prepared = cross.combine(prepared, test, name)
        check_lesions(prepared.slices, folds)  # the test dataset must have lesions to measure
    prepared.folds = folds
    return prepared


def split_folds(cfg: RunConfig, slices: SliceSet, part_of: dict[str, str | None]) -> list[dict]:
    """The run's split manifests of `slices`, one per fold (`--dry-run` makes the same refusals)."""
    return make_splits(
        cfg.split,
        slices,
        seed=cfg.split_seed,
        folds=cfg.folds,
        part_of=part_of,
        val_fraction=cfg.val_fraction,
        **({"fractions": cfg.split_fractions} if cfg.split_fractions else {}),
    )


def plain_arrays(slices: SliceSet) -> SliceSet:
    """The same slices with every field a plain ndarray (a memmap's pages are read as needed)."""
    return SliceSet(**{f.name: np.asarray(getattr(slices, f.name)) for f in fields(SliceSet)})


def _timing(f: Finished) -> dict[str, Any]:
    """Where and when the attempt ran, as seen by the worker and by the driver."""
    p = f.placement
    started, finished = p.get("worker_started"), p.get("worker_finished")
    return {
        "attempts": p.get("attempt", 1),
        "gpu_ids": p.get("gpu_ids", []),
        "cuda_visible_devices": p.get("cuda_visible_devices"),
        "host": p.get("host"),
        "node_id": p.get("node_id"),
        "pid": p.get("pid"),
        "last_progress": p.get("last_progress"),  # the driver's clock, when the attempt last progressed
        "submitted": f.submitted,
        "worker_started": started,
        "worker_finished": finished,
        "collected": f.collected,
        "queue_seconds": started - f.submitted if started else None,
        "return_seconds": f.collected - finished if finished else None,
    }


def _record_finished(f: Finished, outcome: RunOutcome, emit: Callable[[str, dict[str, Any]], None]) -> None:
    """Write one finished trial into its folder: results first, the record last (it marks done).
    The driver is the only writer of the run folder: the trial's results came back by value."""
    spec: TrialSpec = f.tag
    trial = TrialFolder(Path(spec.trial_dir))
    timing = _timing(f)
    if f.error is not None:
        outcome.failed[spec.name] = f.error
        write_json(
            trial.failure,
            {
                "model": spec.model,
                "seed": spec.seed,
                "fold": spec.fold,
                "status": "failed",
                "reason": _failure_reason(f),
                "error": f.error,
                "failed_at": now_iso(),
                **timing,
            },
        )
        emit("failed", {"trial": spec.name, "error": f.error})
        return
    result: TrialResult = f.result
    # the code that trained it (see check_versions); where and when it ran
    record = replace(result.record, **timing, versions=outcome.versions or None)
    if record.checkpoint_note:  # a damaged checkpoint was set aside: say so, once
        warnings.warn(f"{spec.name}: {record.checkpoint_note}", RunFolderWarning, stacklevel=2)
    write_csv(trial.cases, pd.DataFrame(result.rows))
    if result.epochs:
        write_csv(trial.epochs, pd.DataFrame(result.epochs))
    if result.predictions:
        write_bytes(trial.predictions, result.predictions)
    write_json(trial.record, record.to_dict())  # written last: marks the trial done
    trial.failure.unlink(missing_ok=True)
    outcome.done.append(spec.name)
    emit(
        "done",
        {
            "trial": spec.name,
            "record": record,
            "test_dice": float(np.nanmean([r["dice"] for r in result.rows])) if result.rows else float("nan"),
        },
    )


def _finalize(run_dir: Path, outcome: RunOutcome, t0: float, key: str) -> None:
    records = trial_records(run_dir)  # each record.json read once, for the table and the manifest
    cases = collect_cases(run_dir, key, records)  # the key config.json holds: this run wrote it
    if not cases.empty:
        write_csv(RunFolder(run_dir).cases, cases)
    outcome.wall_seconds = time.perf_counter() - t0
    env_path = RunFolder(run_dir).environment
    env = dict(outcome.manifest)  # as this session wrote it at the start: the driver is its only writer
    status = "interrupted" if outcome.interrupted else ("failed" if outcome.failed else "complete")
    env.pop("stopped_by", None)
    if outcome.stopped_by:
        env["stopped_by"] = outcome.stopped_by
    write_json(
        env_path,
        {
            **env,
            "finished": now_iso(),
            "wall_seconds": outcome.wall_seconds,
            "status": status,
            "failed": sorted(outcome.failed),
            "trials": trial_index(run_dir, records),
        },
    )


def execute(
    cfg: RunConfig,
    run_dir: Path,
    options: ExecutionOptions | None = None,
    *,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    **settings: Any,
) -> RunOutcome:
    """Run every (model, seed, fold) trial not already done in `run_dir`, as `options` (or the
    ExecutionOptions fields given as keywords) say, holding the folder's lock throughout
    (covbench.folder.lock): a second run, resume or report on the folder stops at once, and the
    configuration check and config.json have a single writer. With a storage, its prefix is held
    too (`Storage.lock`).

    SIGINT and SIGTERM stop the run cleanly (covbench.execution.interrupt): what finished is recorded, the
    rest is cancelled, environment.json says "interrupted", and `Interrupted` is raised."""
    opts = replace(options or ExecutionOptions(), **settings)
    checkpoint = opts.validate(cfg)  # before anything is written or reached over the network
    run_dir = Path(run_dir).absolute()  # workers do not share the driver's working directory
    emit = on_event or (lambda kind, info: None)
    with writing_run_folder(run_dir), trap_signals():
        previous = read_previous_environment(run_dir)  # the folder's last session, read once
        opts = replace(opts, storage=run_storage(run_dir, opts.storage, previous))
        with opts.storage.lock(_lock_holder(run_dir)) if opts.storage else contextlib.nullcontext():
            checked = _check(cfg, run_dir, opts, checkpoint, previous, emit)
            return _run(cfg, run_dir, opts, checked, emit)


def resume_config(run_dir: Path, out: Path | None = None, given: Sequence[str] = ()) -> RunConfig:
    """The rule of `--resume DIR`: the configuration is DIR's own (config.json), so options that
    would change it (`given`, as the user wrote them) and another `--out` are refused. Execution
    options (cluster, storage, retries, ...) may differ: they do not change the numbers."""
    if given:
        raise CovbenchError(
            f"--resume takes the configuration from {run_dir}/config.json; drop {', '.join(given)}"
        )
    if out is not None and Path(out).resolve() != Path(run_dir).resolve():
        raise CovbenchError(f"--resume {run_dir} and --out {out} name two run folders; give one")
    cfg = load_run_config(run_dir)
    registry.get_dataset(cfg.dataset)  # a dataset adapter that is not installed here: say so now
    return cfg


def run_storage(run_dir: Path, given: Storage | None, environment: dict[str, Any] | None) -> Storage | None:
    """Where this run's trials keep checkpoints: `--storage`, else the storage an earlier session
    of the folder used (`environment`: its environment.json; its checkpoints are there), else None
    (the run folder itself). A storage that differs from the folder's is refused; the chosen one
    is validated before any work."""
    previous = (environment or {}).get("storage")
    if given is not None and previous and given.uri != previous:
        raise CovbenchError(
            f"--storage {given.uri}: {run_dir} keeps its checkpoints in {previous}; "
            "give that, or no --storage"
        )
    storage = given or (
        Storage.parse(previous, option=f"{run_dir}/environment.json storage") if previous else None
    )
    if storage is not None:
        storage.validate()  # unreachable, missing bucket, bad credentials, not writable: exit 2 now
    return storage


def _lock_holder(run_dir: Path) -> dict[str, Any]:
    return {
        "command": " ".join(sys.argv)[:300],
        "pid": os.getpid(),
        "host": platform.node(),
        "since": now_iso(),
        "run_dir": str(run_dir),
    }


def _failure_reason(f: Finished) -> str:
    """One word for failure.json: stalled, diverged (any TrialFailure's reason) or error."""
    return f.reason or "error"


def _stop_reason(exc: BaseException) -> str:
    """The signal's name for an interrupt (Ray may have replaced our exception by a plain
    KeyboardInterrupt; covbench.execution.interrupt still knows), else the error."""
    if isinstance(exc, KeyboardInterrupt):
        return getattr(exc, "name", None) or received() or "SIGINT"
    return f"{type(exc).__name__}: {exc}"[:300]


def _stop(executor: Executor, outcome: RunOutcome, emit: Callable[[str, dict[str, Any]], None]) -> None:
    """Keep the trials that finished before the stop, then cancel every other one (their
    checkpoints stay for the next run)."""
    try:
        for finished in executor.drain_ready():
            _record_finished(finished, outcome, emit)
    finally:
        try:
            executor.cancel_all()
        except Exception:  # Ray already gone: shutdown() below ends what is left
            pass


@dataclass
class _Checked:
    """What the run will do, settled before Ray starts: checked models, prepared data, the key."""

    checkpoint: CheckpointPolicy
    versions: dict[str, str]
    checks: dict[str, Any]
    data: Prepared
    run_key: RunKey
    parts: list[dict[str, np.ndarray]]
    previous: dict[str, Any] | None  # environment.json of the folder's last session
    stored: StoredConfig | None = None  # config.json as found, read once; None in a new folder
    next_round: Callable[[], None] | None = None  # rounds of seeds: look, then queue the next round

    @property
    def key(self) -> str:
        """The key as every record and checkpoint spells it (config.json's `_key`)."""
        return str(self.run_key)


def _check(
    cfg: RunConfig,
    run_dir: Path,
    opts: ExecutionOptions,
    checkpoint: CheckpointPolicy,
    previous: dict[str, Any] | None,
    emit: Callable[[str, dict[str, Any]], None],
) -> _Checked:
    """Check the folder, the models and the data; nothing of this run is written yet."""
    versions = code_versions(cfg.models)  # covbench's and each model plugin's distribution version
    stored = check_run_dir(run_dir, cfg, versions, opts.allow_version_change)
    # Every model meets its contract before any data is prepared or trial starts (checks.py).
    emit("status", {"message": "checking models"})
    checks = check_config(cfg, timeout=opts.stall_timeout or None)
    emit("status", {"message": "preparing data"})
    data = prepare_data(cfg)
    key = RunKey.of(cfg.key(), data.fingerprint)
    check_data_key(run_dir, key, stored)
    parts = [split_indices(data.slices, manifest) for manifest in data.folds]
    return _Checked(checkpoint, versions, checks, data, key, parts, previous, stored)


def _run(
    cfg: RunConfig,
    run_dir: Path,
    opts: ExecutionOptions,
    checked: _Checked,
    emit: Callable[[str, dict[str, Any]], None],
) -> RunOutcome:
    """Launch the pending trials and collect them as they finish.

    Ctrl-C, SIGTERM (KeyboardInterrupt) or any error of the driver itself records the trials that
    already finished, kills the rest (their checkpoints stay for the next run), writes cases.csv for
    what is done and environment.json with status "interrupted", and re-raises.
    """
    t0 = time.perf_counter()
    outcome = RunOutcome(run_dir, versions=checked.versions)
    executor: Executor | None = None
    stopped_by: BaseException | None = None
    try:
        executor = InProcessExecutor() if opts.debug else RayExecutor(address=opts.address)
        if opts.storage is None:
            check_workers_see(executor, run_dir)  # before anything of this run is written
        _launch(executor, cfg, run_dir, opts, checked, outcome, emit)
        _collect(executor, outcome, emit, opts.stall_timeout or None, checked.next_round)
    except BaseException as exc:  # a signal (KeyboardInterrupt) or an error of the driver itself
        outcome.interrupted, outcome.stopped_by = True, _stop_reason(exc)
        stopped_by = exc
        if executor is not None:
            _stop(executor, outcome, emit)
        raise
    finally:
        if executor is not None:
            executor.shutdown()
        if outcome.session_written:
            try:
                _finalize(run_dir, outcome, t0, checked.key)
            except OSError:
                # A full or read-only disk that stopped the run fails here again: the first error,
                # naming the write that failed first, is the one to report.
                if not isinstance(stopped_by, OSError):
                    raise
    return outcome


def _launch(
    executor: Executor,
    cfg: RunConfig,
    run_dir: Path,
    opts: ExecutionOptions,
    checked: _Checked,
    outcome: RunOutcome,
    emit: Callable[[str, dict[str, Any]], None],
) -> None:
    """Write what the run is (configuration, models, split, test slices, manifest), then submit
    every pending trial."""
    data, parts, folder = checked.data, checked.parts, RunFolder(run_dir)
    stored = checked.stored or StoredConfig.new(cfg)
    stored.continued(cfg, checked.run_key, checked.versions, local_amp(cfg.amp)).write(run_dir)
    write_json(folder.models, models_record(checked.checks))  # params, FLOPs, memory per model
    # the unit of ASSD / HD95 / the NSD tolerance travels with the split: the report reads it there
    split_record = {**split_manifest(cfg, data.folds), "distance_unit": data.distance_unit}
    write_json(folder.split, split_record)
    write_test_slices(folder.test_slices, data.slices, parts)
    rounds = Rounds(cfg, run_dir, checked.key, len(parts)) if cfg.rounds else None
    todo = _pending_trials(cfg, run_dir, checked.key, parts, outcome, rounds.advance() if rounds else None)
    resources = executor.resources()
    packing = _plan_packing(executor, cfg, checked.checks, parts, opts.gpus_per_trial, resources, len(todo))
    per_trial = Resources(opts.cpus_per_trial, packing.gpus_per_trial)
    extra = {
        "ray_resources": resources,
        "nodes": executor.nodes(),
        "resources_per_trial": {"cpus": opts.cpus_per_trial, "gpus": packing.gpus_per_trial},
        "packing": packing.to_dict(),
        "checkpoint_every_seconds": checked.checkpoint.every_seconds,
        "max_retries": opts.max_retries,
        "storage": opts.storage.uri if opts.storage is not None else None,
    }
    outcome.manifest = _run_manifest(executor, data, checked.previous, extra)
    write_json(folder.environment, outcome.manifest)
    outcome.session_written = True

    # Once per run: every node fetches it once, every fold shares it. Plain arrays, not the
    # cache's memmaps: Ray hands ndarrays to workers zero-copy but would pickle a memmap whole.
    shared = executor.put(plain_arrays(data.slices))
    faults = FaultHooks.from_env()  # test-only (covbench.faults); empty in real runs
    threads = max(1, int(opts.cpus_per_trial))

    def submit(trials: list[tuple[str, int, int]]) -> None:
        for model, seed, fold in trials:
            tdir = folder.trial_of(model, seed, fold).path
            spec = TrialSpec(
                model,
                seed,
                fold,
                cfg,
                checked.key,
                str(tdir),
                threads,
                checked.checkpoint,
                faults,
                opts.storage,
            )
            tdir.mkdir(parents=True, exist_ok=True)
            executor.submit(spec, run_fold_trial, spec, shared, parts[fold], resources=per_trial,
                            max_retries=opts.max_retries)  # fmt: skip

    submit(todo)
    if rounds is not None:
        checked.next_round = lambda: _next_round(
            rounds, cfg, run_dir, checked.key, parts, outcome, submit, emit
        )
    emit(
        "start",
        {
            "total": len(todo) + len(outcome.skipped),
            "skipped": len(outcome.skipped),
            "cpus": resources["cpus"],
            "gpus": resources["gpus"],
            "slots": slots(resources, per_trial),
            "packing": packing.reason,
            "key": checked.key,  # what the run holds, for the tracker: no need to read config.json back
            "config": cfg.to_dict(),
            "versions": checked.versions,
        },
    )


def check_workers_see(executor: Executor, run_dir: Path) -> None:
    """Without --storage, trials keep their checkpoints in the run folder: every node must see it
    (a shared mount at the same path). Checked before any training, with one probe file."""
    nodes = executor.nodes()
    if len(nodes) < 2:
        return
    probe = run_dir / f".covbench-probe-{uuid.uuid4().hex[:12]}"
    write_json(probe, {"written": now_iso()})
    try:
        unseen = executor.unseen_by_nodes(probe)
    finally:
        probe.unlink(missing_ok=True)
    if unseen:
        raise CovbenchError(
            f"--out {run_dir} is not visible on {len(unseen)} of {len(nodes)} Ray nodes "
            f"({', '.join(unseen[:3])}{', ...' if len(unseen) > 3 else ''}): mount it at the same path "
            "on every node, or keep checkpoints on object storage with --storage s3://BUCKET/PREFIX "
            "(docs/cluster.md)"
        )


def trial_order(cfg: RunConfig, n_folds: int) -> list[tuple[str, int, int]]:
    """(model, seed, fold) of every trial of the configuration in the order they are submitted:
    seeds first, so an interrupted run has whole seeds of every model (`--dry-run` lists them so)."""
    return [(m, s, f) for s in cfg.seeds for f in range(n_folds) for m in cfg.models]


def _pending_trials(
    cfg: RunConfig,
    run_dir: Path,
    key: str,
    parts: list[dict[str, np.ndarray]],
    outcome: RunOutcome,
    trials: list[tuple[str, int, int]] | None = None,
) -> list[tuple[str, int, int]]:
    """(model, seed, fold) of every trial still to run, seeds first; done ones go to `skipped`.
    `trials`: a round's (covbench.execution.rounds), else every seed of the configuration."""
    if trials is None:
        trials = trial_order(cfg, len(parts))
    todo = []
    for model, seed, fold in trials:
        trial = RunFolder(run_dir).trial_of(model, seed, fold)
        if is_done(trial.path, key):
            if trial.name not in outcome.skipped:
                outcome.skipped.append(trial.name)
        else:
            todo.append((model, seed, fold))
    return todo


def _next_round(
    rounds: Rounds,
    cfg: RunConfig,
    run_dir: Path,
    key: str,
    parts: list[dict[str, np.ndarray]],
    outcome: RunOutcome,
    submit: Callable[[list[tuple[str, int, int]]], None],
    emit: Callable[[str, dict[str, Any]], None],
) -> None:
    """After a trial is recorded: when its round is complete, look and queue the next round."""
    if rounds.finished:
        return
    looked = len(rounds.looks)
    trials = rounds.advance(set(outcome.failed))
    for r in rounds.looks[looked:]:
        states = ", ".join(f"{p.a}-{p.b} {p.verdict} ({p.reason})" for p in r.pairs)
        emit("round", {"round": r.round, "seeds": r.seeds, "pairs": states})
    if len(rounds.looks) == looked or rounds.finished:
        return  # the round is still running, or the run is decided
    todo = _pending_trials(cfg, run_dir, key, parts, outcome, trials)
    submit(todo)
    emit("more", {"total": len(todo)})


def _plan_packing(
    executor: Executor,
    cfg: RunConfig,
    checks: Mapping[str, Any],
    parts: list[dict[str, np.ndarray]],
    requested: float | None,
    resources: dict[str, float],
    n_trials: int,
) -> Packing:
    """GPUs per trial: `--gpus-per-trial` if given, else as many trials per GPU as fit and pay
    (covbench.execution.packing), from the contract check's memory figures and the GPU's free memory."""
    resident = max((len(p["train"]) + len(p["val"]) for p in parts), default=0)
    trial_memory = largest_trial_memory(checks.values(), resident, cfg.image_size)
    gpu_memory = executor.gpu_memory() if could_pack(requested, resources["gpus"], n_trials) else None
    return plan_packing(
        requested, resources["gpus"], n_trials=n_trials, trial_memory=trial_memory, gpu_memory=gpu_memory
    )


def _run_manifest(
    executor: Executor, data: Prepared, previous: dict[str, Any] | None, extra: dict[str, Any]
) -> dict[str, Any]:
    """environment.json at the start of this session; earlier sessions are kept in a list."""
    earlier = [*(previous or {}).get("previous_sessions", [])]
    if previous:
        earlier.append({k: previous.get(k) for k in ("started", "finished", "status", "command")})
    return environment_manifest(
        data.fingerprint,
        {
            "started": now_iso(),
            "ray_address": executor.address,
            "data_cache": data.cache_path,
            "n_cases": data.n_cases,
            "n_slices": len(data.slices),
            "previous_sessions": earlier,
            **extra,
        },
    )


def _collect(
    executor: Executor,
    outcome: RunOutcome,
    emit: Callable[[str, dict[str, Any]], None],
    stall_timeout: float | None = None,
    next_round: Callable[[], None] | None = None,
) -> None:
    """Record each trial as it finishes (or stalls); report each attempt as it starts. With
    rounds of seeds, `next_round` runs after each record: the look and the next round's trials are
    queued the moment a round's last trial is in (the iterator picks new submissions up)."""

    def started(spec: TrialSpec, beat: dict[str, Any]) -> None:
        kind = "started" if beat.get("attempt", 1) == 1 else "retry"
        emit(
            kind,
            {
                "trial": spec.name,
                "attempt": beat.get("attempt", 1),
                "gpu_ids": beat.get("gpu_ids"),
                "host": beat.get("host"),
                "node_id": beat.get("node_id"),
            },
        )

    for finished in executor.as_completed(on_started=started, stall_timeout=stall_timeout):
        _record_finished(finished, outcome, emit)
        if next_round is not None:
            next_round()
