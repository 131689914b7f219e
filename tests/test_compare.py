"""`covbench compare`: verdicts, tolerances, missing metrics, exit codes 0 / 1 / 2, --update."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from covbench.cli import app
from covbench.errors import CovbenchError
from covbench.reports.compare import (
    FLOORS,
    MISSING,
    NEW,
    REGRESSED,
    WITHIN,
    compare,
    parse_tolerances,
    unit_values_from_run,
)
from covbench.reports.inference import difference

runner = CliRunner()


def summary(dice=0.80, assd=2.0, seed_sd=0.004, seeds=3, units=6, drop=(), noise=0.0, noise_seed=1):
    """A minimal summary.json as `covbench report` writes it, with per-seed per-unit values: each
    metric = its mean + a seed offset (SD `seed_sd`) + a unit offset, the same draws for every
    call, so two summaries differ only by the given shift (and `noise`, uniform +-noise)."""
    rng = np.random.default_rng(0)
    seed_off = rng.normal(0, seed_sd, seeds) if seeds > 1 else np.zeros(1)
    unit_off = rng.normal(0, 0.05, units)
    jitter = np.random.default_rng(noise_seed).uniform(-noise, noise, (2, seeds, units))
    means = {"dice": dice, "assd": assd}
    values, entry = {}, {}
    for k, (metric, mean) in enumerate(means.items()):
        if metric in drop:
            continue
        scale = 1.0 if metric == "dice" else 20.0
        m = mean + scale * (seed_off[:, None] + unit_off[None, :]) + jitter[k]
        values[metric] = {str(s): {f"0/p{u}": float(m[s, u]) for u in range(units)} for s in range(seeds)}
        entry[metric] = {"mean": mean, "sd": 0.1, "n": units, "seed_sd": float(m.mean(1).std())}
    return {
        "schema": 2,
        "unit": "slice",
        "models": {"unet": entry},
        "unit_values": {"unit": "patient", "values": {"unet": values}},
    }


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
    noise = invoke(tmp_path, base, summary(noise=1e-4))  # float noise across processors
    assert noise.exit_code == 0, noise.output
    assert "within noise" in noise.output and "Numbers changed:" in noise.output
    regressed = invoke(tmp_path, base, summary(dice=0.75))
    assert regressed.exit_code == 1, regressed.output
    assert "REGRESSED" in regressed.output and "1 of 2 checks failed." in regressed.output
    assert "--update" in regressed.output  # says how to refresh the baseline on purpose


def test_direction_lower_is_better_for_distances(tmp_path):
    result = compare(summary(), summary(assd=2.6))  # ASSD up by more than the 0.5 mm floor: worse
    assert {r.metric: r.verdict for r in result.rows} == {"dice": WITHIN, "assd": REGRESSED}
    assert compare(summary(), summary(assd=1.0)).failed == []


def test_a_drop_must_be_significant_and_beyond_the_floor():
    # significant (seed noise 0.004) but below the 0.01 floor: passes
    small = {r.metric: r for r in compare(summary(), summary(dice=0.795)).rows}
    assert small["dice"].p_value < 0.05 and small["dice"].verdict == WITHIN
    assert small["dice"].tolerance == FLOORS["dice"] == 0.01
    # beyond the floor but within seed noise (SD 0.05 with 3 seeds a side): passes
    noisy = {r.metric: r for r in compare(summary(seed_sd=0.05), summary(seed_sd=0.05, dice=0.78)).rows}
    assert noisy["dice"].p_value > 0.05 and noisy["dice"].verdict == WITHIN
    # both: fails
    real = {r.metric: r for r in compare(summary(), summary(dice=0.78)).rows}
    assert real["dice"].verdict == REGRESSED and real["dice"].delta == pytest.approx(-0.02)


def test_p_value_is_the_shared_inference_over_seeds_on_the_fixed_test_set():
    """Seeds of both sides as replicates, each seed's mean over the shared units: exactly
    `inference.difference` on one column (Welch-Satterthwaite over seeds, checked against scipy in
    its own tests); with one seed a side, the units are paired instead."""
    base, cur = summary(), summary(dice=0.79, noise=0.003)
    row = next(r for r in compare(base, cur).rows if r.metric == "dice")

    def matrix(side, seeds=("0", "1", "2")):
        per_seed = side["unit_values"]["values"]["unet"]["dice"]
        return np.array([[per_seed[s][f"0/p{u}"] for u in range(6)] for s in seeds])

    expected = difference(matrix(cur).mean(1, keepdims=True), matrix(base).mean(1, keepdims=True))
    assert row.p_value == pytest.approx(expected.p_value)
    assert row.delta == pytest.approx(expected.estimate) and row.units == 6
    assert row.detectable == pytest.approx(expected.detectable())
    same = next(r for r in compare(base, base).rows if r.metric == "dice")
    assert same.p_value == 1.0 and same.delta == 0.0
    one = summary(seeds=1), summary(seeds=1, dice=0.79, noise=0.003)
    paired = next(r for r in compare(*one).rows if r.metric == "dice")
    assert paired.p_value == pytest.approx(difference(matrix(one[1], ("0",)), matrix(one[0], ("0",))).p_value)


def test_an_untrained_model_fails_with_three_test_patients():
    """The fast injection benchmark's numbers (3 test patients, 3 seeds; Dice per seed and patient):
    a network that never trained drops Dice from 0.40 to about 0.05, unevenly over the patients.
    Generalising to new patients (patients as replicates, 2 df) could not call that (p = 0.07); on
    the benchmark's fixed test set the seeds are the replicates and it fails."""
    base_values = [[0.504, 0.569, 0.186], [0.562, 0.615, 0.202], [0.428, 0.404, 0.152]]
    cur_values = [[0.061, 0.072, 0.031], [0.058, 0.069, 0.030], [0.063, 0.074, 0.032]]

    def side(values):
        per_seed = {str(s): {f"0/p{u}": v for u, v in enumerate(row)} for s, row in enumerate(values)}
        mean = float(np.mean(values))
        return {
            "unit": "slice",
            "models": {"unet": {"dice": {"mean": mean}}},
            "unit_values": {"unit": "patient", "values": {"unet": {"dice": per_seed}}},
        }

    generalising = difference(np.array(cur_values), np.array(base_values))
    assert generalising.p_value > 0.05
    (row,) = compare(side(base_values), side(cur_values)).rows
    assert row.verdict == REGRESSED and row.p_value < 0.05, row


