"""Coordinate Attention (Hou, Zhou, Feng, CVPR 2021), as in conventions §5.

Submodule names (``conv1``, ``bn1``, ``conv_h``, ``conv_w``) follow the authors' reference code so that
published CA weights load unchanged. The module keeps its last gates (``a_h``: N x C x H x 1,
``a_w``: N x C x 1 x W) so the stage attention mask of conventions §5 can be read after a forward pass.
"""

from __future__ import annotations

import torch
from torch import nn


class HardSigmoid(nn.Module):
    def __init__(self, inplace: bool = True):
        super().__init__()
        self.relu = nn.ReLU6(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + 3) / 6


class HardSwish(nn.Module):
    def __init__(self, inplace: bool = True):
        super().__init__()
        self.sigmoid = HardSigmoid(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(x)


class CoordAttention(nn.Module):
    """``out = x * a_h * a_w`` with direction-aware gates from row and column average pooling.

    ``mip = max(8, channels // reduction)`` as in the reference code; parameters per module are
    1688 / 3352 / 6680 / 25648 for 64 / 128 / 256 / 512 channels at reduction 32.
    """

    def __init__(self, channels: int, reduction: int = 32):
        super().__init__()
        mip = max(8, channels // reduction)
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.conv1 = nn.Conv2d(channels, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = HardSwish()
        self.conv_h = nn.Conv2d(mip, channels, kernel_size=1, stride=1, padding=0)
        self.conv_w = nn.Conv2d(mip, channels, kernel_size=1, stride=1, padding=0)
        self.a_h: torch.Tensor | None = None
        self.a_w: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        x_h = self.pool_h(x)  # N x C x H x 1
        x_w = self.pool_w(x).permute(0, 1, 3, 2)  # N x C x W x 1
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        self.a_h = self.conv_h(y_h).sigmoid()  # N x C x H x 1
        self.a_w = self.conv_w(y_w.permute(0, 1, 3, 2)).sigmoid()  # N x C x 1 x W
        return x * self.a_h * self.a_w

    def mask(self) -> torch.Tensor:
        """The attention mask of conventions §5 from the last forward pass: ``mean_c a_h(c, h) * a_w(c, w)``,
        N x H x W."""
        if self.a_h is None or self.a_w is None:
            raise RuntimeError("CoordAttention.mask() needs a forward pass first")
        # mean over channels of the outer product, as one batched matmul (N x H x C) @ (N x C x W)
        # fp32 even under autocast: the mask's contrast is small and bf16 would round most of it away
        a_h = self.a_h.float().squeeze(3).transpose(1, 2)
        a_w = self.a_w.float().squeeze(2)
        return torch.bmm(a_h, a_w) / a_w.shape[1]

    def gates(self) -> torch.Tensor:
        """The column gates ``a_w`` of the last forward pass, N x C x W in float32 (``gate-corr`` alignment)."""
        if self.a_w is None:
            raise RuntimeError("CoordAttention.gates() needs a forward pass first")
        return self.a_w.float().squeeze(2)
