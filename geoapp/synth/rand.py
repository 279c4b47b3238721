"""Deterministic randomness for the synthetic world: stateless integer hashing and smooth noise.

Per-pixel decisions (which lot has a house, its height, its roof colour...) are drawn from a hash of
integer keys (district, block, lot...), so any pixel can be classified on its own, in any order, in a
vectorised way, and the same seed always gives the same world. Smooth fields (terrain, lakes,
clearings, albedo texture) are value noise made by upsampling random grids with cv2.
"""

from __future__ import annotations

import cv2
import numpy as np

_MASK32 = 0xFFFFFFFF
_GOLDEN = np.uint32(0x9E3779B9)
_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)


def _mix(x: np.ndarray) -> np.ndarray:
    """lowbias32 integer finaliser (C. Wellons) on a uint32 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint32(16))
    x = x * _M1
    x = x ^ (x >> np.uint32(15))
    x = x * _M2
    return x ^ (x >> np.uint32(16))


def hash_u32(*keys) -> np.ndarray:
    """Hash integer keys (scalars or broadcastable arrays, any sign) to uint32 values."""
    arrays = np.broadcast_arrays(*[np.asarray(k) for k in keys])
    shape = arrays[0].shape
    h = np.zeros(max(1, int(np.prod(shape))), dtype=np.uint32)
    for k in arrays:
        k32 = (np.asarray(k, dtype=np.int64).reshape(-1) & _MASK32).astype(np.uint32)
        h = _mix(h + _GOLDEN + k32)
    return h.reshape(shape)


def rand01(*keys) -> np.ndarray:
    """Uniform float32 in [0, 1) from a hash of integer keys (24 bits of resolution)."""
    return (hash_u32(*keys) >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def uniform(lo: float, hi: float, *keys) -> np.ndarray:
    return np.float32(lo) + np.float32(hi - lo) * rand01(*keys)


def choice_index(n: int, *keys) -> np.ndarray:
    """Index in [0, n) from a hash of keys."""
    return np.minimum((rand01(*keys) * n).astype(np.int64), n - 1)


def value_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """Smooth float32 noise, roughly N(0, 0.5) per pixel, with features about ``cell_px`` pixels wide."""
    h, w = shape
    gh = max(2, int(np.ceil(h / cell_px)) + 1)
    gw = max(2, int(np.ceil(w / cell_px)) + 1)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    # Resize a slightly larger canvas and crop so the cell size is exact (not stretched to fit).
    big = cv2.resize(grid, (int(round(gw * cell_px)), int(round(gh * cell_px))), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(big[:h, :w])


def fbm(rng: np.random.Generator, shape: tuple[int, int], cell_px: float, octaves: int = 3,
        gain: float = 0.5) -> np.ndarray:
    """Fractal sum of ``octaves`` value-noise layers, halving the feature size each octave."""
    out = np.zeros(shape, dtype=np.float32)
    amp = 1.0
    for o in range(octaves):
        out += np.float32(amp) * value_noise(rng, shape, max(2.0, cell_px / (2**o)))
        amp *= gain
    return out
