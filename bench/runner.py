"""`covbench run`: prepare the data once, fan trials out, collect results into the run folder.

One trial per (model, seed, fold). The run folder is what makes a run restartable: a trial whose
`record.json` carries this run's key is done and skipped; one with a `checkpoint.pt` continues
from it (one with `weights.pt` is only evaluated again); a folder whose config differs is refused.
Trials share GPUs as covbench.packing decides, unless `--gpus-per-trial` says otherwise.
"""

from __future__ import annotations

import csv
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from covbench import registry
from covbench.checkpoint import WEIGHTS, CheckpointPolicy
from covbench.checks import check_config, models_record
from covbench.config import DEFAULT_CHECKPOINT_SECONDS, RunConfig
from covbench.datasets import SliceSet
from covbench.datasets.prepare import Prepared, prepare_slices
from covbench.datasets.preprocess import PreprocessConfig
from covbench.datasets.splits import make_splits, split_indices
from covbench.errors import CovbenchError, DamagedFile, RunFolderWarning
from covbench.executor import Executor
from covbench.faults import FaultHooks
from covbench.lock import run_lock
from covbench.manifest import code_versions, environment_manifest, now_iso
from covbench.packing import Packing, plan_packing, trial_memory_bytes
from covbench.scheduler import (
    Finished,
    InProcessExecutor,
    RayExecutor,
    Resources,
    check_address,
    slots,
)
from covbench.store import (
    atomic_path,
    npz_shapes,
    read_csv,
    read_json,
    read_json_object,
    read_record,
    set_aside,
    trial_name,
    write_csv,
    write_json,
)
from covbench.trial import TrialResult, TrialSpec, run_fold_trial

HEARTBEAT = "attempt.json"  # written by each attempt as it starts (see covbench.scheduler)
CASE_COLUMNS = ("model", "seed", "fold", "case")  # one row per (model, seed, fold, case)


@dataclass
class RunOutcome:
    run_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    wall_seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)  # code versions the trials ran with


def check_folds(cfg: RunConfig) -> None:
    """`--folds K` means K-fold cross-validation; any other split has its own fold count."""
    if cfg.folds < 1:
        raise CovbenchError(f"--folds must be positive, got {cfg.folds}")
    if cfg.folds > 1 and cfg.split != "kfold":
        raise CovbenchError(
            f"--folds {cfg.folds} needs --split kfold (split {cfg.split!r} has its own folds)"
        )
    if cfg.split == "kfold" and cfg.folds < 2:
        raise CovbenchError("--split kfold needs --folds 2 or more")


def prepare_data(cfg: RunConfig) -> Prepared:
    """Read the dataset through its adapter (or the pre-processing cache) and split it into folds."""
    spec = registry.get_dataset(cfg.dataset)
    options = dict(cfg.phantom) if not spec.needs_data_dir else {}
    if cfg.spacing is not None:
        options["spacing"] = tuple(cfg.spacing)  # build_config checked the dataset takes it
    pre = PreprocessConfig(image_size=cfg.image_size, **cfg.preprocess)
    prepared = prepare_slices(spec, cfg.data_dir, pre, options=options)  # checks the data folder
    prepared.folds = make_splits(
        cfg.split,
        prepared.slices,
        seed=cfg.split_seed,
        folds=cfg.folds,
        part_of=prepared.part_of,
        val_fraction=cfg.val_fraction,
    )
    return prepared


def split_manifest(cfg: RunConfig, folds: list[dict[str, Any]]) -> dict[str, Any]:
    """split.json: every fold's parts; a single-fold split also keeps its parts at the top level."""
    out: dict[str, Any] = {
        "strategy": cfg.split,
        "seed": cfg.split_seed,
        "n_folds": len(folds),
        "folds": folds,
    }
    if len(folds) == 1:
        out.update({k: folds[0][k] for k in ("train", "val", "test")})
    return out


