"""Res-UNet (Zhang, Liu, Wang, IEEE GRSL 2018): the public class, its wiring and its registry spec."""

from __future__ import annotations

import torch
from torch import nn

from covbench.plugins.common import check_input_shape, init_weights
from covbench.registry import ModelSpec

from .blocks import ResidualUnit, UpBlock

INTERPOLATION_MODES = ("nearest", "bilinear")


class ResUNet(nn.Module):
    """Deep residual U-Net (Res-UNet), built from scratch.

    The paper's idea: build a U-Net out of pre-activation residual units (He et al. 2016), whose
    identity-like shortcuts ease training and let a shallower, lighter network match a deeper plain
    one; U-Net's skip concatenations carry detail from encoder to decoder. Layout at width 64, as in
    the paper: encoder units of 64, 128 and 256 channels, a bridge of 512, decoder units of 256, 128
    and 64, and a 1x1 head. Each unit is BN-ReLU-conv3x3, BN-ReLU-conv3x3 plus a 1x1 conv + BN
    shortcut; the first unit starts with a convolution on the image instead of BN-ReLU; units 2-4
    (two encoder units and the bridge) down-sample with stride 2 in their first convolution (no
    pooling); each decoder step up-samples x2 (no parameters), concatenates the skip and applies a
    unit. Every level scales with `width`.

    Parameter count at width 64, 1 input channel, 1 class: 8,222,529 (all convolutions with biases,
    shortcut = 1x1 conv + BN, no final BN-ReLU before the head). The paper states 7.8M without the
    breakdown; this is the straightforward build of its Table I.

    Args:
        in_channels: channels of the input image (1 for CT).
        classes: output channels; the forward pass returns logits (B, classes, H, W).
        width: channels of the first unit; every level scales with it (paper: 64).
        decoder_interpolation: x2 up-sampling in the decoder, `"nearest"` (default) or `"bilinear"`
            (align_corners=False). Neither has parameters.

    Input height and width must be multiples of 8 (three stride-2 convolutions); other sizes raise
    a ValueError that names the nearest valid size.

    Example:
        >>> import torch
        >>> from covbench.plugins.resunet import ResUNet
        >>> model = ResUNet(in_channels=1, classes=1, width=8).eval()
        >>> model(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 1, 64, 64])

    Reference:
        Z. Zhang, Q. Liu, Y. Wang. Road Extraction by Deep Residual U-Net. IEEE Geoscience and
        Remote Sensing Letters 15(5), 749-753, 2018. https://arxiv.org/abs/1711.10684
    """

    divisor = 8  # three stride-2 convolutions

    def __init__(
        self,
        in_channels: int = 1,
        classes: int = 1,
        width: int = 64,
        decoder_interpolation: str = "nearest",
    ):
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int (channels of the first unit), got {width!r}")
        if decoder_interpolation not in INTERPOLATION_MODES:
            raise ValueError(
                f"decoder_interpolation must be one of {INTERPOLATION_MODES}, got {decoder_interpolation!r}"
            )
        self.width = width
        channels = [width * m for m in (1, 2, 4, 8)]
        self.encoder = nn.ModuleList(
            [
                ResidualUnit(in_channels, channels[0], preactivation=False),
                ResidualUnit(channels[0], channels[1], stride=2),
                ResidualUnit(channels[1], channels[2], stride=2),
            ]
        )
        self.bridge = ResidualUnit(channels[2], channels[3], stride=2)
        self.decoder = nn.ModuleList(
            UpBlock(channels[i + 1], channels[i], channels[i], decoder_interpolation) for i in (2, 1, 0)
        )
        self.head = nn.Conv2d(channels[0], classes, kernel_size=1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_shape(x, self.divisor, type(self).__name__)
        skips = []
        for unit in self.encoder:
            x = unit(x)
            skips.append(x)
        x = self.bridge(x)
        for block, skip in zip(self.decoder, reversed(skips), strict=True):
            x = block(x, skip)
        return self.head(x)


SPEC = ModelSpec(
    name="resunet",
    build=ResUNet,
    title="Res-UNet",
    reference="Zhang, Liu, Wang. Road Extraction by Deep Residual U-Net. IEEE GRSL 2018",
    paper_width=64,
    paper_params=8_222_529,  # the paper states 7.8M; this is the straightforward build's exact count
    options={"decoder_interpolation": "nearest"},
)
