"""Deliberately broken variants of training and evaluation, injected from outside the product code.

Each variant is a context manager that monkeypatches one seam of covbench (`unittest.mock.patch`)
for the duration of a trial; `covbench run` enters it in every worker when
`COVBENCH_TEST_PATCH=<this file>:<variant>` is set (covbench.faults). The CI gate must fail each on
the primary metric for every model (benchmarks/bench_gate.py, tests/test_gate_injection.py).

The variants stand for classes of bug, not one line each: an optimizer that does nothing, data whose
labels no longer match the images, a learning rate off by orders of magnitude, augmentation applied
to the image but not to its mask, and a metric scored against the wrong reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from unittest import mock

import numpy as np
import torch

import covbench.training.loop as train
import covbench.training.trial as trial


@contextmanager
def no_update() -> Iterator[None]:
    """The optimizer computes gradients and never changes a weight."""
    make = train.make_optimizer

    def frozen(*args, **kwargs):
        optimizer = make(*args, **kwargs)
        optimizer.step = lambda *a, **k: None  # type: ignore[method-assign]
        return optimizer

    with mock.patch.object(train, "make_optimizer", frozen):
        yield


@contextmanager
def shuffled_masks() -> Iterator[None]:
    """The training masks are paired with the wrong images (a fixed permutation of the slices)."""
    fit = train.train_model

    def shuffled(model, train_xy, *args, **kwargs):
        x, y = train_xy
        order = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
        return fit(model, (x, y[order].contiguous()), *args, **kwargs)

    with mock.patch.object(trial, "train_model", shuffled):
        yield


@contextmanager
def tiny_lr() -> Iterator[None]:
    """The learning rate is a thousand times too small (a unit slip: 2e-6 for 2e-3)."""
    schedule = train.make_schedule
    with mock.patch.object(
        train, "make_schedule", lambda name, lr, epochs: schedule(name, lr * 1e-3, epochs)
    ):
        yield


@contextmanager
def corrupt_augment() -> Iterator[None]:
    """Augmentation that transforms the image and flips its mask up-down: labels no longer match."""
    augment = train.apply_augment

    def corrupted(x, y, draw):
        x, y = augment(x, y, draw)
        return x, y.flip(-2)

    with mock.patch.object(train, "apply_augment", corrupted):
        yield


@contextmanager
def inverted_metric() -> Iterator[None]:
    """The test metrics are computed against the inverted reference masks."""
    score = trial.batch_metrics

    def inverted(preds, targets, *args, **kwargs):
        return score(preds, ~np.asarray(targets, dtype=bool), *args, **kwargs)

    with mock.patch.object(trial, "batch_metrics", inverted):
        yield


VARIANTS: dict[str, Callable[[], AbstractContextManager]] = {
    "no_update": no_update,
    "shuffled_masks": shuffled_masks,
    "tiny_lr": tiny_lr,
    "corrupt_augment": corrupt_augment,
    "inverted_metric": inverted_metric,
}
