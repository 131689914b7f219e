"""`covbench compare`: verdicts, tolerances, missing metrics, exit codes 0 / 1 / 2, --update."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from covbench.cli import app
from covbench.errors import CovbenchError
from covbench.reports.compare import FLOORS, MISSING, NEW, REGRESSED, WITHIN, compare, parse_tolerances

runner = CliRunner()


def summary(dice=0.80, assd=2.0, seed_sd=0.004, cases=None, drop=()):
    """A minimal summary.json as `covbench report` writes it."""
    entry = {
        "dice": {"mean": dice, "sd": 0.1, "n": 10, "seed_mean": dice, "seed_sd": seed_sd},
        "assd": {"mean": assd, "sd": 1.0, "n": 10, "seed_mean": assd, "seed_sd": 0.1},
    }
    for metric in drop:
        entry.pop(metric)
    data = {"unit": "slice", "models": {"unet": entry}}
    if cases is not None:
        data["per_case"] = {"unet": {"dice": {f"0/c{i}": v for i, v in enumerate(cases)}}}
    return data


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def invoke(tmp_path, base, cur, *extra):
    b, c = write(tmp_path, "base.json", base), write(tmp_path, "cur.json", cur)
    return runner.invoke(app, ["compare", str(b), str(c), *extra])


def test_improved_within_noise_and_regressed_exit_0_0_1(tmp_path):
    base = summary()
    improved = invoke(tmp_path, base, summary(dice=0.85, assd=1.0))
    assert improved.exit_code == 0, improved.output
    assert "improved" in improved.output and "All 2 checks passed." in improved.output
    noise = invoke(tmp_path, base, summary(dice=0.795, assd=2.3))  # within 0.01 and 0.5 mm floors
    assert noise.exit_code == 0, noise.output
    assert "within tolerance" in noise.output
    regressed = invoke(tmp_path, base, summary(dice=0.78))
    assert regressed.exit_code == 1, regressed.output
    assert "REGRESSED" in regressed.output and "1 of 2 checks failed." in regressed.output
    assert "--update" in regressed.output  # says how to refresh the baseline on purpose


def test_direction_lower_is_better_for_distances(tmp_path):
    result = compare(summary(), summary(assd=2.6))  # ASSD up by more than the 0.5 mm floor: worse
    assert {r.metric: r.verdict for r in result.rows} == {"dice": WITHIN, "assd": REGRESSED}
    assert compare(summary(), summary(assd=1.0)).failed == []


def test_default_tolerance_is_max_of_floor_and_two_seed_sd():
    rows = {r.metric: r for r in compare(summary(seed_sd=0.004), summary()).rows}
    assert rows["dice"].tolerance == FLOORS["dice"]
    assert rows["assd"].tolerance == pytest.approx(max(FLOORS["assd"], 0.2))
    noisy = {r.metric: r for r in compare(summary(seed_sd=0.03), summary(dice=0.75)).rows}
    assert noisy["dice"].tolerance == pytest.approx(0.06)
    assert noisy["dice"].verdict == WITHIN  # 0.05 drop is inside 2 x 0.03


def test_tolerance_override_makes_a_drop_a_regression(tmp_path):
    assert invoke(tmp_path, summary(), summary(dice=0.795)).exit_code == 0
    strict = invoke(tmp_path, summary(), summary(dice=0.795), "--tolerance", "dice=0.001")
    assert strict.exit_code == 1, strict.output


def test_metric_missing_on_either_side_is_reported(tmp_path):
    lost = invoke(tmp_path, summary(), summary(drop=("assd",)))
    assert lost.exit_code == 1, lost.output
    assert MISSING in lost.output and "ASSD (mm)" in lost.output
    new = invoke(tmp_path, summary(drop=("assd",)), summary())
    assert new.exit_code == 0, new.output
    assert f"| {NEW} |" in new.output
    rows = {r.metric: r for r in compare(summary(drop=("assd",)), summary()).rows}
    assert rows["assd"].baseline is None and rows["assd"].delta is None


def test_p_value_only_where_both_sides_hold_per_case_values():
    base = summary(cases=[0.8, 0.7, 0.9, 0.6, 0.75, 0.85, 0.65, 0.7])
    worse = summary(dice=0.7, cases=[0.7, 0.6, 0.8, 0.5, 0.65, 0.75, 0.55, 0.6])
    row = next(r for r in compare(base, worse).rows if r.metric == "dice")
    assert row.p_value == pytest.approx(2 / 2**8)  # exact two-sided Wilcoxon, all 8 differences one way
    assert next(r for r in compare(summary(), worse).rows if r.metric == "dice").p_value is None
    assert next(r for r in compare(base, base).rows if r.metric == "dice").p_value == 1.0


def test_run_folder_is_accepted_and_update_refreshes_the_baseline(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write(run, "summary.json", summary(dice=0.7))
    (run / "environment.json").write_text(json.dumps({"git": {"commit": "abc", "dirty": False}}))
    base = write(tmp_path, "baseline.json", summary())
    assert runner.invoke(app, ["compare", str(base), str(run)]).exit_code == 1
    updated = runner.invoke(app, ["compare", str(base), str(run), "--update"])
    assert updated.exit_code == 0, updated.output
    data = json.loads(base.read_text())
    assert data["models"]["unet"]["dice"]["mean"] == 0.7
    assert data["baseline_of"]["git"]["commit"] == "abc"
    assert runner.invoke(app, ["compare", str(base), str(run)]).exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tolerance", "dice"], "--tolerance 'dice': expected METRIC=VALUE"),
        (["--tolerance", "iou=0.1"], "unknown metric 'iou'"),
        (["--tolerance", "dice=abc"], "'abc' is not a number"),
        (["--tolerance", "dice=-1"], "must be a non-negative number"),
        (["--metrics", "dice,foo"], "--metrics 'dice,foo'"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, args, message):
    result = invoke(tmp_path, summary(), summary(), *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1


def test_bad_inputs_exit_2_naming_the_file(tmp_path):
    missing = runner.invoke(app, ["compare", str(tmp_path / "nope.json"), str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "nope.json" in missing.output
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner.invoke(app, ["compare", str(bad), str(bad)])
    assert result.exit_code == 2 and "bad.json" in result.output
    empty_run = tmp_path / "empty-run"
    empty_run.mkdir()
    result = runner.invoke(app, ["compare", str(empty_run), str(empty_run)])
    assert result.exit_code == 2 and "no summary.json" in result.output
    patient = summary()
    patient["unit"] = "patient"
    assert invoke(tmp_path, summary(), patient).exit_code == 2


def test_parse_tolerances():
    assert parse_tolerances(["dice=0.02", "HD95=2"]) == {"dice": 0.02, "hd95": 2.0}
    with pytest.raises(CovbenchError):
        parse_tolerances(["dice=nan"])
    assert math.isfinite(parse_tolerances(["nsd=0"])["nsd"])


def test_update_creates_a_missing_baseline(tmp_path):
    current = write(tmp_path, "cur.json", summary(dice=0.6))
    baseline = tmp_path / "baselines" / "new.json"
    result = runner.invoke(app, ["compare", str(baseline), str(current), "--update"])
    assert result.exit_code == 0, result.output
    assert "created" in result.output
    assert json.loads(baseline.read_text())["models"]["unet"]["dice"]["mean"] == 0.6
    # without --update a missing baseline is an input error, not a pass
    assert runner.invoke(app, ["compare", str(tmp_path / "none.json"), str(current)]).exit_code == 2


def config_json(run, epochs=12, fingerprint="f" * 64, **overrides):
    """config.json and environment.json of a smoke-preset run, as `covbench run` writes them."""
    from covbench.config import PRESETS, build_config

    cfg = build_config(models=["unet"], n_seeds=3, preset=PRESETS["smoke"], epochs=epochs, **overrides)
    (run / "config.json").write_text(json.dumps({**cfg.to_dict(), "_key": f"{cfg.key()}-{fingerprint[:12]}"}))
    env = {"git": {"commit": "abc", "dirty": False}, "data_fingerprint": fingerprint}
    (run / "environment.json").write_text(json.dumps(env))


def test_baseline_keeps_its_identity_and_refuses_another_benchmark(tmp_path):
    run12, run2 = tmp_path / "e12", tmp_path / "e2"
    for run, epochs in ((run12, 12), (run2, 2)):
        run.mkdir()
        write(run, "summary.json", summary())
        config_json(run, epochs=epochs)
    baseline = tmp_path / "baseline.json"
    assert runner.invoke(app, ["compare", str(baseline), str(run12), "--update"]).exit_code == 0
    stored = json.loads(baseline.read_text())["benchmark"]
    assert stored["epochs"] == 12 and stored["data_fingerprint"] == "f" * 12 and "seeds" not in stored
    refused = runner.invoke(app, ["compare", str(baseline), str(run2)])
    assert refused.exit_code == 2, refused.output
    assert "epochs 12 (baseline) vs 2 (current)" in refused.output and "REGRESSED" not in refused.output
    assert not (run2 / "gate.json").exists()
    # --update is the deliberate way to move the gate to another benchmark
    moved = runner.invoke(app, ["compare", str(baseline), str(run2), "--update"])
    assert moved.exit_code == 0 and "a different benchmark" in moved.output
    assert json.loads(baseline.read_text())["benchmark"]["epochs"] == 2
    passed = runner.invoke(app, ["compare", str(baseline), str(run2)])
    assert passed.exit_code == 0 and json.loads((run2 / "gate.json").read_text())["passed"] is True


def test_a_side_without_identity_is_compared_with_a_note(tmp_path):
    result = invoke(tmp_path, summary(), summary())
    assert result.exit_code == 0 and "no benchmark identity" in result.output


def test_committed_ci_baseline_is_the_benchmark_ci_run_runs():
    """reports/baselines/smoke-ci.json holds the identity of .ci/run's benchmark: same settings as its
    `covbench run` line and the same phantom bytes. A change to either needs a refreshed baseline."""
    from pathlib import Path

    from covbench.config import PRESETS, build_config
    from covbench.datasets import phantom
    from covbench.datasets.fingerprint import fingerprint_files
    from covbench.reports.identity import differences, identity_from_config

    root = Path(__file__).resolve().parents[1]
    command = "covbench run --preset smoke --epochs 12 --seeds 3 --models paper"
    assert command in (root / ".ci" / "run").read_text()
    baseline = json.loads((root / "reports" / "baselines" / "smoke-ci.json").read_text())
    cfg = build_config(models=["unet", "unetpp", "resunet"], n_seeds=3, preset=PRESETS["smoke"], epochs=12)
    files = phantom.case_files(**cfg.phantom)  # the cached phantom, as `covbench run` reads it
    ci = identity_from_config(cfg.to_dict(), fingerprint_files(files), "slice")
    assert differences(baseline["benchmark"], ci) == []
