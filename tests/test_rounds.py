"""Rounds of seeds (`covbench run --max-seeds`) end to end: real Ray trials on the smoke preset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from covbench.config import build_config, resolve_preset
from covbench.errors import CovbenchError
from covbench.folder.layout import RunFolder

PHANTOM = {"n_patients": 12, "size": 64, "n_slices": 8}


@pytest.fixture(scope="module")
def rounds_plugins(plugin_site: Path, tmp_path_factory: pytest.TempPathFactory):
    from flat_plugin import install

    from covbench import registry

    before = set(plugin_site.iterdir())
    install(plugin_site, tmp_path_factory.mktemp("flat-src"))
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(plugin_site))
        registry.reload()
        yield
    for path in set(plugin_site.iterdir()) - before:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    registry.reload()


def _config(models: list[str], seeds: int = 2, max_seeds: int = 6):
    return build_config(
        models=models, n_seeds=seeds, preset=resolve_preset("smoke"), max_seeds=max_seeds,
        epochs=16, width=8, phantom=PHANTOM, split_fractions=(0.5, 0.0, 0.5), val_fraction=0.0,
    )  # fmt: skip


def test_rule_options_are_checked_and_keyed() -> None:
    with pytest.raises(CovbenchError, match="--max-seeds must be larger"):
        _config(["unet", "resunet"], seeds=3, max_seeds=3)
    with pytest.raises(CovbenchError, match="--seed-step needs --max-seeds"):
        build_config(models=["unet"], n_seeds=2, preset=resolve_preset("smoke"), seed_step=1)
    fixed = build_config(models=["unet"], n_seeds=2, preset=resolve_preset("smoke"))
    assert (
        fixed.rounds is None
        and fixed.key() == build_config(models=["unet"], n_seeds=2, preset=resolve_preset("smoke")).key()
    )
    a = build_config(models=["unet"], n_seeds=2, preset=resolve_preset("smoke"), max_seeds=6)
    b = build_config(models=["unet"], n_seeds=2, preset=resolve_preset("smoke"), max_seeds=8)
    assert len({fixed.key(), a.key(), b.key()}) == 3  # a folder never mixes designs


def _rounds(run: Path) -> dict:
    return json.loads(RunFolder(run).rounds.read_text())


def test_unet_beats_a_model_that_cannot_learn_before_max_seeds(tmp_path, ray_session, rounds_plugins) -> None:
    from covbench.execution.runner import execute

    cfg = _config(["unet", "flatnet"])
    run = tmp_path / "run"
    execute(cfg, run)
    record = _rounds(run)
    last = record["rounds"][-1]
    assert record["finished"]
    assert [p["verdict"] for p in last["pairs"]] == ["unet better"], last
    assert max(last["seeds"].values()) < 6  # decided before the maximum
    trials = {t.name for t in RunFolder(run).trials()}
    assert not any("__seed5__" in t for t in trials)
    from covbench.reports.report import write_report

    summary = write_report(run, figures=False).summary
    assert summary["rounds"]["rounds"][-1]["pairs"][0]["verdict"] == "unet better"
    assert (run / "report.md").read_text().split("## ")[1].startswith("Rounds")
    # the CI gate reads a rounds folder (its summary carries the rounds and each model's seeds)
    from typer.testing import CliRunner

    from covbench.cli import app

    seeds = {m: len(v["dice"]) for m, v in summary["unit_values"]["values"].items()}
    gate = CliRunner().invoke(app, ["compare", str(run / "summary.json"), str(run), "--require-identity"])
    assert gate.exit_code == 0, gate.output
    assert "checks passed" in gate.output and seeds == dict.fromkeys(
        ("flatnet", "unet"), max(last["seeds"].values())
    )


def test_two_copies_make_no_better_claim_and_resume_mid_round_replays_them(
    tmp_path, ray_session, rounds_plugins, monkeypatch
) -> None:
    from covbench.execution.runner import execute

    cfg = _config(["twinnet-a", "twinnet-b"], seeds=2, max_seeds=6)
    run = tmp_path / "run"
    execute(cfg, run)
    whole = _rounds(run)
    assert whole["finished"]
    assert all(not p["verdict"].endswith("better") for r in whole["rounds"] for p in r["pairs"]), whole
    # Mid-round: drop the look files and the last trials of the last round, then resume.
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    RunFolder(copy).rounds.unlink()
    last = whole["rounds"][-1]
    top = max(last["seeds"].values())
    removed = [t for t in RunFolder(copy).trials() if f"__seed{top - 1}__" in t.name]
    assert removed
    for t in removed[:1]:
        shutil.rmtree(t.path)
    outcome = execute(cfg, copy)
    assert len(outcome.done) == 1
    assert _rounds(copy) == whole

    # Interrupted mid-round for real: every trial holds after its first epoch (the fault seam);
    # round 1 is let go, and Ctrl-C comes while round 2's trials hold, unfinished. The same
    # configuration then resumes from their checkpoints and ends with the same rounds.
    from helpers import Hold

    hold = Hold(tmp_path / "hold").arm(monkeypatch)
    first_round = 2 * len(cfg.models)

    def interrupt_in_round_two(kind: str, info: dict) -> None:
        if kind == "start":  # round 1 only is queued; fewer slots than trials: release as they hold
            released: set[str] = set()
            while len(released) < first_round:
                for trial in set(hold.wait_held(len(released) + 1)) - released:
                    hold.release(trial)
                    released.add(trial)
        if kind == "more":  # the look after round 1 queued round 2: interrupt once one of it holds
            hold.wait_held(first_round + 1)
            raise KeyboardInterrupt

    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, interrupted, on_event=interrupt_in_round_two)
    assert len(_rounds(interrupted)["rounds"]) == 1 and not _rounds(interrupted)["finished"]
    monkeypatch.delenv("COVBENCH_TEST_HOLD")
    execute(cfg, interrupted)
    assert _rounds(interrupted) == whole
