"""Experiment tracking (`covbench run --track mlflow`): a covbench run as one MLflow parent run,
each trial as a child run. The only module that imports mlflow (the optional `covbench[mlflow]`).

What is logged:
- parent run (named after the run folder, tagged with its path and configuration key): the
  resolved configuration as parameters; after the report, each model's mean and SD of every
  metric (`summary.json`) and the report files (report.md/html, tables, summary, figures) as
  artifacts under `report/`; its status is FINISHED, FAILED (trials failed) or KILLED (Ctrl-C);
- child run per trial: model, seed, fold, size and device as parameters; every `epochs.csv`
  column as a metric history (step = epoch); the trial's test means (`test_dice`, ...), best
  validation Dice and epoch, training and evaluation seconds; FAILED with the error for a failed one.

The store defaults to `sqlite:///RUN/mlflow/mlflow.db` with artifacts in `RUN/mlflow/artifacts`,
so no server is needed (`mlflow ui --backend-store-uri sqlite:///RUN/mlflow/mlflow.db` shows it);
`MLFLOW_TRACKING_URI` (and `MLFLOW_EXPERIMENT_NAME`, default `covbench`) override it. Running the
same command again (resume) reopens the same parent run and logs only the trials it lacks, so
trials finished before tracking was switched on appear too.

Tracking never fails a benchmark: any exception in it (mlflow not installed, a bad URI, a store
that breaks halfway) is one warning, after which tracking is off and the run goes on.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from covbench.errors import CovbenchError, quote
from covbench.folder.layout import RunFolder
from covbench.folder.record import TrialRecord

TRACKERS = ("none", "mlflow")
EXPERIMENT = "covbench"
_BATCH = 1000  # MLflow's limit of metrics per log_batch call


class Tracker(Protocol):
    """What `covbench run` calls: `event` is the runner's `on_event` stream ("start", "done",
    "failed", ...), `finish` comes after the report (None when none was written)."""

    def event(self, kind: str, info: dict[str, Any]) -> None: ...

    def finish(self, status: str, report: Any | None = None) -> None: ...


class NoTracker:
    def event(self, kind: str, info: dict[str, Any]) -> None:
        pass

    def finish(self, status: str, report: Any | None = None) -> None:
        pass


class SafeTracker:
    """Runs a tracker's calls so that none can fail the run: the first exception (opening it
    included) becomes one warning, and the tracker is off from then on."""

    def __init__(self, name: str, make: Callable[[], Tracker], warn: Callable[[str], None]) -> None:
        self.name = name
        self.warn = warn
        self.off = False
        self._inner: Tracker = NoTracker()
        self._call(lambda: setattr(self, "_inner", make()))

    def _call(self, fn: Callable[[], Any]) -> None:
        if self.off:
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - any tracker failure, by design (module docstring)
            self.off = True
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            why = f"{type(exc).__name__}: {first}"
            self.warn(f"--track {self.name}: tracking is off ({why}); the run goes on")

    def event(self, kind: str, info: dict[str, Any]) -> None:
        self._call(lambda: self._inner.event(kind, info))

    def finish(self, status: str, report: Any | None = None) -> None:
        self._call(lambda: self._inner.finish(status, report))


def check_tracker(kind: str) -> None:
    if kind not in TRACKERS:
        raise CovbenchError(f"--track must be one of {', '.join(TRACKERS)}, got {quote(kind)}")


def open_tracker(kind: str, run_dir: Path, warn: Callable[[str], None]) -> Tracker:
    """The tracker `--track KIND` asks for, guarded (SafeTracker); `none` tracks nothing."""
    check_tracker(kind)
    if kind == "none":
        return NoTracker()
    return SafeTracker(kind, lambda: MlflowTracker(Path(run_dir)), warn)


def tracking_note(kind: str, run_dir: Path | None) -> str:
    """What `--track KIND` would do, for `--dry-run` (mlflow is looked up, not imported)."""
    import importlib.util

    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_uri(run_dir or Path("runs/<timestamp>"))
    missing = importlib.util.find_spec("mlflow") is None
    return f"--track {kind}: store {uri}" + (
        "; mlflow is not installed (pip install 'covbench[mlflow]'): the run would go on untracked"
        if missing
        else ""
    )


def default_uri(run_dir: Path) -> str:
    return f"sqlite:///{(RunFolder(run_dir).mlflow / 'mlflow.db').resolve()}"


def _metric_key(text: str) -> str:
    """MLflow keys allow letters, digits, `_ - . / space`: a model such as `smp:Unet:resnet18`
    becomes `smp_Unet_resnet18`."""
    return re.sub(r"[^\w\-. /]", "_", text)


def _param(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class MlflowTracker:
    def __init__(self, run_dir: Path) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise CovbenchError("mlflow is not installed (pip install 'covbench[mlflow]')") from None
        for name in ("alembic", "mlflow.store.db.utils"):  # schema set-up chatter on a new store
            logging.getLogger(name).setLevel(logging.WARNING)
        # a tracking server that does not answer costs seconds, not MLflow's minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        self.run_dir = Path(run_dir).resolve()
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or default_uri(self.run_dir)
        self.local = not os.environ.get("MLFLOW_TRACKING_URI")
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_id: str | None = None
        self.parent: str | None = None
        self.key: str | None = None

    # -- the runner's events ---------------------------------------------------------------
    def event(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "start":
            self._start(info["key"], info["config"], info.get("versions") or {})
        elif kind == "done" and self.parent:
            self._trial(info["trial"], info["record"])
        elif kind == "failed" and self.parent:
            self._failed(info["trial"], str(info.get("error")))

    def _experiment(self) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (RunFolder(self.run_dir).mlflow / "artifacts").as_uri() if self.local else None
        return self.client.create_experiment(name, artifact_location=location)

    def _start(self, key: str, config: dict[str, Any], versions: dict[str, str]) -> None:
        """The parent run of this covbench run (key, configuration and code versions as the runner
        holds them), resumed if it exists, and every trial finished before tracking saw it."""
        from covbench.folder.io import done_trials

        if self.local:
            RunFolder(self.run_dir).mlflow.mkdir(exist_ok=True)
        self.key = key
        self.experiment_id = self._experiment()
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.covbench_run_dir = '{self.run_dir}' and tags.covbench_key = '{self.key}'",
            max_results=1,
        )
        if runs:
            self.parent = runs[0].info.run_id
            self.client.update_run(self.parent, status="RUNNING")
        else:
            tags = {"covbench_run_dir": str(self.run_dir), "covbench_key": self.key}
            tags.update({f"covbench_version.{k}": v for k, v in versions.items()})
            self.parent = self.client.create_run(self.experiment_id, tags=tags, run_name=self.run_dir.name)
            self.parent = self.parent.info.run_id
            params = {k: _param(v) for k, v in config.items()}
            self._log(self.parent, params=params)
        logged = self._logged_trials()
        for trial_dir, record in done_trials(self.run_dir, self.key):  # finished before tracking saw them
            if trial_dir.name not in logged:
                self._trial(trial_dir.name, record)

    def _logged_trials(self) -> set[str]:
        children = f"tags.mlflow.parentRunId = '{self.parent}'"
        runs = self.client.search_runs([self.experiment_id], filter_string=children, max_results=50_000)
        return {r.data.tags.get("covbench_trial") for r in runs}

    def _child(self, name: str) -> str:
        tags = {"mlflow.parentRunId": self.parent, "covbench_trial": name}
        return self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id

    def _trial(self, name: str, record: TrialRecord) -> None:
        from covbench.metrics import METRICS

        run_id = self._child(name)
        trial = RunFolder(self.run_dir).trial(name)
        fields = ("model", "seed", "fold", "parameters", "width", "device")
        params = {k: _param(getattr(record, k)) for k in fields}
        params["options"] = _param(record.options)
        now = int(time.time() * 1000)
        metrics = [(k, v, now, step) for k, v, step in _epoch_metrics(trial.epochs)]
        finals = {
            k: getattr(record, k) for k in ("best_val_dice", "best_epoch", "train_seconds", "eval_seconds")
        }
        finals.update({f"test_{m}": v for m, v in _test_means(trial.cases, METRICS).items()})
        metrics += [(k, v, now, 0) for k, v in finals.items() if _number(v) is not None]
        self._log(run_id, params=params, metrics=metrics)
        self.client.set_terminated(run_id, "FINISHED")

    def _failed(self, name: str, error: str) -> None:
        run_id = self._child(name)
        self.client.set_tag(run_id, "covbench_error", error[:4000])
        self.client.set_terminated(run_id, "FAILED")

    # -- after the report --------------------------------------------------------------------
    def finish(self, status: str, report: Any | None = None) -> None:
        if self.parent is None:
            return
        if report is not None:
            now = int(time.time() * 1000)
            metrics = [
                (f"{_metric_key(model)}.{metric}_{stat}", float(stats[stat]), now, 0)
                for model, by_metric in report.summary.get("models", {}).items()
                for metric, stats in by_metric.items()
                for stat in ("mean", "sd")
                if _number(stats.get(stat)) is not None
            ]
            self._log(self.parent, metrics=metrics)
            for path in map(Path, report.paths):
                if path.is_file():
                    folder = path.resolve().parent.relative_to(self.run_dir).as_posix()  # "." or "figures"
                    sub = "report" if folder == "." else f"report/{folder}"
                    self.client.log_artifact(self.parent, str(path), artifact_path=sub)
        self.client.set_terminated(self.parent, status)

    def _log(
        self,
        run_id: str,
        params: dict[str, str] | None = None,
        metrics: list[tuple[str, float, int, int]] | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param

        items = [Param(k, v) for k, v in (params or {}).items()]
        for start in range(0, len(items), 100):  # MLflow's limit of params per batch
            self.client.log_batch(run_id, params=items[start : start + 100])
        values = [Metric(k, float(v), ts, int(step)) for k, v, ts, step in metrics or []]
        for start in range(0, len(values), _BATCH):
            self.client.log_batch(run_id, metrics=values[start : start + _BATCH])


def _epoch_metrics(path: Path) -> Iterable[tuple[str, float, int]]:
    """(column, value, epoch) for every number in a trial's epochs.csv."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        step = _number(row.get("epoch"))
        if step is None:
            continue
        for column, text in row.items():
            try:
                value = float(text)  # NaN and inf too: a diverging seed shows as such
            except (TypeError, ValueError):
                continue
            if column and column != "epoch":
                out.append((column, value, int(step)))
    return out


def _test_means(path: Path, metrics: Iterable[str]) -> dict[str, float]:
    """The trial's mean of each metric over its test cases (cases.csv), NaN cells left out."""
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for metric in metrics:
        values = [v for v in (_number(r.get(metric)) for r in rows) if v is not None]
        if values:
            out[metric] = sum(values) / len(values)
    return out
