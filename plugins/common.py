"""What the reference architectures share: the double 3x3 convolution of U-Net and of every
U-Net++ node, the input-size check and the weight init."""

from __future__ import annotations

import torch
from torch import nn


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions (padding 1), each followed by BatchNorm when asked and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            # A bias right before BatchNorm is cancelled by its mean subtraction, so it is dropped.
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


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
    """He (kaiming) normal init for the 3x3 convolutions that feed a ReLU; zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
