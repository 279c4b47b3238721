"""A location prior: search only the references within a radius of where the photo is believed to be taken.

The prior comes from the photo's EXIF GPS or from the person (a centre and a radius). It shrinks the gallery
before the alignment runs, so it makes a query both more accurate (fewer look-alikes) and faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..data.geo import haversine_m

RADIUS_RANGE_M = (100.0, 50_000.0)


class PriorError(ValueError):
    """A prior that cannot be used: out of range, or covering none of the database's references."""


@dataclass(frozen=True)
class LocationPrior:
    lat: float
    lon: float
    radius_m: float
    source: str = "given"  # "given" or "exif"

    def __post_init__(self):
        for name, value in (("latitude", self.lat), ("longitude", self.lon), ("radius", self.radius_m)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise PriorError(f"the prior's {name} must be a finite number, got {value!r}")
        if not -90.0 <= self.lat <= 90.0:
            raise PriorError(f"the prior's latitude must be in [-90, 90] degrees, got {self.lat:g}")
        if not -180.0 <= self.lon <= 180.0:
            raise PriorError(f"the prior's longitude must be in [-180, 180] degrees, got {self.lon:g}")
        low, high = RADIUS_RANGE_M
        if not low <= self.radius_m <= high:
            raise PriorError(f"the prior's radius must be between {low:g} m and {high / 1000:g} km, got "
                             f"{self.radius_m:g} m")

    def describe(self) -> str:
        radius = f"{self.radius_m / 1000:g} km" if self.radius_m >= 1000 else f"{self.radius_m:g} m"
        where = "the photo's EXIF GPS" if self.source == "exif" else "given"
        return f"within {radius} of {self.lat:.6f}, {self.lon:.6f} ({where})"


def references_within(latlon: np.ndarray, prior: LocationPrior) -> np.ndarray:
    """Ascending indices of the references (R x 2 latitude/longitude, NaN when unknown) inside the prior."""
    latlon = np.asarray(latlon, dtype=np.float64)
    d = haversine_m(prior.lat, prior.lon, latlon[:, 0], latlon[:, 1])
    return np.flatnonzero(np.nan_to_num(d, nan=np.inf) <= prior.radius_m)


def coverage_box(latlon: np.ndarray) -> tuple[float, float, float, float] | None:
    """(south, west, north, east) of the references with coordinates, or None when none has any."""
    latlon = np.asarray(latlon, dtype=np.float64)
    known = latlon[np.isfinite(latlon).all(1)]
    if not len(known):
        return None
    return (float(known[:, 0].min()), float(known[:, 1].min()), float(known[:, 0].max()), float(known[:, 1].max()))


def restrict(latlon: np.ndarray, prior: LocationPrior) -> np.ndarray:
    """``references_within``, or a PriorError saying where the database's references are when none is inside."""
    inside = references_within(latlon, prior)
    if len(inside):
        return inside
    box = coverage_box(latlon)
    if box is None:
        raise PriorError("the reference database's tiles have no coordinates, so a location prior cannot be used")
    centre_lat, centre_lon = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    away = haversine_m(prior.lat, prior.lon, centre_lat, centre_lon)
    raise PriorError(
        f"no reference tile lies {prior.describe()}: the database covers latitudes {box[0]:.5f} to {box[2]:.5f} and "
        f"longitudes {box[1]:.5f} to {box[3]:.5f} (its centre is {away / 1000:.1f} km from the prior's centre); "
        "widen the radius, move the centre, or drop the prior")
