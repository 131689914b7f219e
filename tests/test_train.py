"""The training loop: reproducibility, learning, deep supervision, and the GPU-only code paths
(bf16 autocast, channels-last, torch.compile, batched validation) exercised on the CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch

from covbench.registry import get_model
from covbench.training.loop import (
    Best,
    ResumeFrom,
    TrainOptions,
    fits_on_device,
    predict,
    resolve_amp,
    seed_everything,
    slice_dice,
    soft_dice_loss,
    supervised_loss,
    train_model,
    validation_dice,
)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread, as a trial with --cpus-per-trial 1 runs: on a shared 2-core machine two
    OpenMP threads spin against other processes and one epoch of a tiny model takes seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blobs(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable toy problem: bright discs on a noisy background; the mask is the disc."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, masks = [], []
    for _ in range(n):
        cy, cx = (torch.rand(2, generator=g) * (size - 12) + 6).tolist()
        r = float(torch.rand(1, generator=g) * 4 + 3)
        m = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).float()
        images.append((0.2 + 0.6 * m + 0.1 * torch.rand(size, size, generator=g)).clamp(0, 1))
        masks.append(m)
    return torch.stack(images)[:, None], torch.stack(masks)[:, None]


def build(name: str = "unet", width: int = 4, seed: int = 0) -> torch.nn.Module:
    seed_everything(seed)
    return get_model(name).create(in_channels=1, classes=1, width=width)


def fit(model: torch.nn.Module, epochs: int = 1, n: int = 16, *, on_epoch=None, resume=None, **kw):
    x, y = blobs(n)
    vx, vy = blobs(8, seed=1)
    options = TrainOptions(**{"epochs": epochs, "batch_size": 4, "lr": 2e-3, "seed": 0, **kw})
    return train_model(model, (x, y), (vx, vy), options, CPU, on_epoch=on_epoch, resume=resume)


def keep_last_epoch(saved: dict):
    """An on_epoch callback that keeps what a checkpoint would (copies of the live state)."""

    def keep(end):
        saved.update(
            model={k: v.clone() for k, v in end.model.state_dict().items()},
            resume=ResumeFrom(
                int(end.row["epoch"]),
                end.optimizer.state_dict(),
                Best(end.best.val_dice, end.best.epoch, end.best.state),
            ),
        )

    return keep


def test_same_seed_gives_identical_weights_after_one_epoch():
    a = fit(build(seed=3))
    b = fit(build(seed=3))
    c = fit(build(seed=4))
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    assert all(torch.equal(a.best_state[k], b.best_state[k]) for k in a.best_state)
    assert not all(torch.equal(a.best_state[k], c.best_state[k]) for k in a.best_state)


def test_loss_decreases_on_a_learnable_problem():
    result = fit(build(width=4), epochs=8, n=32, lr=1e-2)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.6 * losses[0]
    assert result.best_val_dice > 0.7
    assert 1 <= result.best_epoch <= 8
    assert all(row["train_s"] > 0 and row["val_s"] > 0 for row in result.history)


def test_deep_supervision_loss_is_the_mean_over_heads():
    torch.manual_seed(0)
    target = (torch.rand(2, 1, 16, 16) > 0.7).float()
    heads = [torch.randn(2, 1, 16, 16) for _ in range(4)]
    expected = sum(soft_dice_loss(h, target) for h in heads) / 4
    assert torch.allclose(supervised_loss(heads, target), expected)
    assert torch.allclose(supervised_loss(tuple(heads), target), expected)
    assert torch.equal(supervised_loss(heads[0], target), soft_dice_loss(heads[0], target))


def test_deep_supervised_model_trains_and_validates_on_averaged_heads():
    model = build("unetpp", width=4)
    result = fit(model, epochs=1)
    assert math.isfinite(result.history[0]["train_loss"])
    assert 0.0 <= result.best_val_dice <= 1.0


def test_validation_dice_equals_dice_of_predict():
    model = build()
    vx, vy = blobs(10, seed=2)
    prob = predict(model, vx, 4, CPU)
    expected = float(slice_dice((prob >= 0.5).float(), vy).mean())
    assert validation_dice(model, vx, vy, 3, CPU) == pytest.approx(expected, abs=1e-6)
    assert validation_dice(model, vx[:0], vy[:0], 3, CPU) == 0.0


def test_bf16_autocast_path_runs_on_cpu_and_keeps_float32_weights():
    model = build()
    seen: list[torch.dtype] = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    result = fit(model, epochs=2, amp="bf16")
    assert torch.bfloat16 in seen  # the convolutions really ran in bf16
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    prob = predict(model, blobs(3)[0], 2, CPU, amp="bf16")
    assert prob.dtype == torch.float32 and prob.shape == (3, 1, 32, 32)
    assert float(prob.min()) >= 0 and float(prob.max()) <= 1


def test_channels_last_path_runs_on_cpu_and_matches_contiguous():
    a, b = build(seed=5), build(seed=5)
    ra = fit(a, channels_last=True)
    rb = fit(b, channels_last=False)
    conv = next(m for m in a.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] == 3)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # the same arithmetic in another memory layout: equal up to summation order
    assert ra.history[0]["train_loss"] == pytest.approx(rb.history[0]["train_loss"], rel=1e-3)
    x = blobs(4)[0]
    assert torch.allclose(predict(a, x, 2, CPU, channels_last=True), predict(a, x, 2, CPU), atol=1e-5)


def test_compile_path_runs_with_the_eager_backend():
    torch._dynamo.reset()
    result = fit(build(), compile="eager")
    assert math.isfinite(result.history[0]["train_loss"])
    assert result.best_state  # state_dict keys are the model's, not the compiled wrapper's
    assert not any(k.startswith("_orig_mod") for k in result.best_state)


def test_resume_continues_the_same_run():
    full = fit(build(seed=7), epochs=2)
    model = build(seed=7)
    saved: dict = {}
    fit(model, epochs=1, on_epoch=keep_last_epoch(saved))
    resumed_model = build(seed=99)
    resumed_model.load_state_dict(saved["model"])
    resumed = fit(resumed_model, epochs=2, resume=saved["resume"])
    assert resumed.history[0]["train_loss"] == pytest.approx(full.history[1]["train_loss"], rel=1e-6)


def test_amp_modes_and_device_fit():
    assert resolve_amp("auto", CPU) is None
    assert resolve_amp("off", CPU) is None and resolve_amp(False, CPU) is None
    assert resolve_amp("bf16", CPU) is torch.bfloat16 and resolve_amp(True, CPU) is torch.bfloat16
    with pytest.raises(ValueError, match="amp mode"):
        resolve_amp("fp8", CPU)
    assert fits_on_device(10**12, CPU)  # CPU tensors are already where they are used


def test_data_goes_to_the_gpu_only_when_it_fits(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 4000))
    gpu = torch.device("cuda:0")
    assert fits_on_device(500, gpu) and not fits_on_device(501, gpu)
    assert fits_on_device(900, gpu, fraction=0.9)


def test_zero_epochs_returns_the_initial_weights():
    model = build()
    result = fit(model, epochs=0)
    assert result.best_epoch == -1 and result.history == []
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in result.best_state.items())


def test_training_benchmark_runs_both_loops_on_the_same_work():
    """benchmarks/bench_training.py stays runnable: both loops, tiny data, one alternating pair."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_training.py"
    spec = importlib.util.spec_from_file_location("bench_training", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    x, y = blobs(8)
    vx, vy = blobs(4, seed=1)
    r = bench.measure("unet", (x, y, vx, vy), 4, epochs=1, repeats=1, batch_size=4, lr=1e-3)
    assert r["images"] == 8 and r["width"] == 4
    assert r["cpu_ratio_median"] > 0 and 0 < r["val_share_covbench"] < 1 and 0 < r["val_share_hand"] < 1


def test_dice_bce_adds_pixel_cross_entropy_and_unknown_losses_are_refused():
    from covbench.config import LOSS_NAMES
    from covbench.training.loop import LOSSES, dice_bce_loss

    assert set(LOSSES) == set(LOSS_NAMES)
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(dice_bce_loss(logits, target), soft_dice_loss(logits, target) + bce)
    assert torch.allclose(supervised_loss(logits, target, "dice_bce"), dice_bce_loss(logits, target))
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        fit(build(), epochs=1, loss="focal")


@pytest.mark.parametrize("augment", ["flip", "affine"])
def test_augmented_training_is_reproducible_and_differs_from_plain(augment):
    a = fit(build(seed=5), augment=augment)
    b = fit(build(seed=5), augment=augment)
    plain = fit(build(seed=5), augment="none")
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    assert a.history[0]["train_loss"] != plain.history[0]["train_loss"]


def test_old_boolean_augment_means_flip():
    assert (
        fit(build(seed=5), augment=True).history[0]["train_loss"]
        == fit(build(seed=5), augment="flip").history[0]["train_loss"]
    )


def test_dice_bce_training_learns():
    result = fit(build(width=4), epochs=8, n=32, lr=1e-2, loss="dice_bce", augment="affine")
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.7 * losses[0]


def test_a_trial_trains_and_predicts_with_the_configs_augment_loss_and_tta(tmp_path, monkeypatch):
    """The wiring from RunConfig through the trial into train_model (in-process, no Ray)."""
    import covbench.training.trial
    from covbench.config import PRESETS, build_config
    from covbench.execution.runner import execute

    seen: list[dict] = []
    real = covbench.training.trial.train_model

    def spy(*args, **kwargs):
        seen.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(covbench.training.trial, "train_model", spy)
    predicted: list[bool] = []
    real_predict = covbench.training.trial.predict

    def spy_predict(*args, **kwargs):
        predicted.append(kwargs.get("tta", False))
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(covbench.training.trial, "predict", spy_predict)
    cfg = build_config(
        models=["unet"],
        n_seeds=1,
        preset=PRESETS["smoke"],
        epochs=1,
        augment="affine",
        loss="dice_bce",
        tta=True,
        val_fraction=0.0,
    )
    outcome = execute(cfg, tmp_path / "run", debug=True)
    assert len(outcome.done) == 1
    (record_path,) = (tmp_path / "run" / "trials").glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert record["n_val"] == 0 and record["best_val_dice"] is None and record["best_epoch"] == 1
    options = next(a for a in seen[0] if isinstance(a, TrainOptions))
    assert (options.augment, options.loss) == ("affine", "dice_bce")
    assert predicted == [True]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["loss"] == "dice_bce"
    # the training-health signals of its epoch log (covbench.training.health), recorded where it trained
    assert record["health"]["epochs"] == 1 and record["health"]["selected_epoch"] == 1
    assert record["health"]["validated"] is False and record["health"]["flags"] == []
    assert record["selection"] == "best_val"  # the smoke preset's


def test_without_validation_slices_the_final_weights_are_kept():
    model = build(seed=2)
    x, y = blobs(16)
    empty = torch.zeros(0, 1, 32, 32)
    options = TrainOptions(epochs=2, batch_size=4, lr=2e-3, seed=0)
    result = train_model(model, (x, y), (empty, empty), options, CPU)
    assert result.best_epoch == 2 and math.isnan(result.best_val_dice)
    assert all(math.isnan(row["val_dice"]) for row in result.history)
    final = model.state_dict()
    assert all(torch.equal(result.best_state[k], final[k]) for k in final)


def test_final_selection_keeps_the_last_weights_and_still_logs_validation():
    """selection="final" (the cpu preset): the last epoch's weights are evaluated, whatever the
    validation Dice did, and the log still carries the validation Dice of every epoch."""
    final = fit(build(seed=2), epochs=3, selection="final")
    best = fit(build(seed=2), epochs=3)
    assert final.best_epoch == 3 and all(math.isfinite(r["val_dice"]) for r in final.history)
    assert final.best_val_dice == final.history[-1]["val_dice"]
    assert [r["val_dice"] for r in final.history] == [r["val_dice"] for r in best.history]  # same training
    chosen = max(range(3), key=lambda i: best.history[i]["val_dice"])
    assert best.best_epoch == chosen + 1
    with pytest.raises(ValueError, match="unknown selection"):
        fit(build(), epochs=1, selection="median")


def test_flip_tta_averages_the_four_views_flipped_back():
    model = build(seed=1)
    x, _ = blobs(3)
    plain = predict(model, x, 2, CPU)
    tta = predict(model, x, 2, CPU, tta=True)
    manual = sum(
        predict(model, x.flip(d), 2, CPU).flip(d) if d else plain for d in [(), (-1,), (-2,), (-2, -1)]
    )
    assert torch.allclose(tta, manual / 4, atol=1e-6)
    assert not torch.allclose(tta, plain, atol=1e-4)  # a trained-from-scratch U-Net is not flip-invariant
    pointwise = torch.nn.Conv2d(1, 1, 1)  # a per-pixel model: every view gives the same answer
    assert torch.allclose(predict(pointwise, x, 2, CPU, tta=True), predict(pointwise, x, 2, CPU), atol=1e-6)


def test_a_trial_without_validation_resumes_to_the_same_final_weights():
    x, y = blobs(16)
    empty = torch.zeros(0, 1, 32, 32)
    two = TrainOptions(epochs=2, batch_size=4, lr=2e-3, seed=0)
    full = train_model(build(seed=3), (x, y), (empty, empty), two, CPU)
    saved: dict = {}
    one = TrainOptions(epochs=1, batch_size=4, lr=2e-3, seed=0)
    train_model(build(seed=3), (x, y), (empty, empty), one, CPU, on_epoch=keep_last_epoch(saved))
    assert saved["resume"].best.state is None  # nothing selected: the checkpoint carries no best weights
    model = build(seed=99)
    model.load_state_dict(saved["model"])
    resumed = train_model(model, (x, y), (empty, empty), two, CPU, resume=saved["resume"])
    assert resumed.best_epoch == 2
    assert resumed.history[0]["train_loss"] == pytest.approx(full.history[1]["train_loss"], rel=1e-6)
    assert all(
        torch.allclose(resumed.best_state[k].float(), full.best_state[k].float(), atol=1e-6)
        for k in full.best_state
    )


def test_fused_adam_the_gpu_default_runs_on_the_cpu_and_matches_the_default():
    from covbench.training.loop import make_optimizer

    a, b = build(seed=3), build(seed=3)
    x, y = blobs(4)
    for model, fused in ((a, True), (b, False)):
        opt = make_optimizer(model, 1e-3, fused=fused)
        assert opt.defaults["fused"] is (True if fused else None)
        loss = soft_dice_loss(model(x), y)
        loss.backward()
        opt.step()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(va, vb, atol=1e-6), k


def test_train_options_come_from_the_run_config_with_one_eval_batch():
    from covbench.config import PRESETS, build_config

    cfg = build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"], loss="dice_bce", amp="off")
    options = TrainOptions.from_config(cfg, seed=3)
    assert (options.seed, options.loss, options.amp, options.epochs) == (3, "dice_bce", "off", cfg.epochs)
    assert options.eval_batch(CPU) == 2 * cfg.batch_size
    assert options.eval_batch(torch.device("cuda:0")) == 4 * cfg.batch_size
    assert options.uses_channels_last(torch.device("cuda:0")) and not options.uses_channels_last(CPU)
