"""Distances on the Earth (a sphere of the WGS84 mean radius: the error, under 0.5 %, is far below a tile)."""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_M = 6_371_008.8  # WGS84 mean radius


def destination(lat: float, lon: float, bearing_deg: float, distance_m: float) -> tuple[float, float]:
    """The point ``distance_m`` from (lat, lon) toward a compass bearing (a local flat-earth step: for the few
    kilometres it is used for, the error is far below a tile)."""
    b = np.radians(bearing_deg)
    dlat = distance_m * np.cos(b) / EARTH_RADIUS_M
    dlon = distance_m * np.sin(b) / (EARTH_RADIUS_M * max(1e-9, float(np.cos(np.radians(lat)))))
    return float(lat + np.degrees(dlat)), float(lon + np.degrees(dlon))


def haversine_m(lat1, lon1, lat2, lon2):
    """Great-circle distance in metres between points in degrees; scalars or NumPy arrays (broadcast).

    The haversine form stays accurate for small distances and, with the clip, at antipodes; longitudes that
    differ by 360 degrees (either side of the antimeridian) give the same distance."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2, dtype=np.float64) - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    d = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return float(d) if np.ndim(d) == 0 else d
