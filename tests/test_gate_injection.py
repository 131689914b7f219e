"""Regression injection: broken variants of training and evaluation (benchmarks/regressions.py),
injected into real Ray workers through the `COVBENCH_TEST_PATCH` seam (covbench.faults), must fail
the gate on the primary metric; unchanged code must pass it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from covbench.faults import PATCH, FaultHooks

REPO = Path(__file__).resolve().parents[1]
REGRESSIONS = REPO / "benchmarks" / "regressions.py"


def test_patch_seam_enters_the_named_context_and_undoes_it(tmp_path, monkeypatch):
    plugin = tmp_path / "flip.py"
    plugin.write_text(
        "from contextlib import contextmanager\n"
        "import covbench.training.loop as t\n"
        "@contextmanager\n"
        "def broken():\n"
        "    old = t.make_schedule\n"
        "    t.make_schedule = None\n"
        "    try:\n"
        "        yield\n"
        "    finally:\n"
        "        t.make_schedule = old\n"
    )
    import covbench.training.loop as train

    original = train.make_schedule
    monkeypatch.setenv(PATCH, f"{plugin}:broken")
    hooks = FaultHooks.from_env()
    assert hooks.patch == f"{plugin}:broken"
    with hooks.patched():
        assert train.make_schedule is None
    assert train.make_schedule is original  # a reused worker is clean again
    with FaultHooks().patched():  # unset: nothing happens
        assert train.make_schedule is original
    for bad, message in [
        (f"{plugin}", "expected FILE.py:NAME"),
        (f"{tmp_path / 'none.py'}:broken", "no such file"),
        (f"{plugin}:other", "defines no 'other'"),
    ]:
        with pytest.raises(RuntimeError, match=message):
            FaultHooks(patch=bad).patched()


def test_every_variant_changes_what_it_claims(monkeypatch):
    """Each variant, entered in-process, really breaks its seam and is undone on exit."""
    import torch

    import covbench.training.loop as train
    import covbench.training.trial as trial

    sys.path.insert(0, str(REGRESSIONS.parent))
    import regressions

    saved = (train.make_optimizer, trial.train_model, train.make_schedule, train.apply_augment)
    saved += (trial.batch_metrics,)
    model = torch.nn.Linear(2, 1)
    with regressions.no_update():
        opt = train.make_optimizer(model, 0.1, fused=False)
        before = model.weight.detach().clone()
        model(torch.ones(1, 2)).sum().backward()
        opt.step()
        assert torch.equal(model.weight, before)
    with regressions.tiny_lr():
        assert train.make_schedule("constant", 2e-3, 10)(0) == pytest.approx(2e-6)
    x, y = torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    y[:, :, 0] = 1  # the top row is lesion
    draw = train.draw_augment("flip", 2, torch.Generator().manual_seed(0))
    with regressions.corrupt_augment():
        _, y_aug = train.apply_augment(x, y, draw.take(torch.arange(2), x.device))
    _, y_ok = train.apply_augment(x, y, draw.take(torch.arange(2), x.device))
    assert not torch.equal(y_aug, y_ok)
    pred = np.zeros((1, 8, 8), bool)
    pred[0, 2:5, 2:5] = True
    with regressions.inverted_metric():
        assert trial.batch_metrics(pred, pred.copy(), np.ones((1, 2)))[0]["dice"] < 0.2
    assert trial.batch_metrics(pred, pred.copy(), np.ones((1, 2)))[0]["dice"] == 1.0
    seen = {}
    monkeypatch.setattr(train, "train_model", lambda m, xy, *a, **k: seen.setdefault("y", xy[1]))
    ys = torch.arange(10.0).view(10, 1, 1, 1)
    with regressions.shuffled_masks():  # wraps the train_model it finds on entry, as trial calls it
        trial.train_model(None, (ys.clone(), ys), None)
    assert not torch.equal(seen["y"], ys) and sorted(seen["y"].flatten().tolist()) == list(range(10))
    monkeypatch.undo()
    assert (train.make_optimizer, trial.train_model, train.make_schedule, train.apply_augment) + (
        trial.batch_metrics,
    ) == saved


# A benchmark small enough for the test suite that still trains: the cpu preset's phantom (16
# patients, 3 tested) at 32 px and width 8; one model, three seeds (the gate needs seed noise).
# Best-validation selection: at 16 epochs of a width-8 net the final weights still move from epoch to
# epoch, and their seed noise (detectable drop 0.38) hides the shuffled-mask drop of 0.29.
FAST = ["run", "--preset", "cpu", "--image-size", "32", "--width", "8", "--epochs", "16", "--seeds", "3"]
FAST += ["--selection", "best_val"]
FAST += ["--models", "unet"]


@pytest.fixture(scope="module")
def fast_baseline(ray_session, tmp_path_factory) -> Path:
    """The fast benchmark of unchanged code, made the CI baseline with `compare --update`."""
    from typer.testing import CliRunner

    from covbench.cli import app

    folder = tmp_path_factory.mktemp("inject")
    result = CliRunner().invoke(app, [*FAST, "--out", str(folder / "unchanged")])
    assert result.exit_code == 0, result.output
    baseline = folder / "baseline.json"
    made = CliRunner().invoke(app, ["compare", str(baseline), str(folder / "unchanged"), "--update"])
    assert made.exit_code == 0, made.output
    return baseline


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["no_update", "shuffled_masks", "inverted_metric"])
def test_a_broken_variant_fails_the_gate_on_the_primary_metric(fast_baseline, variant, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from covbench.cli import app
    from covbench.reports.compare import REGRESSED, gate

    summary = json.loads(fast_baseline.read_text())
    assert summary["models"]["unet"]["dice"]["mean"] > 0.3  # the unchanged code learns
    monkeypatch.setenv(PATCH, f"{REGRESSIONS}:{variant}")
    out = tmp_path / variant
    result = CliRunner().invoke(app, [*FAST, "--out", str(out)])
    assert result.exit_code == 0, result.output
    monkeypatch.delenv(PATCH)
    verdict = CliRunner().invoke(app, ["compare", str(fast_baseline), str(out)])
    assert verdict.exit_code == 1, verdict.output
    compared = gate(fast_baseline, out).result
    primary = [r for r in compared.rows if r.metric == compared.primary]
    assert [r.verdict for r in primary] == [REGRESSED], verdict.output


def _shifted(summary: dict, shift, seed: int = 0) -> dict:
    """A copy whose per-seed per-unit values of every model's primary metric are moved by
    `shift(value, rng)`."""
    out = json.loads(json.dumps(summary))
    rng = np.random.default_rng(seed)
    for per_metric in out["unit_values"]["values"].values():
        for units in per_metric["dice"].values():
            for unit, v in units.items():
                units[unit] = shift(v, rng)
    return out


@pytest.mark.slow
def test_float_noise_passes_and_a_small_real_drop_fails(fast_baseline):
    """Unchanged code with float noise at the level measured across processors (~1e-4 Dice) passes,
    reported as 'numbers changed'; a drop of the gate's own detectable size fails; half the floor
    passes."""
    from covbench.reports.compare import FLOORS, REGRESSED, WITHIN, compare

    base = json.loads(fast_baseline.read_text())
    noisy = compare(base, _shifted(base, lambda v, rng: v + rng.uniform(-1e-4, 1e-4)))
    assert noisy.failed == [] and noisy.changes.changed > 0
    assert "Numbers changed" in noisy.markdown()
    detectable = noisy.detectable()["unet"]
    assert FLOORS["dice"] < detectable < 0.3  # at this tiny benchmark's seed noise (0.07 SD): 0.22
    drop = compare(base, _shifted(base, lambda v, rng: v - detectable + rng.uniform(-1e-4, 1e-4)))
    assert [r.verdict for r in drop.rows if r.metric == "dice"] == [REGRESSED]
    tiny = compare(base, _shifted(base, lambda v, rng: v - FLOORS["dice"] / 2))
    assert [r.verdict for r in tiny.rows if r.metric == "dice"] == [WITHIN]
