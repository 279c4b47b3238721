"""Local tangent-plane conversion between world pixels and WGS84 latitude / longitude.

The world's centre sits at the geographic origin. East and north offsets in metres are converted with
the WGS84 meridian and prime-vertical radii of curvature at the origin's latitude, which is accurate to
centimetres over the few kilometres a synthetic world spans. North = larger latitude, east = larger
longitude, as on a map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WGS84_A = 6378137.0
WGS84_E2 = 6.69437999014e-3
DEFAULT_ORIGIN = (41.5868, -93.625)  # Des Moines, Iowa: a city in a rural state, like much of CVUSA


@dataclass(frozen=True)
class GeoFrame:
    origin_lat: float
    origin_lon: float
    mpp: float  # metres per world pixel
    width_px: int
    height_px: int

    def _radii(self) -> tuple[float, float]:
        s = math.sin(math.radians(self.origin_lat))
        w = 1.0 - WGS84_E2 * s * s
        meridian = WGS84_A * (1.0 - WGS84_E2) / w**1.5
        prime = WGS84_A / math.sqrt(w)
        return meridian, prime

    def east_north(self, x, y):
        """Metres east and north of the origin (the world centre) of world pixel coordinates (x, y)."""
        east = (np.asarray(x, dtype=np.float64) - self.width_px / 2.0) * self.mpp
        north = (self.height_px / 2.0 - np.asarray(y, dtype=np.float64)) * self.mpp
        return east, north

    def latlon(self, x, y):
        """(lat, lon) in degrees of world pixel coordinates (x east, y south)."""
        east, north = self.east_north(x, y)
        meridian, prime = self._radii()
        lat = self.origin_lat + np.degrees(north / meridian)
        lon = self.origin_lon + np.degrees(east / (prime * math.cos(math.radians(self.origin_lat))))
        return lat, lon

    def pixel(self, lat, lon):
        """Inverse of :meth:`latlon`: world pixel coordinates (x, y)."""
        meridian, prime = self._radii()
        north = np.radians(np.asarray(lat, dtype=np.float64) - self.origin_lat) * meridian
        east = np.radians(np.asarray(lon, dtype=np.float64) - self.origin_lon) * prime * math.cos(
            math.radians(self.origin_lat))
        return self.width_px / 2.0 + east / self.mpp, self.height_px / 2.0 - north / self.mpp

    def bounds(self) -> dict:
        """Lat/lon bounds of the whole world (edges of the raster)."""
        south, west = self.latlon(0.0, float(self.height_px))
        north, east = self.latlon(float(self.width_px), 0.0)
        return {"south": float(south), "west": float(west), "north": float(north), "east": float(east)}
