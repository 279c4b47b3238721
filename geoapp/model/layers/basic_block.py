"""torchvision's ResNet BasicBlock with an optional Coordinate Attention between its two 3x3 convs.

Tensor names match ``torchvision.models.resnet.BasicBlock`` (conv1, bn1, conv2, bn2, downsample) so an
ImageNet ResNet18 state dict loads into it; the CA parameters live under ``ca.``.
"""

from __future__ import annotations

import torch
from torch import nn

from .coord_attention import CoordAttention
from .wrap_conv import WrapConv2d


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, wrap: bool = False) -> nn.Conv2d:
    conv = WrapConv2d if wrap else nn.Conv2d
    return conv(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlockCA(nn.Module):
    """conv3x3 -> BN -> ReLU -> [CA] -> conv3x3 -> BN, plus the (downsampled) identity, then ReLU (paper Fig. 4)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, use_ca: bool = True, ca_reduction: int = 32,
                 wrap: bool = False):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, wrap)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.ca = CoordAttention(planes, ca_reduction) if use_ca else None
        self.conv2 = conv3x3(planes, planes, 1, wrap)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        if self.ca is not None:
            out = self.ca(out)
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)