def plain_arrays(slices: SliceSet) -> SliceSet:
    """The same slices with every field a plain ndarray (a memmap's pages are read as needed)."""
    return SliceSet(**{f.name: np.asarray(getattr(slices, f.name)) for f in fields(SliceSet)})


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's config.json as stored (with `_key`, `_versions`); None when there is none.
    One that is not JSON, or not a covbench configuration, raises DamagedFile."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return None
    data = read_json(path)
    try:
        RunConfig.from_dict({k: v for k, v in data.items() if not k.startswith("_")})
    except (AttributeError, TypeError, KeyError, ValueError) as exc:
        raise DamagedFile(path, f"not a covbench configuration: {exc}") from None
    return data


def _heal_config(run_dir: Path, cfg: RunConfig, damage: DamagedFile) -> None:
    """A damaged config.json: set it aside (the run writes it again) when every finished trial in
    the folder belongs to this configuration; otherwise nothing says which one the folder holds."""
    keys = set()
    for tdir in sorted((run_dir / "trials").glob("*")):
        try:
            record = read_json(tdir / "record.json") if (tdir / "record.json").exists() else None
        except DamagedFile:
            continue  # counts as not done; dealt with when the trial comes up
        if isinstance(record, dict) and record.get("config_key"):
            keys.add(str(record["config_key"]).split("-")[0])
    if keys - {cfg.key()}:
        raise CovbenchError(
            f"{damage}, and {run_dir} holds trials of another configuration; use another --out"
        )
    set_aside(Path(damage.path), f"is damaged ({damage.why}); its trials match this configuration, "
              "so this run writes it again")  # fmt: skip


def check_run_dir(
    run_dir: Path,
    cfg: RunConfig,
    versions: dict[str, str] | None = None,
    allow_version_change: bool = False,
) -> None:
    """Refuse to mix results of two different configurations, or of two code versions (see
    `check_versions`), in one folder. Call it holding the folder's lock (covbench.lock)."""
    try:
        stored = read_config(run_dir)
    except DamagedFile as exc:
        _heal_config(Path(run_dir), cfg, exc)
        return
    if stored is None:
        return
    old = RunConfig.from_dict({k: v for k, v in stored.items() if not k.startswith("_")})
    if old.key() != cfg.key():
        changed = sorted(k for k, v in cfg.trial_config().items() if old.trial_config().get(k) != v)
        raise CovbenchError(
            f"{run_dir} holds a run with a different configuration (changed: {', '.join(changed)}); "
            "use another --out"
        )
    if versions is not None:
        check_versions(run_dir, stored.get("_versions"), versions, allow_version_change)


def version_changes(stored: dict[str, str] | None, current: dict[str, str]) -> dict[str, tuple[Any, Any]]:
    """{distribution: (stored version, current version)} for every one that differs. A folder
    written before versions were recorded (no `_versions`) has nothing to compare."""
    if not stored or not isinstance(stored, dict):
        return {}
    return {
        name: (stored.get(name), current.get(name))
        for name in sorted(set(stored) | set(current))
        if stored.get(name) != current.get(name)
    }


def check_versions(
    run_dir: Path, stored: dict[str, str] | None, current: dict[str, str], allow: bool = False
) -> None:
    """Resuming with other code (covbench, or a model plugin's distribution) would put trials
    trained by two versions into one table: refused unless the user allows it explicitly."""
    changes = version_changes(stored, current)
    if not changes or allow:
        return
    was = ", ".join(f"{name} {old or '(absent)'}" for name, (old, _) in changes.items())
    now = ", ".join(f"{name} {new or '(absent)'}" for name, (_, new) in changes.items())
    raise CovbenchError(
        f"{run_dir} was trained with {was}; this install has {now}. Resuming would mix trials of "
        "two code versions in one table: pass --allow-version-change to continue anyway (the report "
        "says so), or use another --out"
    )


def config_record(run_dir: Path, cfg: RunConfig, key: str, versions: dict[str, str]) -> dict[str, Any]:
    """What config.json holds: the configuration, its key, the code versions, and every allowed
    version change the folder went through (the report lists them)."""
    try:
        stored = read_config(run_dir) or {}
    except DamagedFile:
        stored = {}
    history = list(stored.get("_version_changes") or [])
    changes = version_changes(stored.get("_versions"), versions)
    if changes:
        history.append(
            {
                "at": now_iso(),
                "from": {name: old for name, (old, _) in changes.items()},
                "to": {name: new for name, (_, new) in changes.items()},
            }
        )
    record = {**cfg.to_dict(), "_key": key, "_versions": versions}
    if history:
        record["_version_changes"] = history
    return record


