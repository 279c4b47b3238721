"""Training machinery behind ``python -m geoapp.train``: config + presets, data, loop, run folder, checkpoints."""

from .presets import PRESETS, TrainConfig, resolve_config

__all__ = ["PRESETS", "TrainConfig", "resolve_config"]
