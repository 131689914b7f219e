"""U-Net building blocks: the up-sampling step (the double 3x3 convolution is shared, in common.py)."""

from __future__ import annotations

import torch
from torch import nn

from covbench.plugins.common import DoubleConv


class UpBlock(nn.Module):
    """2x2 transposed convolution halving the channels, concatenation with the skip, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))
