"""Res-UNet (Zhang, Liu, Wang, 2018), registered as `resunet`."""

from .model import SPEC, ResUNet

__all__ = ["SPEC", "ResUNet"]
