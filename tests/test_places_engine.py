"""Distinct places through the engine and the app, on the tiny world: with the option off the answers are the
ranking itself (equal to a brute-force alignment of the whole gallery); with it on they are the walk over the whole
ranking, each candidate as the ranking has it, and the calibrated confidence does not move."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoapp.app import handlers
from geoapp.data.datasets import build_dataset
from geoapp.data.fov import crop_fov
from geoapp.data.geo import haversine_m
from geoapp.data.photo import load_image
from geoapp.model import match_maps
from geoapp.retrieval.confidence import CONFIDENCE_K, Calibration
from geoapp.retrieval.database import ReferenceDatabase
from geoapp.retrieval.prior import LocationPrior, references_within

pytest_plugins = ["app_fixtures"]  # the tiny world, model, database and app context

FAR = 100.0  # metres: the tiny world's test tiles stand 24 to 72 m from their neighbours (a 48 m jittered grid)
VIEW = {"fov_deg": 90.0, "projection": "crop"}


@pytest.fixture(scope="module")
def test_split(tiny_world):
    return build_dataset("synth", tiny_world, "test", fov_deg=90.0, train=False)


@pytest.fixture(scope="module")
def metres(localizer):
    latlon = localizer.db.latlon
    return haversine_m(latlon[:, None, 0], latlon[:, None, 1], latlon[None, :, 0], latlon[None, :, 1])


def _crop(data, index, shift):
    return np.ascontiguousarray(crop_fov(data.load_panorama(index), 90.0, shift))


def _walk(metres, ranking, d, k):
    """The first k distinct places of a ranking, by brute force over the pairwise distance matrix."""
    kept = []
    for ref in ranking:
        if all(metres[ref, j] >= d for j in kept):
            kept.append(ref)
    return kept[:k]


def _answers(result):
    return [(c.rank, c.index, c.distance, c.score, c.heading_deg, c.offsets, c.window_offset, c.lat, c.lon)
            for c in result.candidates]


def test_the_default_distance_is_half_the_tiny_worlds_tile(localizer, metres):
    assert localizer.place_distance_m == 32.0  # its tiles are 64 m wide
    assert localizer.place_distance_note.startswith("half the 64 m tile footprint (the manifest of the synth tiles")
    pairs = metres[np.triu_indices(len(metres), 1)]
    assert (pairs < FAR).sum() >= 4  # neighbours to leave out at FAR


def test_with_places_off_the_answers_are_the_ranking_itself(localizer, test_split):
    image = _crop(test_split, 5, 40)
    today = localizer.localize(image, top_k=4, **VIEW)
    # brute force: the model's alignment with every reference at once, ranked by similarity (ties: lower index)
    with torch.inference_mode():
        ground = localizer.encode(today.input_image)
    gallery = ReferenceDatabase.open(localizer.db.path).slice(0, len(localizer.db))
    sims = match_maps(localizer.config, ground, gallery, chunk_size=None).similarity[0].double().numpy()
    assert [c.index for c in today.candidates] == np.argsort(-sims, kind="stable")[:4].tolist()
    for off in (None, 0, 0.0):
        result = localizer.localize(image, top_k=4, distinct_m=off, **VIEW)
        assert _answers(result) == _answers(today)
        assert [c.window_scores.tolist() for c in result.candidates] == [
            c.window_scores.tolist() for c in today.candidates]
        assert np.array_equal(result.similarities, today.similarities)
        assert result.distinct_m == 0.0 and result.distinct_skipped == 0


@pytest.mark.parametrize("query", [(5, 40), (0, 0), (9, 170), (2, 99)])
def test_places_are_the_walk_over_the_whole_ranking(localizer, test_split, metres, query):
    image = _crop(test_split, *query)
    n = len(localizer.db)
    full = localizer.localize(image, top_k=n, **VIEW)  # every reference, ranked
    ranking = [c.index for c in full.candidates]
    by_index = {c.index: c for c in full.candidates}
    for d, k in ((FAR, 4), (FAR, 2), (40.0, 5), (localizer.place_distance_m, 4)):
        result = localizer.localize(image, top_k=k, distinct_m=d, **VIEW)
        expected = _walk(metres, ranking, d, k)
        assert [c.index for c in result.candidates] == expected
        assert result.candidates[0].index == ranking[0]  # the top-1 never changes
        assert [c.rank for c in result.candidates] == list(range(1, len(expected) + 1))
        for c in result.candidates:  # each answer as the ranking has it
            same = by_index[c.index]
            assert (c.distance, c.score, c.offsets, c.window_offset) == (
                same.distance, same.score, same.offsets, same.window_offset)
            assert c.heading_deg == pytest.approx(same.heading_deg, abs=1e-6)
        kept = [c.index for c in result.candidates]
        assert all(metres[a, b] >= d for i, a in enumerate(kept) for b in kept[i + 1:])
        assert result.distinct_m == d
        assert result.distinct_skipped == ranking.index(kept[-1]) + 1 - len(kept)


def test_places_within_a_prior_and_for_several_photos(localizer, test_split, metres):
    latlon = localizer.db.latlon
    prior = LocationPrior(float(latlon[5, 0]), float(latlon[5, 1]), 150.0)
    inside = references_within(latlon, prior)
    image = _crop(test_split, 5, 40)
    full = localizer.localize(image, top_k=len(inside), prior=prior, **VIEW)
    result = localizer.localize(image, top_k=3, prior=prior, distinct_m=FAR, **VIEW)
    assert [c.index for c in result.candidates] == _walk(metres, [c.index for c in full.candidates], FAR, 3)
    assert result.searched == len(inside)
    # two views of one panorama: the places of the ranking by their mean similarity, each with both photos' headings
    crops = [_crop(test_split, 3, 10), _crop(test_split, 3, 138)]
    full = localizer.localize_together(crops, top_k=len(localizer.db), **VIEW)
    result = localizer.localize_together(crops, top_k=4, distinct_m=FAR, **VIEW)
    assert [c.index for c in result.candidates] == _walk(metres, [c.index for c in full.candidates], FAR, 4)
    by_index = {c.index: c for c in full.candidates}
    for c in result.candidates:
        same = by_index[c.index]
        assert c.score == same.score and c.view_scores == same.view_scores
        assert c.view_headings == pytest.approx(same.view_headings, abs=1e-6)


def test_the_confidence_reads_the_ranking_places_or_not(localizer, test_split, monkeypatch):
    rng = np.random.default_rng(0)
    sims = -np.sort(-rng.uniform(0.2, 0.9, size=(60, CONFIDENCE_K)), axis=1)
    right = sims[:, 0] - sims[:, 1] > np.median(sims[:, 0] - sims[:, 1])
    calibration = Calibration.fit(sims, 90.0, None, right, right, {"checkpoint_sha256": localizer.checkpoint_sha})
    monkeypatch.setattr(localizer, "calibration", calibration)
    moved = 0
    for index, shift in ((5, 40), (0, 0), (9, 170), (2, 99)):
        image = _crop(test_split, index, shift)
        full = localizer.localize(image, top_k=len(localizer.db), **VIEW)
        for top_k in (1, 4):
            off = localizer.localize(image, top_k=top_k, **VIEW)
            on = localizer.localize(image, top_k=top_k, distinct_m=FAR, **VIEW)
            assert on.confidence == off.confidence and on.confidence is not None
            # the ranking's best CONFIDENCE_K similarities, as without places
            assert len(on.similarities) == CONFIDENCE_K and np.array_equal(on.similarities, off.similarities)
            assert np.array_equal(on.similarities, full.similarities[:CONFIDENCE_K])
            moved += [c.index for c in on.candidates] != [c.index for c in off.candidates]
    assert moved >= 1  # the places did change some answers


@pytest.mark.parametrize("bad", [-5.0, float("nan"), "far"])
def test_a_bad_distance_is_refused(localizer, test_split, bad):
    with pytest.raises(ValueError, match="the distinct places' distance must be a"):
        localizer.localize(_crop(test_split, 0, 0), distinct_m=bad, **VIEW)


def test_the_app_shows_distinct_places_by_default(app_context):
    example = app_context.examples.examples[0]
    path = app_context.examples.path(example)
    rgb = load_image(path)
    loc = app_context.localizer

    def tiles(out):
        return [c["tile"] for c in out.answer["candidates"]]

    def expected(d):
        result = loc.localize(rgb, fov_deg=example.fov_deg, projection="crop", top_k=app_context.top_k, distinct_m=d)
        return [c.path.rsplit("/", 1)[-1] for c in result.candidates]

    default = handlers.localize_photo(app_context, path)
    assert default.answer["distinct_places_m"] == 32.0 and tiles(default) == expected(32.0)
    off = handlers.localize_photo(app_context, path, distinct_m=0)
    assert off.answer["distinct_places_m"] == 0.0 and tiles(off) == expected(None)
    assert "Distinct places" not in off.query_summary
    far = handlers.localize_photo(app_context, path, distinct_m=FAR)
    assert tiles(far) == expected(FAR) and "**Distinct places:** no two candidates within 100 m" in far.query_summary
    for bad, message in ((-1, "between 0 m and 10000 m, got -1 m"), ("far", "must be a number between 0 m"),
                         (True, "must be a number")):
        with pytest.raises(handlers.UserInputError, match=message):
            handlers.localize_photo(app_context, path, distinct_m=bad)
