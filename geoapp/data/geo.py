"""Distances on the Earth (a sphere of the WGS84 mean radius: the error, under 0.5 %, is far below a tile)."""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_M = 6_371_008.8  # WGS84 mean radius


def haversine_m(lat1, lon1, lat2, lon2):
    """Great-circle distance in metres between points in degrees; scalars or NumPy arrays (broadcast).

    The haversine form stays accurate for small distances and, with the clip, at antipodes; longitudes that
    differ by 360 degrees (either side of the antimeridian) give the same distance."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2, dtype=np.float64) - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    d = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return float(d) if np.ndim(d) == 0 else d
