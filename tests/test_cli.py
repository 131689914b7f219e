"""The CLI as a translation layer, and the end-to-end smoke run through it."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from covbench.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--models", "unet,nosuchnet"], "unknown model 'nosuchnet'"),
        (["run", "--preset", "huge"], "unknown preset 'huge'"),
        (["run", "--seeds", "0"], "--seeds must be a positive number"),
        (["run", "--seeds", "-3"], "--seeds must be a positive number"),
        (["run", "--image-size", "50"], "--image-size must be a multiple of 16"),
        (["run", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["run", "--augment", "mixup"], "--augment must be one of none, flip, affine"),
        (["run", "--loss", "focal"], "--loss must be one of dice, dice_bce"),
        (["run", "--val-fraction", "1"], "--val-fraction must be at least 0 and below 1"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(args, message, tmp_path):
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert not (tmp_path / "run").exists()


def test_models_lists_paper_counts():
    result = runner.invoke(app, ["models", "--preset", "cpu"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    for name in ("unet", "unetpp", "resunet"):
        assert name in flat
    assert "8,222,529" in result.output.replace("\n", "")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    result = runner.invoke(
        app, ["run", "--preset", "smoke", "--models", "all", "--seeds", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_smoke_run_writes_the_run_folder(smoke_run):
    out, output = smoke_run
    for name in ("config.json", "environment.json", "split.json", "cases.csv", "summary.json", "table.md"):
        assert (out / name).is_file(), name
    env = json.loads((out / "environment.json").read_text())
    assert env["packages"]["torch"] and env["data_fingerprint"]
    records = sorted(out.glob("trials/*/record.json"))
    assert len(records) == 6
    assert all(json.loads(r.read_text())["status"] == "done" for r in records)


def test_smoke_run_rows_and_summary_agree(smoke_run):
    out, output = smoke_run
    rows = pd.read_csv(out / "cases.csv")
    assert not rows.duplicated(["model", "seed", "fold", "case"]).any()
    split = json.loads((out / "split.json").read_text())
    assert set(rows["patient"]) <= set(split["test"])
    assert not set(split["train"]) & set(split["test"])
    summary = json.loads((out / "summary.json").read_text())
    for model in ("unet", "unetpp", "resunet"):
        entry = summary["models"][model]
        for metric in ("dice", "assd", "mae", "sensitivity", "specificity", "precision"):
            assert {"mean", "sd", "n"} <= set(entry[metric])
        per_case = rows[rows.model == model].groupby("case")["dice"].mean()
        assert entry["dice"]["mean"] == pytest.approx(per_case.mean())
        assert entry["dice"]["n"] == len(per_case)


def test_smoke_run_prints_table1(smoke_run):
    out, output = smoke_run
    assert "| Model | Dice | ASSD (mm) | MAE |" in output
    assert "Friedman" in output
    table = (out / "table.md").read_text()
    assert table.count("\n") == 2 + 3


def test_rerun_same_out_skips_finished_trials(smoke_run):
    out, _ = smoke_run
    result = runner.invoke(
        app, ["run", "--preset", "smoke", "--models", "all", "--seeds", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "0 trials run, 6 already done" in result.output


def test_changed_config_on_same_out_is_refused(smoke_run):
    out, _ = smoke_run
    result = runner.invoke(
        app, ["run", "--preset", "smoke", "--epochs", "3", "--seeds", "2", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "different configuration (changed: epochs)" in result.output


def test_deterministic_is_a_recorded_choice_refused_on_resume(tmp_path):
    """--no-deterministic (cuDNN autotuning, the GPU default) lands in config.json and each record;
    without the flag a CPU run is deterministic."""
    out = tmp_path / "run"
    args = ["run", "--preset", "smoke", "--models", "unet", "--seeds", "1", "--epochs", "1", "--debug"]
    result = runner.invoke(app, [*args, "--no-deterministic", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["deterministic"] is False
    (record,) = [json.loads(p.read_text()) for p in out.glob("trials/*/record.json")]
    assert record["deterministic"] is False
    refused = runner.invoke(app, ["run", "--resume", str(out), "--deterministic"])
    assert refused.exit_code == 2 and "drop --deterministic" in refused.output
    plain = tmp_path / "plain"
    assert runner.invoke(app, [*args, "--out", str(plain)]).exit_code == 0
    assert json.loads((plain / "config.json").read_text())["deterministic"] is True
