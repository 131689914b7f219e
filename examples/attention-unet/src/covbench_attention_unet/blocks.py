"""Attention U-Net building blocks: the convolution pair, the attention gate, one decoder step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvPair(nn.Sequential):
    """Two 3x3 convolutions (padding 1), each followed by BatchNorm (optional) and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al., Eq. 1-2 and Fig. 2).

    The skip features x (C_x channels, H x W) are brought to the grid of the coarser gating
    signal g (C_g channels, H/2 x W/2) by a strided 2x2 convolution W_x; W_g is a 1x1 convolution
    of g. The coefficients alpha = sigmoid(psi(relu(W_x x + W_g g))) lie in [0, 1], one per pixel,
    and are resampled bilinearly back to H x W; the gate returns alpha * x.
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.w_x = nn.Conv2d(skip_channels, inter_channels, kernel_size=2, stride=2, bias=False)
        self.w_g = nn.Conv2d(gate_channels, inter_channels, kernel_size=1)
        self.psi = nn.Conv2d(inter_channels, 1, kernel_size=1)

    def coefficients(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """alpha, (B, 1, H, W) in [0, 1]: how much of each skip pixel reaches the decoder."""
        q = self.psi(F.relu(self.w_x(x) + self.w_g(g)))
        return F.interpolate(torch.sigmoid(q), size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x * self.coefficients(x, g)


class DecoderStep(nn.Module):
    """Gate the skip with the coarser features, up-sample those (2x2 transposed convolution),
    concatenate both and convolve. Without a gate it is a plain U-Net decoder step."""

    def __init__(self, coarse_channels: int, skip_channels: int, batch_norm: bool, attention: bool) -> None:
        super().__init__()
        self.gate = (
            AttentionGate(skip_channels, coarse_channels, max(1, skip_channels // 2)) if attention else None
        )
        self.up = nn.ConvTranspose2d(coarse_channels, skip_channels, kernel_size=2, stride=2)
        self.conv = ConvPair(2 * skip_channels, skip_channels, batch_norm)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            skip = self.gate(skip, coarse)
        return self.conv(torch.cat([skip, self.up(coarse)], dim=1))
