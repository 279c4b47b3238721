"""The familiarity test: its patches and statistics against brute-force computations on planted images, its fit
and thresholds on planted photo families, and the whole path on the tiny world (fitted by the calibration, stored
in the database, read by the Localizer, told by the page, the API record and the command line)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from geoapp.bench.familiarity import non_photos
from geoapp.retrieval import familiarity as fam
from geoapp.retrieval.confidence import Confidence
from geoapp.retrieval.familiarity import Familiarity, FamiliarityTest, on_grid, patches, range_excess, statistics

pytest_plugins = ["app_fixtures"]  # the tiny world, model, database


def smooth_photo(rng: np.random.Generator, width: int = 96) -> np.ndarray:
    """A member of the planted 'world': two flat colour bands (sky, ground) with a soft horizon."""
    sky, ground = rng.uniform(150, 230, 3), rng.uniform(30, 110, 3)
    rows = np.clip((np.arange(fam.GRID_ROWS) - rng.uniform(50, 70)) / 4.0, 0, 1)[:, None, None]
    image = (1 - rows) * sky + rows * ground
    return np.broadcast_to(image, (fam.GRID_ROWS, width, 3)).astype(np.uint8).copy()


def test_patches_are_the_non_overlapping_blocks_in_row_order():
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)  # odd sides: the last row and column are left out
    rows = patches(grid)
    expected = [grid[i:i + fam.PATCH, j:j + fam.PATCH].astype(np.float32).ravel() / 255.0
                for i in range(0, 6, fam.PATCH) for j in range(0, 8, fam.PATCH)]
    assert rows.shape == (12, 3 * fam.PATCH ** 2) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows, np.stack(expected))
    with pytest.raises(ValueError, match="has no 2 x 2 patch"):
        patches(grid[:1])


def test_statistics_of_planted_images():
    """The statistics are compared as logarithms (a scale a quarter of the smallest is far outside): exp undoes it."""
    flat = np.full((128, 64, 3), (200, 100, 50), np.uint8)
    s = dict(zip(fam.STATISTICS, np.exp(statistics(flat)) - fam.STATISTICS_FLOOR))
    assert s["red_mean"] == pytest.approx(200 / 255, abs=1e-4) and s["blue_mean"] == pytest.approx(50 / 255, abs=1e-4)
    assert all(s[k] == pytest.approx(0.0, abs=1e-6) for k in ("red_std", "grey_std", "edge_x_mean", "edge_y_q90",
                                                              "detail_mean", "saturation_std", "band1_std"))
    assert s["saturation_mean"] == pytest.approx(1 - 50 / 200, abs=2 / 255)
    halves = np.zeros((128, 64, 3), np.uint8)
    halves[:, 32:] = 255  # black | white: grey std 0.5, one edge column in 63, no horizontal edges
    h = dict(zip(fam.STATISTICS, np.exp(statistics(halves)) - fam.STATISTICS_FLOOR))
    assert h["grey_std"] == pytest.approx(0.5, abs=1e-4) and h["edge_x_mean"] == pytest.approx(1 / 63, abs=1e-4)
    assert h["edge_y_mean"] == pytest.approx(0.0, abs=1e-12) and h["band2_std"] == pytest.approx(0.5, abs=1e-4)
    assert len(statistics(halves)) == len(fam.STATISTICS)
    assert statistics(flat)[fam.STATISTICS.index("grey_std")] == pytest.approx(np.log(fam.STATISTICS_FLOOR))


def test_a_record_of_other_statistics_or_another_scale_is_not_loaded(tmp_path):
    record = {"statistics": list(fam.STATISTICS), "statistics_scale": "linear", "patches_file": fam.PATCHES_FILE}
    assert "linear scale" in fam.record_problem(record)
    assert "other statistics" in fam.record_problem({**record, "statistics": ["red_mean"]})
    with pytest.raises(ValueError, match="refit it"):
        FamiliarityTest.load(record, tmp_path)


def test_range_excess_counts_how_far_outside_in_units_of_the_range():
    low, high = np.array([0.0, 10.0]), np.array([1.0, 20.0])
    values = np.array([[0.5, 15.0], [1.5, 15.0], [-1.0, 40.0]])
    np.testing.assert_allclose(range_excess(values, low, high), [0.0, 0.5, 1.0 + 2.0])


def test_fit_sets_thresholds_on_validation_photos_and_flags_other_images():
    rng = np.random.default_rng(1)
    train = [smooth_photo(rng) for _ in range(120)]
    val = [smooth_photo(rng) for _ in range(200)]
    test = FamiliarityTest.fit(train, val, seed=0, record={"dataset": "planted"})
    patch_scores = np.array([test.patch_score(g) for g in val])
    stat_scores = np.array([test.statistics_score(g) for g in val])
    # each threshold lets through all but FLAG_RATE / 2 of the validation photos (1 of 200 each)
    assert np.sum(patch_scores > test.patch_threshold) <= 1 and np.sum(stat_scores > test.statistics_threshold) <= 1
    assert test.record["val_flagged_percent"] <= 100 * fam.FLAG_RATE and test.record["train_photos"] == 120
    # the patch score is the mean distance to the nearest centre, computed here by brute force
    grid = val[0]
    rows = patches(grid).astype(np.float64)
    nearest = np.sqrt(((rows[:, None, :] - test.centres[None].astype(np.float64)) ** 2).sum(-1)).min(1)
    assert test.patch_score(grid) == pytest.approx(nearest.mean(), rel=1e-4)
    familiar = sum(test.assess(smooth_photo(rng)).familiar for _ in range(100))
    assert familiar >= 95
    for name, image in non_photos(0).items():  # noise, text, blank: none is a two-band photo
        if name not in ("uniform colour", "grey", "black", "white", "horizontal gradient", "vertical gradient"):
            assert not test.assess(on_grid(image, 90.0, "pinhole")).familiar, name
    assert not test.assess(np.full_like(val[0], 128)).familiar  # no horizon: no training photo's contrast
    with pytest.raises(ValueError, match="at least 50 training"):
        FamiliarityTest.fit(train[:10], val, seed=0)


def test_words_tell_an_unknown_place_from_a_low_score():
    unknown = Familiarity(0.2, 0.1, 0.0, 0.5)
    known = Familiarity(0.05, 0.1, 0.0, 0.5)
    assert not unknown.familiar and known.familiar and "fine detail" in unknown.reason() and known.reason() == ""
    outside = Confidence(0.9, 0.9, below_floor=False, familiarity=unknown)
    assert outside.unknown_place and outside.unfamiliar and outside.stated() == (None, None)
    assert outside.words().startswith("no probability") and "not a place the model can know" in outside.words()
    low = Confidence(0.9, 0.9, below_floor=True, familiarity=known)
    assert low.unfamiliar and not low.unknown_place and "guess" in low.words() and low.stated() == (None, None)
    plain = Confidence(0.9, 0.8, familiarity=known)
    assert not plain.unfamiliar and plain.stated() == (0.9, 0.8) and plain.words().startswith("likely: 90 %")


@pytest.fixture(scope="module")
def fitted(tiny_world, tiny_checkpoint):
    """A calibration and familiarity test for the tiny database (the tiny world has no val split: fitted on train,
    with the test tiles as distractors, for the mechanics), every gallery reference run through the network."""
    from geoapp.retrieval.calibrate import fit_calibration

    return fit_calibration(tiny_checkpoint, "synth", tiny_world, gallery_size=16, split="train",
                           distractor_split="test", device="cpu", progress=False)


@pytest.fixture(scope="module")
def calibrated_db(fitted, tiny_database, tmp_path_factory):
    """The tiny database with its calibration and familiarity test."""
    from geoapp.retrieval.calibrate import write_calibration

    db = tmp_path_factory.mktemp("calibrated") / "db"
    shutil.copytree(tiny_database, db)
    write_calibration(db, fitted)
    return db


def test_a_calibration_copies_the_references_its_database_holds_and_fits_the_same(fitted, tiny_world,
                                                                                   tiny_checkpoint, tiny_database,
                                                                                   monkeypatch):
    """The gallery's 12 distractors are the tiny database's 12 test tiles: copied from it, only the 4 training tiles
    run through the network, and the calibration is the one fitted on a gallery encoded whole."""
    from geoapp.retrieval import build
    from geoapp.retrieval.calibrate import fit_calibration

    encoded = []
    load = build.DatasetSource.load
    monkeypatch.setattr(build.DatasetSource, "load",
                        lambda self, i: (encoded.append((self.split, i)), load(self, i))[1])
    reused = fit_calibration(tiny_checkpoint, "synth", tiny_world, gallery_size=16, split="train",
                             distractor_split="test", device="cpu", progress=False, database=tiny_database)
    assert sorted(encoded) == [("train", i) for i in range(4)]
    assert reused.record == fitted.record and reused.record["distractors"] == {"split": "test", "count": 12}
    # the copied rows were encoded in other batches, so the network's last bits (and the fit's) may differ
    _assert_close_records(reused.to_dict(), fitted.to_dict())


def _assert_close_records(a, b, path="calibration"):
    """Equal records, numbers within 1e-4 relative (the last bits of a batch-dependent encoding)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _assert_close_records(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close_records(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), path
    else:
        assert a == b, path


def test_the_calibration_stores_the_test_and_the_localizer_applies_it(calibrated_db, tiny_checkpoint, tiny_world):
    from geoapp.data.datasets import build_dataset
    from geoapp.data.fov import crop_fov
    from geoapp.retrieval.engine import Localizer

    record = json.loads((calibrated_db / "metadata.json").read_text())["calibration"]["familiarity"]
    assert record["patches_file"] == fam.PATCHES_FILE and record["statistics"] == list(fam.STATISTICS)
    # calibrated on the split the model trained on, the tiny world's 4 'train' pairs: 2 panoramas for the centres, the
    # other 2 for the thresholds, 75 photos each
    assert record["train_split"] == record["val_split"] == "train"
    assert (record["fit_panoramas"], record["threshold_panoramas"]) == (2, 2)
    assert record["train_photos"] == record["val_photos"] == 150
    centres = np.load(calibrated_db / fam.PATCHES_FILE)
    assert centres.shape == (fam.CENTRES, 3 * fam.PATCH ** 2)
    localizer = Localizer(tiny_checkpoint, calibrated_db, device="cpu")
    np.testing.assert_array_equal(localizer.familiarity.centres, centres)
    pano = build_dataset("synth", tiny_world, "test", fov_deg=90.0, train=False).load_panorama(3)
    crop = crop_fov(pano, 90.0, 17)
    result = localizer.localize(crop, fov_deg=90.0, projection="crop")
    expected = localizer.familiarity.assess(on_grid(crop, 90.0, "crop"))
    for got in (result.views[0].familiarity, result.confidence.familiarity):
        assert got.familiar == expected.familiar and got.patch_threshold == expected.patch_threshold
        assert (got.patch_score, got.statistics_score) == pytest.approx((expected.patch_score,
                                                                         expected.statistics_score), rel=1e-9)
    noise = non_photos(1)["uniform noise"]
    flagged = localizer.localize(noise, fov_deg=90.0, projection="pinhole")
    assert flagged.confidence.unknown_place and flagged.confidence.stated() == (None, None)
    # several photos: one unknown photo makes the query unknown
    both = localizer.localize_together([crop, noise], fov_deg=90.0, projection=["crop", "pinhole"])
    assert both.confidence.unknown_place and [v.familiarity.familiar for v in both.views] == [expected.familiar,
                                                                                                 False]


def test_the_page_the_api_record_and_the_cli_say_so(calibrated_db, tiny_checkpoint, tmp_path):
    from geoapp.app import handlers
    from geoapp.app.context import AppContext
    from geoapp.localize import main as localize_main
    from geoapp.retrieval.engine import Localizer

    localizer = Localizer(tiny_checkpoint, calibrated_db, device="cpu")
    ctx = AppContext.create(localizer, top_k=3, cache_dir=tmp_path / "cache", example_count=0)
    photo = tmp_path / "noise.png"
    cv2.imwrite(str(photo), non_photos(2)["gaussian noise"])
    out = handlers.localize_photo(ctx, str(photo), 90.0, next(iter(handlers.PHOTO_TYPES)))
    assert "This is not a place the demo knows" in out.query_summary and "%" not in out.query_summary.split("\n")[0]
    conf = out.answer["confidence"]
    assert conf["unfamiliar"] and conf["tile_probability"] is None
    assert conf["heading_within_22.5deg_probability"] is None
    assert "fine detail" in conf["unfamiliar_reason"] or "contrast" in conf["unfamiliar_reason"]
    assert out.answer["photos"][0]["familiarity"]["familiar"] is False
    table = tmp_path / "out.csv"
    assert localize_main([str(photo), "--fov", "90", "--checkpoint", str(tiny_checkpoint), "--reference-db",
                          str(calibrated_db), "--out", str(table)]) == 0
    import csv

    rows = list(csv.DictReader(table.open()))
    assert rows and all(r["familiar"] == "False" and r["confidence"] == "" for r in rows)


def test_the_fit_learns_the_training_split_and_sets_thresholds_on_the_calibration_split(tiny_world):
    """Centres from the model's training split, thresholds from the calibration's; a training split with no panorama
    on disk (here a split the tiny world does not have) falls back to alternate panoramas of the calibration split."""
    from geoapp.data.datasets import build_dataset
    from geoapp.retrieval.calibrate import fit_familiarity

    n_train, n_test = (len(build_dataset("synth", tiny_world, s, fov_deg=90.0, train=False)) for s in ("train", "test"))
    test = fit_familiarity("synth", tiny_world, "train", "test", progress=False)
    assert (test.record["train_split"], test.record["val_split"]) == ("train", "test")
    assert (test.record["fit_panoramas"], test.record["threshold_panoramas"]) == (n_train, n_test)
    alone = fit_familiarity("synth", tiny_world, "val", "test", progress=False)
    assert alone.record["train_split"] == alone.record["val_split"] == "test"
    assert alone.record["fit_panoramas"] + alone.record["threshold_panoramas"] == n_test
