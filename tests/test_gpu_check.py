"""scripts/gpu_check.py runs end to end on a CPU with --tiny (the GPU run itself is manual)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_run_reports_throughput_memory_and_projection(tmp_path, capsys, one_thread):
    out = load_script().main(
        ["--tiny", "--epochs", "1", "--models", "unet,unetpp", "--json", str(tmp_path / "g.json")]
    )
    assert json.loads((tmp_path / "g.json").read_text()) == out
    assert [r["model"] for r in out["models"]] == ["unet", "unetpp"]
    for row in out["models"]:
        assert row["train_images_per_s"] > 0 and row["val_images_per_s"] > 0
        assert row["paper_trial_s"] > 250 * row["checkpoint_s"]
    proj = out["projected_protocol"]
    assert (proj["models"], proj["seeds"], proj["epochs"]) == (2, 5, 250)
    assert proj["hours_one_trial_at_a_time"] == pytest.approx(
        5 * sum(r["paper_trial_s"] for r in out["models"]) / 3600, abs=0.01
    )
    text = capsys.readouterr().out
    assert "projected full protocol" in text and "unetpp" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU refusal needs a machine without CUDA")
def test_without_gpu_and_without_tiny_it_refuses(capsys):
    with pytest.raises(SystemExit) as exc:
        load_script().main([])
    assert exc.value.code == 2
    assert "--tiny" in capsys.readouterr().out


def test_tiny_concurrency_measures_packed_trials_through_ray(ray_session, tmp_path, one_thread):
    """--concurrent runs N seeds at once through covbench's run path and sums their throughput."""
    out = load_script().main(["--tiny", "--epochs", "1", "--models", "unet", "--concurrent", "1,2"])
    rows = out["concurrency"]
    assert [(r["model"], r["trials"]) for r in rows] == [("unet", 1), ("unet", 2)]
    per_trial = rows[1]["per_trial_images_per_s"]
    assert len(per_trial) == 2 and all(x > 0 for x in per_trial)
    assert rows[1]["aggregate_train_images_per_s"] == pytest.approx(sum(per_trial), abs=0.2)
    assert rows[0]["speedup"] == 1.0
    assert out["projected_protocol"]["hours_packed"] > 0
