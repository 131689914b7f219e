"""Attention U-Net (Oktay et al., MIDL 2018) as a covbench model plugin."""

from .model import SPEC, AttentionUNet

__all__ = ["SPEC", "AttentionUNet"]
