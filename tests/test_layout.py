"""The run folder's names, its key, what done means and its trial records (covbench.folder.layout,
covbench.folder.key, covbench.folder.io.done_for, covbench.folder.record): folders written by any covbench
version must keep reading the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from covbench.folder.io import done_for, done_trials
from covbench.folder.key import RunKey
from covbench.folder.layout import RunFolder, TrialFolder, trial_name
from covbench.folder.record import TrialRecord

# record.json as the first covbench wrote it: no timing, no checkpoint statistics, a key since gone
OLDEST_RECORD = {
    "model": "unet", "seed": 1, "fold": 0, "trial": "unet__seed1__fold0", "status": "done",
    "config_key": "0123456789abcdef-aaaaaaaaaaaa", "parameters": 1000, "width": 8, "options": {},
    "device": "cpu (host)", "threads": 1, "epochs": 2, "resumed_from_epoch": 0, "best_epoch": 2,
    "best_val_dice": 0.5, "train_seconds": 1.0, "eval_seconds": 0.1, "wall_seconds": 1.2,
    "started": 1.0, "finished": 2.2, "checkpoint": "checkpoint.pt", "n_train": 4, "n_val": 2, "n_test": 2,
}  # fmt: skip


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


def test_done_is_a_done_record_of_the_run_key(tmp_path):
    key = OLDEST_RECORD["config_key"]
    assert done_for(OLDEST_RECORD, key) and done_for(OLDEST_RECORD, None)
    assert not done_for(OLDEST_RECORD, "0123456789abcdef-bbbbbbbbbbbb")
    assert not done_for({**OLDEST_RECORD, "status": "failed"}, key)
    assert not done_for(None, key)
    run = RunFolder(tmp_path)
    for name, record in (("a", OLDEST_RECORD), ("b", {**OLDEST_RECORD, "config_key": "other-key"})):
        run.trial(name).path.mkdir(parents=True)
        run.trial(name).record.write_text(json.dumps(record))
    assert [p.name for p, _ in done_trials(tmp_path, key)] == ["a"]
    assert [p.name for p, _ in done_trials(tmp_path, None)] == ["a", "b"]


@pytest.mark.slow
def test_a_run_reads_config_json_and_environment_json_once(tiny_run, tmp_path, monkeypatch):
    """The runner checks the folder with config.json and hands what it read on (a second reader
    could see another file than the check judged); the last session's environment.json is read
    once too, and this session's is finalized from what it wrote, not read back. Each record.json
    is read twice: to know the trial is done, and once for the run's table and manifest."""
    from covbench.execution.runner import execute
    from covbench.folder import io, stored_config
    from covbench.folder import state as run_folder

    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    cfg = run_folder.load_run_config(out)  # --resume's own read, before the run
    reads = []

    def counting(real):
        def read(path, *args, **kwargs):
            reads.append(Path(path))
            return real(path, *args, **kwargs)

        return read

    monkeypatch.setattr(stored_config, "read_json", counting(stored_config.read_json))
    monkeypatch.setattr(run_folder, "read_json", counting(run_folder.read_json))
    monkeypatch.setattr(run_folder, "read_json_object", counting(run_folder.read_json_object))
    monkeypatch.setattr(io, "read_json_object", counting(io.read_json_object))
    outcome = execute(cfg, out, debug=True)
    assert outcome.done == [] and len(outcome.skipped) == 4  # every trial already done
    folder = RunFolder(out)
    assert [p for p in reads if p == folder.config] == [folder.config]
    assert [p for p in reads if p == folder.environment] == [folder.environment]
    trials = folder.trials()
    assert len(trials) == 4
    assert sorted(p for p in reads if p.name == "record.json") == sorted([t.record for t in trials] * 2)
    assert json.loads(folder.environment.read_text())["status"] == "complete"


def test_an_older_record_reads_with_defaults_and_keeps_what_it_does_not_know():
    record = TrialRecord.from_dict(OLDEST_RECORD)
    assert (record.model, record.seed, record.best_val_dice) == ("unet", 1, 0.5)
    assert record.attempts is None and record.versions is None  # written by later versions
    assert record.extra == {"checkpoint": "checkpoint.pt"}
    written = record.to_dict()
    assert {k: written[k] for k in OLDEST_RECORD} == OLDEST_RECORD  # nothing lost
    assert "versions" not in written
    assert TrialRecord.from_dict({}).model == ""  # a record.json covbench did not write


@pytest.mark.slow
def test_every_record_of_a_run_is_a_trial_record_exactly(tiny_run):
    """TrialRecord knows every key the runner writes today, and writes exactly those back."""
    records = [json.loads(t.record.read_text()) for t in RunFolder(tiny_run).trials()]
    assert records
    for raw in records:
        record = TrialRecord.from_dict(raw)
        assert record.extra == {}, f"keys TrialRecord does not know: {sorted(record.extra)}"
        assert json.loads(json.dumps(record.to_dict())) == raw
