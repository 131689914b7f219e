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
