"""Distinct places: a ranked list of reference tiles thinned so that no answer lies near a better one
(conventions §7, "distinct places").

Neighbouring reference tiles overlap (the demo world's test tiles are 128 m wide and 48 m apart), so the top-k of a
search often shows the same spot two or three times. :func:`distinct_places` walks a search's ranked list and
keeps a reference only when its centre is at least ``min_distance_m`` (haversine) from every reference kept before
it; the first answer is always kept, so the top-1 never changes. A reference without coordinates (NaN) is always
its own place.

How many ranked candidates the walk needs: each kept reference removes only the references closer than
``min_distance_m`` to it, at most :func:`neighbourhood_size` of them (counting itself), so the first
``k x neighbourhood_size`` of the ranking always hold k places, or the whole ranking does (:func:`pool_size`).
The thinned answer is then exactly what a walk over the complete ranking gives.

The default distance (:func:`default_place_distance`) is half the tile footprint: a tile shows the ground within
half its width of its centre, so a reference closer than that to a better one stands inside the better one's tile.
"""

from __future__ import annotations

import math

import numpy as np

from ..data.geo import EARTH_RADIUS_M, haversine_m

# a footprint below this cannot be a tile's (a metre-wide tile would hold a few pixels of a 0.3 m orthophoto)
MIN_FOOTPRINT_M = 1.0


def check_distance(min_distance_m) -> float:
    """``min_distance_m`` as a float >= 0 (None is 0: every reference is its own place); a ValueError that names the
    argument for anything else."""
    if min_distance_m is None:
        return 0.0
    if isinstance(min_distance_m, bool) or not isinstance(min_distance_m, (int, float, np.integer, np.floating)):
        raise ValueError(f"the distinct places' distance must be a number of metres >= 0 (0 or None: off), got "
                         f"{type(min_distance_m).__name__} {min_distance_m!r}")
    value = float(min_distance_m)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"the distinct places' distance must be a finite number of metres >= 0 (0 or None: off), "
                         f"got {value:g}")
    return value


def distinct_places(latlon: np.ndarray, ranked, min_distance_m: float | None, k: int) -> np.ndarray:
    """Positions, in ``ranked``, of its first ``k`` distinct places (ascending).

    ``latlon``: R x 2 degrees of every reference (NaN when unknown); ``ranked``: reference indices, best first.
    Walking ``ranked`` in order, a reference is kept when its haversine distance to every reference kept so far is
    at least ``min_distance_m``; the walk stops at ``k`` kept. ``min_distance_m`` 0 or None: ``range(min(k,
    len(ranked)))``, the ranking itself.
    """
    d = check_distance(min_distance_m)
    ranked = np.asarray(ranked, dtype=np.int64).ravel()
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if d == 0.0:
        return np.arange(min(k, len(ranked)))
    coords = np.asarray(latlon, dtype=np.float64)[ranked]
    kept: list[int] = []
    for pos, (lat, lon) in enumerate(coords):
        if kept:
            near = haversine_m(lat, lon, coords[kept, 0], coords[kept, 1]) < d  # False where a position is NaN
            if near.any():
                continue
        kept.append(pos)
        if len(kept) == k:
            break
    return np.asarray(kept, dtype=np.int64)


