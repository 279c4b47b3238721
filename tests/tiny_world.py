"""A tiny fake CVUSA layout for training / evaluation tests (seconds, not minutes).

Panoramas are blocky random colour fields; each pair's pre-made polar image is its panorama plus a little
noise, so a ground crop really is a window of its polar image and the task is learnable. A ``dataset.json``
manifest declares the small sizes (geoapp.data.base reads it).

Splits as the CVUSA reader names them: ``train`` (train-19zl.csv), ``test`` (val-19zl.csv: ``n_val`` pairs, the
reported split, named as in CVUSA) and, with ``n_selection``, ``val`` (selection-19zl.csv, model selection).
``spacing_m``: also write split_locations/all.csv with the training pairs on a square grid that far apart (the
others further east), and declare ``tile_metres`` in the manifest's geometry.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def _png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_tiny_cvusa(root, n_train: int = 12, n_val: int = 8, height: int = 32, width: int = 128, seed: int = 0,
                     n_selection: int = 0, spacing_m: float | None = None, tile_metres: float | None = None):
    root = Path(root)
    rng = np.random.default_rng(seed)
    splits = {"train": [], "selection": [], "val": []}
    for i in range(n_train + n_selection + n_val):
        name = f"{i + 1:07d}"
        coarse = rng.integers(0, 256, size=(4, 16, 3), dtype=np.uint8)
        pano = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_NEAREST)
        noise = rng.integers(-12, 13, size=pano.shape)
        polar = np.clip(pano.astype(np.int64) + noise, 0, 255).astype(np.uint8)
        _png(root / "streetview/panos" / f"{name}.png", pano)
        _png(root / "polarmap/19" / f"{name}.png", polar)
        _png(root / "bingmap/19" / f"{name}.png", np.zeros((16, 16, 3), np.uint8))
        line = f"bingmap/19/{name}.png,streetview/panos/{name}.png,annotations/{name}.png"
        splits["train" if i < n_train else "selection" if i < n_train + n_selection else "val"].append(line)
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for name, lines in splits.items():
        if lines:
            (root / f"splits/{name}-19zl.csv").write_text("\n".join(lines) + "\n")
    manifest = {"panorama_size": [height, width], "satellite_size": 16, "polar_size": [height, width]}
    if spacing_m is not None:
        side = int(np.ceil(np.sqrt(n_train)))
        rows = []
        for i in range(n_train + n_selection + n_val):
            col, row = (i % side, i // side) if i < n_train else (side + 4 + i, 0)
            lat = 40.0 + row * spacing_m / 111_195.0
            lon = -75.0 + col * spacing_m / (111_195.0 * np.cos(np.radians(40.0)))
            rows.append(f"{lat:.9f},{lon:.9f},{lat:.9f},{lon:.9f}")
        (root / "split_locations").mkdir(exist_ok=True)
        (root / "split_locations/all.csv").write_text("\n".join(rows) + "\n")
    if tile_metres is not None:
        manifest["geometry"] = {"tile_metres": tile_metres}
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root
