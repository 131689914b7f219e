"""The run folder's state: whether its configuration, code versions and data match this run,
which trials are finished with results that read back, and what the finished ones hold.

`covbench.execution.runner` asks these questions before and after it runs trials;
`covbench.folder.layout` names the files, `covbench.folder.io` does the file I/O (atomic, durable
writes; damaged files set aside). A
trial whose `record.json` carries the run's key and whose results read back is done; one with
`checkpoint.pt` continues from it, one with `weights.pt` is only evaluated again
(covbench.training.checkpoint); a folder whose configuration or data differ is refused.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from covbench.config import RunConfig
from covbench.datasets import SliceSet
from covbench.errors import CovbenchError, DamagedFile, RunFolderWarning
from covbench.folder.io import (
    Records,
    atomic_path,
    done_for,
    done_trials,
    npz_shapes,
    read_csv,
    read_json,
    read_json_object,
    read_record,
    set_aside,
    trial_records,
    write_json,
)
from covbench.folder.key import RunKey
from covbench.folder.layout import MARKER, RUN_LOCK, WEIGHTS, RunFolder, TrialFolder
from covbench.folder.lock import run_lock
from covbench.folder.manifest import now_iso
from covbench.folder.record import TrialRecord
from covbench.folder.stored_config import StoredConfig, read_stored_config
from covbench.paths import folder_problem

CASE_COLUMNS = ("model", "seed", "fold", "case")  # one row per (model, seed, fold, case)


def _older_run_folder(run_dir: Path) -> bool:
    """A run folder of a covbench from before the marker: its config.json is a covbench
    configuration, or its environment.json is a covbench run manifest."""
    try:
        if read_stored_config(run_dir) is not None:
            return True
    except (DamagedFile, OSError):
        pass
    try:
        env = read_json(RunFolder(run_dir).environment)
    except (DamagedFile, OSError):
        return False
    return isinstance(env, dict) and {"data_fingerprint", "packages", "command"} <= set(env)


def check_out_folder(run_dir: Path) -> None:
    """Refuse an --out that covbench must not write into: a file, a device or a link loop where
    a folder belongs, or a non-empty folder covbench did not create (no MARKER, and not a run
    folder of an older covbench). A folder that does not exist yet is fine: the run creates it."""
    problem = folder_problem(run_dir)
    if problem == "does not exist":
        return
    if problem:
        raise CovbenchError(f"--out {run_dir} {problem}; name a new or empty folder")
    entries = set(os.listdir(run_dir)) - {RUN_LOCK}
    if not entries or MARKER in entries or _older_run_folder(Path(run_dir)):
        return
    shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
    raise CovbenchError(
        f"--out {run_dir} is a folder covbench did not create and it is not empty ({shown}); "
        "covbench writes only into new or empty folders and its own run folders: name another --out"
    )


@contextmanager
def writing_run_folder(run_dir: Path) -> Iterator[None]:
    """The one way into a run folder for writing: refuse an --out covbench must not write into,
    hold its lock for the block (re-entrant: the CLI holds it around the run and the report, the
    runner takes it again for library callers), and mark the folder covbench's."""
    check_out_folder(run_dir)  # before the lock writes anything into it
    with run_lock(run_dir):
        claim_run_dir(run_dir)
        yield


def claim_run_dir(run_dir: Path) -> None:
    """Mark `run_dir` as a covbench run folder (MARKER), after `check_out_folder` allowed it."""
    marker = RunFolder(run_dir).marker
    if not marker.exists():
        write_json(marker, {"created": now_iso(), "what": "a covbench run folder"})


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
    if folds and "test_dataset" in folds[0]:  # `--test-dataset`: what the test part comes from
        out["test_dataset"] = folds[0]["test_dataset"]
    return out


def _heal_config(run_dir: Path, cfg: RunConfig, damage: DamagedFile) -> None:
    """A damaged config.json: set it aside (the run writes it again) when every finished trial in
    the folder belongs to this configuration; otherwise nothing says which one the folder holds."""
    keys = set()
    for trial in RunFolder(run_dir).trials():
        try:
            record = read_json(trial.record) if trial.record.exists() else None
        except DamagedFile:
            continue  # counts as not done; dealt with when the trial comes up
        if isinstance(record, dict) and record.get("config_key"):
            keys.add(RunKey.parse(record["config_key"]).config_hash)
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
) -> StoredConfig | None:
    """Refuse to mix results of two different configurations, or of two code versions (see
    `check_versions`), in one folder. Call it holding the folder's lock (covbench.folder.lock).

    Returns config.json as stored (None when there is none, or a damaged one was set aside): the
    runner hands it on (`check_data_key`, `StoredConfig.continued`) instead of reading it again."""
    try:
        stored = read_stored_config(run_dir)
    except DamagedFile as exc:
        _heal_config(Path(run_dir), cfg, exc)
        return None
    if stored is not None:
        check_stored(run_dir, cfg, stored, versions, allow_version_change)
    return stored


def check_stored(
    run_dir: Path,
    cfg: RunConfig,
    stored: StoredConfig,
    versions: dict[str, str] | None = None,
    allow_version_change: bool = False,
) -> None:
    """`check_run_dir` on a config.json already read (`read_stored_config`)."""
    old = stored.config
    if old.key() != cfg.key():
        changed = sorted(k for k, v in cfg.trial_config().items() if old.trial_config().get(k) != v)
        raise CovbenchError(
            f"{run_dir} holds a run with a different configuration (changed: {', '.join(changed)}); "
            "use another --out"
        )
    if versions is not None:
        check_versions(run_dir, stored, versions, allow_version_change)