def _unit_vectors(latlon: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(latlon[:, 0]), np.radians(latlon[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def neighbourhood_size(latlon: np.ndarray, min_distance_m: float | None) -> int:
    """The most references closer than ``min_distance_m`` to any one reference, itself included (an upper bound:
    pairs at the limit are counted too); 1 when the distance is 0 or no two references are that close. References
    without coordinates count 1 each (they are nobody's neighbour)."""
    d = check_distance(min_distance_m)
    latlon = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    known = latlon[np.isfinite(latlon).all(1)]
    if d == 0.0 or len(known) < 2:
        return 1
    from scipy.spatial import cKDTree

    # points closer than d along the great circle are closer than its chord through the sphere (a monotone map);
    # the margin keeps the count an upper bound under rounding
    chord = 2.0 * math.sin(min(d / EARTH_RADIUS_M, math.pi) / 2.0) * (1.0 + 1e-9) + 1e-12
    tree = cKDTree(_unit_vectors(known))
    return int(tree.query_ball_point(tree.data, chord, return_length=True, workers=-1).max())


def pool_size(k: int, neighbours: int, searched: int) -> int:
    """Ranked candidates that hold the first ``k`` distinct places when no reference has more than ``neighbours``
    references within the distance (:func:`neighbourhood_size`): ``k x neighbours``, at most the ``searched``."""
    return int(min(searched, int(k) * max(1, int(neighbours))))


def default_place_distance(tile_metres) -> float | None:
    """Half the tile footprint ``tile_metres`` (module docstring), or None when it is unknown or not a footprint."""
    if isinstance(tile_metres, bool) or not isinstance(tile_metres, (int, float)):
        return None
    if not math.isfinite(tile_metres) or tile_metres < MIN_FOOTPRINT_M:
        return None
    return float(tile_metres) / 2.0


def found_by_place(latlon: np.ndarray, kept_refs, true_ref: int, true_latlon, min_distance_m: float) -> np.ndarray:
    """For each k (1 .. len(kept_refs)): is the query found among its first k distinct places, i.e. is one of them
    its true reference, or closer than ``min_distance_m`` to its true location ``true_latlon`` (conventions §7)?
    Returns a boolean array, True from the first such place on."""
    kept_refs = np.asarray(kept_refs, dtype=np.int64).ravel()
    coords = np.asarray(latlon, dtype=np.float64)[kept_refs]
    near = haversine_m(float(true_latlon[0]), float(true_latlon[1]), coords[:, 0], coords[:, 1])
    hit = (kept_refs == int(true_ref)) | (np.nan_to_num(np.atleast_1d(near), nan=np.inf) < min_distance_m)
    return np.logical_or.accumulate(hit)


def tile_footprint(source: dict, checkpoint_meta: dict) -> tuple[float | None, str]:
    """The ground width (metres) of a reference database's tiles and where it was read: the database's own record
    (an orthophoto's tiles), else the manifest of the dataset its tiles come from (the synthetic world records it),
    else the checkpoint's training tiles (:func:`~geoapp.retrieval.raster.training_footprint`: a database's tiles are
    cut at that footprint); (None, why) when none of them knows it."""
    from pathlib import Path

    from ..data.records import read_manifest
    from .raster import training_footprint

    recorded = source.get("tile_metres")
    if default_place_distance(recorded) is not None:
        return float(recorded), "the database's record of its tiles"
    if source.get("kind") == "dataset" and source.get("root"):
        try:
            geometry = (read_manifest(Path(source["root"])) or {}).get("geometry") or {}
        except (ValueError, OSError):
            geometry = {}
        value = geometry.get("tile_metres") if isinstance(geometry, dict) else None
        if default_place_distance(value) is not None:
            return float(value), f"the manifest of the {source.get('dataset', 'dataset')} tiles it holds"
    try:
        return training_footprint(checkpoint_meta)
    except ValueError as exc:  # DatabaseError: the checkpoint names no dataset whose footprint is known
        return None, f"no tile footprint is known ({exc})"


def database_place_distance(source: dict, checkpoint_meta: dict, latlon: np.ndarray) -> tuple[float | None, str]:
    """A database's default distinct-places distance (half its :func:`tile_footprint`) and why; None when its tiles
    have no coordinates or no footprint is known."""
    if not np.isfinite(np.asarray(latlon, dtype=np.float64)).all(1).any():
        return None, "the tiles have no coordinates"
    footprint, where = tile_footprint(source, checkpoint_meta)
    distance = default_place_distance(footprint)
    return distance, (f"half the {footprint:g} m tile footprint ({where})" if distance else where)
