"""Attention U-Net (Oktay et al., MIDL 2018): the public class, its wiring and its covbench spec."""

from __future__ import annotations

import torch
from covbench.registry import ModelSpec
from torch import nn

from .blocks import ConvPair, DecoderStep

DIVISOR = 16  # four 2x2 max-poolings


class AttentionUNet(nn.Module):
    """U-Net whose skip connections pass through attention gates, built from scratch.

    The paper's idea: a soft attention gate on every skip connection, driven by the coarser
    decoder features, learns to suppress irrelevant regions (here: lung parenchyma and body
    outside a lesion) without an external localisation step. The backbone is a 2D U-Net with
    levels of `width * (1, 2, 4, 8, 16)` channels (two 3x3 convolutions per level, 2x2
    max-pooling, 2x2 transposed-convolution up-sampling, a 1x1 head); each of the four decoder
    steps gates its skip with the features one level below (additive attention, gate channels
    half the skip's). Deep supervision, optional in the paper, is left out.

    Parameter count at width 64, 1 input channel, 1 class: 32,081,925 with the defaults (the four
    gates add 1,045,444); with `attention=False` it is the plain U-Net, 31,036,481 (the same as
    covbench's `unet`).

    Args:
        in_channels: channels of the input image (1 for CT).
        classes: output channels; the forward pass returns logits (B, classes, H, W).
        width: channels of the first level; every level scales with it (64 as in U-Net).
        batch_norm: BatchNorm after every 3x3 convolution (default `True`).
        attention: `True` (default) gates the skips; `False` gives the plain U-Net, for ablations.

    Input height and width must be multiples of 16; other sizes raise a ValueError.

    Example:
        >>> import torch
        >>> model = AttentionUNet(width=4).eval()
        >>> model(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 1, 32, 32])

    Reference:
        O. Oktay, J. Schlemper, L. Le Folgoc, et al. Attention U-Net: Learning Where to Look for
        the Pancreas. MIDL 2018. https://arxiv.org/abs/1804.03999
    """

    def __init__(
        self,
        in_channels: int = 1,
        classes: int = 1,
        width: int = 64,
        batch_norm: bool = True,
        attention: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int (channels of the first level), got {width!r}")
        channels = [width * m for m in (1, 2, 4, 8, 16)]
        self.encoder = nn.ModuleList(
            ConvPair(c_in, c_out, batch_norm)
            for c_in, c_out in zip([in_channels, *channels[:-1]], channels, strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        # decoder[0] works at level 3 (gated by the bottleneck), decoder[3] at level 0
        self.decoder = nn.ModuleList(
            DecoderStep(channels[i + 1], channels[i], batch_norm, attention) for i in reversed(range(4))
        )
        self.head = nn.Conv2d(channels[0], classes, kernel_size=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, w = x.shape[-2:]
        if h % DIVISOR or w % DIVISOR:
            raise ValueError(f"AttentionUNet needs height and width divisible by {DIVISOR}, got {h}x{w}")
        skips = []
        for level in self.encoder[:-1]:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        return self.encoder[-1](x), skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self._encode(x)
        for step, skip in zip(self.decoder, reversed(skips), strict=True):
            x = step(x, skip)
        return self.head(x)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The gates' coefficients, deepest level first, each (B, 1, H_l, W_l); for figures."""
        x, skips = self._encode(x)
        maps = []
        for step, skip in zip(self.decoder, reversed(skips), strict=True):
            if step.gate is None:
                raise ValueError("attention_maps needs attention=True")
            maps.append(step.gate.coefficients(skip, x))
            x = step(x, skip)
        return maps


SPEC = ModelSpec(
    name="attention-unet",
    build=AttentionUNet,
    title="Attention U-Net",
    reference="Oktay et al. Attention U-Net: Learning Where to Look for the Pancreas. MIDL 2018",
    paper_width=64,
    paper_params=32_081_925,
    options={"batch_norm": True, "attention": True},
)
