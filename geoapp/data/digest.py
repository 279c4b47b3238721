"""What a split's images are: an exact digest, and a fingerprint that a renderer's rounding does not change.

A shipped checkpoint records the exact digest of the split its figures were measured on; a machine that regenerates
the synthetic world compares its own split against it before it trusts those figures. The digest covers every file a
pair reads (ground panorama, satellite tile and, where stored, its polar image), in split order, each with its path
relative to the dataset root, so renaming, reordering or editing one pixel changes it.

That is stricter than the model needs: another OpenCV, NumPy or libjpeg (or the same ones on a CPU with other SIMD
kernels) rounds a few pixels one level the other way and encodes other JPEG bytes, and the digest differs while the
model answers as before. The **fingerprint** says whether two renderings are the same world: for every file it
keeps the mean colour of each cell of a ``grid`` x ``grid`` division of the decoded image (rounded to a level), with
the names of the files in order. Two fingerprints match when the names are the same and no cell differs by more
than ``max_level`` levels, nor all cells on average by more than ``mean_level``: rendering noise moves a cell's mean
by a fraction of a level, while another world (another seed, another renderer, a moved or swapped image) moves many
cells by many levels. The limits are recorded with the fingerprint, and ``tests/test_bootstrap.py`` shows both
sides on real renderings.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoapp.data.records import read_rgb

DIGEST_VERSION = 1  # bump when the rule above changes (a record of another version then reads as a mismatch)
FINGERPRINT_VERSION = 1  # the same for the fingerprint
FINGERPRINT_GRID = 4  # cells per side: 16 cells x 3 colours per image
# a cell's mean moves by well under a level with rendering noise (docs/results.md, "the same world on another machine")
FINGERPRINT_MAX_LEVEL = 3.0
FINGERPRINT_MEAN_LEVEL = 0.25


def _pair_files(record) -> list[Path]:
    files = [record.ground_path, record.satellite_path]
    if record.polar_path is not None and Path(record.polar_path).is_file():
        files.append(record.polar_path)
    return [Path(f) for f in files]


def _named_files(dataset) -> list[tuple[str, Path]]:
    """Every file of ``dataset``'s pairs, in split order, with its path relative to the dataset root."""
    root = Path(dataset.root).resolve()
    return [(path.resolve().relative_to(root).as_posix(), path)
            for record in dataset.records for path in _pair_files(record)]


def split_digest(dataset) -> dict:
    """``{"sha256", "pairs", "files", "version"}`` of the images of ``dataset``'s records (any layout reader)."""
    total = hashlib.sha256()
    files = _named_files(dataset)
    for name, path in files:
        total.update(name.encode("utf-8") + b"\0")
        total.update(hashlib.sha256(path.read_bytes()).digest())
    return {"sha256": total.hexdigest(), "pairs": len(dataset.records), "files": len(files), "version": DIGEST_VERSION}


def image_cells(image: np.ndarray, grid: int = FINGERPRINT_GRID) -> np.ndarray:
    """The mean of each channel over each cell of a ``grid`` x ``grid`` division of ``image`` (H x W x C): grid x grid
    x C float64, the cells' edges at the rounded multiples of H / grid and W / grid."""
    if image.ndim == 2:
        image = image[:, :, None]
    height, width = image.shape[:2]
    if height < grid or width < grid:
        raise ValueError(f"an image of {width} x {height} px is too small for a {grid} x {grid} fingerprint")
    rows = np.linspace(0, height, grid + 1).round().astype(np.int64)
    cols = np.linspace(0, width, grid + 1).round().astype(np.int64)
    sums = np.add.reduceat(np.add.reduceat(image.astype(np.float64), rows[:-1], axis=0), cols[:-1], axis=1)
    counts = np.diff(rows)[:, None, None] * np.diff(cols)[None, :, None]
    return sums / counts


def split_fingerprint(dataset, grid: int = FINGERPRINT_GRID) -> dict:
    """The fingerprint of ``dataset``'s images (module docstring): its version, sizes, limits, the sha256 of the
    files' names in order, and every file's cell means as base64 of a files x grid x grid x 3 uint8 array."""
    files = _named_files(dataset)
    cells = np.empty((len(files), grid, grid, 3), dtype=np.uint8)
    for k, (name, path) in enumerate(files):
        image = read_rgb(path)
        if image is None:
            raise ValueError(f"{path} cannot be decoded as an image ({name} of the split {dataset.split!r})")
        cells[k] = np.clip(np.rint(image_cells(image, grid)), 0, 255)
    names = hashlib.sha256("".join(f"{name}\n" for name, _ in files).encode("utf-8")).hexdigest()
    return {"version": FINGERPRINT_VERSION, "pairs": len(dataset.records), "files": len(files), "grid": grid,
            "names_sha256": names, "tolerance": {"max_level": FINGERPRINT_MAX_LEVEL,
                                                 "mean_level": FINGERPRINT_MEAN_LEVEL},
            "cells": base64.b64encode(cells.tobytes()).decode("ascii")}


def _cells(record: dict) -> np.ndarray:
    grid = int(record["grid"])
    raw = np.frombuffer(base64.b64decode(record["cells"]), dtype=np.uint8)
    if raw.size != int(record["files"]) * grid * grid * 3:
        raise ValueError(f"a fingerprint of {record['files']} files holds {raw.size} cell values, not "
                         f"{int(record['files']) * grid * grid * 3}")
    return raw.reshape(int(record["files"]), grid, grid, 3).astype(np.int16)


@dataclass(frozen=True)
class FingerprintMatch:
    """How a rendering's fingerprint compares with a recorded one."""

    same_world: bool
    reason: str  # in plain words, with the figures
    max_level: float | None = None  # the largest difference of one cell's mean, in levels
    mean_level: float | None = None  # the mean difference over all cells
    worst_file: int | None = None  # the position (in split order) of the file with the largest difference

    def to_dict(self) -> dict:
        return {"same_world": self.same_world, "reason": self.reason, "max_level": self.max_level,
                "mean_level": self.mean_level, "worst_file": self.worst_file}


def compare_fingerprints(recorded: dict, here: dict) -> FingerprintMatch:
    """Whether ``here`` is the world ``recorded`` describes, within the limits ``recorded`` holds."""
    for key in ("version", "pairs", "files", "grid", "names_sha256"):
        if recorded.get(key) != here.get(key):
            what = "the files' names or order" if key == "names_sha256" else key
            return FingerprintMatch(False, f"{what} differ: {recorded.get(key)!r} recorded, {here.get(key)!r} here")
    diff = np.abs(_cells(recorded) - _cells(here))
    max_level, mean_level = float(diff.max()), float(diff.mean())
    worst = int(np.unravel_index(int(diff.argmax()), diff.shape)[0])
    limits = recorded["tolerance"]
    same = max_level <= float(limits["max_level"]) and mean_level <= float(limits["mean_level"])
    reason = (f"cell means differ by at most {max_level:.0f} levels (limit {float(limits['max_level']):g}), "
              f"{mean_level:.3f} on average (limit {float(limits['mean_level']):g})")
    return FingerprintMatch(same, reason, max_level, mean_level, worst)
