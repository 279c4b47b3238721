"""Convolution and max-pooling that wrap around the width axis (a polar satellite image is a panorama).

Zero padding at the left and right edges of a polar image makes its edge columns differ from all others,
although column 0 and column W-1 are neighbours on the ground. These layers pad the width circularly and
the height with zeros, so a ``torch.roll`` of the input along the width by a multiple of the total stride
rolls every stage map and mask by the same angle. The parameters (``weight``, ``bias``) keep the names of
``nn.Conv2d``, so torchvision / ImageNet state dicts load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WrapConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose width padding wraps around; height padding stays zero."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._wrap = self.padding[1]
        self.padding = (self.padding[0], 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._wrap:
            x = F.pad(x, (self._wrap, self._wrap, 0, 0), mode="circular")
        return super().forward(x)


class WrapMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` whose width padding wraps around (height padding ignores the pad, as in MaxPool2d)."""

    def __init__(self, kernel_size: int, stride: int, padding: int):
        super().__init__(kernel_size, stride, padding=(padding, 0))
        self._wrap = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._wrap:
            x = F.pad(x, (self._wrap, self._wrap, 0, 0), mode="circular")
        return super().forward(x)
