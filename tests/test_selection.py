"""The model-selection subset carved out of a training split (conventions §7): deterministic from the seed,
spatially separated (no training tile overlaps a selection tile), random where positions are unknown."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geoapp.data.selection import EARTH_RADIUS_M, carve_selection, carve_size, grid_cells, ids_sha256, overlapping

LAT0, LON0 = 41.6, -93.6


def grid_positions(nx: int, ny: int, step_m: float) -> np.ndarray:
    """Positions on a regular east/north grid ``step_m`` apart around (LAT0, LON0)."""
    east, north = np.meshgrid(np.arange(nx) * step_m, np.arange(ny) * step_m)
    lat = LAT0 + np.degrees(north.ravel() / EARTH_RADIUS_M)
    lon = LON0 + np.degrees(east.ravel() / (EARTH_RADIUS_M * math.cos(math.radians(LAT0))))
    return np.stack([lat, lon], axis=1)


def local_metres(latlon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    north = np.radians(latlon[:, 0] - LAT0) * EARTH_RADIUS_M
    east = np.radians(latlon[:, 1] - LON0) * EARTH_RADIUS_M * math.cos(math.radians(LAT0))
    return east, north


def test_spatial_carve_keeps_training_tiles_off_selection_tiles():
    positions = grid_positions(40, 30, 25.0)  # 1,200 cameras 25 m apart over 1 km x 0.75 km
    carve = carve_selection(positions, 100, seed=3, tile_m=64.0)
    assert carve.method == "spatial" and carve.cell_m == 128.0 and carve.tile_m == 64.0
    sel, train, dropped = carve.selection, carve.train, carve.dropped
    # a partition of the split, each part ascending
    assert np.array_equal(np.sort(np.concatenate([sel, train, dropped])), np.arange(len(positions)))
    assert all(np.all(np.diff(part) > 0) for part in (sel, train, dropped))
    # whole 128 m cells (at most 6 x 6 cameras each), drawn until they hold at least 100: up to one cell more
    cells = grid_cells(positions, 128.0)
    chosen = {tuple(c) for c in cells[sel]}
    assert np.array_equal(np.flatnonzero([tuple(c) in chosen for c in cells]), sel)
    assert 100 <= len(sel) < 100 + 36
    # no training tile overlaps a selection tile: centres >= one tile apart east-west or north-south
    east, north = local_metres(positions)
    de = np.abs(east[train][:, None] - east[sel][None, :])
    dn = np.abs(north[train][:, None] - north[sel][None, :])
    assert np.all((de >= 64.0 - 1e-6) | (dn >= 64.0 - 1e-6))
    # and only those were dropped: every dropped camera's tile overlaps some selection tile
    de = np.abs(east[dropped][:, None] - east[sel][None, :])
    dn = np.abs(north[dropped][:, None] - north[sel][None, :])
    assert np.all(((de < 64.0) & (dn < 64.0)).any(axis=1)) and len(dropped) > 0
    # deterministic from the seed, different for another seed
    again = carve_selection(positions, 100, seed=3, tile_m=64.0)
    assert all(np.array_equal(a, b) for a, b in zip((sel, train, dropped), (again.selection, again.train,
                                                                              again.dropped)))
    assert not np.array_equal(carve_selection(positions, 100, seed=4, tile_m=64.0).selection, sel)


def test_overlap_uses_the_local_frame_of_each_tile():
    # 60 m east (overlapping 64 m tiles), 70 m east (apart), 63 m north and 63 m east (overlapping corner)
    base = grid_positions(1, 1, 1.0)[0]
    lat_step = np.degrees(1.0 / EARTH_RADIUS_M)
    lon_step = np.degrees(1.0 / (EARTH_RADIUS_M * math.cos(math.radians(LAT0))))
    points = np.array([base, base + [0, 60 * lon_step], base + [0, 70 * lon_step],
                       base + [63 * lat_step, 63 * lon_step], base + [65 * lat_step, 0]])
    assert overlapping(points, np.array([0]), np.arange(1, 5), 64.0).tolist() == [1, 3]


def test_random_carve_where_positions_are_unknown_and_record():
    positions = np.full((50, 2), np.nan)
    carve = carve_selection(positions, 7, seed=1)
    assert carve.method == "random" and len(carve.selection) == 7 and len(carve.train) == 43
    assert len(carve.dropped) == 0 and np.array_equal(carve.selection, carve_selection(positions, 7, 1).selection)
    ids = [f"{i:07d}" for i in range(1, 51)]
    record = carve.record(ids, "train")
    assert record == {"carved_from": "train", "method": "random", "n": 7, "n_train": 43, "n_dropped": 0, "seed": 1,
                      "ids_sha256": ids_sha256([ids[i] for i in carve.selection])}
    assert ids_sha256(["a", "b"]) == "911169ddaaf146aff539f58c26c489af3b892dff0fe283c1c264c65ae5aa59a2"  # of "a\nb\n"
    assert "random" in carve.describe() and "training on the other 43" in carve.describe()


def test_carve_sizes():
    assert carve_size(35_532) == 1777  # about 5 %
    assert carve_size(5_000) == 500  # at least 500 ...
    assert carve_size(1_000) == 200  # ... but never more than a fifth of the split
    assert carve_size(35_532, 2000) == 2000 and carve_size(12, 2000) == 2 and carve_size(3) == 1
    with pytest.raises(ValueError, match="1..9 pairs"):
        carve_selection(np.zeros((10, 2)), 10)