def test_compare_prints_the_detectable_drop_and_the_rule(tmp_path):
    result = invoke(tmp_path, summary(), summary())
    assert result.exit_code == 0, result.output
    detectable = compare(summary(), summary()).detectable()["unet"]
    assert 0 < detectable < 0.1
    assert f"80% power: unet {detectable:.4f}" in result.output
    assert "Dice ↑ (primary)" in result.output and "Holm-adjusted" in result.output
    assert "Numbers unchanged" in result.output


def test_secondary_metrics_fail_only_after_holm():
    """With two secondary metrics, a drop whose raw p is in (0.025, 0.05) fails alone but not after
    Holm; the primary is checked whatever --metrics says."""

    def with_hd95(side):
        side["models"]["unet"]["hd95"] = side["models"]["unet"]["assd"]
        side["unit_values"]["values"]["unet"]["hd95"] = side["unit_values"]["values"]["unet"]["assd"]
        return side

    noisy = dict(seed_sd=0.05)
    shift = next(
        x
        for x in np.arange(2.51, 5.0, 0.01)
        if 0.025 < compare(summary(**noisy), summary(assd=x, **noisy)).rows[1].p_value < 0.05
    )
    alone = {r.metric: r for r in compare(summary(**noisy), summary(assd=shift, **noisy)).rows}
    assert alone["assd"].verdict == REGRESSED and alone["assd"].delta > FLOORS["assd"]
    both = {
        r.metric: r
        for r in compare(with_hd95(summary(**noisy)), with_hd95(summary(assd=shift, **noisy))).rows
    }
    assert both["assd"].p_adjusted == pytest.approx(min(1.0, 2 * both["assd"].p_value))
    assert both["assd"].verdict == WITHIN and both["hd95"].verdict == WITHIN
    primary_only = compare(summary(), summary(assd=2.6), metrics=["assd"])
    assert [r.metric for r in primary_only.rows] == ["dice", "assd"]


def test_a_baseline_with_one_seed_says_it_cannot_estimate_seed_noise(tmp_path):
    one = invoke(tmp_path, summary(seeds=1), summary())
    assert one.exit_code == 0, one.output
    assert "has one seed, too few to estimate seed noise" in one.output
    both = invoke(tmp_path, summary(seeds=1), summary(seeds=1, dice=0.75))
    assert "cannot see training luck" in both.output
    assert both.exit_code == 1  # a large drop over every test unit still fails