def read_previous_environment(run_dir: Path) -> dict[str, Any] | None:
    """environment.json of the folder's last session; a damaged one is set aside (this run writes
    a new one) and reads as None: it only describes earlier sessions."""
    return read_json_object(Path(run_dir) / "environment.json", "this run writes a new one")


def check_data_key(run_dir: Path, key: str) -> None:
    """Same config but different data (the fingerprint is the key's tail): refuse as well."""
    try:
        old = (read_config(run_dir) or {}).get("_key")
    except DamagedFile:
        old = None  # check_run_dir has judged it already
    if old and old != key:
        raise CovbenchError(
            f"{run_dir} holds a run on different data (fingerprint {old.split('-')[-1]}, now "
            f"{key.split('-')[-1]}); use another --out"
        )


def write_test_slices(path: Path, slices: SliceSet, parts: list[dict[str, np.ndarray]]) -> None:
    """Every fold's pre-processed test slices, once per run: the report's overlays and patient-level
    metrics need the CT slice, the mask and the spacing, and the report reads only the run folder."""
    test = np.unique(np.concatenate([p["test"] for p in parts])).astype(np.int32)
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(
            fh,
            index=test,  # positions in the run's slices, as in each trial's predictions.npz
            image=slices.images[test],
            mask=slices.masks[test],
            spacing=slices.spacing[test],  # (row, col) mm; no slice thickness in a SliceSet
            patient=slices.patient[test].astype(str),
            slice_index=slices.slice_index[test],
        )


def _results_problem(trial_dir: Path, record: dict[str, Any]) -> tuple[Path, str] | None:
    """What is wrong with a done trial's results, if anything: its rows (cases.csv) missing,
    unreadable or not one per test case, or its predictions.npz unreadable. Headers only for the
    predictions: cheap at every start, even for large runs."""
    cases = trial_dir / "cases.csv"
    if not cases.exists():
        return cases, "is missing"
    try:
        rows = read_csv(cases, CASE_COLUMNS)
    except DamagedFile as exc:
        return cases, f"is damaged ({exc.why})"
    n_test = record.get("n_test")
    if isinstance(n_test, int) and len(rows) != n_test:
        return cases, f"is damaged ({len(rows)} rows for {n_test} test cases)"
    if rows[list(CASE_COLUMNS)].isna().any(axis=None):
        return cases, "is damaged (rows without model, seed, fold or case)"
    predictions = trial_dir / "predictions.npz"
    if predictions.exists():
        try:
            shapes = npz_shapes(predictions)
        except DamagedFile as exc:
            return predictions, f"is damaged ({exc.why})"
        prob, index = shapes.get("prob"), shapes.get("index")
        if not prob or not index or prob[0] != index[0]:
            return predictions, f"is damaged (arrays {shapes})"
    return None


def _check_epoch_log(trial_dir: Path) -> None:
    """A trial that runs again appends to its epochs.csv, so a log it could not append to cleanly
    (empty, no header, a row without its epoch number, a last row cut short) is set aside."""
    path = trial_dir / "epochs.csv"
    if not path.exists():
        return
    try:
        text = path.read_text(encoding="utf-8")
        reader = csv.DictReader(text.splitlines())
        ok = text.endswith("\n") and "epoch" in (reader.fieldnames or [])
        for row in reader if ok else ():
            if None in row or None in row.values():
                ok = False
                break
            int(row["epoch"])
    except (OSError, ValueError):
        ok = False
    if not ok:
        set_aside(path, "is damaged; the trial starts a new log")


def is_done(trial_dir: Path, key: str) -> bool:
    """Whether a trial is finished for this run's key, with results that read back. A damaged
    record or results file is set aside with a warning and the trial counts as not done (it runs
    again: from its checkpoint, which for a finished trial means evaluation only)."""
    record = read_record(trial_dir)
    if record is None or record.get("status") != "done" or record.get("config_key") != key:
        _check_epoch_log(trial_dir)
        return False
    problem = _results_problem(trial_dir, record)
    if problem is None:
        return True
    path, why = problem
    message = f"{why}: the trial runs again"
    if path.exists():
        set_aside(path, message)
    else:
        warnings.warn(f"{path} {message}", RunFolderWarning, stacklevel=2)
    return False