def check_versions(run_dir: Path, stored: StoredConfig, current: dict[str, str], allow: bool = False) -> None:
    """Resuming with other code (covbench, or a model plugin's distribution) would put trials
    trained by two versions into one table: refused unless the user allows it explicitly."""
    changes = stored.version_diff(current)
    if not changes or allow:
        return
    was = ", ".join(f"{name} {old or '(absent)'}" for name, (old, _) in changes.items())
    now = ", ".join(f"{name} {new or '(absent)'}" for name, (_, new) in changes.items())
    raise CovbenchError(
        f"{run_dir} was trained with {was}; this install has {now}. Resuming would mix trials of "
        "two code versions in one table: pass --allow-version-change to continue anyway (the report "
        "says so), or use another --out"
    )


def stored_config(run_dir: Path) -> StoredConfig | None:
    """config.json as stored, None when there is none or it is damaged: for callers after
    `check_run_dir`, which has judged (and healed) the damage already."""
    try:
        return read_stored_config(run_dir)
    except DamagedFile:
        return None


def read_previous_environment(run_dir: Path) -> dict[str, Any] | None:
    """environment.json of the folder's last session; a damaged one is set aside (this run writes
    a new one) and reads as None: it only describes earlier sessions."""
    return read_json_object(RunFolder(run_dir).environment, "this run writes a new one")


def check_data_key(run_dir: Path, key: RunKey, stored: StoredConfig | None) -> None:
    """Same config but different data (the fingerprint is the key's tail): refuse as well.
    `stored`: config.json as `check_run_dir` returned it."""
    old = stored.key if stored is not None else None
    if old and old != key:
        raise CovbenchError(
            f"{run_dir} holds a run on different data (fingerprint {old.data_fingerprint}, "
            f"now {key.data_fingerprint}); use another --out"
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
    trial = TrialFolder(trial_dir)
    cases = trial.cases
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
    predictions = trial.predictions
    if predictions.exists():
        try:
            shapes = npz_shapes(predictions)
        except DamagedFile as exc:
            return predictions, f"is damaged ({exc.why})"
        prob, index = shapes.get("prob"), shapes.get("index")
        if not prob or not index or prob[0] != index[0]:
            return predictions, f"is damaged (arrays {shapes})"
    return None


def is_done(trial_dir: Path, key: str) -> bool:
    """Whether a trial is finished for this run's key, with results that read back. A damaged
    record or results file is set aside with a warning and the trial counts as not done (it runs
    again: from its checkpoint, which for a finished trial means evaluation only)."""
    record = read_record(trial_dir)
    if record is None or not done_for(record, key):
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


def collect_cases(run_dir: Path, key: str | None = None, records: Records | None = None) -> pd.DataFrame:
    """All finished trials' per-case rows, one per (model, seed, fold, case): only trials whose
    record carries the run's key (default: config.json's `_key`), so rows of another
    configuration or data never enter the run's table. `records`: the run's one scan of them."""
    if key is None:
        stored = stored_config(run_dir)
        key = str(stored.key) if stored is not None and stored.key else None
    frames = []
    for tdir, _record in done_trials(run_dir, key, records):
        try:
            frames.append(read_csv(TrialFolder(tdir).cases, CASE_COLUMNS))
        except FileNotFoundError:
            continue
        except DamagedFile as exc:
            warnings.warn(f"{exc}: its rows are left out until a run on the folder repeats the trial",
                          RunFolderWarning, stacklevel=2)  # fmt: skip
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    return rows.drop_duplicates(subset=["model", "seed", "fold", "case"], keep="last")


def trial_index(run_dir: Path, records: Records | None = None) -> dict[str, dict[str, Any]]:
    """Per trial: status, device, wall time, epochs, best val Dice, checkpoint (for the manifest).
    `records`: the run's one scan of them (`trial_records`), else read here."""
    index: dict[str, dict[str, Any]] = {}
    for trial, raw in trial_records(run_dir) if records is None else records:
        if raw is not None:
            r = TrialRecord.from_dict(raw)
            index[trial.name] = {
                "status": r.status,
                "device": r.device,
                "gpu_ids": r.gpu_ids,
                "host": r.host,
                "wall_seconds": r.wall_seconds,
                "epochs": r.epochs,
                "resumed_from_epoch": r.resumed_from_epoch,
                "attempts": r.attempts,
                "best_val_dice": r.best_val_dice,
                "weights": _weights_location(trial, r.weights or WEIGHTS),
            }
        elif trial.failure.exists():
            try:
                f = read_json(trial.failure)
            except DamagedFile as exc:
                f = {"error": str(exc)}
            index[trial.name] = {"status": "failed", "error": f.get("error"), "attempts": f.get("attempts")}
    return index


def _weights_location(trial: TrialFolder, weights: str) -> str:
    """Where a trial's evaluated weights are: relative to the run folder, or a storage URL."""
    return weights if "://" in weights else trial.location(weights)


def load_run_config(run_dir: Path) -> RunConfig:
    """The configuration stored in a run folder, for `covbench run --resume DIR`."""
    path = RunFolder(run_dir).config
    if not path.is_file():
        raise CovbenchError(f"--resume {run_dir}: no config.json there (is it a covbench run folder?)")
    try:
        stored = read_stored_config(run_dir)
    except DamagedFile as exc:
        raise CovbenchError(
            f"--resume {run_dir}: {exc}; run the original `covbench run` command with --out {run_dir} "
            "instead (finished trials are kept)"
        ) from None
    assert stored is not None  # the file is there
    return stored.config
