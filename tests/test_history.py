"""`covbench track` / `covbench history`: SQLite history of run summaries, trend and plots."""

from __future__ import annotations

import json
import sqlite3

import pytest
from helpers import lock_holder
from typer.testing import CliRunner

from covbench.cli import app
from covbench.config import PRESETS, build_config

runner = CliRunner()


FINGERPRINT = "173ada1faa06" + "0" * 52


def make_run(tmp_path, name, dice, commit, finished, preset="smoke", fingerprint=FINGERPRINT, **overrides):
    """A run folder as `covbench run` + `covbench report` leave it, with only Dice in the summary."""
    run = tmp_path / name
    run.mkdir()
    models = {
        m: {"dice": {"mean": dice + k * 0.01, "sd": 0.1, "n": 8, "seed_mean": dice, "seed_sd": 0.02}}
        for k, m in enumerate(("resunet", "unet"))
    }
    values = {  # per seed and test patient, as `covbench compare` tests them (seed SD 0.02)
        m: {
            "dice": {
                str(s): {
                    f"0/p{u}": dice + k * 0.01 + ds + du for u, du in enumerate((-0.05, 0.05, -0.01, 0.01))
                }
                for s, ds in enumerate((-0.02, 0.0, 0.02))
            }
        }
        for k, m in enumerate(("resunet", "unet"))
    }
    summary = {"schema": 2, "unit": "slice", "models": models, "seeds": [0, 1, 2]}
    summary["unit_values"] = {"unit": "patient", "values": values}
    (run / "summary.json").write_text(json.dumps(summary))
    env = {"git": {"commit": commit, "dirty": False}, "created": finished, "finished": finished}
    env["data_fingerprint"] = fingerprint
    (run / "environment.json").write_text(json.dumps(env))
    cfg = build_config(models=["resunet", "unet"], n_seeds=3, preset=PRESETS[preset], **overrides)
    (run / "config.json").write_text(json.dumps({**cfg.to_dict(), "_key": f"{cfg.key()}-{fingerprint[:12]}"}))
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


def sections(output: str) -> dict[str, str]:
    """`covbench history` output split per benchmark: name -> its section."""
    parts = output.split("## Benchmark `")[1:]
    return {part.split("`", 1)[0]: part for part in parts}


def track(run, db, *extra):
    return runner.invoke(app, ["track", str(run), "--history", str(db), *extra])


