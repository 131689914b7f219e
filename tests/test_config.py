from __future__ import annotations

import hashlib
import json

import pytest

from covbench.config import PRESETS, RunConfig, build_config, resolve_preset
from covbench.errors import CovbenchError


def test_auto_preset_follows_cuda():
    assert resolve_preset("auto", cuda_available=True).name == "paper"
    assert resolve_preset("auto", cuda_available=False).name == "cpu"


def test_paper_preset_is_the_papers_protocol():
    p = PRESETS["paper"]
    assert (p.image_size, p.epochs, p.batch_size, p.lr, p.width) == (224, 250, 32, 5e-4, None)


def test_overrides_win_and_change_the_key():
    base = build_config(models=["unet"], n_seeds=2, preset=PRESETS["smoke"])
    changed = build_config(models=["unet"], n_seeds=2, preset=PRESETS["smoke"], epochs=7, lr=1e-3)
    assert (changed.epochs, changed.lr) == (7, 1e-3)
    assert base.seeds == (0, 1)
    assert base.key() != changed.key()
    # the model list and seed count are not part of a trial's identity
    assert base.key() == build_config(models=["resunet"], n_seeds=5, preset=PRESETS["smoke"]).key()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_seeds": 0}, "--seeds"),
        ({"epochs": 0}, "--epochs"),
        ({"lr": -1.0}, "--lr"),
        ({"image_size": 40}, "--image-size"),
        ({"augment": "rotate"}, "--augment"),
        ({"loss": "l2"}, "--loss"),
        ({"val_fraction": -0.1}, "--val-fraction"),
    ],
)
def test_bad_overrides_name_the_option(kwargs, message):
    args = {"models": ["unet"], "n_seeds": 1, "preset": PRESETS["cpu"], **kwargs}
    with pytest.raises(CovbenchError, match=message):
        build_config(**args)


def test_augment_and_loss_come_from_the_preset_unless_given_and_change_the_key():
    base = build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"])
    assert (base.augment, base.loss) == ("flip", "dice")
    paper = build_config(models=["unet"], n_seeds=1, preset=PRESETS["paper"])
    assert (paper.augment, paper.loss) == ("none", "dice")  # the paper trains without augmentation
    changed = build_config(
        models=["unet"], n_seeds=1, preset=PRESETS["smoke"], augment="affine", loss="dice_bce"
    )
    assert (changed.augment, changed.loss) == ("affine", "dice_bce")
    assert changed.key() != base.key()


def test_cpu_preset_for_a_slice_folder_uses_the_measured_real_data_recipe():
    cfg = build_config(models=["unet"], n_seeds=1, preset=PRESETS["cpu"], dataset="image-folder")
    assert (cfg.image_size, cfg.loss, cfg.tta, cfg.val_fraction) == (128, "dice_bce", True, 0.0)
    phantom = build_config(models=["unet"], n_seeds=1, preset=PRESETS["cpu"])
    assert (phantom.image_size, phantom.loss, phantom.tta, phantom.val_fraction) == (64, "dice", False, None)
    # an option on the command line still wins over the dataset's recipe
    given = build_config(
        models=["unet"], n_seeds=1, preset=PRESETS["cpu"], dataset="image-folder", val_fraction=0.2, tta=False
    )
    assert (given.val_fraction, given.tta) == (0.2, False)


def test_split_folds_and_determinism_defaults_are_decided_by_build_config(monkeypatch):
    """What `covbench run` gets without --split, --folds or --deterministic, a library caller gets too."""
    import covbench.config as config

    smoke = PRESETS["smoke"]
    assert build_config(models=["unet"], n_seeds=1, preset=smoke).split == "patient"  # the phantom's own
    folder = build_config(models=["unet"], n_seeds=1, preset=smoke, dataset="image-folder")
    assert (folder.split, folder.folds) == ("predefined", 1)
    assert build_config(models=["unet"], n_seeds=1, preset=smoke, split="kfold").folds == 5
    assert build_config(models=["unet"], n_seeds=1, preset=smoke, split="kfold", folds=3).folds == 3
    with pytest.raises(CovbenchError, match="unknown dataset 'nope'"):
        build_config(models=["unet"], n_seeds=1, preset=smoke, dataset="nope")
    for on_cuda in (True, False):
        monkeypatch.setattr(config, "has_cuda", lambda on_cuda=on_cuda: on_cuda)
        by_device = build_config(models=["unet"], n_seeds=1, preset=smoke, deterministic=None)
        assert by_device.deterministic is not on_cuda  # autotuned kernels on CUDA
        assert build_config(models=["unet"], n_seeds=1, preset=smoke).deterministic is True  # the default
        assert resolve_preset("auto").name == ("paper" if on_cuda else "cpu")


def test_cpu_phantom_design_has_enough_test_patients_for_verdicts():
    """The README's main job: 10 train and 3 val patients as before (same training cost), and 27
    test patients so the per-patient verdicts can decide something (docs/reports.md)."""
    from covbench.datasets.splits import patient_split

    cfg = build_config(models=["unet"], n_seeds=1, preset=PRESETS["cpu"])
    assert cfg.phantom["n_patients"] == 40 and cfg.split_fractions == (0.25, 0.075, 0.675)
    ids = [f"p{i:02d}" for i in range(40)]
    parts = patient_split(ids, ["a"] * 20 + ["b"] * 20, fractions=cfg.split_fractions)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [10, 3, 27]
    other = build_config(models=["unet"], n_seeds=1, preset=PRESETS["cpu"], dataset="image-folder")
    assert other.split_fractions is None
    # a field added later leaves the key of configurations written without it unchanged
    smoke = build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"])
    before = {
        k: v
        for k, v in smoke.trial_config().items()
        if k not in ("split_fractions", "spacing", "selection", "dataset_options", "rounds", "test_data")
    }
    expected = hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert smoke.split_fractions is None and smoke.key() == expected
    assert cfg.key() != build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"]).key()


def test_cpu_preset_evaluates_the_final_weights_under_a_new_key():
    """The cpu recipe selects the final epoch's weights (docs/training.md, "Checkpoint selection");
    a folder written before keeps its key (no `selection` field: best validation Dice), and a new
    cpu run gets another key, so `covbench run --out OLD` refuses to mix the two designs."""
    from dataclasses import replace

    cpu = build_config(models=["unet"], n_seeds=1, preset=PRESETS["cpu"])
    assert cpu.selection == "final"
    before = replace(cpu, selection="best_val")
    assert before.key() != cpu.key()
    old = {k: v for k, v in before.to_dict().items() if k != "selection"}  # a config.json of before
    assert RunConfig.from_dict(old).selection == "best_val" and RunConfig.from_dict(old).key() == before.key()
    ct = build_config(models=["unet"], n_seeds=1, preset=PRESETS["cpu"], dataset="covid-ct-seg", data_dir="x")
    assert ct.selection == "best_val"  # hundreds of validation slices: selection on them stays
    assert build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"]).selection == "best_val"
    assert build_config(models=["unet"], n_seeds=1, preset=PRESETS["cpu"], selection="best_val") == before
    with pytest.raises(CovbenchError, match="--selection must be one of best_val, final, got 'median'"):
        build_config(models=["unet"], n_seeds=1, preset=PRESETS["cpu"], selection="median")
