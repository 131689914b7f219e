"""What `covbench run` would do, worked out without doing it (`covbench run --dry-run`).

The plan makes the run's own refusals (options, models, data folder, a run folder holding another
configuration) and lists its trials, their resources, the GPU packing decision and a time
estimate, but trains nothing, starts no Ray and writes nothing: the run folder is only read, the
data only looked up in the pre-processing cache (`covbench.datasets.prepare.find_cached`).

What cannot be known without doing the work is said, not guessed:
- a cluster's CPUs and GPUs (`--address`) are asked when the run joins it;
- packing on local GPUs needs the contract check's memory figures (run here, on the CPU, only
  when packing could pay) and the GPU's free memory;
- the split's checks against the data (`--folds` against the patients, a lesion in every test
  set) are made on the pre-processing cache exactly as the run makes them (`split_folds`); without
  a cache they are made on the built-in phantom's known patient count, and otherwise listed as not
  made;
- a time estimate needs finished trials of this configuration in the run folder: their training
  seconds per epoch and evaluation seconds, scaled to the epochs asked. Without them there is none
  (a FLOP count gives no seconds without the device's measured throughput).
"""

from __future__ import annotations

import inspect
import os
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from covbench.config import RunConfig
from covbench.datasets.prepare import find_cached
from covbench.datasets.splits import n_folds
from covbench.errors import CovbenchError, DamagedFile
from covbench.execution.options import ExecutionOptions
from covbench.execution.packing import Packing, could_pack, largest_trial_memory, plan_packing
from covbench.folder.io import done_for, read_json
from covbench.folder.key import FINGERPRINT_CHARS, RunKey
from covbench.folder.layout import RunFolder, trial_name
from covbench.folder.state import check_stored
from covbench.folder.stored_config import read_stored_config


@dataclass(frozen=True)
class PlannedTrial:
    model: str
    seed: int
    fold: int
    done: bool = False  # finished in the run folder for this configuration: the run skips it

    @property
    def name(self) -> str:
        return trial_name(self.model, self.seed, self.fold)


@dataclass
class RunPlan:
    config_key: str  # RunConfig.key(); config.json's `_key` adds the data fingerprint
    trials: list[PlannedTrial]
    n_folds: int
    cpus_per_trial: float
    resources: dict[str, float] | None  # this machine's CPUs and GPUs; None: a cluster's, asked at run start
    packing: Packing | None  # None: decided when the run joins the cluster
    slots: int | None  # trials at a time
    folder: str  # what the run folder holds and what the run does with it
    data: str  # what is known of the data without reading it
    estimate_seconds: float | None = None
    estimate: str = ""  # how the estimate was made, or why there is none
    notes: list[str] = field(default_factory=list)

    @property
    def pending(self) -> list[PlannedTrial]:
        return [t for t in self.trials if not t.done]


def _finished_records(run_dir: Path, key: str) -> dict[str, dict[str, Any]]:
    """{trial name: record} of the folder's done trials of configuration `key` (read only: a
    damaged record is left for the run to set aside, and counts as not done)."""
    out = {}
    for trial in RunFolder(run_dir).trials():
        try:
            record = read_json(trial.record)
        except (OSError, DamagedFile):  # none yet (FileNotFoundError), or damaged
            continue
        # a dry run reads no data: a record of this configuration counts whatever its data
        if isinstance(record, dict) and done_for(record, None):
            if RunKey.parse(record.get("config_key")).config_hash == key:
                out[trial.name] = record
    return out


def _folder(cfg: RunConfig, run_dir: Path | None, allow_version_change: bool) -> tuple[str, dict[str, Any]]:
    """What the run would find in `run_dir`, and its finished trials. Raises the run's own
    CovbenchError when the folder holds another configuration or code version."""
    if run_dir is None:
        return "a new folder runs/<timestamp> (no --out given)", {}
    if not run_dir.exists():
        return f"{run_dir}: a new folder, created when the run starts", {}
    try:
        stored = read_stored_config(run_dir)
    except DamagedFile as exc:
        return f"{run_dir}: {exc}; the run sets it aside if every finished trial there matches", {}
    if stored is not None:
        from covbench.folder.manifest import code_versions

        check_stored(run_dir, cfg, stored, code_versions(cfg.models), allow_version_change)
    done = _finished_records(run_dir, cfg.key())
    if stored is None and not done:
        return f"{run_dir}: exists, holds no run yet", done
    return f"{run_dir}: holds this configuration; finished trials are skipped", done


