"""Limited field-of-view crops and the fixed evaluation shifts (conventions §4); the angle conventions they follow are
:mod:`geoapp.angles`."""

from __future__ import annotations

import numpy as np

from ..angles import PANO_WIDTH, fov_width

EVAL_SHIFT_SEED = 2019  # conventions §4: fixed evaluation shifts, as in DSM


def crop_fov(pano: np.ndarray, fov_deg: float, shift: int) -> np.ndarray:
    """Crop a limited-FoV image out of a north-aligned panorama (conventions §4).

    The crop is ``roll(pano, +shift, axis=columns)[:, :w_fov]``: crop column k is panorama column
    ``(k - shift) mod W``. ``pano`` is H x W (x C) with W the panorama width; ``shift`` in [0, W).
    """
    if pano.ndim not in (2, 3):
        raise ValueError(f"panorama must be H x W or H x W x C, got shape {pano.shape}")
    width = pano.shape[1]
    if not 0 <= int(shift) < width:
        raise ValueError(f"shift must be in [0, {width}), got {shift}")
    w = fov_width(fov_deg, width)
    cols = (np.arange(w) - int(shift)) % width
    return pano[:, cols]


def eval_shifts(n: int, seed: int = EVAL_SHIFT_SEED, width: int = PANO_WIDTH) -> np.ndarray:
    """The fixed evaluation shifts of conventions §4: ``numpy.random.seed(seed)`` then one ``rand()`` per query
    in split order, ``shift = int(rand * 512)``. Uses a private RandomState (same stream as the global
    seed/rand sequence) so the caller's global NumPy state is untouched."""
    rng = np.random.RandomState(seed)
    return np.array([int(rng.rand() * width) for _ in range(n)], dtype=np.int64)
