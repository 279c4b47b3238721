"""Calibrated confidence: the logistic calibrator recovers known probabilities; ECE and risk-coverage are right."""

import numpy as np
import pytest

from geoapp.retrieval.confidence import (
    HEADING_FEATURES,
    TILE_FEATURES,
    Calibration,
    Confidence,
    LogisticCalibrator,
    expected_calibration_error,
    reliability_bins,
    risk_coverage,
    tile_features,
    window_peak_margin,
)


def planted(n=20000, seed=0):
    """Top-10 similarities whose right/wrong labels follow a known logistic law of their features."""
    rng = np.random.default_rng(seed)
    top1 = rng.uniform(0.3, 0.9, n)
    gaps = rng.exponential(0.03, (n, 9))
    sims = np.concatenate([top1[:, None], top1[:, None] - np.cumsum(gaps, 1)], 1)
    fov = rng.choice([60.0, 70.0, 80.0, 90.0, 100.0], n)
    x = tile_features(sims, fov)
    z = 3.0 * (x[:, 0] - 0.6) / 0.17 + 1.5 * (x[:, 1] - 0.03) / 0.03 + 0.05 * (fov - 80.0) - 0.5
    p = 1.0 / (1.0 + np.exp(-z))
    return sims, fov, p, rng.uniform(size=n) < p


def test_calibrator_recovers_planted_probabilities():
    sims, fov, p_true, right = planted()
    cal = LogisticCalibrator.fit(tile_features(sims, fov), right, TILE_FEATURES)
    fresh_sims, fresh_fov, fresh_p, fresh_right = planted(seed=1)
    p = cal.predict(tile_features(fresh_sims, fresh_fov))
    assert np.abs(p - fresh_p).max() < 0.06  # the law itself, not just its average
    assert np.abs(p - fresh_p).mean() < 0.015
    assert expected_calibration_error(p, fresh_right) < 0.02
    # an uninformative constant guess is much worse in the per-answer sense
    assert np.abs(fresh_p - fresh_right.mean()).mean() > 0.2


def test_calibrator_round_trips_and_rejects_bad_records():
    sims, fov, _, right = planted(2000)
    x = tile_features(sims, fov)
    cal = LogisticCalibrator.fit(x, right, TILE_FEATURES, fitted_on={"split": "val"})
    again = LogisticCalibrator.from_dict(cal.to_dict())
    np.testing.assert_allclose(again.predict(x), cal.predict(x))
    assert again.fitted_on["split"] == "val" and again.fitted_on["n"] == 2000
    record = cal.to_dict()
    record["weights"] = [1.0]
    with pytest.raises(ValueError, match="must each have 4 values"):
        LogisticCalibrator.from_dict(record)
    with pytest.raises(ValueError, match="both right and wrong"):
        LogisticCalibrator.fit(x, np.ones(len(sims), bool), TILE_FEATURES)


def test_calibration_gives_words_and_flags_unfamiliar_queries():
    sims, fov, _, right = planted(5000)
    peaks = np.random.default_rng(2).uniform(0, 0.3, len(sims))
    cal = Calibration.fit(sims, fov, peaks, right, right, {"split": "val"})
    again = Calibration.from_dict(cal.to_dict())
    assert again.heading.features == HEADING_FEATURES and again.record["split"] == "val"
    sure = again.confidence(np.array([0.9, 0.7, 0.69, 0.68, 0.6]), 90.0, 0.2)
    unsure = again.confidence(np.array([0.35, 0.349, 0.348, 0.34, 0.33]), 90.0, 0.0)
    assert sure.tile > 0.9 > 0.1 > unsure.tile
    # the same scores from a narrower photo are less sure (the planted law's FoV term)
    assert again.confidence(np.array([0.6, 0.57, 0.55]), 60.0, 0.1).tile < again.confidence(
        np.array([0.6, 0.57, 0.55]), 100.0, 0.1).tile
    assert sure.words().startswith("likely: ") and unsure.words().startswith("unsure: ")
    assert not sure.unfamiliar and sure.stated() == (sure.tile, sure.heading)
    odd = again.confidence(np.array([0.1, 0.05]), 90.0, None)  # below every fitting query's best score
    assert odd.unfamiliar and odd.stated() == (None, None) and odd.words().startswith("no probability")
    assert Confidence(0.5, 0.5, False).words().startswith("possible: 50 %")


def test_ece_reliability_and_risk_coverage_on_known_values():
    p = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1])
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    # both bins are off by 0.15 (0.9 vs 0.75, 0.1 vs 0.25)
    assert expected_calibration_error(p, y) == pytest.approx(0.15)
    bins = reliability_bins(p, y)
    assert [b["n"] for b in bins if b["n"]] == [4, 4]
    rc = risk_coverage(p, y, coverages=(1.0, 0.5))
    assert [r["accuracy"] for r in rc] == [0.5, 0.75] and rc[1]["answered"] == 4


def test_window_peak_margin_measures_one_clear_direction():
    w = 64
    angles = np.arange(w) * 360 / w
    clear = np.cos(np.radians(angles - 90)) * 0.5  # one peak at 90 deg
    two = np.maximum(np.cos(np.radians(angles - 90)), np.cos(np.radians(angles - 270)))  # two equal peaks
    assert window_peak_margin(clear) > 0.03
    assert window_peak_margin(two) == pytest.approx(0.0, abs=1e-9)
