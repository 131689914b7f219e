"""scripts/real_data_ablation.py (docs/training.md's table) runs end to end on the real slices."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "real_data_ablation.py"


def load_script():
    spec = importlib.util.spec_from_file_location("real_data_ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REAL_DATA = SCRIPT.parents[2] / "shared" / "data" / "real" / "covid_semiseg"


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="needs ../shared/data/real/covid_semiseg")
def test_one_epoch_row_scores_final_and_best_weights_with_and_without_tta(capsys):
    tiny = ["--data-dir", str(REAL_DATA), "--epochs", "1", "--image-size", "32", "--width", "4"]
    recipe = load_script().main(["unet", *tiny])
    assert (recipe["n_train"], recipe["n_val"], recipe["n_test"]) == (50, 0, 48)  # the cpu recipe
    assert recipe["best_val_dice"] is None and recipe["config"]["loss"] == "dice_bce"
    scores = recipe["test_dice"]
    assert scores["final"] == scores["best"] and scores["final_tta"] == scores["best_tta"]
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    previous = load_script().main(
        ["unet", *tiny, "--val-fraction", "0.2", "--loss", "dice", "--train-on-val"]
    )
    assert (previous["n_train"], previous["n_val"]) == (50, 10)  # 40 + the 10 validation slices appended
    assert previous["best_val_dice"] is not None and previous["config"]["loss"] == "dice"
    assert '"model": "unet"' in capsys.readouterr().out