def _estimate(
    cfg: RunConfig, done: dict[str, dict[str, Any]], pending: list[PlannedTrial], slots: int | None
) -> tuple[float | None, str]:
    if not pending:
        return 0.0, "nothing left to run"
    per_model: dict[str, list[float]] = {}
    for record in done.values():
        trained = int(record.get("epochs") or 0) - int(record.get("resumed_from_epoch") or 0)
        train_s, eval_s = record.get("train_seconds"), record.get("eval_seconds")
        if trained > 0 and isinstance(train_s, int | float) and isinstance(eval_s, int | float):
            per_model.setdefault(record.get("model"), []).append(train_s / trained * cfg.epochs + eval_s)
    if not per_model:
        return None, (
            "none: no finished trial of this configuration in the run folder to time it by "
            "(a FLOP count gives no seconds without the device's measured speed)"
        )
    missing = sorted({t.model for t in pending} - set(per_model))
    if missing:
        return None, f"none: no finished trial of {', '.join(missing)} in the run folder to time it by"
    trial_seconds = sum(statistics.median(per_model[t.model]) for t in pending)
    at_once = max(1, min(slots or 1, len(pending)))
    n_timed = sum(len(v) for v in per_model.values())
    return trial_seconds / at_once, (
        f"from {n_timed} finished trial(s) in the run folder (median training seconds per epoch x "
        f"{cfg.epochs} epochs + evaluation), {len(pending)} trial(s) {at_once} at a time; "
        "without start-up, data preparation and the report"
    )


def _check_split(cfg: RunConfig, meta: dict[str, Any] | None, cache: Path | None) -> str | None:
    """Make the run's split refusals (CovbenchError) without training; a note of what could not be
    checked, or None."""
    import warnings

    from covbench.datasets.prepare import load_slices
    from covbench.datasets.splits import kfold_split, patient_split
    from covbench.execution.runner import split_folds

    if meta is not None and cache is not None and (cache / "meta.json").is_file():
        with warnings.catch_warnings():  # the paper split's leak warning: the run shows it
            warnings.simplefilter("ignore")
            split_folds(cfg, load_slices(cache)[0], meta.get("part_of", {}))  # read-only, memory-mapped
        return None
    if cfg.dataset == "phantom" and cfg.split in ("patient", "kfold"):  # its patient count is an option
        from covbench.datasets.phantom import generate_phantom

        default = inspect.signature(generate_phantom).parameters["n_patients"].default
        ids = [str(i) for i in range(int(cfg.phantom.get("n_patients", default)))]
        if cfg.split == "kfold":
            kfold_split(ids, ["phantom"] * len(ids), k=cfg.folds)
        else:
            patient_split(ids, ["phantom"] * len(ids), fractions=cfg.split_fractions or (0.6, 0.2, 0.2))
        return "not checked before the data is read: a lesion in every test set (the run checks it)"
    return (
        f"not checked before the data is read: split {cfg.split!r} against the data's patients "
        "(--folds, part sizes) and a lesion in every test set (the run checks them after reading it)"
    )


def _data(cfg: RunConfig) -> tuple[str, dict[str, Any] | None, str | None]:
    from covbench.datasets.base import default_cache_root
    from covbench.datasets.prepare import cache_key
    from covbench.execution.runner import data_request

    spec, options, pre = data_request(cfg)
    data_dir = spec.check_data_dir(cfg.data_dir)  # the run's own refusal of a missing folder
    meta = find_cached(spec, data_dir, pre, options=options)
    key_options = {**options, "skip_bad": False}  # as the run asks prepare_slices
    cache = None if meta is None else default_cache_root() / "slices" / cache_key(
        spec.name, str(meta.get("fingerprint")), pre, key_options
    )  # fmt: skip
    unchecked = _check_split(cfg, meta, cache)
    where = f"dataset {cfg.dataset!r}" + (f" at {data_dir}" if data_dir else "")
    tested = ""
    if cfg.test_data:  # the run's refusal of a missing test folder, before anything is read
        test_spec = data_request(cfg, test=True)[0]
        try:
            test_dir = test_spec.check_data_dir(cfg.test_data["data_dir"])
        except CovbenchError as exc:  # as the run names it
            raise CovbenchError(f"--test-dataset {test_spec.name}: {exc}") from None
        tested = f"; tested on every patient of dataset {test_spec.name!r}" + (
            f" at {test_dir}" if test_dir else ""
        )
    if meta is None:
        note = f"{where}: not pre-processed at {cfg.image_size} px yet; the run reads it first{tested}"
        return note, None, unchecked
    return (
        f"{where}: {meta.get('n_cases')} cases, {meta.get('n_slices')} slices at {cfg.image_size} px "
        f"(pre-processing cache, fingerprint {str(meta.get('fingerprint'))[:FINGERPRINT_CHARS]}; "
        f"the run checks it){tested}",
        meta,
        unchecked,
    )