def test_tolerance_override_replaces_the_floor(tmp_path):
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


def test_old_summary_without_per_seed_values(tmp_path):
    """A loose summary from before unit_values is refused in one line; in a run folder they are
    derived from cases.csv (patients as units); --update replaces an old baseline."""
    old = summary()
    old.pop("unit_values"), old.pop("schema")  # as covbench wrote it before schema 2
    refused = invoke(tmp_path, old, summary())
    assert refused.exit_code == 2, refused.output
    assert "re-run `covbench report`" in refused.output
    run = tmp_path / "old-run"
    run.mkdir()
    rows = [
        f"unet,{seed},0,p{p}:{k:04d},p{p},{0.7 + 0.01 * seed + 0.02 * p + 0.001 * k}"
        for seed in range(3)
        for p in range(3)
        for k in range(2)
    ]
    (run / "cases.csv").write_text("model,seed,fold,case,patient,dice\n" + "\n".join(rows) + "\n")
    write(run, "summary.json", {"unit": "slice", "models": {"unet": {"dice": {"mean": 0.75}}}})
    derived = runner.invoke(app, ["compare", str(run), str(run)])
    assert derived.exit_code == 0, derived.output
    values = unit_values_from_run(run)
    assert values["unit"] == "patient" and sorted(values["values"]["unet"]["dice"]["1"]) == [
        "0/p0",
        "0/p1",
        "0/p2",
    ]
    assert values["values"]["unet"]["dice"]["1"]["0/p2"] == pytest.approx(0.7 + 0.01 + 0.04 + 0.0005)
    baseline = write(tmp_path, "old-baseline.json", old)
    updated = runner.invoke(app, ["compare", str(baseline), str(run), "--update"])
    assert updated.exit_code == 0, updated.output
    assert "unit_values" in json.loads(baseline.read_text())  # the new baseline carries them


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
    """reports/baselines/ci.json holds the identity of .ci/run's benchmark: same settings as its
    `covbench run` line (which is also the injection script's `CI_RUN`) and the same phantom bytes,
    and the per-seed values the gate tests with. A change to either needs a refreshed baseline."""
    import shlex
    import sys
    from pathlib import Path

    from covbench.config import PRESETS, build_config
    from covbench.datasets import phantom
    from covbench.datasets.fingerprint import fingerprint_files
    from covbench.reports.identity import differences, identity_from_config

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    from bench_gate import CI_RUN

    line = next(x for x in (root / ".ci" / "run").read_text().splitlines() if x.startswith("covbench run "))
    assert line.startswith(CI_RUN + " --out ")
    args = dict(zip(shlex.split(CI_RUN)[2::2], shlex.split(CI_RUN)[3::2], strict=True))
    assert args == {
        "--preset": "cpu",
        "--image-size": "48",
        "--epochs": "24",
        "--seeds": "3",
        "--models": "paper",
    }
    baseline = json.loads((root / "reports" / "baselines" / "ci.json").read_text())
    cfg = build_config(
        models=["unet", "unetpp", "resunet"], n_seeds=3, preset=PRESETS["cpu"], epochs=24, image_size=48
    )
    files = phantom.case_files(**cfg.phantom)  # the cached phantom, as `covbench run` reads it
    ci = identity_from_config(cfg.to_dict(), fingerprint_files(files), "slice")
    assert differences(baseline["benchmark"], ci) == []
    values = baseline["unit_values"]["values"]
    assert sorted(values) == ["resunet", "unet", "unetpp"]
    assert all(len(values[m]["dice"]) == 3 for m in values)  # three seeds: the gate estimates seed noise
    assert all(baseline["models"][m]["dice"]["mean"] >= 0.6 for m in values)  # the models learn


def test_units_named_differently_are_refused_in_one_line(tmp_path):
    other = summary()
    per_seed = other["unit_values"]["values"]["unet"]["dice"]
    for s in per_seed:
        per_seed[s] = {k.replace("0/", "x/"): v for k, v in per_seed[s].items()}
    result = invoke(tmp_path, summary(), other)
    assert result.exit_code == 2, result.output
    assert "name their test units differently" in result.output and "--update" in result.output
