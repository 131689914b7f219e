"""The run folder's names and its key (covbench.layout, covbench.run_key): folders written by any
covbench version must keep reading the same."""

from __future__ import annotations

from covbench.layout import RunFolder, TrialFolder, trial_name
from covbench.run_key import RunKey


def test_run_key_spells_the_stored_string_and_parses_it_back():
    key = RunKey.of("0123456789abcdef", "f" * 64)
    assert str(key) == "0123456789abcdef-" + "f" * 12  # as config.json's _key has always been
    assert RunKey.parse(str(key)) == key
    assert RunKey.parse("0123456789abcdef") == RunKey("0123456789abcdef")
    assert str(RunKey("0123456789abcdef")) == "0123456789abcdef"
    assert RunKey.parse(None) == RunKey("")


def test_run_folder_names_every_file_of_the_layout(tmp_path):
    run = RunFolder(tmp_path)
    names = {
        run.config: "config.json", run.environment: "environment.json", run.split: "split.json",
        run.models: "models.json", run.test_slices: "test_slices.npz", run.cases: "cases.csv",
        run.summary: "summary.json", run.summary_of("-patient"): "summary-patient.json",
        run.gate: "gate.json", run.lock: ".lock", run.marker: ".covbench-run", run.mlflow: "mlflow",
    }  # fmt: skip
    for path, name in names.items():
        assert path == tmp_path / name
    trial = run.trial_of("smp:Unet", 2, 1)
    assert trial.path == tmp_path / "trials" / "smp_Unet__seed2__fold1" == tmp_path / "trials" / trial.name
    assert trial.name == trial_name("smp:Unet", 2, 1)
    assert [trial.record.name, trial.failure.name, trial.cases.name, trial.epochs.name] == [
        "record.json", "failure.json", "cases.csv", "epochs.csv",
    ]  # fmt: skip
    assert trial.predictions == trial.path / "predictions.npz"
    assert trial.location("weights.pt") == "trials/smp_Unet__seed2__fold1/weights.pt"


def test_trials_are_the_existing_trial_folders_in_name_order(tmp_path):
    run = RunFolder(tmp_path)
    assert run.trials() == []  # no trials/ yet
    for name in ("b__seed0__fold0", "a__seed1__fold0", "a__seed0__fold0"):
        (run.trials_dir / name).mkdir(parents=True)
    (run.trials_dir / "notes.txt").write_text("not a trial")
    assert [t.name for t in run.trials()] == ["a__seed0__fold0", "a__seed1__fold0", "b__seed0__fold0"]
    assert run.trial("a__seed0__fold0") == TrialFolder(run.trials_dir / "a__seed0__fold0")
