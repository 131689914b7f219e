"""U-Net++ building blocks: the convolution unit of every node X^{i,j} and two helpers."""

from __future__ import annotations

from torch import nn


class ConvBlock(nn.Sequential):
    """One node X^{i,j}: two 3x3 convolutions (padding 1), each with optional BatchNorm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            # A bias right before BatchNorm is cancelled by its mean subtraction, so it is dropped.
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
