"""U-Net (Ronneberger et al., 2015), registered as `unet`."""

from .model import SPEC, UNet

__all__ = ["SPEC", "UNet"]
