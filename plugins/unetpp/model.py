"""U-Net++ (Zhou et al., DLMIA 2018): the public class, its wiring and its registry spec."""

from __future__ import annotations

import torch
from torch import nn

from covbench.plugins.common import DoubleConv, check_input_shape, init_weights
from covbench.registry import ModelSpec

INFERENCE_MODES = ("average", "prune")


class UNetPlusPlus(nn.Module):
    """U-Net++ (nested U-Net) with deep supervision, built from scratch.

    The paper's idea: replace U-Net's plain skip connections by nested, dense skip pathways that
    narrow the semantic gap between encoder and decoder. Node X^{i,j} (level i, column j) convolves
    the concatenation of every earlier node of its level, X^{i,0..j-1}, with the up-sampled node
    below, X^{i+1,j-1}. The top row X^{0,1..4} holds four full-resolution outputs of U-Nets of depth
    1 to 4; a 1x1 head on each gives deep supervision (train on the mean of the four losses), and at
    inference one either averages the heads or prunes to the deepest one. Here each node is two 3x3
    convolutions (+ BatchNorm) + ReLU, levels have `width * (1, 2, 4, 8, 16)` channels (32-64-...-512
    in the paper), down-sampling is 2x2 max-pooling and up-sampling a 2x2 transposed convolution
    that maps level i+1's channels to level i's.

    Parameter count at width 32, 1 input channel, 1 class. The paper's 9,041,601 is the network
    *without BatchNorm* (convolutions with biases) and *one* 1x1 head on X^{0,4}, i.e.
    `UNetPlusPlus(width=32, batch_norm=False, deep_supervision=False)`; each further head adds 33
    (9,041,700 with four heads). The default configuration (`batch_norm=True`, whose convolutions
    drop their bias, and four heads) counts 9,045,348.

    Args:
        in_channels: channels of the input image (1 for CT).
        classes: output channels; every head gives logits (B, classes, H, W).
        width: channels of level 0; every level scales with it (paper: 32).
        batch_norm: `True` (default) puts BatchNorm after every 3x3 convolution; `False` matches the
            paper's parameter count.
        deep_supervision: `True` (default) builds the four heads on X^{0,1..4}; in training mode the
            forward pass returns a list of their four logits tensors, all at full resolution, to be
            used in a loss averaged over heads. `False` builds a single head on X^{0,4}, and the
            forward pass always returns one tensor.
        inference: how eval mode combines the heads when `deep_supervision=True`: `"average"`
            (default) returns the mean of the four heads' logits, `"prune"` only the deepest head's
            (X^{0,4}). Eval mode always returns a single tensor. Can be changed after building
            (`model.inference = "prune"`).

    Input height and width must be multiples of 16 (four poolings); other sizes raise a ValueError
    that names the nearest valid size.

    Example:
        >>> import torch
        >>> from covbench.plugins.unetpp import UNetPlusPlus
        >>> model = UNetPlusPlus(width=4)
        >>> heads = model(torch.zeros(2, 1, 32, 32))  # training mode: one logits tensor per head
        >>> len(heads), heads[0].shape
        (4, torch.Size([2, 1, 32, 32]))
        >>> model.eval()(torch.zeros(2, 1, 32, 32)).shape  # inference: the heads' mean
        torch.Size([2, 1, 32, 32])

    Reference:
        Z. Zhou, M. M. Rahman Siddiquee, N. Tajbakhsh, J. Liang. UNet++: A Nested U-Net Architecture
        for Medical Image Segmentation. DLMIA (MICCAI workshop) 2018. https://arxiv.org/abs/1807.10165
    """

    divisor = 16  # four 2x2 max-poolings
    depth = 4  # columns j = 1..4 of the nested decoder

    def __init__(
        self,
        in_channels: int = 1,
        classes: int = 1,
        width: int = 32,
        batch_norm: bool = True,
        deep_supervision: bool = True,
        inference: str = "average",
    ):
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int (channels of level 0), got {width!r}")
        if inference not in INFERENCE_MODES:
            raise ValueError(f"inference must be one of {INFERENCE_MODES}, got {inference!r}")
        self.width = width
        self.deep_supervision = deep_supervision
        self.inference = inference
        channels = [width * 2**i for i in range(self.depth + 1)]
        # backbone X^{0..4,0}
        self.encoder = nn.ModuleList(
            DoubleConv(c_in, c_out, batch_norm)
            for c_in, c_out in zip([in_channels, *channels[:-1]], channels, strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        # nested nodes X^{i,j}, j >= 1, keyed "x{i}_{j}"; up[key] brings X^{i+1,j-1} up to node X^{i,j}
        self.up = nn.ModuleDict()
        self.nodes = nn.ModuleDict()
        for j in range(1, self.depth + 1):
            for i in range(self.depth + 1 - j):
                key = f"x{i}_{j}"
                self.up[key] = nn.ConvTranspose2d(channels[i + 1], channels[i], kernel_size=2, stride=2)
                self.nodes[key] = DoubleConv((j + 1) * channels[i], channels[i], batch_norm)
        # 1x1 heads on X^{0,1..4} (deep supervision) or on X^{0,4} only
        n_heads = self.depth if deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv2d(channels[0], classes, kernel_size=1) for _ in range(n_heads))
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The top row X^{0,1}, ..., X^{0,4}: full-resolution features of U-Nets of depth 1 to 4."""
        check_input_shape(x, self.divisor, type(self).__name__)
        rows: list[list[torch.Tensor]] = []  # rows[i][j] is X^{i,j}
        for i, level in enumerate(self.encoder):
            x = level(x if i == 0 else self.pool(x))
            rows.append([x])
        for j in range(1, self.depth + 1):
            for i in range(self.depth + 1 - j):
                key = f"x{i}_{j}"
                up = self.up[key](rows[i + 1][j - 1])
                rows[i].append(self.nodes[key](torch.cat([*rows[i], up], dim=1)))
        return rows[0][1:]

    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every head (shallowest first), whatever the mode."""
        top = self.forward_features(x)
        return [head(f) for head, f in zip(self.heads, top[-len(self.heads) :], strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.training and self.deep_supervision:
            return self.forward_heads(x)
        if not self.deep_supervision or self.inference == "prune":
            return self.heads[-1](self.forward_features(x)[-1])
        if self.inference == "average":
            return torch.stack(self.forward_heads(x)).mean(dim=0)
        raise ValueError(f"inference must be one of {INFERENCE_MODES}, got {self.inference!r}")


SPEC = ModelSpec(
    name="unetpp",
    build=UNetPlusPlus,
    title="U-Net++",
    reference="Zhou, Rahman Siddiquee, Tajbakhsh, Liang. UNet++: A Nested U-Net Architecture for "
    "Medical Image Segmentation. DLMIA 2018",
    paper_width=32,
    # Default configuration (BatchNorm, four heads). The paper's 9,041,601 is
    # batch_norm=False, deep_supervision=False (no BatchNorm, one head on X^{0,4}).
    paper_params=9_045_348,
    deep_supervision=True,
    options={"batch_norm": True, "deep_supervision": True, "inference": "average"},
)
