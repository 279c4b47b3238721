"""Answers a person can act on, on the tiny world: location prior, several photos from one spot, and
the database's confidence calibration, each against a brute-force computation of what it documents."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from geoapp.data.datasets import build_dataset
from geoapp.data.fov import crop_fov
from geoapp.model import match_maps
from geoapp.retrieval.calibrate import collect_answers, fit_calibration, write_calibration
from geoapp.retrieval.confidence import CONFIDENCE_K
from geoapp.retrieval.database import ReferenceDatabase
from geoapp.retrieval.engine import Localizer
from geoapp.retrieval.prior import LocationPrior, PriorError, references_within

pytest_plugins = ["app_fixtures"]  # the tiny world, model, database


@pytest.fixture(scope="module")
def test_split(tiny_world):
    return build_dataset("synth", tiny_world, "test", fov_deg=90.0, train=False)


def _crop(data, index, shift):
    return np.ascontiguousarray(crop_fov(data.load_panorama(index), 90.0, shift))


def _similarities(localizer, image, indices=None):
    """Brute force: the model's alignment of one crop with every (or the given) reference, all at once."""
    with torch.inference_mode():
        ground = localizer.encode(image)
    gallery = ReferenceDatabase.open(localizer.db.path).slice(0, len(localizer.db))
    res = match_maps(localizer.config, ground, gallery, chunk_size=None)  # the served model's own matching
    return res.similarity[0].double().numpy(), res


def test_prior_searches_exactly_the_references_inside(localizer, test_split):
    latlon = localizer.db.latlon
    centre = latlon[5]
    prior = LocationPrior(float(centre[0]), float(centre[1]), 150.0)
    inside = references_within(latlon, prior)
    assert 1 < len(inside) < len(latlon)
    image = _crop(test_split, 5, 40)
    result = localizer.localize(image, fov_deg=90.0, projection="crop", top_k=len(inside), prior=prior)
    assert result.searched == len(inside) and result.prior == prior
    assert "inside the prior" in result.search
    sims, _ = _similarities(localizer, result.input_image)
    expected = inside[np.argsort(-sims[inside], kind="stable")]
    assert [c.index for c in result.candidates] == expected.tolist()
    assert np.allclose([c.score for c in result.candidates], (1 + sims[expected]) / 2, atol=1e-5)
    with pytest.raises(PriorError, match="no reference tile lies within"):
        localizer.localize(image, fov_deg=90.0, projection="crop", prior=LocationPrior(0.0, 0.0, 1000.0))


def test_multi_photo_query_ranks_by_the_mean_similarity_and_keeps_each_heading(localizer, test_split):
    n = len(localizer.db)
    crops = [_crop(test_split, 3, 10), _crop(test_split, 3, 138)]  # two 90 deg views of one panorama
    result = localizer.localize_together(crops, fov_deg=90.0, projection="crop", top_k=n)
    singles = [localizer.localize(c, fov_deg=90.0, projection="crop", top_k=n) for c in crops]
    sims = [_similarities(localizer, s.input_image)[0] for s in singles]
    mean = (sims[0] + sims[1]) / 2
    order = np.argsort(-mean, kind="stable")
    assert [c.index for c in result.candidates] == order.tolist()
    assert np.allclose([c.score for c in result.candidates], (1 + mean[order]) / 2, atol=1e-5)
    assert len(result.views) == 2 and result.search == "exhaustive, 2 photos combined"
    for c in result.candidates:  # each photo's heading at a tile is the single-photo heading there
        for view, single in enumerate(singles):
            same = next(s for s in single.candidates if s.index == c.index)
            assert c.view_headings[view] == pytest.approx(same.heading_deg, abs=1e-6)
        assert c.heading_deg == pytest.approx(c.view_headings[0])
    # a tile can only beat the true one on the mean if it beats it in one of the photos
    ranks = [[x.index for x in s.candidates].index(3) for s in singles]
    assert [c.index for c in result.candidates].index(3) <= ranks[0] + ranks[1]


def test_query_arguments_are_checked(localizer, test_split):
    image = _crop(test_split, 0, 0)
    for kwargs, message in [({"top_k": 0}, "top_k must be a whole number"), ({"top_k": 2.5}, "top_k"),
                            ({"top_k": True}, "top_k"), ({"fov_deg": [90.0, 80.0]}, "2 fields of view for 1")]:
        with pytest.raises(ValueError, match=message):
            localizer.localize_together([image], projection="crop", **{"fov_deg": 90.0, **kwargs})
    with pytest.raises(ValueError, match="1 to 6 photos"):
        localizer.localize_together([image] * 7, fov_deg=90.0, projection="crop")


