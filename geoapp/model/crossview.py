"""The two-branch cross-view model: independent ground and satellite ResNet18(_CA) branches (paper Fig. 3)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .align import AlignResult, StageOffsets, align_windows, refined_headings
from .config import ModelConfig
from .fmc import multiscale_descriptor
from .resnet import ResNet18CA, StageMaps, WeightsReport, load_imagenet_weights, resnet18_ca

INITIAL_WINDOW_TEMPERATURE = 10.0  # cosine 1 vs 0 starts e^10 times likelier; learned from there


def match_maps(config: ModelConfig, ground: StageMaps, satellite: StageMaps, diagonal: bool = False,
               gate_weight: float | None = None, **kwargs) -> AlignResult:
    """:func:`align_windows` with the matching settings of ``config`` (mode, stages, window stage, gate weight):
    the one place the model, the search and the evaluation turn a config into an alignment. ``gate_weight``: another
    weight of the gate term than the config's (training's descriptor-only distances: 0)."""
    return align_windows(ground, satellite, config.align_mode, config.stages, diagonal=diagonal,
                         offset_stage=config.window_stage,
                         gate_weight=config.gate_weight if gate_weight is None else gate_weight, **kwargs)


def pair_headings(config: ModelConfig, ground: StageMaps, satellite: StageMaps, aligned: StageOffsets) -> np.ndarray:
    """Headings of N aligned pairs (ground i with satellite i at ``aligned``'s offsets, N x stages), read at the
    heading stage and refined below its column grid (:func:`~geoapp.model.align.refined_headings`)."""
    stage = config.heading_stage_resolved
    i = aligned.stages.index(stage)
    offsets = aligned.offsets.reshape(-1, len(aligned.stages))[:, i]
    return refined_headings(config.align_mode, stage, ground, satellite, offsets, aligned.window_widths[i],
                            aligned.map_widths[i])


class CrossViewModel(nn.Module):
    """Ground branch (limited-FoV crop, H x w_fov) and satellite branch (polar image, H x W), same
    architecture, separate weights. ``forward`` returns the B x B pair distances of a batch (conventions §5-6)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.ground = resnet18_ca(config.use_ca, config.ca_reduction, config.base_channels)
        self.satellite = resnet18_ca(config.use_ca, config.ca_reduction, config.base_channels, config.wrap_satellite)
        if config.alignment.cosine_scores:
            # log of the per-stage temperature that turns window scores (cosines in [-1, 1]) into window logits;
            # used in training only (soft window choice, alignment loss); inference takes the argmax
            self.window_log_temperature = nn.Parameter(torch.full((4,), math.log(INITIAL_WINDOW_TEMPERATURE)))

    def encode_ground(self, images: torch.Tensor) -> StageMaps:
        return self.ground(images)

    def encode_satellite(self, images: torch.Tensor) -> StageMaps:
        return self.satellite(images)

    def match(self, ground: StageMaps, satellite: StageMaps, diagonal: bool = False, **kwargs) -> AlignResult:
        """Align encoded ground maps with encoded satellite maps using this model's mode and stages."""
        return match_maps(self.config, ground, satellite, diagonal=diagonal, **kwargs)

    def forward(self, ground_images: torch.Tensor, satellite_images: torch.Tensor, return_maps: bool = False):
        """B x B alignment of a batch; with ``return_maps`` also the encoded maps (for extra losses)."""
        ground, satellite = self.encode_ground(ground_images), self.encode_satellite(satellite_images)
        result = self.match(ground, satellite)
        return (result, ground, satellite) if return_maps else result

    def window_temperature(self) -> torch.Tensor:
        """The per-stage window temperatures (4,) of a model whose window scores are cosines."""
        return self.window_log_temperature.exp()

    def ground_descriptor(self, ground: StageMaps) -> torch.Tensor:
        """The FMC descriptor of ground maps (no cropping needed on the ground side)."""
        return multiscale_descriptor([ground.features[s - 1] for s in self.config.stages])

    def load_imagenet_weights(self, path) -> dict[str, WeightsReport]:
        """Initialise both branches from one torchvision resnet18 state-dict file (paper: ImageNet init)."""
        return {
            "ground": load_imagenet_weights(self.ground, path),
            "satellite": load_imagenet_weights(self.satellite, path),
        }


def build_model(config: ModelConfig) -> CrossViewModel:
    return CrossViewModel(config)


__all__ = ["CrossViewModel", "build_model", "match_maps", "ResNet18CA"]
