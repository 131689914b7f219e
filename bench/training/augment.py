"""Training-time augmentation of image/mask batches, drawn from the trial's per-epoch generator.

Not part of the paper's protocol (Salehi et al. 2023 train without augmentation); the CPU presets
use it because they train on a few dozen slices, where an unaugmented model memorises the training
set within a few epochs (docs/training.md has the measurements).

Every random number comes from the generator `train_model` derives from (seed, epoch), drawn once
per epoch for the whole training set, so a resumed trial replays the same augmentations and the
draw does not depend on the batch size. The transforms run on whatever device the batch is on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from covbench.config import AUGMENTS

# Ranges of the `affine` mode: mild enough that a lung stays a lung.
MAX_ROTATION_DEG = 15.0
MAX_SCALE = 0.2  # zoom factor in [1 - MAX_SCALE, 1 + MAX_SCALE]
MAX_SHIFT = 0.1  # translation, as a share of the image side
MAX_GAMMA = 1.3  # intensity gamma in [1 / MAX_GAMMA, MAX_GAMMA]


def augment_mode(value: bool | str | None) -> str:
    """The augmentation mode for a config value; `True`/`False` are what configs before the
    `affine` mode stored, and mean `flip`/`none`."""
    if value is True:
        return "flip"
    if value in (False, None):
        return "none"
    if value not in AUGMENTS:
        raise ValueError(f"unknown augmentation {value!r}; use one of {', '.join(AUGMENTS)}")
    return str(value)


@dataclass
class AugmentDraw:
    """One epoch's random parameters, one row per training slice (indexed like the training set)."""

    flips: torch.Tensor  # (n, 2) bool: left-right, up-down
    angle: torch.Tensor | None = None  # (n,) radians
    scale: torch.Tensor | None = None  # (n,)
    shift: torch.Tensor | None = None  # (n, 2) in normalised [-1, 1] coordinates
    gamma: torch.Tensor | None = None  # (n,)

    def take(self, idx: torch.Tensor, device: torch.device) -> AugmentDraw:
        """The rows of the slices in one batch, on the batch's device."""

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[idx].to(device)

        return AugmentDraw(
            self.flips[idx].to(device), pick(self.angle), pick(self.scale), pick(self.shift), pick(self.gamma)
        )


def draw_augment(mode: str, n: int, gen: torch.Generator) -> AugmentDraw | None:
    """The random parameters of one epoch for `n` slices, or None when `mode` is `none`."""
    if mode == "none":
        return None
    flips = torch.rand(n, 2, generator=gen) < 0.5
    if mode == "flip":
        return AugmentDraw(flips)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen) * 2.0 - 1.0

    return AugmentDraw(
        flips,
        angle=uniform(n) * math.radians(MAX_ROTATION_DEG),
        scale=1.0 + uniform(n) * MAX_SCALE,
        shift=uniform(n, 2) * (2.0 * MAX_SHIFT),
        gamma=torch.exp(uniform(n) * math.log(MAX_GAMMA)),
    )


def random_flips(x: torch.Tensor, y: torch.Tensor, flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each image and its mask left-right (`flips[:, 0]`) and up-down (`flips[:, 1]`)."""
    for axis, chosen in ((-1, flips[:, 0]), (-2, flips[:, 1])):
        pick = chosen.view(-1, 1, 1, 1)
        x = torch.where(pick, x.flip(axis), x)
        y = torch.where(pick, y.flip(axis), y)
    return x, y


def random_affine(x: torch.Tensor, y: torch.Tensor, d: AugmentDraw) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate, zoom and shift each image and its mask by the same transform, then apply a gamma
    to the image. The mask is resampled bilinearly and thresholded at 0.5, which keeps lesion
    borders smoother than nearest-neighbour sampling; outside the image is 0 (air, no lesion)."""
    assert d.angle is not None and d.scale is not None and d.shift is not None and d.gamma is not None
    cos, sin = torch.cos(d.angle) / d.scale, torch.sin(d.angle) / d.scale
    theta = torch.stack(
        [torch.stack([cos, -sin, d.shift[:, 0]], 1), torch.stack([sin, cos, d.shift[:, 1]], 1)], 1
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = (y >= 0.5).to(y.dtype)
    x = x.clamp(0.0, 1.0).pow(d.gamma.view(-1, 1, 1, 1).to(x.dtype))
    return x, y


def apply_augment(x: torch.Tensor, y: torch.Tensor, d: AugmentDraw) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one batch's draw (see `AugmentDraw.take`): flips, then the affine part if drawn."""
    x, y = random_flips(x, y, d.flips)
    if d.angle is not None:
        x, y = random_affine(x, y, d)
    return x, y
