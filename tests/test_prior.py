"""Location prior: exactly the references inside the radius (haversine), clear errors outside coverage."""

import numpy as np
import pytest

from geoapp.data.geo import EARTH_RADIUS_M, haversine_m
from geoapp.retrieval.prior import LocationPrior, PriorError, references_within, restrict


def test_haversine_known_distances_antimeridian_and_pole():
    one_degree = np.pi * EARTH_RADIUS_M / 180
    assert haversine_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(one_degree, rel=1e-9)
    # across the antimeridian: 179.9 E to 179.9 W is 0.2 degrees of longitude at the equator
    assert haversine_m(0.0, 179.9, 0.0, -179.9) == pytest.approx(0.2 * one_degree, rel=1e-6)
    # near the pole every longitude is close: 89.999 N at opposite longitudes is 0.002 degrees apart
    assert haversine_m(89.999, 0.0, 89.999, 180.0) == pytest.approx(0.002 * one_degree, rel=1e-4)
    d = haversine_m(np.array([0.0, 10.0]), np.array([0.0, 0.0]), 0.0, 0.0)
    assert d.shape == (2,) and d[0] == 0.0


def test_prior_keeps_exactly_the_references_inside():
    rng = np.random.default_rng(0)
    for lat0, lon0 in [(40.0, -75.0), (0.0, 179.99), (89.99, 0.0), (-33.9, 151.2)]:
        latlon = np.stack([np.clip(lat0 + rng.normal(0, 0.02, 500), -90, 90),
                           (lon0 + rng.normal(0, 0.02, 500) + 180) % 360 - 180], 1)
        latlon[:3] = np.nan  # tiles without coordinates are never inside
        prior = LocationPrior(lat0, lon0, 1000.0)
        inside = references_within(latlon, prior)
        expected = [i for i, (la, lo) in enumerate(latlon)
                    if np.isfinite(la) and haversine_m(lat0, lon0, la, lo) <= 1000.0]
        assert inside.tolist() == expected and 0 < len(expected) < 497


def test_prior_rejects_bad_values_and_empty_coverage():
    for lat, lon, r, msg in [(91, 0, 500, "latitude"), (0, 181, 500, "longitude"), (0, 0, 50, "radius"),
                             (0, 0, 60_000, "radius"), (float("nan"), 0, 500, "finite"), ("1", 0, 500, "finite")]:
        with pytest.raises(PriorError, match=msg):
            LocationPrior(lat, lon, r)
    latlon = np.array([[40.0, -75.0], [40.01, -75.0]])
    with pytest.raises(PriorError, match="no reference tile lies within 500 m.*covers latitudes 40.00000 to 40.01000"):
        restrict(latlon, LocationPrior(10.0, 10.0, 500.0))
    assert restrict(latlon, LocationPrior(40.0, -75.0, 500.0)).tolist() == [0]
