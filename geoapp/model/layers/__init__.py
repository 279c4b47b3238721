"""Building blocks of the backbone, one per file (timm style)."""

from .basic_block import BasicBlockCA
from .coord_attention import CoordAttention, HardSigmoid, HardSwish
from .wrap_conv import WrapConv2d, WrapMaxPool2d

__all__ = ["BasicBlockCA", "CoordAttention", "HardSigmoid", "HardSwish", "WrapConv2d", "WrapMaxPool2d"]
