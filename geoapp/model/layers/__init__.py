"""Building blocks of the backbone, one per file (timm style)."""

from .basic_block import BasicBlockCA
from .coord_attention import CoordAttention, HardSigmoid, HardSwish

__all__ = ["BasicBlockCA", "CoordAttention", "HardSigmoid", "HardSwish"]
