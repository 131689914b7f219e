"""`covbench run`: prepare the data once, fan trials out, collect results into the run folder.

One trial per (model, seed, fold). The run folder is what makes a run restartable: a trial whose
`record.json` carries this run's key is done and skipped; one with only a `checkpoint.pt`
continues from its last epoch; a folder whose config differs is refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from covbench import registry
from covbench.checks import check_models, models_record
from covbench.config import RunConfig
from covbench.datasets import SliceSet
from covbench.datasets.prepare import prepare_slices
from covbench.datasets.preprocess import PreprocessConfig
from covbench.datasets.splits import make_splits, split_indices
from covbench.errors import CovbenchError
from covbench.manifest import environment_manifest, now_iso
from covbench.scheduler import (
    Finished,
    InProcessExecutor,
    RayExecutor,
    Resources,
    check_address,
    choose_gpus_per_trial,
    slots,
)
from covbench.store import atomic_path, read_json, trial_name, write_csv, write_json
from covbench.trial import TrialResult, TrialSpec, run_fold_trial

TEST_HOOKS = ("COVBENCH_TEST_KILL_ONCE", "COVBENCH_TEST_FAIL")  # documented in covbench.trial
HEARTBEAT = "attempt.json"  # written by each attempt as it starts (see covbench.scheduler)


@dataclass
class PreparedData:
    slices: SliceSet
    fingerprint: str
    folds: list[dict[str, Any]]  # one split manifest per fold (covbench.datasets.splits.make_splits)
    n_cases: int
    cache_path: str | None = None


@dataclass
class RunOutcome:
    run_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    wall_seconds: float = 0.0


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


def prepare_data(cfg: RunConfig) -> PreparedData:
    """Read the dataset through its adapter (or the pre-processing cache) and split it into folds."""
    spec = registry.get_dataset(cfg.dataset)
    if spec.needs_data_dir and not cfg.data_dir:
        raise CovbenchError(f"dataset {cfg.dataset!r} needs --data-dir")
    options = dict(cfg.phantom) if not spec.needs_data_dir else {}
    pre = PreprocessConfig(image_size=cfg.image_size, **cfg.preprocess)
    prepared = prepare_slices(spec, cfg.data_dir, pre, options=options)
    folds = make_splits(
        cfg.split,
        prepared.slices,
        seed=cfg.split_seed,
        folds=cfg.folds,
        part_of=prepared.part_of,
        val_fraction=cfg.val_fraction,
    )
    cache = str(prepared.cache_path) if prepared.cache_path else None
    return PreparedData(prepared.slices, prepared.fingerprint, folds, prepared.n_cases, cache)


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


def check_run_dir(run_dir: Path, cfg: RunConfig) -> None:
    """Refuse to mix results of two different configurations in one folder."""
    existing = run_dir / "config.json"
    if existing.exists():
        old = RunConfig.from_dict({k: v for k, v in read_json(existing).items() if not k.startswith("_")})
        if old.key() != cfg.key():
            changed = sorted(k for k, v in cfg.trial_config().items() if old.trial_config().get(k) != v)
            raise CovbenchError(
                f"{run_dir} holds a run with a different configuration (changed: {', '.join(changed)}); "
                "use another --out"
            )


def check_data_key(run_dir: Path, key: str) -> None:
    """Same config but different data (the fingerprint is the key's tail): refuse as well."""
    existing = run_dir / "config.json"
    old = read_json(existing).get("_key") if existing.exists() else None
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


def is_done(trial_dir: Path, key: str) -> bool:
    record = trial_dir / "record.json"
    if not record.exists():
        return False
    data = read_json(record)
    return data.get("status") == "done" and data.get("config_key") == key


def collect_cases(run_dir: Path) -> pd.DataFrame:
    """All finished trials' per-case rows, one per (model, seed, fold, case)."""
    frames = [
        pd.read_csv(p / "cases.csv")
        for p in sorted((run_dir / "trials").glob("*"))
        if (p / "record.json").exists() and (p / "cases.csv").exists()
    ]
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    return rows.drop_duplicates(subset=["model", "seed", "fold", "case"], keep="last")


def trial_index(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per trial: status, device, wall time, epochs, best val Dice, checkpoint (for the manifest)."""
    index: dict[str, dict[str, Any]] = {}
    for tdir in sorted((run_dir / "trials").glob("*")):
        if (tdir / "record.json").exists():
            r = read_json(tdir / "record.json")
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
                "checkpoint": f"trials/{tdir.name}/{r.get('checkpoint', 'checkpoint.pt')}",
            }
        elif (tdir / "failure.json").exists():
            f = read_json(tdir / "failure.json")
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
    env = read_json(env_path) if env_path.exists() else {}
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


def execute(
    cfg: RunConfig,
    run_dir: Path,
    *,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float | None = None,
    max_retries: int = 2,
    debug: bool = False,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> RunOutcome:
    """Run every (model, seed, fold) trial not already done in `run_dir`.

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
    check_run_dir(run_dir, cfg)
    emit = on_event or (lambda kind, info: None)

    # Every model meets its contract before any data is prepared or trial starts (checks.py).
    emit("status", {"message": "checking models"})
    checks = check_models(
        cfg.models,
        image_size=cfg.image_size,
        batch_size=cfg.batch_size,
        run_width=cfg.width,
        model_options=cfg.model_options,
    )

    emit("status", {"message": "preparing data"})
    data = prepare_data(cfg)
    key = cfg.key() + "-" + data.fingerprint[:12]
    check_data_key(run_dir, key)
    previous = read_json(run_dir / "environment.json") if (run_dir / "environment.json").exists() else None
    write_json(run_dir / "config.json", {**cfg.to_dict(), "_key": key})
    write_json(run_dir / "models.json", models_record(checks))  # params, FLOPs, memory per model
    write_json(run_dir / "split.json", split_manifest(cfg, data.folds))
    parts = [split_indices(data.slices, manifest) for manifest in data.folds]
    write_test_slices(run_dir / "test_slices.npz", data.slices, parts)

    executor = InProcessExecutor() if debug else RayExecutor(address=address)
    outcome = RunOutcome(run_dir)
    env_written = False
    try:
        resources = executor.resources()
        gpus = choose_gpus_per_trial(gpus_per_trial, resources["gpus"])
        per_trial = Resources(cpus_per_trial, gpus)
        env = environment_manifest(
            data.fingerprint,
            {
                "started": now_iso(),
                "ray_address": executor.address,
                "ray_resources": resources,
                "nodes": executor.nodes(),
                "resources_per_trial": {"cpus": cpus_per_trial, "gpus": gpus},
                "max_retries": max_retries,
                "data_cache": data.cache_path,
                "n_cases": data.n_cases,
                "n_slices": len(data.slices),
                "previous_sessions": [
                    *(previous or {}).get("previous_sessions", []),
                    *(
                        [{k: previous.get(k) for k in ("started", "finished", "status", "command")}]
                        if previous
                        else []
                    ),
                ],
            },
        )
        write_json(run_dir / "environment.json", env)
        env_written = True

        # Once per run: every node fetches it once, every fold shares it. Plain arrays, not the
        # cache's memmaps: Ray hands ndarrays to workers zero-copy but would pickle a memmap whole.
        shared = executor.put(plain_arrays(data.slices))
        threads = max(1, int(cpus_per_trial))
        trial_cfg = {**cfg.to_dict(), "_key": key}
        hooks = {k: os.environ[k] for k in TEST_HOOKS if os.environ.get(k)}
        for seed in cfg.seeds:
            for fold, fold_parts in enumerate(parts):
                for model in cfg.models:
                    tdir = run_dir / "trials" / trial_name(model, seed, fold)
                    if is_done(tdir, key):
                        outcome.skipped.append(tdir.name)
                        continue
                    spec = TrialSpec(model, seed, fold, trial_cfg, str(tdir), threads, hooks)
                    tdir.mkdir(parents=True, exist_ok=True)
                    executor.submit(
                        spec,
                        run_fold_trial,
                        spec,
                        shared,
                        fold_parts,
                        resources=per_trial,
                        max_retries=max_retries,
                        heartbeat=tdir / HEARTBEAT,
                    )
        emit(
            "start",
            {
                "total": executor.pending() + len(outcome.skipped),
                "skipped": len(outcome.skipped),
                "cpus": resources["cpus"],
                "gpus": resources["gpus"],
                "slots": slots(resources, per_trial),
            },
        )

        def started(spec: TrialSpec, beat: dict[str, Any]) -> None:
            kind = "started" if beat.get("attempt", 1) == 1 else "retry"
            emit(
                kind, {"trial": spec.name, "attempt": beat.get("attempt", 1), "gpu_ids": beat.get("gpu_ids")}
            )

        for finished in executor.as_completed(on_started=started):
            _record_finished(finished, outcome, emit)
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


def load_run_config(run_dir: Path) -> RunConfig:
    """The configuration stored in a run folder, for `covbench run --resume DIR`."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise CovbenchError(f"--resume {run_dir}: no config.json there (is it a covbench run folder?)")
    try:
        return RunConfig.from_dict({k: v for k, v in read_json(path).items() if not k.startswith("_")})
    except (TypeError, KeyError, ValueError) as exc:
        raise CovbenchError(
            f"--resume {run_dir}: config.json is not a covbench configuration ({exc})"
        ) from None
