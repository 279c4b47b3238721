"""Random artefacts for tests and benchmarks: tile folders and untrained checkpoints, made on the spot.

The search benchmark (``geoapp.bench.search``) times the real build and search paths on them, and the tests build
tiny databases from them; both import them from here so neither depends on the other.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from .model import ModelConfig, build_model, save_model


def make_random_tiles(folder: str | Path, n: int, size: int = 750, seed: int = 0) -> Path:
    """``n`` square JPEG tiles of smooth random colour fields (so polar images have structure) and their CSV
    (``file,lat,lon``); returns the CSV path. Reused when already there."""
    folder = Path(folder)
    csv_path = folder / "tiles.csv"
    if csv_path.is_file() and len(csv_path.read_text().splitlines()) == n + 1:
        return csv_path
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = ["file,lat,lon"]
    for i in range(n):
        coarse = rng.random((6, 6, 3)).astype(np.float32)
        fine = rng.random((48, 48, 3)).astype(np.float32)
        img = 0.7 * cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        img += 0.3 * cv2.resize(fine, (size, size), interpolation=cv2.INTER_LINEAR)
        name = f"tile_{i:06d}.jpg"
        cv2.imwrite(str(folder / name), np.clip(img * 255, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        lines.append(f"{name},{40 + rng.random():.6f},{-75 + rng.random():.6f}")
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path


def demo_model_config(**changes) -> ModelConfig:
    """The shipped demo model's configuration (the ``demo`` preset: gate-corr windows, block 1's shared window, the
    gate term, 32 channels at 64 x 256), with ``changes``: what the app serves, for tests of the serving paths."""
    from .training.config import TrainConfig
    from .training.presets import PRESETS

    return replace(TrainConfig.from_dict(PRESETS["demo"]).model, **changes)


def random_checkpoint(path: str | Path, config: ModelConfig | None = None, seed: int = 0) -> Path:
    """A randomly initialised model saved as a checkpoint (reused when present); by default the demo's model."""
    path = Path(path)
    if not path.is_file():
        torch.manual_seed(seed)
        model = build_model(config or demo_model_config()).eval()
        save_model(path, model, {"note": "random weights (tests and benchmarks)"})
    return path
