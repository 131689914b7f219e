"""The run folder's layout: the one place that names its files.

Layout (all paths relative to the run folder)::

    config.json          resolved RunConfig, with `_key` (covbench.folder.key), `_versions`, `_amp`
    environment.json     package versions, git commit, host, devices, data fingerprint
    split.json           patient ids per part (identical for every model and seed)
    models.json          the contract check's parameters, FLOPs and memory per model
    test_slices.npz      every fold's pre-processed test slices (the report's overlays)
    trials/<trial>/      record.json (written last: its presence means done), failure.json,
                         cases.csv, epochs.csv, predictions.npz, weights.pt (the evaluated
                         weights); checkpoint.pt while training (covbench.training.checkpoint)
    cases.csv            every (model, seed, fold, case) row with every metric
    summary.json         the report's numbers (summary-patient.json for the patient unit),
                         table.*, report.*, figures/ (covbench.reports.report names those)
    rounds.json          the looks of a `--max-seeds` run: seeds per model, verdicts, boundary
    gate.json            the last `compare` verdict on this run's summary
    mlflow/              the local MLflow store of `--track mlflow` (covbench.execution.tracking)
    .lock, .covbench-run the writer's lock and the mark of a folder covbench created (covbench.folder.lock)

Readers of old folders and the report depend on these names never changing; keeping them here,
not as literals across modules, is what makes a rename or a new file a one-place change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRIALS = "trials"
RUN_LOCK = ".lock"  # the OS lock of one writer per run folder (covbench.folder.lock)
# the lock object of one run per storage prefix (covbench.folder.storage): another name than
# RUN_LOCK, since a prefix may be a local folder next to run folders
STORAGE_LOCK = ".covbench-lock"
CHECKPOINT = "checkpoint.pt"  # model + Adam + best weights: resumes training (covbench.training.checkpoint)
WEIGHTS = "weights.pt"  # the evaluated weights of a trial whose training finished
# Written when covbench makes a folder its run folder (covbench.folder.state.claim_run_dir): covbench
# writes only into folders that carry it, are empty, or are run folders of an older covbench.
MARKER = ".covbench-run"
GATE_FILE = "gate.json"


def trial_name(model: str, seed: int, fold: int) -> str:
    """A trial's folder name; a model name that is not a safe file name is spelled safely."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    return f"{safe}__seed{seed}__fold{fold}"


@dataclass(frozen=True)
class TrialFolder:
    """One trial's folder, `trials/<trial>/`."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def record(self) -> Path:
        return self.path / "record.json"

    @property
    def failure(self) -> Path:
        return self.path / "failure.json"

    @property
    def cases(self) -> Path:
        return self.path / "cases.csv"

    @property
    def epochs(self) -> Path:
        return self.path / "epochs.csv"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions.npz"

    def location(self, name: str) -> str:
        """A file of this trial as the manifest names it: relative to the run folder."""
        return f"{TRIALS}/{self.name}/{name}"


@dataclass(frozen=True)
class RunFolder:
    """A run folder's paths; nothing is read or created by building one."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def environment(self) -> Path:
        return self.root / "environment.json"

    @property
    def split(self) -> Path:
        return self.root / "split.json"

    @property
    def models(self) -> Path:
        return self.root / "models.json"

    @property
    def test_slices(self) -> Path:
        return self.root / "test_slices.npz"

    @property
    def cases(self) -> Path:
        return self.root / "cases.csv"

    @property
    def summary(self) -> Path:
        return self.summary_of("")

    def summary_of(self, suffix: str) -> Path:
        """summary.json, or a unit's own (`summary-patient.json`) beside it."""
        return self.root / f"summary{suffix}.json"

    @property
    def rounds(self) -> Path:
        """rounds.json: each look of a `--max-seeds` run (covbench.execution.rounds), written as decided."""
        return self.root / "rounds.json"

    @property
    def gate(self) -> Path:
        return self.root / GATE_FILE

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def lock(self) -> Path:
        return self.root / RUN_LOCK

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def trials_dir(self) -> Path:
        return self.root / TRIALS

    def trial(self, name: str) -> TrialFolder:
        return TrialFolder(self.trials_dir / name)

    def trial_of(self, model: str, seed: int, fold: int) -> TrialFolder:
        return self.trial(trial_name(model, seed, fold))

    def trials(self) -> list[TrialFolder]:
        """The trial folders that exist, in name order."""
        return [TrialFolder(p) for p in sorted(self.trials_dir.glob("*")) if p.is_dir()]
