"""Mixed precision by compute capability: the decision with the GPU faked on a CPU, the fp16 +
GradScaler training step on the CPU, its checkpoint, and the configuration that records it."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from covbench.cli import app
from covbench.config import PRESETS, RunConfig, build_config
from covbench.errors import CovbenchError
from covbench.registry import get_model
from covbench.training.checkpoint import Checkpointer, CheckpointPolicy
from covbench.training.loop import (
    TrainOptions,
    amp_choice,
    grad_scaler,
    local_amp,
    resolve_amp,
    seed_everything,
    train_model,
)

CPU = torch.device("cpu")
GPU = torch.device("cuda", 0)


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend cuda:0 is a GPU of the given compute capability. `is_bf16_supported` says yes
    whatever the capability, as torch's does by default on a V100 or T4 (emulated bf16): the
    decision must not trust it."""

    def install(capability: tuple[int, int], name: str = "Fake GPU") -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)

    return install


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ((6, 1), "off"),  # Pascal (P40, GTX 1080): no tensor cores, fp16 not faster
        ((7, 0), "fp16"),  # V100: bf16 only emulated
        ((7, 5), "fp16"),  # T4
        ((8, 0), "bf16"),  # A100
        ((8, 9), "bf16"),  # L4
        ((9, 0), "bf16"),  # H100 / H200
    ],
)
def test_auto_follows_the_compute_capability(fake_gpu, capability, expected):
    fake_gpu(capability)
    assert amp_choice("auto", GPU) == expected
    assert resolve_amp("auto", GPU) == {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[expected]


def test_explicit_modes_win_on_any_device(fake_gpu):
    fake_gpu((7, 0))
    for device in (CPU, GPU):
        assert amp_choice("bf16", device) == "bf16" and amp_choice(True, device) == "bf16"
        assert amp_choice("fp16", device) == "fp16"
        assert amp_choice("off", device) == "off" and amp_choice(None, device) == "off"
    assert amp_choice("auto", CPU) == "off"
    with pytest.raises(ValueError, match="amp mode"):
        amp_choice("fp8", CPU)


def test_only_fp16_gets_a_grad_scaler():
    assert isinstance(grad_scaler(torch.float16, CPU), torch.amp.GradScaler)
    assert grad_scaler(torch.bfloat16, CPU) is None and grad_scaler(None, CPU) is None


def test_local_amp_records_request_choice_and_device(fake_gpu):
    assert local_amp("auto") == {"requested": "auto", "resolved": "off", "device": "cpu"}
    fake_gpu((7, 5), "Tesla T4")
    assert local_amp("auto") == {
        "requested": "auto",
        "resolved": "fp16",
        "device": "Tesla T4 (compute capability 7.5)",
    }


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, 1, 16, 16, generator=g) > 0.7).float()
    return (0.3 + 0.5 * y + 0.1 * torch.rand(n, 1, 16, 16, generator=g)), y


def test_fp16_with_grad_scaler_trains_on_the_cpu(tmp_path):
    """The scaler path runs a real step: weights change, the scaler is handed to the checkpoint,
    and its state goes into checkpoint.pt and comes back on resume."""
    torch.set_num_threads(1)
    seed_everything(0)
    model = get_model("unet").create(in_channels=1, classes=1, width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    checkpointer = Checkpointer(tmp_path, "key", CheckpointPolicy(every_seconds=0))
    seen = []

    def on_epoch(end):
        seen.append(end.scaler)
        checkpointer.after_epoch(end)

    options = TrainOptions(epochs=2, batch_size=4, lr=2e-3, amp="fp16")
    result = train_model(model, _data(8, 0), _data(4, 1), options, CPU, on_epoch=on_epoch)
    checkpointer.close()
    scaler = seen[-1]
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in result.history)
    changed = [
        k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])
    ]
    assert changed, "no weight changed: the scaled step did not update the model"
    scale = scaler.get_scale()
    assert scale > 0

    fresh = get_model("unet").create(in_channels=1, classes=1, width=4)
    loaded = Checkpointer(tmp_path, "key", CheckpointPolicy()).load(fresh)
    assert loaded.resume is not None and loaded.resume.scaler_state is not None
    assert loaded.resume.scaler_state["scale"] == scale
    # resuming loads it: one more epoch starts from the stored scale, not from 2**16
    resumed = []
    options3 = TrainOptions(epochs=3, batch_size=4, lr=2e-3, amp="fp16")
    train_model(
        fresh, _data(8, 0), _data(4, 1), options3, CPU,
        on_epoch=lambda end: resumed.append(end.scaler), resume=loaded.resume,
    )  # fmt: skip
    assert len(resumed) == 1 and resumed[0] is not None


def test_float32_and_bf16_pass_no_scaler():
    seed_everything(0)
    model = get_model("unet").create(in_channels=1, classes=1, width=4)
    for amp in ("off", "bf16"):
        seen: list = []
        options = TrainOptions(epochs=1, batch_size=4, lr=2e-3, amp=amp)
        train_model(
            model, _data(4, 0), _data(4, 1), options, CPU, on_epoch=lambda end, s=seen: s.append(end.scaler)
        )
        assert seen == [None]


def test_amp_option_is_checked_and_keys_of_existing_runs_stay():
    cfg = build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"], amp="fp16")
    assert cfg.amp == "fp16"
    with pytest.raises(CovbenchError, match="--amp must be one of auto, bf16, fp16, off"):
        build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"], amp="fp8")
    # a configuration as 0.x wrote it (amp "auto"): its key is the one it had before fp16 existed
    stored = build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"]).to_dict()
    assert stored["amp"] == "auto"
    assert RunConfig.from_dict(stored).key() == KEY_BEFORE_FP16


# The smoke preset's key computed by covbench before this change (main at a24a586).
KEY_BEFORE_FP16 = "dc78bda762f0547d"


def test_cli_refuses_an_unknown_amp_in_one_line(tmp_path):
    result = CliRunner().invoke(
        app, ["run", "--preset", "smoke", "--amp", "fp8", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert "--amp must be one of auto, bf16, fp16, off, got 'fp8'" in result.output
    assert not (tmp_path / "r").exists()


def test_a_run_records_what_auto_meant(tiny_run):
    """config.json keeps the request (in the key) and says what it resolved to on this machine;
    every trial records the precision it trained in."""
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["amp"] == "auto"
    assert config["_amp"] == {"requested": "auto", "resolved": "off", "device": "cpu"}
    records = [json.loads(p.read_text()) for p in sorted(tiny_run.glob("trials/*/record.json"))]
    assert len(records) == 4 and {r["amp"] for r in records} == {"off"}