def test_calibration_is_fitted_stored_and_used(tiny_world, tiny_checkpoint, tiny_database, tmp_path):
    # the tiny world has no val split: fit on train (4 pairs) with the test tiles as distractors, for the mechanics
    calibration = fit_calibration(tiny_checkpoint, "synth", tiny_world, gallery_size=16, split="train",
                                  distractor_split="test", fovs=(60.0, 70.0, 80.0, 90.0, 100.0), device="cpu",
                                  progress=False)
    record = calibration.record
    assert record["split"] == "train" and record["gallery_size"] == 16 and record["queries"] == 4
    assert record["distractors"] == {"split": "test", "count": 12}
    assert calibration.tile.fitted_on["n"] == 20 and calibration.tile.features[-1] == "fov_deg"
    db = tmp_path / "db"
    shutil.copytree(tiny_database, db)
    write_calibration(db, calibration)
    localizer = Localizer(tiny_checkpoint, db, device="cpu")
    assert localizer.calibration is not None and "calibrated confidence" in localizer.describe()
    data = build_dataset("synth", tiny_world, "test", fov_deg=90.0, train=False)
    result = localizer.localize(_crop(data, 2, 7), fov_deg=90.0, projection="crop", top_k=3)
    assert len(result.similarities) == min(CONFIDENCE_K, len(localizer.db)) and len(result.candidates) == 3
    peak = None
    if result.candidates[0].window_scores is not None:
        from geoapp.retrieval.confidence import window_peak_margin

        peak = window_peak_margin(result.candidates[0].window_scores)
    # the stored record's two logistic laws applied by hand: p = sigmoid(w . (x - mean) / scale + b), x the top-1
    # similarity, its margins over the second and over the mean of the rest, the FoV (and the heading's peak margin)
    stored = json.loads((db / "metadata.json").read_text())["calibration"]
    s = np.asarray(result.similarities, dtype=np.float64)[:CONFIDENCE_K]
    x = [s[0], s[0] - s[1], s[0] - s[1:].mean(), 90.0]

    def law(name, features):
        c = stored[name]
        z = ((np.asarray(features) - c["mean"]) / np.asarray(c["scale"])) @ np.asarray(c["weights"]) + c["bias"]
        return 1.0 / (1.0 + np.exp(-z))

    assert result.confidence.tile == pytest.approx(law("tile", x), abs=1e-12) and 0 < result.confidence.tile < 1
    assert result.confidence.heading == pytest.approx(law("heading", [*x, peak or 0.0]), abs=1e-12)
    assert result.confidence.below_floor == (s[0] < stored["top1_floor"])
    answers, seconds = collect_answers(localizer, data, fovs=(90.0,), progress=False)
    assert len(answers.tile_right) == len(data) == len(seconds) and answers.confidence.shape == (len(data), 2)
    assert answers.similarities.shape == (len(data), CONFIDENCE_K)


def test_a_calibration_for_a_two_stage_database_measures_the_first_stage(tiny_world, tiny_checkpoint, tiny_database,
                                                                          tmp_path, monkeypatch):
    from geoapp.retrieval import calibrate, loading

    monkeypatch.setattr(calibrate, "TWO_STAGE_FROM", 16)  # the 16-reference calibration gallery searches in two stages
    monkeypatch.setattr(loading, "TWO_STAGE_FROM", 12)  # and so does the 12-reference database it is stored in
    calibration = fit_calibration(tiny_checkpoint, "synth", tiny_world, gallery_size=16, split="train",
                                  distractor_split="test", device="cpu", progress=False)
    check = calibration.record["first_stage_recall"]
    # 500 candidates of 16: the first stage passes every reference on, so it keeps every true tile and the two-stage
    # answers are the exhaustive ones
    assert (check["queries"], check["candidates"], check["references"]) == (4, 16, 16)
    assert check["percent"] == 100.0 and check["R@1_two_stage"] == check["R@1_exhaustive"]
    db = tmp_path / "db"
    shutil.copytree(tiny_database, db)
    write_calibration(db, calibration)
    localizer = Localizer(tiny_checkpoint, db, device="cpu")
    assert localizer.search_mode == "two-stage"
    assert "kept the true tile for 100.0 % of 4 calibration queries at 16 of 16" in localizer.search_text()


def test_calibration_is_refused_for_another_checkpoint(tiny_world, tiny_checkpoint, tiny_database, tmp_path):
    from geoapp.retrieval.confidence import Calibration

    sims = np.random.default_rng(0).uniform(size=(40, 10))
    sims.sort(1)
    right = np.arange(40) % 2 == 0
    calibration = Calibration.fit(sims[:, ::-1], 90.0, None, right, right, {"checkpoint_sha256": "0" * 64})
    db = tmp_path / "db"
    shutil.copytree(tiny_database, db)
    with pytest.raises(ValueError, match="fitted for checkpoint 000000000000"):
        write_calibration(db, calibration)
