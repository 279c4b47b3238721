"""The method's model core: ResNet18_CA branches, FCA window alignment, FMC descriptors, triplet loss."""

from .align import AlignResult, StageOffsets, align_windows, best_offsets, crop_windows, window_scores
from .align_modes import ALIGN_MODES, AlignMode, align_mode
from .checkpoint import CheckpointError, load_model, read_metadata, save_model
from .config import ModelConfig
from .crossview import CrossViewModel, build_model, match_maps, pair_headings
from .fmc import multiscale_descriptor
from .layers import BasicBlockCA, CoordAttention
from .loss import hardest_negatives, soft_margin_triplet_loss
from .resnet import ResNet18CA, StageMaps, WeightsReport, load_imagenet_weights, resnet18_ca

__all__ = [
    "ALIGN_MODES",
    "AlignMode",
    "AlignResult",
    "BasicBlockCA",
    "CheckpointError",
    "CoordAttention",
    "CrossViewModel",
    "ModelConfig",
    "ResNet18CA",
    "StageMaps",
    "StageOffsets",
    "WeightsReport",
    "align_mode",
    "align_windows",
    "best_offsets",
    "build_model",
    "crop_windows",
    "hardest_negatives",
    "load_imagenet_weights",
    "load_model",
    "match_maps",
    "pair_headings",
    "multiscale_descriptor",
    "read_metadata",
    "resnet18_ca",
    "save_model",
    "soft_margin_triplet_loss",
    "window_scores",
]
