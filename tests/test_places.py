"""Distinct places (conventions §7): the walk over a ranking equals a brute-force walk over a full distance matrix
computed another way, the candidate pool always holds the places a walk over the whole ranking finds, and recall by
place counts what its definition says."""

import math

import numpy as np
import pytest

from geoapp.retrieval.metrics import place_pool, place_recall, recall_from_ranks
from geoapp.retrieval.places import (
    check_distance,
    database_place_distance,
    default_place_distance,
    distinct_places,
    found_by_place,
    neighbourhood_size,
    pool_size,
)

R = 6_371_008.8  # the sphere of geoapp.data.geo
METRE_LAT = 180.0 / (math.pi * R)  # degrees of latitude per metre


def planted(n: int, seed: int, side_m: float = 600.0, lat0: float = 41.6, lon0: float = -93.6) -> np.ndarray:
    """n positions uniformly in a side_m x side_m square, some of them repeated (co-located tiles)."""
    rng = np.random.default_rng(seed)
    north, east = rng.uniform(0, side_m, (2, n))
    latlon = np.stack([lat0 + north * METRE_LAT, lon0 + east * METRE_LAT / math.cos(math.radians(lat0))], axis=1)
    latlon[rng.choice(n, n // 10, replace=False)] = latlon[rng.choice(n, n // 10, replace=False)]
    return latlon


def great_circle_matrix(latlon: np.ndarray) -> np.ndarray:
    """All pairwise distances in metres from unit vectors (atan2 of cross and dot products): not the haversine."""
    lat, lon = np.radians(latlon[:, 0]), np.radians(latlon[:, 1])
    v = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    cross = np.linalg.norm(np.cross(v[:, None, :], v[None, :, :]), axis=-1)
    return R * np.arctan2(cross, v @ v.T)


def brute_walk(dist: np.ndarray, ranking, d: float, k: int) -> list[int]:
    """Positions of the first k places: the whole ranking walked, every candidate compared with every kept one."""
    kept = []
    for pos, ref in enumerate(ranking):
        if all(dist[ref, ranking[j]] >= d or np.isnan(dist[ref, ranking[j]]) for j in kept):
            kept.append(pos)
    return kept[:k]


def test_a_line_of_tiles_30_m_apart_keeps_every_third():
    # 20 tiles due north, 30 m apart, ranked in order: at 64 m a tile 30 or 60 m from a kept one is left out
    latlon = np.stack([41.6 + np.arange(20) * 30.0 * METRE_LAT, np.full(20, -93.6)], axis=1)
    assert distinct_places(latlon, np.arange(20), 64.0, 5).tolist() == [0, 3, 6, 9, 12]
    assert distinct_places(latlon, np.arange(20), 25.0, 4).tolist() == [0, 1, 2, 3]  # nobody within 25 m
    # from tile 10: 9, 8, 11 and 12 are within 64 m of it, 7 and 13 90 m away, 4 90 m from 7
    ranking = [10, 9, 8, 7, 11, 12, 13, 4]
    assert distinct_places(latlon, ranking, 64.0, 10).tolist() == [0, 3, 6, 7]  # tiles 10, 7, 13, 4
    assert distinct_places(latlon, ranking, 64.0, 2).tolist() == [0, 3]
    assert neighbourhood_size(latlon, 64.0) == 5  # a tile and the two on each side
    assert pool_size(5, 5, 20) == 20 and pool_size(3, 5, 100) == 15 and pool_size(4, 1, 100) == 4


def test_the_walk_equals_a_brute_force_walk_on_planted_coordinates():
    for seed in range(6):
        latlon = planted(150, seed)
        dist = great_circle_matrix(latlon)
        rng = np.random.default_rng(100 + seed)
        for d in (15.0, 48.0, 64.0, 130.0):
            # no pair within a micrometre of the limit, so both distance formulas give the same answer
            assert not np.any(np.abs(dist - d) < 1e-6)
            for ranking in (rng.permutation(150), rng.choice(150, 60, replace=False)):
                for k in (1, 5, 10, 200):
                    got = distinct_places(latlon, ranking, d, k)
                    assert got.tolist() == brute_walk(dist, ranking, d, k), (seed, d, k)
                    assert got[0] == 0  # the top-1 is always kept
                    kept = ranking[got]
                    pairs = dist[np.ix_(kept, kept)][np.triu_indices(len(kept), 1)]
                    assert (pairs >= d).all()  # no place near a better one
                    # every reference left out before the last place is within d of a better kept one
                    for pos in sorted(set(range(got[-1] + 1)) - set(got.tolist())):
                        earlier = kept[got < pos]
                        assert (dist[ranking[pos], earlier] < d).any()


def test_neighbourhood_size_and_pool_hold_the_places_of_the_whole_ranking():
    for seed in range(4):
        latlon = planted(200, seed, side_m=400.0)
        dist = great_circle_matrix(latlon)
        for d in (20.0, 64.0, 100.0):
            n = neighbourhood_size(latlon, d)
            assert n == int((dist < d).sum(1).max())  # brute force (each reference counts itself)
            rng = np.random.default_rng(seed)
            for k in (1, 5, 10):
                pool = pool_size(k, n, len(latlon))
                for ranking in (rng.permutation(200) for _ in range(5)):
                    whole = brute_walk(dist, ranking, d, k)
                    assert distinct_places(latlon, ranking[:pool], d, k).tolist() == whole
                    assert len(whole) == min(k, len(brute_walk(dist, ranking, d, len(ranking))))
    assert neighbourhood_size(planted(50, 0), 0.0) == 1 and neighbourhood_size(np.full((4, 2), np.nan), 64.0) == 1


def test_off_keeps_the_ranking_and_unknown_positions_are_places_of_their_own():
    latlon = planted(30, 1)
    ranking = np.random.default_rng(0).permutation(30)
    for off in (None, 0, 0.0):
        assert distinct_places(latlon, ranking, off, 5).tolist() == [0, 1, 2, 3, 4]
    assert distinct_places(latlon, ranking[:3], None, 5).tolist() == [0, 1, 2]
    same = np.repeat(latlon[:1], 6, axis=0)
    same[[2, 4]] = np.nan  # two tiles without coordinates among co-located ones
    assert distinct_places(same, np.arange(6), 64.0, 6).tolist() == [0, 2, 4]


@pytest.mark.parametrize("bad, message", [(-1.0, "finite number of metres >= 0"), (float("nan"), "finite"),
                                          (float("inf"), "finite"), ("64", "must be a number of metres"),
                                          (True, "must be a number")])
def test_a_bad_distance_is_refused_with_what_is_accepted(bad, message):
    with pytest.raises(ValueError, match=message):
        distinct_places(planted(5, 0), np.arange(5), bad, 3)
    with pytest.raises(ValueError, match=message):
        check_distance(bad)


def test_the_default_distance_is_half_the_tile_footprint(tmp_path):
    assert default_place_distance(128.0) == 64.0 and default_place_distance(64) == 32.0
    assert default_place_distance(None) is None and default_place_distance(0.5) is None
    assert default_place_distance(float("nan")) is None and default_place_distance(True) is None
    latlon = planted(5, 0)
    # an orthophoto database records its tiles' footprint
    assert database_place_distance({"kind": "raster", "tile_metres": 100.0}, {}, latlon)[0] == 50.0
    # a dataset database: the footprint its dataset's manifest records
    (tmp_path / "dataset.json").write_text('{"geometry": {"tile_metres": 90}}')
    distance, why = database_place_distance({"kind": "dataset", "dataset": "synth", "root": str(tmp_path)}, {}, latlon)
    assert distance == 45.0 and why == "half the 90 m tile footprint (the manifest of the synth tiles it holds)"
    # else the checkpoint's training tiles; nothing known: no default
    assert database_place_distance({"kind": "tiles"}, {"dataset": {"tile_metres": 150.0}}, latlon)[0] == 75.0
    assert database_place_distance({"kind": "tiles"}, {}, latlon)[0] is None
    assert database_place_distance({"kind": "raster", "tile_metres": 100.0}, {}, np.full((3, 2), np.nan)) == (
        None, "the tiles have no coordinates")


def test_recall_by_place_counts_the_true_tile_or_a_place_near_it():
    # 12 tiles due north, 40 m apart; the queries' true tiles are 0, 5 and 11
    latlon = np.stack([41.6 + np.arange(12) * 40.0 * METRE_LAT, np.full(12, -93.6)], axis=1)
    rankings = np.array([
        [1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],  # tile 1 (40 m from 0) first: found at 1 by place, not by tile
        [9, 8, 7, 2, 5, 4, 6, 3, 1, 0, 10, 11],  # places 9, 7, 2, 5 (8 is 40 m from 9; 4 and 6 near 5 and 7): at 4
        [0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11],  # places 0, 2, 4, 6, 8, 10: the 6th, 10, is 40 m from 11
    ])
    truth = np.array([0, 5, 11])
    ks = (1, 2, 4, 5, 6, 10)
    got = place_recall(latlon, rankings, truth, 64.0, ks=ks)
    assert got == {"R@1 place": pytest.approx(100 / 3), "R@2 place": pytest.approx(100 / 3),
                   "R@4 place": pytest.approx(200 / 3), "R@5 place": pytest.approx(200 / 3),
                   "R@6 place": pytest.approx(100.0), "R@10 place": pytest.approx(100.0)}
    assert found_by_place(latlon, [9, 7, 2, 5], 5, latlon[5], 64.0).tolist() == [False, False, False, True]
    assert found_by_place(latlon, [6], 5, latlon[5], 64.0).tolist() == [True]  # 40 m away
    # never below recall by tile on the same rankings
    ranks = np.array([(r == t).nonzero()[0][0] for r, t in zip(rankings, truth)])
    by_tile = recall_from_ranks(ranks, 12, ks=ks, top_percent=None)
    assert [by_tile[f"R@{k}"] for k in ks] == pytest.approx([0.0, 100 / 3, 100 / 3, 200 / 3, 200 / 3, 200 / 3])
    assert all(got[f"R@{k} place"] >= by_tile[f"R@{k}"] for k in ks)
    assert place_pool(latlon, 64.0, 10) == 12  # a tile and one on each side: 30 > 12 tiles
    with pytest.raises(ValueError, match="distance > 0"):
        place_recall(latlon, rankings, truth, 0.0)


def test_recall_by_place_is_never_below_recall_by_tile_on_random_rankings():
    latlon = planted(120, 3, side_m=500.0)
    rng = np.random.default_rng(7)
    truth = rng.integers(0, 120, 300)
    rankings = np.stack([rng.permutation(120) for _ in truth])
    ranks = np.array([(r == t).nonzero()[0][0] for r, t in zip(rankings, truth)])
    for d in (30.0, 64.0):
        pool = place_pool(latlon, d)
        got = place_recall(latlon, rankings[:, :pool], truth, d)
        by_tile = recall_from_ranks(ranks, 120, top_percent=None)
        for k in (1, 5, 10):
            assert got[f"R@{k} place"] >= by_tile[f"R@{k}"]
        assert got == place_recall(latlon, rankings, truth, d)  # the pool holds what the whole ranking gives
