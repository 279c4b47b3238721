"""Training machinery behind ``python -m geoapp.train``: config + presets, data, loop, run folder, checkpoints."""

from .config import TrainConfig
from .presets import PRESETS, resolve_config

__all__ = ["PRESETS", "TrainConfig", "resolve_config"]
