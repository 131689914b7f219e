"""`covbench run`: prepare the data once, fan trials out, collect results into the run folder."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from covbench import registry
from covbench.config import RunConfig
from covbench.datasets import SliceSet
from covbench.datasets.fingerprint import fingerprint_files
from covbench.datasets.preprocess import PreprocessConfig, preprocess_cases
from covbench.datasets.splits import patient_split
from covbench.errors import CovbenchError
from covbench.manifest import environment_manifest, now_iso
from covbench.scheduler import InProcessExecutor, RayExecutor, Resources
from covbench.store import read_json, trial_name, write_csv, write_json
from covbench.trial import TrialData, TrialResult, TrialSpec, run_trial


@dataclass
class PreparedData:
    slices: SliceSet
    fingerprint: str
    split: dict[str, list[str]]
    n_cases: int


@dataclass
class RunOutcome:
    run_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0


def prepare_data(cfg: RunConfig) -> PreparedData:
    """Read the dataset through its adapter, pre-process it and split it by patient."""
    spec = registry.get_dataset(cfg.dataset)
    if spec.needs_data_dir and not cfg.data_dir:
        raise CovbenchError(f"dataset {cfg.dataset!r} needs --data-dir")
    kwargs = dict(cfg.phantom) if not spec.needs_data_dir else {}
    cases = list(spec.load(cfg.data_dir, **kwargs))
    if not cases:
        raise CovbenchError(f"dataset {cfg.dataset!r} at {cfg.data_dir}: no cases found")
    pre = PreprocessConfig(image_size=cfg.image_size, **cfg.preprocess)
    slices = preprocess_cases(cases, pre)
    fingerprint = fingerprint_files([f for c in cases for f in c.files])
    patients = [c.case_id for c in cases]
    sources = [c.source for c in cases]
    split = patient_split(patients, sources, seed=cfg.split_seed)
    return PreparedData(slices, fingerprint, split, len(cases))


def split_indices(slices: SliceSet, split: dict[str, list[str]]) -> dict[str, np.ndarray]:
    return {part: np.flatnonzero(np.isin(slices.patient, ids)) for part, ids in split.items()}


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
    """Run every (model, seed) trial not already done in `run_dir`."""
    t0 = time.perf_counter()
    for name in cfg.models:
        registry.get_model(name)  # unknown names fail before any work
    check_run_dir(run_dir, cfg)
    emit = on_event or (lambda kind, info: None)

    emit("status", {"message": "preparing data"})
    data = prepare_data(cfg)
    key = cfg.key() + "-" + data.fingerprint[:12]
    write_json(run_dir / "config.json", {**cfg.to_dict(), "_key": key})
    write_json(run_dir / "split.json", {"strategy": cfg.split, "seed": cfg.split_seed, **data.split})
    index = split_indices(data.slices, data.split)

    executor = InProcessExecutor() if debug else RayExecutor(address=address)
    outcome = RunOutcome(run_dir)
    try:
        resources = executor.resources()
        gpus = gpus_per_trial if gpus_per_trial is not None else (1.0 if resources["gpus"] >= 1 else 0.0)
        if gpus > 0 and resources["gpus"] == 0:
            raise CovbenchError("--gpus-per-trial > 0 but the Ray cluster has no GPUs")
        env = environment_manifest(data.fingerprint, {"ray_resources": resources, "started": now_iso()})
        write_json(run_dir / "environment.json", env)

        shared = executor.put(TrialData(data.slices, index["train"], index["val"], index["test"]))
        threads = max(1, int(cpus_per_trial))
        trial_cfg = {**cfg.to_dict(), "_key": key}
        for model in cfg.models:
            for seed in cfg.seeds:
                tdir = run_dir / "trials" / trial_name(model, seed, 0)
                if is_done(tdir, key):
                    outcome.skipped.append(tdir.name)
                    continue
                spec = TrialSpec(model, seed, 0, trial_cfg, str(tdir), threads)
                executor.submit(
                    spec,
                    run_trial,
                    spec,
                    shared,
                    resources=Resources(cpus_per_trial, gpus),
                    max_retries=max_retries,
                )
        emit(
            "start",
            {
                "total": executor.pending() + len(outcome.skipped),
                "skipped": len(outcome.skipped),
                "cpus": resources["cpus"],
                "gpus": resources["gpus"],
            },
        )
        for finished in executor.as_completed():
            spec: TrialSpec = finished.tag
            tdir = Path(spec.trial_dir)
            if finished.error is not None:
                outcome.failed[spec.name] = finished.error
                write_json(
                    tdir / "failure.json",
                    {
                        "model": spec.model,
                        "seed": spec.seed,
                        "fold": spec.fold,
                        "status": "failed",
                        "error": finished.error,
                    },
                )
                emit("failed", {"trial": spec.name, "error": finished.error})
                continue
            result: TrialResult = finished.result
            write_csv(tdir / "cases.csv", pd.DataFrame(result.rows))
            write_json(tdir / "record.json", result.record)  # written last: marks the trial done
            (tdir / "failure.json").unlink(missing_ok=True)
            outcome.done.append(spec.name)
            emit(
                "done",
                {
                    "trial": spec.name,
                    "record": result.record,
                    "test_dice": float(np.nanmean([r["dice"] for r in result.rows])),
                },
            )
    except KeyboardInterrupt:
        executor.cancel_all()
        raise
    finally:
        executor.shutdown()

    cases = collect_cases(run_dir)
    if not cases.empty:
        write_csv(run_dir / "cases.csv", cases)
    outcome.wall_seconds = time.perf_counter() - t0
    env = read_json(run_dir / "environment.json")
    write_json(
        run_dir / "environment.json", {**env, "finished": now_iso(), "wall_seconds": outcome.wall_seconds}
    )
    return outcome


def with_overrides(cfg: RunConfig, **changes: Any) -> RunConfig:
    return replace(cfg, **changes)
