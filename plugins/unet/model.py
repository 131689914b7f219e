"""U-Net (Ronneberger et al., MICCAI 2015): the public class, its wiring and its registry spec."""

from __future__ import annotations

import torch
from torch import nn

from covbench.plugins.common import DoubleConv, check_input_shape, init_weights
from covbench.registry import ModelSpec

from .blocks import UpBlock


class UNet(nn.Module):
    """U-Net for 2D segmentation, built from scratch.

    The paper's idea: a contracting path of convolutions and max-pooling captures context, a
    symmetric expanding path of up-convolutions recovers resolution, and skip connections concatenate
    each encoder level onto the decoder level of the same size so that fine detail survives. Here
    there are 5 levels of `width * (1, 2, 4, 8, 16)` channels (64-128-256-512-1024 in the paper), two
    3x3 convolutions per level, 2x2 max-pooling, 2x2 transposed-convolution up-sampling and a 1x1 head.
    Unlike the paper the 3x3 convolutions are padded (padding 1), so the output has the input's size
    and no cropping is needed; BatchNorm (not in the paper) is on by default for stable training from
    scratch.

    Parameter count at width 64, 1 input channel, 1 class: 31,030,593 with `batch_norm=False` (the
    paper's network) and 31,036,481 with `batch_norm=True` (BatchNorm after each 3x3 convolution,
    whose bias is then dropped).

    Args:
        in_channels: channels of the input image (1 for CT).
        classes: output channels; the forward pass returns logits (B, classes, H, W).
        width: channels of the first level; every level scales with it (paper: 64).
        batch_norm: `True` (default) puts BatchNorm after every 3x3 convolution; `False` gives the
            paper's network exactly.

    Input height and width must be multiples of 16 (four poolings); other sizes raise a ValueError
    that names the nearest valid size.

    Example:
        >>> import torch
        >>> from covbench.plugins.unet import UNet
        >>> model = UNet(in_channels=1, classes=1, width=8).eval()
        >>> model(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 1, 64, 64])

    Reference:
        O. Ronneberger, P. Fischer, T. Brox. U-Net: Convolutional Networks for Biomedical Image
        Segmentation. MICCAI 2015. https://arxiv.org/abs/1505.04597
    """

    divisor = 16  # four 2x2 max-poolings

    def __init__(self, in_channels: int = 1, classes: int = 1, width: int = 64, batch_norm: bool = True):
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int (channels of the first level), got {width!r}")
        self.width = width
        channels = [width * m for m in (1, 2, 4, 8, 16)]
        # encoder[0..3] feed the skips, encoder[4] is the bottleneck
        self.encoder = nn.ModuleList(
            DoubleConv(c_in, c_out, batch_norm)
            for c_in, c_out in zip([in_channels, *channels[:-1]], channels, strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList(
            UpBlock(channels[i + 1], channels[i], batch_norm) for i in reversed(range(4))
        )
        self.head = nn.Conv2d(channels[0], classes, kernel_size=1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_shape(x, self.divisor, type(self).__name__)
        skips = []
        for level in self.encoder[:-1]:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.encoder[-1](x)
        for block, skip in zip(self.decoder, reversed(skips), strict=True):
            x = block(x, skip)
        return self.head(x)


SPEC = ModelSpec(
    name="unet",
    build=UNet,
    title="U-Net",
    reference="Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image "
    "Segmentation. MICCAI 2015",
    paper_width=64,
    paper_params=31_036_481,  # default (batch_norm=True); 31,030,593 with batch_norm=False
    options={"batch_norm": True},
)
