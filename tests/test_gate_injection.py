"""Regression injection: broken variants of training and evaluation (benchmarks/regressions.py),
injected into real Ray workers through the `COVBENCH_TEST_PATCH` seam (covbench.faults), must fail
the gate on the primary metric; unchanged code must pass it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from covbench.faults import PATCH, FaultHooks

REPO = Path(__file__).resolve().parents[1]
REGRESSIONS = REPO / "benchmarks" / "regressions.py"


def test_patch_seam_enters_the_named_context_and_undoes_it(tmp_path, monkeypatch):
    plugin = tmp_path / "flip.py"
    plugin.write_text(
        "from contextlib import contextmanager\n"
        "import covbench.train as t\n"
        "@contextmanager\n"
        "def broken():\n"
        "    old = t.make_schedule\n"
        "    t.make_schedule = None\n"
        "    try:\n"
        "        yield\n"
        "    finally:\n"
        "        t.make_schedule = old\n"
    )
    import covbench.train as train

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
    import numpy as np
    import torch

    import covbench.train as train
    import covbench.trial as trial

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
