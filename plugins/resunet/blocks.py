"""Res-UNet building blocks: the pre-activation residual unit, the decoder step and two helpers."""

from __future__ import annotations

import torch
from torch import nn


class ResidualUnit(nn.Module):
    """(BN-ReLU-)conv3x3, BN-ReLU-conv3x3, added to a 1x1 conv + BN shortcut; `stride` in both."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, preactivation: bool = True):
        super().__init__()
        # The first unit of the encoder starts with a convolution on the raw image (no BN-ReLU).
        pre = [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)] if preactivation else []
        self.residual = nn.Sequential(
            *pre,
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class UpBlock(nn.Module):
    """x2 up-sampling (no parameters), concatenation with the skip, one ResidualUnit."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, interpolation: str):
        super().__init__()
        align = False if interpolation == "bilinear" else None
        self.up = nn.Upsample(scale_factor=2, mode=interpolation, align_corners=align)
        self.unit = ResidualUnit(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.unit(torch.cat([self.up(x), skip], dim=1))


def check_input_shape(x: torch.Tensor, divisor: int, model: str) -> None:
    """Raise a ValueError naming the nearest valid sizes when H or W is not a multiple of `divisor`."""
    h, w = x.shape[-2:]
    if h % divisor == 0 and w % divisor == 0 and h and w:
        return

    def nearest(n: int) -> int:
        return max(divisor, (n + divisor // 2) // divisor * divisor)

    def padded(n: int) -> int:
        return max(divisor, -(-n // divisor) * divisor)

    near, pad = f"{nearest(h)}x{nearest(w)}", f"{padded(h)}x{padded(w)}"
    hint = f"resize or pad to {pad}" if near == pad else f"resize to {near} or pad to {pad}"
    raise ValueError(f"{model} needs input height and width divisible by {divisor}, got {h}x{w}; {hint}")


def init_weights(model: nn.Module) -> None:
    """He (kaiming) normal init for the 3x3 convolutions (each is followed by BN-ReLU); zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
