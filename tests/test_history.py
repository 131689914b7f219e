"""`covbench track` / `covbench history`: SQLite history of run summaries, trend and plots."""

from __future__ import annotations

import json
import sqlite3

from typer.testing import CliRunner

from covbench.cli import app

runner = CliRunner()


def make_run(tmp_path, name, dice, commit, finished):
    run = tmp_path / name
    run.mkdir()
    models = {
        m: {"dice": {"mean": dice + k * 0.01, "sd": 0.1, "n": 8, "seed_mean": dice, "seed_sd": 0.02}}
        for k, m in enumerate(("resunet", "unet"))
    }
    (run / "summary.json").write_text(json.dumps({"unit": "slice", "models": models, "seeds": [0, 1, 2]}))
    env = {"git": {"commit": commit, "dirty": False}, "finished": finished}
    (run / "environment.json").write_text(json.dumps(env))
    (run / "config.json").write_text(json.dumps({"_key": "k1"}))
    return run


def test_track_appends_and_history_prints_trend_and_plots(tmp_path):
    db = tmp_path / "history.sqlite"
    first = make_run(tmp_path, "r1", 0.70, "a" * 40, "2026-01-01T10:00:00+00:00")
    second = make_run(tmp_path, "r2", 0.75, "b" * 40, "2026-01-02T10:00:00+00:00")
    # tracked out of date order: the trend is still sorted by date
    for run, run_id in ((second, 1), (first, 2)):
        result = runner.invoke(app, ["track", str(run), "--history", str(db)])
        assert result.exit_code == 0, result.output
        assert f"as run {run_id}" in result.output
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM runs").fetchone() == (2,)
        assert con.execute("SELECT COUNT(*) FROM metrics").fetchone() == (4,)
        commit = con.execute("SELECT git_commit FROM runs WHERE run = 'r1'").fetchone()[0]
    assert commit == "a" * 40

    result = runner.invoke(app, ["history", str(db), "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("| 2026")]
    assert lines[0].startswith("| 2026-01-01T10:00:00+00:00 | aaaaaaaaaa | 0.7000 | 0.7100 |")
    assert "0.7500 (+0.0500)" in lines[1]
    for ext in ("png", "svg"):
        assert (tmp_path / "plots" / f"history_dice.{ext}").stat().st_size > 1000


def test_same_summary_is_tracked_once_and_bad_inputs_exit_2(tmp_path):
    db = tmp_path / "h.sqlite"
    run = make_run(tmp_path, "r1", 0.7, "c" * 40, "2026-01-01T00:00:00+00:00")
    assert runner.invoke(app, ["track", str(run), "--history", str(db)]).exit_code == 0
    again = runner.invoke(app, ["track", str(run), "--history", str(db)])
    assert again.exit_code == 2 and "already tracked" in again.output
    missing = runner.invoke(app, ["history", str(tmp_path / "none.sqlite")])
    assert missing.exit_code == 2 and "none.sqlite" in missing.output
    not_db = tmp_path / "text.sqlite"
    not_db.write_text("this is not a database, just text " * 20)
    result = runner.invoke(app, ["history", str(not_db)])
    assert result.exit_code == 2 and "not a covbench history database" in result.output
    no_summary = tmp_path / "empty"
    no_summary.mkdir()
    result = runner.invoke(app, ["track", str(no_summary), "--history", str(db)])
    assert result.exit_code == 2 and "no summary.json" in result.output
