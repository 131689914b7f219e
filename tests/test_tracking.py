"""`covbench run --track mlflow` against a real MLflow store, read back through MLflow's client;
and a tracker that fails (not installed, bad store, an error while logging) never failing the run."""

from __future__ import annotations

import csv
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from covbench.cli import app
from covbench.execution.tracking import default_uri

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def _args(out: Path) -> list[str]:
    return ["run", "--preset", "smoke", "--models", "unet,resunet", "--seeds", "1", "--epochs", "2",
            "--track", "mlflow", "--out", str(out)]  # fmt: skip


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("runs") / "tracked"
    result = runner.invoke(app, _args(out))
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.output
    return out


def _runs(uri: str) -> tuple[MlflowClient, list, list]:
    """(client, parent runs, child runs) of the covbench experiment in the store at `uri`."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("covbench")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_one_parent_run_per_run_and_one_child_per_trial(tracked):
    _, parents, children = _runs(default_uri(tracked))
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "tracked"
    assert parent.data.tags["covbench_run_dir"] == str(tracked.resolve())
    config = json.loads((tracked / "config.json").read_text())
    assert parent.data.tags["covbench_key"] == config["_key"]
    assert (
        parent.data.params["epochs"] == "2" and json.loads(parent.data.params["phantom"]) == config["phantom"]
    )
    trials = sorted(p.name for p in (tracked / "trials").iterdir())
    assert (
        sorted(c.info.run_name for c in children) == trials == ["resunet__seed0__fold0", "unet__seed0__fold0"]
    )
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        record = json.loads((tracked / "trials" / child.info.run_name / "record.json").read_text())
        assert child.data.params["model"] == record["model"] and child.data.params["seed"] == "0"
        assert child.data.metrics["best_epoch"] == record["best_epoch"]


def test_epoch_histories_and_final_metrics_match_the_run_folder(tracked):
    client, parents, children = _runs(default_uri(tracked))
    child = next(c for c in children if c.info.run_name == "unet__seed0__fold0")
    epochs = _rows(tracked / "trials" / "unet__seed0__fold0" / "epochs.csv")
    history = sorted(client.get_metric_history(child.info.run_id, "train_loss"), key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([float(r["train_loss"]) for r in epochs])
    cases = _rows(tracked / "trials" / "unet__seed0__fold0" / "cases.csv")
    assert child.data.metrics["test_dice"] == pytest.approx(sum(float(r["dice"]) for r in cases) / len(cases))
    summary = json.loads((tracked / "summary.json").read_text())["models"]
    for model in ("unet", "resunet"):
        assert parents[0].data.metrics[f"{model}.dice_mean"] == pytest.approx(summary[model]["dice"]["mean"])
        assert parents[0].data.metrics[f"{model}.hd95_sd"] == pytest.approx(summary[model]["hd95"]["sd"])


def test_the_report_is_an_artifact_of_the_parent_run(tracked, tmp_path):
    client, parents, _ = _runs(default_uri(tracked))
    run_id = parents[0].info.run_id
    names = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/table.md", "report/summary.json"} <= names
    assert "report/figures/boxplots.png" in {a.path for a in client.list_artifacts(run_id, "report/figures")}
    local = client.download_artifacts(run_id, "report/report.md", str(tmp_path))
    assert Path(local).read_text() == (tracked / "report.md").read_text()


def test_running_again_reopens_the_parent_and_a_new_store_gets_every_trial(tracked, tmp_path, monkeypatch):
    again = runner.invoke(app, _args(tracked))  # every trial done: nothing trained, report again
    assert again.exit_code == 0, again.output
    _, parents, children = _runs(default_uri(tracked))
    assert len(parents) == 1 and len(children) == 2 and parents[0].info.status == "FINISHED"
    # MLFLOW_TRACKING_URI wins; trials finished before that store saw them are logged there too
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # a store without a server puts artifacts in ./mlruns (MLflow's default)
    other = runner.invoke(app, _args(tracked))
    assert other.exit_code == 0, other.output
    _, parents_there, children_there = _runs(uri)
    assert len(parents_there) == 1 and len(children_there) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children_there} == {parents_there[0].info.run_id}
    assert len(_runs(default_uri(tracked))[2]) == 2  # the run folder's own store is untouched


def _one_warning(output: str) -> str:
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, output
    return warnings[0]


def test_mlflow_not_installed_is_one_warning_and_the_run_goes_on(tracked, monkeypatch):
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    before = (tracked / "summary.json").stat().st_mtime_ns
    result = runner.invoke(app, _args(tracked))
    assert result.exit_code == 0, result.output
    assert "pip install 'covbench[mlflow]'" in _one_warning(result.output)
    assert (tracked / "summary.json").stat().st_mtime_ns > before  # the report was written again


def test_a_store_that_cannot_be_opened_is_one_warning(tracked, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")
    result = runner.invoke(app, _args(tracked))
    assert result.exit_code == 0, result.output
    assert re.match(
        r"warning: --track mlflow: tracking is off \(.+\); the run goes on", _one_warning(result.output)
    )


def test_an_error_while_logging_is_one_warning_and_tracking_stops(tracked, tmp_path, monkeypatch):
    from covbench.execution import tracking

    calls = []

    def broken(self, name, record):
        calls.append(name)
        raise RuntimeError("the store went away")

    monkeypatch.setattr(tracking.MlflowTracker, "_trial", broken)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'fresh.db'}")  # both trials to log
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, _args(tracked))
    assert result.exit_code == 0, result.output
    assert "RuntimeError: the store went away" in _one_warning(result.output)
    assert len(calls) == 1  # off after the first failure
    _, parents, _ = _runs(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert parents[0].info.status == "RUNNING"  # never finished: tracking was off by then


def test_an_unknown_tracker_is_refused_and_dry_run_names_the_store(tmp_path):
    result = runner.invoke(app, ["run", "--track", "wandb", "--out", str(tmp_path / "run"), "--dry-run"])
    assert result.exit_code == 2
    assert "--track must be one of none, mlflow, got 'wandb'" in result.output
    planned = runner.invoke(app, ["run", "--track", "mlflow", "--out", str(tmp_path / "run"), "--dry-run"])
    assert planned.exit_code == 0, planned.output
    assert f"# note: --track mlflow: store {default_uri(tmp_path / 'run')}\n" in planned.output
    assert not (tmp_path / "run").exists()


def test_mlflow_is_optional():
    """`pip install .` brings no MLflow, and nothing but covbench.execution.tracking imports it, inside its
    tracker only: the README's commands run without the extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any("mlflow" in d for d in project["dependencies"])
    assert any(d.startswith("mlflow") for d in project["optional-dependencies"]["mlflow"])
    importers = []
    tops = ("bench", "plugins", "datasets", "reports", "benchmarks", "scripts", "examples")
    paths = [p for top in tops for p in (REPO / top).glob("**/*.py")]  # never a venv (.venv-ci)
    for path in paths:
        if "tests" in path.parts:
            continue
        for line in path.read_text().splitlines():
            if re.match(r"\s*(import mlflow|from mlflow)", line):
                importers.append((path.relative_to(REPO).as_posix(), line.startswith((" ", "\t"))))
    assert importers and {p for p, _ in importers} == {"bench/execution/tracking.py"}
    assert all(indented for _, indented in importers)  # inside functions, never at import time
