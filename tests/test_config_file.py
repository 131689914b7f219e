"""`covbench run --config FILE.yaml` and `--dry-run`: one configuration however it is written, a
plan that trains, starts and writes nothing, and bad files refused in one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import RUN_BOUND_S
from typer.testing import CliRunner

from covbench.cli import app

runner = CliRunner()

# Options of every kind: comma list, count, preset, int, float, choice, bool flag, repeatable.
CLI = [
    "--models", "unet,unetpp", "--seeds", "2", "--preset", "smoke", "--epochs", "3", "--lr", "0.001",
    "--loss", "dice_bce", "--augment", "affine", "--no-tta", "--val-fraction", "0.25",
    "--model-option", "unetpp.deep_supervision=false", "--deterministic",
]  # fmt: skip
YAML = """\
models: [unet, unetpp]
seeds: 2
preset: smoke
epochs: 3
lr: 1.0e-3
loss: dice_bce
augment: affine
tta: false
val_fraction: 0.25          # '_' and '-' are the same key
model-option:
  - unetpp.deep_supervision=false
deterministic: true
"""


def dry_run(*args: str) -> tuple[str, str]:
    """(configuration key, stdout) of `covbench run --dry-run ARGS`."""
    result = runner.invoke(app, ["run", "--dry-run", *args])
    assert result.exit_code == 0, result.output
    key = re.search(r"^# configuration key ([0-9a-f]{16}) ", result.stdout, re.M)
    assert key, result.stdout
    return key.group(1), result.stdout


def test_a_run_written_as_options_or_as_a_file_has_one_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(YAML)
    key_cli, printed = dry_run(*CLI)
    key_file, _ = dry_run("--config", str(path))
    assert key_file == key_cli
    # what --dry-run prints is itself a config file for the same run, and prints the same again
    again = tmp_path / "again.yaml"
    again.write_text(printed)
    key_again, printed_again = dry_run("--config", str(again))
    assert key_again == key_cli
    assert printed_again == printed
    # and a different value in the file is a different configuration
    path.write_text(YAML.replace("epochs: 3", "epochs: 4"))
    assert dry_run("--config", str(path))[0] != key_cli


def test_numbers_as_yaml_reads_them_and_paths_with_a_tilde(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(YAML.replace("lr: 1.0e-3", "lr: 1e-3"))  # text to PyYAML, a number to --lr
    assert dry_run("--config", str(path))[0] == dry_run(*CLI)[0]
    path.write_text("dataset: image-folder\ndata-dir: ~/no-such-folder\n")
    result = runner.invoke(app, ["run", "--config", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert f"{Path.home() / 'no-such-folder'}: data folder does not exist" in result.output


def test_the_command_line_wins_over_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(YAML.replace("epochs: 3", "epochs: 0"))  # out of range, but overridden
    key, printed = dry_run("--config", str(path), "--epochs", "3")
    assert key == dry_run(*CLI)[0]
    assert "\nepochs: 3\n" in printed


@pytest.fixture(scope="module")
def yaml_run(tmp_path_factory, ray_session):
    """A real run (Ray, training, report) configured by a file only."""
    out = tmp_path_factory.mktemp("runs") / "from-yaml"
    path = out.parent / "tiny.yaml"
    path.write_text(f"models: unet\nseeds: 1\npreset: smoke\nepochs: 1\nout: {out}\n")
    result = runner.invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 0, result.output
    return out


def test_a_file_run_records_the_key_of_the_same_options_given_on_the_command_line(yaml_run):
    stored = json.loads((yaml_run / "config.json").read_text())
    assert (yaml_run / "trials" / "unet__seed0__fold0" / "record.json").is_file()
    key, _ = dry_run("--models", "unet", "--seeds", "1", "--preset", "smoke", "--epochs", "1")
    assert stored["_key"].split("-")[0] == key


def test_dry_run_on_a_run_folder_counts_finished_trials_and_times_the_rest(yaml_run):
    before = sorted(p.relative_to(yaml_run) for p in yaml_run.rglob("*"))
    args = ["--models", "unet", "--preset", "smoke", "--epochs", "1", "--out", str(yaml_run)]
    _, done = dry_run(*args, "--seeds", "1")
    assert "1 to run" not in done and "0 to run, 1 finished" in done
    assert "# time estimate: nothing left to run" in done
    _, more = dry_run(*args, "--seeds", "3")  # seeds are not part of the configuration key
    assert "3 = 1 model(s) x 3 seed(s) x 1 fold(s); 2 to run, 1 finished" in more
    assert re.search(r"# time estimate: about \d+ (min \d+ )?s \(from 1 finished trial", more), more
    # a different configuration on the folder is refused as the run would refuse it
    refused = runner.invoke(app, ["run", "--dry-run", *args, "--seeds", "1", "--lr", "0.1"])
    assert refused.exit_code == 2
    assert "holds a run with a different configuration (changed: lr)" in refused.output
    assert sorted(p.relative_to(yaml_run) for p in yaml_run.rglob("*")) == before  # nothing written


def test_resume_refuses_configuration_options_from_a_file(yaml_run, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 5\nmax-retries: 1\n")  # max-retries is no configuration option
    result = runner.invoke(app, ["run", "--resume", str(yaml_run), "--config", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert f"drop epochs (in {path})" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochz: 3\n", "unknown key 'epochz' (did you mean 'epochs'?)"),
        ("epochs: three\n", "key 'epochs': expected a whole number, got \"three\""),
        ("epochs: 2.5\n", "key 'epochs': expected a whole number, got 2.5"),
        ("tta: 1\n", "key 'tta': expected true or false, got 1"),
        ("lr: yes\n", "key 'lr': expected a number, got true"),
        ("seeds: null\n", "key 'seeds': expected a value"),
        ("epochs: 0\n", "key 'epochs': --epochs must be positive, got 0"),
        ("image-size: 50\n", "key 'image-size': --image-size must be a multiple of 16"),
        ("val_fraction: 1\n", "key 'val_fraction': --val-fraction must be at least 0 and below 1"),
        ("preset: huge\n", "key 'preset': unknown preset 'huge'"),
        ("models: [unet, nosuchnet]\n", "key 'models': unknown model 'nosuchnet'"),
        ("folds: 3\n", "key 'folds': --folds 3 needs --split kfold"),
        ("cpus-per-trial: 0\n", "key 'cpus-per-trial': --cpus-per-trial must be positive"),
        ("resume: runs/x\n", "key 'resume': give --resume on the command line"),
        ("epochs: 2\nepochs: 3\n", "key 'epochs' given twice"),
        (
            "epochs: 2\nimage_size: 32\nimage-size: 32\n",
            "key 'image-size' given twice (also as 'image_size')",
        ),
        ("epochs: [2\n", "not valid YAML"),
        ("- epochs\n", "expected a mapping of run options"),
    ],
)
@pytest.mark.parametrize("dry", [True, False])
def test_a_bad_file_is_one_line_naming_file_and_key_exit_2(text, message, dry, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text + f"out: {tmp_path / 'run'}\n" if not text.startswith("-") else text)
    result = runner.invoke(app, ["run", "--config", str(path), *(["--dry-run"] if dry else [])])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    assert f"{path}: " in lines[0] and message in lines[0], lines[0]
    if dry:
        assert result.output.strip() == lines[0]  # nothing but the error
    assert not (tmp_path / "run").exists()


def test_a_missing_file_is_refused():
    result = runner.invoke(app, ["run", "--config", "/nonexistent/run.yaml", "--dry-run"])
    assert result.exit_code == 2
    assert "--config /nonexistent/run.yaml: cannot read it" in result.output


def test_dry_run_starts_no_ray_reads_no_data_and_writes_nothing(tmp_path):
    """In a fresh process with an empty cache: the plan comes without Ray, without generating or
    pre-processing the phantom, and without creating the run folder (nor importing mlflow). `paper`,
    not `all`: a test plugin another test installed would change the count."""
    cache, out = tmp_path / "cache", tmp_path / "run"
    cache.mkdir()
    code = (
        "import sys\nfrom covbench.cli import app\n"
        f"sys.argv = ['covbench', 'run', '--dry-run', '--models', 'paper', '--out', {str(out)!r}]\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('MODULES', 'ray' in sys.modules, 'mlflow' in sys.modules)\n"
    )
    env = {**os.environ, "COVBENCH_CACHE": str(cache)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=RUN_BOUND_S
    )
    assert result.returncode == 0, result.stderr
    assert "MODULES False False" in result.stdout
    assert "not pre-processed" in result.stdout and "15 to run" in result.stdout
    assert list(cache.iterdir()) == [] and not out.exists()


def test_plan_packs_trials_onto_local_gpus_as_the_runner_would(monkeypatch):
    """The GPU branch on a CPU machine: one 80 GiB GPU seen by this process, 6 trials."""
    from covbench.config import build_config, resolve_preset
    from covbench.execution import dry_run as plan
    from covbench.execution import scheduler

    monkeypatch.setattr(scheduler.InProcessExecutor, "resources", lambda self: {"cpus": 16.0, "gpus": 1.0})
    monkeypatch.setattr(scheduler, "free_gpu_memory", lambda: 80 * 2**30)
    cfg = build_config(models=["unet", "resunet"], n_seeds=3, preset=resolve_preset("smoke"))
    got = plan.plan_run(cfg, None)
    assert got.packing.trials_per_gpu == 4 and got.packing.gpus_per_trial == 0.25
    assert "limited by ceiling" in got.packing.reason
    assert got.slots == 4 and any("contract check" in n for n in got.notes)
    given = plan.plan_run(cfg, None, gpus_per_trial=1)
    assert given.packing.reason == "--gpus-per-trial 1 given" and given.slots == 1
    cluster = plan.plan_run(cfg, None, address="auto")
    assert cluster.packing is None and cluster.resources is None


def test_the_dry_run_plans_with_the_runs_own_defaults_and_order(monkeypatch):
    """The plan is the run's: the contract checks it makes are bounded by the run's default
    --stall-timeout (the dry run once passed 0, "never"), and its trials come in the order the
    runner submits them."""
    from covbench import checks
    from covbench.config import DEFAULT_STALL_SECONDS, build_config, resolve_preset
    from covbench.execution import dry_run as plan
    from covbench.execution import scheduler
    from covbench.execution.runner import trial_order

    bounds = []
    real = checks.check_config
    monkeypatch.setattr(checks, "check_config", lambda cfg, timeout=None: bounds.append(timeout) or real(cfg))
    monkeypatch.setattr(scheduler.InProcessExecutor, "resources", lambda self: {"cpus": 16.0, "gpus": 1.0})
    monkeypatch.setattr(scheduler, "free_gpu_memory", lambda: 80 * 2**30)
    cfg = build_config(models=["unet", "resunet"], n_seeds=3, preset=resolve_preset("smoke"))
    got = plan.plan_run(cfg, None)
    assert bounds == [DEFAULT_STALL_SECONDS]
    assert [(t.model, t.seed, t.fold) for t in got.trials] == trial_order(cfg, 1)
    assert [t.name for t in got.trials][:3] == [
        "unet__seed0__fold0",
        "resunet__seed0__fold0",
        "unet__seed1__fold0",
    ]


@pytest.mark.filterwarnings("ignore:split 'paper' is slice-level")
@pytest.mark.parametrize(
    ("strategy", "folds"),
    [("patient", 1), ("kfold", 3), ("ma2021", 1), ("ma2021-limited", 1), ("predefined", 1), ("paper", 1)],
)
def test_fold_count_known_before_the_data_matches_the_split(strategy, folds):
    import numpy as np

    from covbench.datasets.base import SliceSet
    from covbench.datasets.splits import MA2021_TEST_FOLDS, make_splits, n_folds

    ids = sorted(p for fold in MA2021_TEST_FOLDS for p in fold)  # 20 patients, 2 slices each
    patient = np.repeat(ids, 2)
    masks = np.zeros((len(patient), 8, 8), np.uint8)
    masks[:, 2:4, 2:4] = 1  # a lesion on every slice: every fold's test set has one
    slices = SliceSet(
        images=np.zeros_like(masks),
        masks=masks,
        spacing=np.ones((len(patient), 2), np.float32),
        patient=patient,
        slice_index=np.tile([0, 1], len(ids)),
        source=np.array([p.split("_")[0] for p in patient]),
    )
    part_of = {p: ("test" if k % 4 == 0 else "train") for k, p in enumerate(ids)}
    manifests = make_splits(strategy, slices, folds=folds, part_of=part_of)
    assert n_folds(strategy, folds) == len(manifests)


def test_the_cache_lookup_finds_prepared_data_without_reading_it(tmp_path):
    from covbench.datasets.prepare import find_cached, prepare_slices
    from covbench.datasets.preprocess import PreprocessConfig

    options = {"n_patients": 3, "size": 64, "n_slices": 8}
    assert (
        find_cached("phantom", None, PreprocessConfig(image_size=32), options=options, cache_dir=tmp_path)
        is None
    )
    prepared = prepare_slices(
        "phantom", None, PreprocessConfig(image_size=32), options=options, cache_dir=tmp_path
    )
    meta = find_cached("phantom", None, PreprocessConfig(image_size=32), options=options, cache_dir=tmp_path)
    assert meta is not None and meta["n_slices"] == len(prepared.slices)
    assert meta["fingerprint"] == prepared.fingerprint
    assert (
        find_cached("phantom", None, PreprocessConfig(image_size=64), options=options, cache_dir=tmp_path)
        is None
    )