def collect_cases(run_dir: Path, key: str | None = None) -> pd.DataFrame:
    """All finished trials' per-case rows, one per (model, seed, fold, case): only trials whose
    record carries the run's key (default: config.json's `_key`), so rows of another
    configuration or data never enter the run's table."""
    if key is None:
        try:
            key = (read_config(run_dir) or {}).get("_key")
        except DamagedFile:
            key = None
    frames = []
    for tdir in sorted((run_dir / "trials").glob("*")):
        record = read_record(tdir)
        if record is None or record.get("status") != "done" or (key and record.get("config_key") != key):
            continue
        try:
            frames.append(read_csv(tdir / "cases.csv", CASE_COLUMNS))
        except FileNotFoundError:
            continue
        except DamagedFile as exc:
            warnings.warn(f"{exc}: its rows are left out until a run on the folder repeats the trial",
                          RunFolderWarning, stacklevel=2)  # fmt: skip
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    return rows.drop_duplicates(subset=["model", "seed", "fold", "case"], keep="last")


def trial_index(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per trial: status, device, wall time, epochs, best val Dice, checkpoint (for the manifest)."""
    index: dict[str, dict[str, Any]] = {}
    for tdir in sorted((run_dir / "trials").glob("*")):
        r = read_record(tdir)
        if r is not None:
            index[tdir.name] = {
                "status": r.get("status"),
                "device": r.get("device"),
                "gpu_ids": r.get("gpu_ids"),
                "host": r.get("host"),
                "wall_seconds": r.get("wall_seconds"),
                "epochs": r.get("epochs"),
                "resumed_from_epoch": r.get("resumed_from_epoch"),
                "attempts": r.get("attempts"),
                "best_val_dice": r.get("best_val_dice"),
                "weights": f"trials/{tdir.name}/{r.get('weights', WEIGHTS)}",
            }
        elif (tdir / "failure.json").exists():
            try:
                f = read_json(tdir / "failure.json")
            except DamagedFile as exc:
                f = {"error": str(exc)}
            index[tdir.name] = {"status": "failed", "error": f.get("error"), "attempts": f.get("attempts")}
    return index


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
        "submitted": f.submitted,
        "worker_started": started,
        "worker_finished": finished,
        "collected": f.collected,
        "queue_seconds": started - f.submitted if started else None,
        "return_seconds": f.collected - finished if finished else None,
    }


def _record_finished(f: Finished, outcome: RunOutcome, emit: Callable[[str, dict[str, Any]], None]) -> None:
    """Write one finished trial into its folder: rows first, the record last (it marks done)."""
    spec: TrialSpec = f.tag
    tdir = Path(spec.trial_dir)
    timing = _timing(f)
    if f.error is not None:
        outcome.failed[spec.name] = f.error
        write_json(
            tdir / "failure.json",
            {
                "model": spec.model,
                "seed": spec.seed,
                "fold": spec.fold,
                "status": "failed",
                "error": f.error,
                "failed_at": now_iso(),
                **timing,
            },
        )
        emit("failed", {"trial": spec.name, "error": f.error})
        return
    result: TrialResult = f.result
    record = {**result.record, **timing}
    if outcome.versions:
        record["versions"] = outcome.versions  # the code that trained it (see check_versions)
    if record.get("checkpoint_note"):  # a damaged checkpoint was set aside: say so, once
        warnings.warn(f"{spec.name}: {record['checkpoint_note']}", RunFolderWarning, stacklevel=2)
    write_csv(tdir / "cases.csv", pd.DataFrame(result.rows))
    write_json(tdir / "record.json", record)  # written last: marks the trial done
    (tdir / "failure.json").unlink(missing_ok=True)
    outcome.done.append(spec.name)
    emit(
        "done",
        {
            "trial": spec.name,
            "record": record,
            "test_dice": float(np.nanmean([r["dice"] for r in result.rows])) if result.rows else float("nan"),
        },
    )


def _finalize(run_dir: Path, outcome: RunOutcome, t0: float) -> None:
    cases = collect_cases(run_dir)
    if not cases.empty:
        write_csv(run_dir / "cases.csv", cases)
    outcome.wall_seconds = time.perf_counter() - t0
    env_path = run_dir / "environment.json"
    env = read_previous_environment(run_dir) or {}
    status = "interrupted" if outcome.interrupted else ("failed" if outcome.failed else "complete")
    write_json(
        env_path,
        {
            **env,
            "finished": now_iso(),
            "wall_seconds": outcome.wall_seconds,
            "status": status,
            "failed": sorted(outcome.failed),
            "trials": trial_index(run_dir),
        },
    )


def execute(cfg: RunConfig, run_dir: Path, **options: Any) -> RunOutcome:
    """Run every (model, seed, fold) trial not already done in `run_dir` (options: `_execute`),
    holding the folder's lock throughout (covbench.lock): a second run, resume or report on the
    folder stops at once, and the configuration check and config.json have a single writer."""
    with run_lock(run_dir):
        return _execute(cfg, run_dir, **options)


def _execute(
    cfg: RunConfig,
    run_dir: Path,
    *,
    allow_version_change: bool = False,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float | None = None,
    max_retries: int = 2,
    debug: bool = False,
    checkpoint_every: float = DEFAULT_CHECKPOINT_SECONDS,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> RunOutcome:
    """Run every (model, seed, fold) trial not already done in `run_dir`.

    `gpus_per_trial` None packs trials onto GPUs as covbench.packing decides; `checkpoint_every`
    is the seconds between a trial's checkpoint writes (covbench.checkpoint; 0 = every epoch).

    Ctrl-C (KeyboardInterrupt) records the trials that already finished, kills the rest (their
    checkpoints stay for the next run), writes cases.csv for what is done, and re-raises.
    """
    t0 = time.perf_counter()
    for name in cfg.models:
        registry.get_model(name)  # unknown names fail before any work
    check_folds(cfg)
    if not debug:
        check_address(address)
    if cpus_per_trial <= 0:
        raise CovbenchError(f"--cpus-per-trial must be positive, got {cpus_per_trial}")
    if max_retries < 0:
        raise CovbenchError(f"--max-retries must be 0 or more, got {max_retries}")
    if not checkpoint_every >= 0:
        raise CovbenchError(f"--checkpoint-every must be 0 or more seconds, got {checkpoint_every:g}")
    checkpoint = CheckpointPolicy(checkpoint_every)
    versions = code_versions(cfg.models)  # covbench's and each model plugin's distribution version
    check_run_dir(run_dir, cfg, versions, allow_version_change)
    emit = on_event or (lambda kind, info: None)

    # Every model meets its contract before any data is prepared or trial starts (checks.py).
    emit("status", {"message": "checking models"})
    checks = check_config(cfg)

    emit("status", {"message": "preparing data"})
    data = prepare_data(cfg)
    key = cfg.key() + "-" + data.fingerprint[:12]
    check_data_key(run_dir, key)
    previous = read_previous_environment(run_dir)
    write_json(run_dir / "config.json", config_record(run_dir, cfg, key, versions))
    write_json(run_dir / "models.json", models_record(checks))  # params, FLOPs, memory per model
    # the unit of ASSD / HD95 / the NSD tolerance travels with the split: the report reads it there
    split_record = {**split_manifest(cfg, data.folds), "distance_unit": data.distance_unit}
    write_json(run_dir / "split.json", split_record)
    parts = [split_indices(data.slices, manifest) for manifest in data.folds]
    write_test_slices(run_dir / "test_slices.npz", data.slices, parts)

    executor = InProcessExecutor() if debug else RayExecutor(address=address)
    outcome = RunOutcome(run_dir, versions=versions)
    env_written = False
    try:
        todo = _pending_trials(cfg, run_dir, key, parts, outcome)
        resources = executor.resources()
        packing = _plan_packing(executor, cfg, checks, parts, gpus_per_trial, resources, len(todo))
        per_trial = Resources(cpus_per_trial, packing.gpus_per_trial)
        extra = {
            "ray_resources": resources,
            "nodes": executor.nodes(),
            "resources_per_trial": {"cpus": cpus_per_trial, "gpus": packing.gpus_per_trial},
            "packing": packing.to_dict(),
            "checkpoint_every_seconds": checkpoint.every_seconds,
            "max_retries": max_retries,
        }
        write_json(run_dir / "environment.json", _run_manifest(executor, data, previous, extra))
        env_written = True

        # Once per run: every node fetches it once, every fold shares it. Plain arrays, not the
        # cache's memmaps: Ray hands ndarrays to workers zero-copy but would pickle a memmap whole.
        shared = executor.put(plain_arrays(data.slices))
        faults = FaultHooks.from_env()  # test-only (covbench.faults); empty in real runs
        threads = max(1, int(cpus_per_trial))
        for model, seed, fold in todo:
            tdir = run_dir / "trials" / trial_name(model, seed, fold)
            spec = TrialSpec(model, seed, fold, cfg, key, str(tdir), threads, checkpoint, faults)
            tdir.mkdir(parents=True, exist_ok=True)
            executor.submit(
                spec,
                run_fold_trial,
                spec,
                shared,
                parts[fold],
                resources=per_trial,
                max_retries=max_retries,
                heartbeat=tdir / HEARTBEAT,
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
            },
        )
        _collect(executor, outcome, emit)
    except KeyboardInterrupt:
        outcome.interrupted = True
        for finished in executor.drain_ready():  # finished before the interrupt: keep them
            _record_finished(finished, outcome, emit)
        executor.cancel_all()
        raise
    finally:
        executor.shutdown()
        if env_written:
            _finalize(run_dir, outcome, t0)
    return outcome


def _pending_trials(
    cfg: RunConfig, run_dir: Path, key: str, parts: list[dict[str, np.ndarray]], outcome: RunOutcome
) -> list[tuple[str, int, int]]:
    """(model, seed, fold) of every trial still to run, seeds first; done ones go to `skipped`."""
    todo = []
    for seed in cfg.seeds:
        for fold in range(len(parts)):
            for model in cfg.models:
                tdir = run_dir / "trials" / trial_name(model, seed, fold)
                if is_done(tdir, key):
                    outcome.skipped.append(tdir.name)
                else:
                    todo.append((model, seed, fold))
    return todo


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
    (covbench.packing), from the contract check's memory figures and the GPU's free memory."""
    resident = max((len(p["train"]) + len(p["val"]) for p in parts), default=0)
    trial_memory = max(
        (
            trial_memory_bytes(c.parameters, c.activation_bytes_per_batch, resident, cfg.image_size)
            for c in checks.values()
        ),
        default=None,
    )
    probe = requested is None and 1 <= resources["gpus"] < n_trials  # packing could pay
    gpu_memory = executor.gpu_memory() if probe else None
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


def _collect(executor: Executor, outcome: RunOutcome, emit: Callable[[str, dict[str, Any]], None]) -> None:
    """Record each trial as it finishes; report each attempt as it starts."""

    def started(spec: TrialSpec, beat: dict[str, Any]) -> None:
        kind = "started" if beat.get("attempt", 1) == 1 else "retry"
        emit(kind, {"trial": spec.name, "attempt": beat.get("attempt", 1), "gpu_ids": beat.get("gpu_ids")})

    for finished in executor.as_completed(on_started=started):
        _record_finished(finished, outcome, emit)


def load_run_config(run_dir: Path) -> RunConfig:
    """The configuration stored in a run folder, for `covbench run --resume DIR`."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise CovbenchError(f"--resume {run_dir}: no config.json there (is it a covbench run folder?)")
    try:
        data = read_config(run_dir)
    except DamagedFile as exc:
        raise CovbenchError(
            f"--resume {run_dir}: {exc}; run the original `covbench run` command with --out {run_dir} "
            "instead (finished trials are kept)"
        ) from None
    return RunConfig.from_dict({k: v for k, v in (data or {}).items() if not k.startswith("_")})