def _largest_plan(cfg: RunConfig, done: dict[str, dict[str, Any]], folds: int, slots: int | None) -> str:
    """Rounds of seeds (`--max-seeds`): the plan above is the first round; the most the run can
    train is every model to max seeds (covbench.execution.rounds.largest_plan), timed as the plan is."""
    from covbench.execution.rounds import largest_plan

    trials = [PlannedTrial(m, s, f, trial_name(m, s, f) in done) for m, s, f in largest_plan(cfg)]
    pending = [t for t in trials if not t.done]
    seconds, how = _estimate(cfg, done, pending, slots)
    most = cfg.rounds["max_seeds"]
    time = f"about {_duration(seconds)} ({how})" if seconds is not None else how
    return (
        f"rounds of seeds: the trials above are the first round; the largest plan is {len(trials)} trials "
        f"= {len(cfg.models)} model(s) x {most} seed(s) x {folds} fold(s), {len(pending)} to run; "
        f"its time: {time}"
    )


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else (f"{m} min {s:02d} s" if m else f"{s} s")


def plan_run(
    cfg: RunConfig, run_dir: Path | None, options: ExecutionOptions | None = None, **settings: Any
) -> RunPlan:
    """The plan of `covbench.execution.runner.execute(cfg, run_dir, options)` with the same options
    (the ExecutionOptions fields given as keywords, as `execute` takes them), its defaults, trial
    order and packing rule; raises the CovbenchError the run would raise before its first trial."""
    from covbench.execution.runner import trial_order
    from covbench.execution.scheduler import InProcessExecutor, Resources, free_gpu_memory, slots

    opts = replace(options or ExecutionOptions(), **settings)
    opts.validate(cfg)
    folds = n_folds(cfg.split, cfg.folds)
    data_note, meta, unchecked = _data(cfg)
    folder_note, done = _folder(cfg, run_dir, opts.allow_version_change)
    trials = [PlannedTrial(m, s, f, trial_name(m, s, f) in done) for m, s, f in trial_order(cfg, folds)]
    n_pending = sum(not t.done for t in trials)
    notes: list[str] = [unchecked] if unchecked else []
    cluster = (opts.address or os.environ.get("RAY_ADDRESS")) and not opts.debug
    if cluster:
        resources = packing = at_once = None
    else:
        resources = InProcessExecutor().resources()  # what a local Ray instance is given
        gpus = resources["gpus"]
        trial_memory = gpu_memory = None
        if could_pack(opts.gpus_per_trial, gpus, n_pending):  # the runner's rule
            from covbench.checks import check_config

            resident = int(meta["n_slices"]) if meta else 0
            checks = check_config(cfg, timeout=opts.stall_timeout or None)  # as the run checks them
            trial_memory = largest_trial_memory(checks.values(), resident, cfg.image_size)
            gpu_memory = free_gpu_memory()
            notes.append(
                "trial memory from the contract check (run here on the CPU) with "
                + (
                    f"all {resident} cached slices resident (the run counts one fold's train + val)"
                    if meta
                    else "no resident slices: the data is not pre-processed yet"
                )  # fmt: skip
            )
        packing = plan_packing(
            opts.gpus_per_trial, gpus, n_trials=n_pending, trial_memory=trial_memory, gpu_memory=gpu_memory
        )
        at_once = (
            1 if opts.debug else slots(resources, Resources(opts.cpus_per_trial, packing.gpus_per_trial))
        )
        if opts.debug:
            notes.append("--debug: trials run one after another in this process, without Ray")
    seconds, how = _estimate(cfg, done, [t for t in trials if not t.done], at_once)
    if cfg.rounds:
        notes.append(_largest_plan(cfg, done, folds, at_once))
    return RunPlan(
        config_key=cfg.key(),
        trials=trials,
        n_folds=folds,
        cpus_per_trial=opts.cpus_per_trial,
        resources=resources,
        packing=packing,
        slots=at_once,
        folder=folder_note,
        data=data_note,
        estimate_seconds=seconds,
        estimate=how,
        notes=notes,
    )
