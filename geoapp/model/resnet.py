"""ResNet18 with Coordinate Attention in every BasicBlock (ResNet18_CA, paper Fig. 4), and the plain baseline.

The stem and stage layout are torchvision's ``resnet18``; the classifier head is dropped because the
network's outputs are the four stage feature maps (conventions §1) and, with CA, the four stage masks (conventions §5).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .layers import BasicBlockCA, WrapConv2d, WrapMaxPool2d

STAGE_CHANNELS = (64, 128, 256, 512)


def stage_channels(base_channels: int = 64) -> tuple[int, ...]:
    """Channels of blocks 1-4: ``base_channels`` x (1, 2, 4, 8); 64 is ResNet18's (conventions §1)."""
    return tuple(base_channels * m for m in (1, 2, 4, 8))


@dataclass
class StageMaps:
    """Per-stage outputs of one branch for a batch: ``features[b]`` is N x C x H x W, ``masks[b]`` N x H x W
    (``None`` without CA). Index 0 is block 1."""

    features: list[torch.Tensor]
    masks: list[torch.Tensor] | None
    # Optional per-stage column energies N x W (sum over C, H of the squared features). A reference database
    # precomputes them so that window energies cost O(w) per pair instead of a pass over the whole map.
    col_energy: list[torch.Tensor] | None = None
    # Per-stage column gates ``a_w`` of the stage's last CA, N x C x W (with CA; ``gate-corr`` alignment).
    gates: list[torch.Tensor] | None = None
    # Optional per-stage N x W gate energies (``geoapp.model.align.gate_energy``), precomputed by a database.
    gate_energy: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.features[0].shape[0]

    def _map(self, fn) -> StageMaps:
        def apply(maps):
            return None if maps is None else [fn(m) for m in maps]

        return StageMaps(apply(self.features), apply(self.masks), apply(self.col_energy), apply(self.gates),
                         apply(self.gate_energy))

    @classmethod
    def cat(cls, parts: list[StageMaps]) -> StageMaps:
        """The batches ``parts`` joined along N (every field that the first part has)."""
        def join(name):
            first = getattr(parts[0], name)
            if first is None:
                return None
            return [torch.cat([getattr(p, name)[b] for p in parts]) for b in range(len(first))]

        return cls(join("features"), join("masks"), join("col_energy"), join("gates"), join("gate_energy"))

    def to(self, *args, **kwargs) -> StageMaps:
        return self._map(lambda m: m.to(*args, **kwargs))

    def slice(self, start: int, stop: int) -> StageMaps:
        return self._map(lambda m: m[start:stop])

    def detach(self) -> StageMaps:
        return self._map(lambda m: m.detach())


class ResNet18CA(nn.Module):
    """ResNet18 backbone returning the four stage maps and, when ``use_ca``, the four stage masks.

    With ``use_ca=False`` and the defaults this is exactly torchvision's ResNet18 without its pooling/classifier
    head. ``base_channels`` narrows (or widens) every stage in proportion (a CPU-sized model; only 64 loads
    ImageNet weights). ``wrap``: the width is padded circularly everywhere (the satellite branch's polar image
    is a panorama, see :mod:`geoapp.model.layers.wrap_conv`).
    """

    def __init__(self, use_ca: bool = True, ca_reduction: int = 32, base_channels: int = 64, wrap: bool = False):
        super().__init__()
        self.use_ca = use_ca
        conv = WrapConv2d if wrap else nn.Conv2d
        self.conv1 = conv(3, base_channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (WrapMaxPool2d if wrap else nn.MaxPool2d)(kernel_size=3, stride=2, padding=1)
        inplanes = base_channels
        for i, planes in enumerate(stage_channels(base_channels), start=1):
            stride = 1 if i == 1 else 2
            layer = nn.Sequential(
                BasicBlockCA(inplanes, planes, stride, use_ca, ca_reduction, wrap),
                BasicBlockCA(planes, planes, 1, use_ca, ca_reduction, wrap),
            )
            self.add_module(f"layer{i}", layer)
            inplanes = planes
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's ResNet initialisation (Kaiming for convs, unit BN), applied to the CA convs too.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> StageMaps:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features, masks, gates = [], [], []
        for layer in self.stages:
            x = layer(x)
            features.append(x)
            if self.use_ca:
                # conventions §5: the stage mask comes from the CA of the stage's last BasicBlock.
                masks.append(layer[-1].ca.mask())
                gates.append(layer[-1].ca.gates())
        return StageMaps(features, masks if self.use_ca else None, gates=gates if self.use_ca else None)


def resnet18_ca(use_ca: bool = True, ca_reduction: int = 32, base_channels: int = 64, wrap: bool = False) -> ResNet18CA:
    """Builder for one branch: ResNet18_CA (``use_ca=True``, the paper) or the plain ResNet18 baseline."""
    return ResNet18CA(use_ca=use_ca, ca_reduction=ca_reduction, base_channels=base_channels, wrap=wrap)


# Keys of torchvision's resnet18 state dict that the backbone deliberately does not have.
_CLASSIFIER_KEYS = ("fc.weight", "fc.bias")


@dataclass
class WeightsReport:
    loaded: list[str]
    new: list[str]
    ignored: list[str]

    def __str__(self) -> str:
        return (
            f"loaded {len(self.loaded)} ImageNet tensors; {len(self.new)} new (Coordinate Attention, initialised "
            f"randomly); ignored {self.ignored} (classifier head)"
        )


def load_imagenet_weights(model: ResNet18CA, path: str | os.PathLike) -> WeightsReport:
    """Load a torchvision ``resnet18`` state-dict file (``torch.save(resnet18().state_dict(), path)``).

    Every non-CA tensor of the backbone must be in the file with the right shape; the only keys allowed
    to be new are the CA ones and the only file keys allowed to be unused are the classifier head. Any
    other mismatch raises a ``ValueError`` naming the keys, instead of a silent ``strict=False``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ImageNet weights file not found: {path} (expected a torchvision resnet18 state dict)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"could not read {path} as a PyTorch state dict: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")

    own = model.state_dict()
    is_ca = [k for k in own if ".ca." in k]
    expected = [k for k in own if ".ca." not in k]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in own and k not in _CLASSIFIER_KEYS]
    wrong_shape = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in expected
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing from the file: {missing}")
    if unexpected:
        problems.append(f"not in the model: {unexpected}")
    if wrong_shape:
        problems.append(f"wrong shape: {wrong_shape}")
    if problems:
        raise ValueError(f"{path} is not a torchvision resnet18 state dict for this backbone: " + "; ".join(problems))
    with torch.no_grad():
        for k in expected:
            own[k].copy_(state[k])
    return WeightsReport(loaded=expected, new=is_ca, ignored=[k for k in _CLASSIFIER_KEYS if k in state])
