"""Training augmentation: the image and its mask move together, the draw is reproducible, and
every mode is reachable from the config and the training loop."""

from __future__ import annotations

import math

import pytest
import torch

from covbench.config import AUGMENTS
from covbench.training import augment as aug


def square(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose intensity equals its mask (a bright off-centre square on black)."""
    m = torch.zeros(1, 1, size, size)
    m[..., 4:14, 6:20] = 1.0
    return m.clone(), m


def test_modes_cover_the_config_names_and_bools_of_old_configs():
    assert aug.augment_mode(True) == "flip"
    assert aug.augment_mode(False) == "none"
    assert aug.augment_mode(None) == "none"
    assert {aug.augment_mode(m) for m in AUGMENTS} == set(AUGMENTS)
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'"):
        aug.augment_mode("rotate")


def test_draw_is_a_function_of_the_generator_and_none_draws_nothing():
    a = aug.draw_augment("affine", 5, torch.Generator().manual_seed(1))
    b = aug.draw_augment("affine", 5, torch.Generator().manual_seed(1))
    assert torch.equal(a.angle, b.angle) and torch.equal(a.shift, b.shift) and torch.equal(a.flips, b.flips)
    assert aug.draw_augment("none", 5, torch.Generator()) is None
    flip = aug.draw_augment("flip", 5, torch.Generator().manual_seed(1))
    assert flip.angle is None and torch.equal(flip.flips, a.flips)  # same flips whatever the mode
    assert (a.angle.abs() <= math.radians(aug.MAX_ROTATION_DEG)).all()
    assert ((a.scale - 1).abs() <= aug.MAX_SCALE).all()
    assert ((a.gamma >= 1 / aug.MAX_GAMMA) & (a.gamma <= aug.MAX_GAMMA)).all()


def test_identity_affine_changes_nothing():
    x, y = square()
    d = aug.AugmentDraw(
        torch.zeros(1, 2, dtype=torch.bool),
        angle=torch.zeros(1),
        scale=torch.ones(1),
        shift=torch.zeros(1, 2),
        gamma=torch.ones(1),
    )
    ax, ay = aug.apply_augment(x, y, d)
    assert torch.allclose(ax, x, atol=1e-5) and torch.equal(ay, y)


def test_quarter_turn_moves_image_and_mask_together():
    x, y = square()
    d = aug.AugmentDraw(
        torch.zeros(1, 2, dtype=torch.bool),
        angle=torch.tensor([math.pi / 2]),
        scale=torch.ones(1),
        shift=torch.zeros(1, 2),
        gamma=torch.ones(1),
    )
    ax, ay = aug.apply_augment(x, y, d)
    assert torch.equal(ay, torch.rot90(y, 1, dims=(-2, -1))) or torch.equal(
        ay, torch.rot90(y, -1, dims=(-2, -1))
    )
    assert torch.equal((ax >= 0.5).float(), ay)  # the image still lies exactly under its mask


def test_random_affine_keeps_masks_binary_and_aligned_and_gamma_only_touches_the_image():
    g = torch.Generator().manual_seed(0)
    x, y = square()
    x, y = x.repeat(8, 1, 1, 1), y.repeat(8, 1, 1, 1)
    d = aug.draw_augment("affine", 8, g)
    ax, ay = aug.apply_augment(x, y, d)
    assert set(ay.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(ay, y)  # something moved
    # the image is the mask resampled the same way, so they agree away from the borders
    agree = ((ax >= 0.5).float() == ay).float().mean()
    assert agree > 0.98
    assert ax.min() >= 0 and ax.max() <= 1
    # gamma alone: a mid-grey pixel changes, the mask does not
    d.angle.zero_(), d.scale.fill_(1.0), d.shift.zero_(), d.flips.zero_()
    d.gamma.fill_(1.3)
    gx, gy = aug.apply_augment(torch.full((8, 1, 32, 32), 0.5), y, d)
    assert torch.allclose(gx, torch.full_like(gx, 0.5**1.3)) and torch.equal(gy, y)


def test_take_selects_the_rows_of_one_batch():
    d = aug.draw_augment("affine", 6, torch.Generator().manual_seed(2))
    idx = torch.tensor([4, 1])
    part = d.take(idx, torch.device("cpu"))
    assert torch.equal(part.angle, d.angle[idx]) and torch.equal(part.flips, d.flips[idx])
