"""Helpers every reference architecture shares: the input-size check and the weight init."""

from __future__ import annotations

import torch
from torch import nn


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