def test_two_benchmarks_and_two_commits_never_mix(tmp_path):
    db = tmp_path / "h.sqlite"
    smoke_a = make_run(tmp_path, "smoke-a", 0.70, "a" * 40, "2026-01-01T00:00:00+00:00", epochs=2)
    cpu = make_run(tmp_path, "cpu", 0.90, "a" * 40, "2026-01-02T00:00:00+00:00", preset="cpu")
    smoke_b = make_run(tmp_path, "smoke-b", 0.72, "b" * 40, "2026-01-03T00:00:00+00:00", epochs=2)
    names = []
    for run in (smoke_a, cpu, smoke_b):
        result = track(run, db)
        assert result.exit_code == 0, result.output
        names.append(result.output.split("benchmark '")[1].split("'")[0])
    assert names == ["phantom-smoke", "phantom-cpu", "phantom-smoke"]

    result = runner.invoke(app, ["history", str(db), "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    found = sections(result.output)
    assert set(found) == {"phantom-smoke", "phantom-cpu"}
    smoke_rows = [line for line in found["phantom-smoke"].splitlines() if line.startswith("| 2026")]
    assert [row.split(" | ")[1] for row in smoke_rows] == ["aaaaaaaaaa", "bbbbbbbbbb"]
    assert "0.7200 (+0.0200)" in smoke_rows[1]  # delta between the two commits of one benchmark
    cpu_rows = [line for line in found["phantom-cpu"].splitlines() if line.startswith("| 2026")]
    assert len(cpu_rows) == 1 and "(" not in cpu_rows[0]  # first run of its series: no delta
    assert "+0.2000" not in result.output and "-0.1800" not in result.output  # no cross-benchmark delta
    assert "preset cpu" in found["phantom-cpu"] and "preset smoke" in found["phantom-smoke"]

    only = runner.invoke(app, ["history", str(db), "--benchmark", "phantom-cpu", "--plots", str(db) + "-p"])
    assert only.exit_code == 0, only.output
    assert set(sections(only.output)) == {"phantom-cpu"}
    unknown = runner.invoke(app, ["history", str(db), "--benchmark", "nope"])
    assert unknown.exit_code == 2 and "phantom-cpu, phantom-smoke" in unknown.output

    # the gate makes the same comparison first: the cross-benchmark pair is refused, not compared
    cross = runner.invoke(app, ["compare", str(smoke_a), str(cpu)])
    assert cross.exit_code == 2, cross.output
    assert "different benchmarks" in cross.output
    assert "preset smoke (baseline) vs cpu (current)" in cross.output
    assert "Verdict" not in cross.output
    same = runner.invoke(app, ["compare", str(smoke_a), str(smoke_b)])
    assert same.exit_code == 0, same.output


def test_a_name_stands_for_one_benchmark(tmp_path):
    db = tmp_path / "h.sqlite"
    smoke = make_run(tmp_path, "smoke", 0.70, "a" * 40, "2026-01-01T00:00:00+00:00", epochs=2)
    cpu = make_run(tmp_path, "cpu", 0.90, "a" * 40, "2026-01-02T00:00:00+00:00", preset="cpu")
    assert track(smoke, db, "--benchmark", "gate").exit_code == 0
    refused = track(cpu, db, "--benchmark", "gate")
    assert refused.exit_code == 2
    message = refused.output.strip()
    assert "\n" not in message and "'gate' is a different benchmark" in message
    assert "preset smoke (gate) vs cpu (this run)" in message and "epochs 2 vs 24" in message
    again = make_run(tmp_path, "smoke2", 0.71, "b" * 40, "2026-01-03T00:00:00+00:00", epochs=2)
    renamed = track(again, db, "--benchmark", "other")
    assert renamed.exit_code == 2 and "already tracked as 'gate'" in renamed.output
    assert "of benchmark 'gate'" in track(again, db).output  # no name: it joins its own series

    # without --benchmark, a changed benchmark starts a new series instead of stopping a CI job
    e3 = make_run(tmp_path, "e3", 0.72, "c" * 40, "2026-01-04T00:00:00+00:00", epochs=3)
    e4 = make_run(tmp_path, "e4", 0.73, "d" * 40, "2026-01-05T00:00:00+00:00", epochs=4)
    assert "new benchmark 'phantom-smoke' in" in track(e3, db).output
    out = track(e4, db).output
    assert "new benchmark 'phantom-smoke-" in out and "epochs 3 (phantom-smoke) vs 4 (this run)" in out
    with sqlite3.connect(db) as con:
        series = dict(con.execute("SELECT run, benchmark FROM runs").fetchall())
    assert series["smoke"] == series["smoke2"] == "gate" and len(set(series.values())) == 3


def test_identity_rule_ignores_seeds_models_and_paths_but_not_settings():
    from covbench.reports.identity import differences, identity_from_config

    def ident(fingerprint="f" * 64, unit="slice", drop=(), n_seeds=3, models=("unet",), **kw):
        cfg = build_config(models=list(models), n_seeds=n_seeds, preset=PRESETS["smoke"], **kw).to_dict()
        return identity_from_config({k: v for k, v in cfg.items() if k not in drop}, fingerprint, unit)

    base = ident()
    assert differences(base, ident(n_seeds=5, models=("unet", "resunet"), data_dir="/elsewhere")) == []
    # a run written before a field existed reads as that field's default, not as a new benchmark
    assert differences(ident(drop=("deterministic",)), base) == []
    assert [d[0] for d in differences(ident(drop=("deterministic",)), ident(deterministic=False))] == [
        "deterministic"
    ]
    assert [d[0] for d in differences(base, ident(fingerprint="e" * 64))] == ["data_fingerprint"]
    assert [d[0] for d in differences(base, ident(unit="patient"))] == ["unit"]
    assert [d[0] for d in differences(base, ident(split_seed=1))] == ["split_seed"]
    options = ident(model_options={"unet": {"batch_norm": False}})
    assert [d[0] for d in differences(base, options)] == ["model_options"]
    assert [d[0] for d in differences(base, ident(epochs=3, lr=0.1))] == ["epochs", "lr"]


def test_history_prints_the_last_runs_per_benchmark(tmp_path):
    db = tmp_path / "h.sqlite"
    for i in range(4):
        run = make_run(tmp_path, f"r{i}", 0.70 + 0.01 * i, f"{i}" * 40, f"2026-01-0{i + 1}T00:00:00+00:00")
        assert track(run, db).exit_code == 0
    result = runner.invoke(app, ["history", str(db), "--last", "2", "--plots", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| 2026")]
    assert [row.split(" | ")[1] for row in rows] == ["2222222222", "3333333333"]
    assert "0.7200 (+0.0100)" in rows[0]  # the delta still refers to the previous (hidden) run
    assert "4 run(s), the last 2 shown" in result.output
    everything = runner.invoke(app, ["history", str(db), "--last", "0", "--plots", str(tmp_path / "p")])
    assert len([line for line in everything.output.splitlines() if line.startswith("| 2026")]) == 4
    assert runner.invoke(app, ["history", str(db), "--last", "-1"]).exit_code == 2


def test_gate_verdict_reaches_step_summary_history_and_plot(tmp_path):
    db, page = tmp_path / "h.sqlite", tmp_path / "step-summary.md"
    base = make_run(tmp_path, "base", 0.70, "a" * 40, "2026-01-01T00:00:00+00:00")
    good = make_run(tmp_path, "good", 0.705, "b" * 40, "2026-01-02T00:00:00+00:00")
    bad = make_run(tmp_path, "bad", 0.55, "c" * 40, "2026-01-03T00:00:00+00:00")
    env = {"GITHUB_STEP_SUMMARY": str(page)}
    assert runner.invoke(app, ["compare", str(base), str(good)], env=env).exit_code == 0
    failed = runner.invoke(app, ["compare", str(base), str(bad)], env=env)
    assert failed.exit_code == 1, failed.output
    text = page.read_text()
    assert "### covbench compare: passed" in text and "### covbench compare: REGRESSION" in text
    assert text.count("| Model | Metric |") == 2 and "**REGRESSED**" in text
    other = make_run(tmp_path, "other", 0.70, "d" * 40, "2026-01-04T00:00:00+00:00", preset="cpu")
    assert runner.invoke(app, ["compare", str(base), str(other)], env=env).exit_code == 2
    assert "### covbench compare: refused (exit 2)" in page.read_text()
    assert not (other / "gate.json").exists()

    assert json.loads((bad / "gate.json").read_text())["passed"] is False
    for run in (base, good, bad):
        assert track(run, db).exit_code == 0
    tracked = track(other, db)
    assert tracked.exit_code == 0 and "gate:" not in tracked.output  # refused by the gate: nothing recorded
    result = runner.invoke(app, ["history", str(db), "--plots", str(tmp_path / "plots")])
    smoke = sections(result.output)["phantom-smoke"]
    rows = [line for line in smoke.splitlines() if line.startswith("| 2026")]
    assert [row.rsplit("|", 2)[1].strip() for row in rows] == ["–", "pass", "**flagged**"]
    assert "**0.5500 (-0.1550)**" in rows[2] and "**" not in rows[1]  # the failed points are marked
    assert (tmp_path / "plots" / "history_dice.png").stat().st_size > 1000


def test_history_written_before_benchmarks_still_reads_and_grows(tmp_path):
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as con:
        con.executescript(
            "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL, "
            "path TEXT NOT NULL, git_commit TEXT, git_dirty INTEGER, date TEXT NOT NULL, "
            "tracked TEXT NOT NULL, unit TEXT NOT NULL, "
            "config_key TEXT, n_seeds INTEGER, summary_sha256 TEXT NOT NULL UNIQUE);"
            "CREATE TABLE metrics (run_id INTEGER NOT NULL REFERENCES runs(id), model TEXT NOT NULL, "
            "metric TEXT NOT NULL, mean REAL, sd REAL, n INTEGER, seed_mean REAL, seed_sd REAL, "
            "PRIMARY KEY (run_id, model, metric));"
            "INSERT INTO runs VALUES (1, 'old', '/old', 'a', 0, '2025-01-01', '2025-01-01', 'slice', "
            "'k1', 3, 'x');"
            "INSERT INTO metrics VALUES (1, 'unet', 'dice', 0.5, 0.1, 8, 0.5, 0.01);"
        )
    run = make_run(tmp_path, "new", 0.70, "b" * 40, "2026-01-01T00:00:00+00:00")
    assert track(run, db).exit_code == 0
    result = runner.invoke(app, ["history", str(db), "--plots", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert set(sections(result.output)) == {"legacy-k1", "phantom-smoke"}
    assert "(+0.2000)" not in result.output  # the old run is not the new benchmark's predecessor


@pytest.mark.process
def test_compare_and_track_refuse_a_run_folder_a_run_is_writing(tmp_path):
    """gate.json is written into the run folder and track reads it: both take the folder's lock."""
    run = make_run(tmp_path, "r1", 0.70, "a" * 40, "2026-01-01T10:00:00+00:00")
    baseline = tmp_path / "baseline.json"
    baseline.write_text((run / "summary.json").read_text())
    with lock_holder(run) as holder:
        history = ["--history", str(tmp_path / "h")]
        for args in (["compare", str(baseline), str(run)], ["track", str(run), *history]):
            result = runner.invoke(app, args)
            assert result.exit_code == 2, result.output
            assert f"error: {run} is in use by" in result.output and f"pid {holder.pid}" in result.output
        assert not (run / "gate.json").exists() and not (tmp_path / "h").exists()
    assert runner.invoke(app, ["compare", str(baseline), str(run)]).exit_code == 0
    assert (run / "gate.json").is_file()
