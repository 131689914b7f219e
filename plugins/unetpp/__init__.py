"""U-Net++ (Zhou et al., 2018), registered as `unetpp`."""

from .model import SPEC, UNetPlusPlus

__all__ = ["SPEC", "UNetPlusPlus"]
