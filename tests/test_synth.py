"""Tests of the procedural world (geoapp.synth): determinism, conventions §2/3 alignment, split disjointness,
dataset layout, geo conventions, resume and refusal to mix settings. Small worlds only (a few seconds)."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from geoapp.data.polar import polar_transform
from geoapp.synth import palette as P
from geoapp.synth.__main__ import build_parser, main
from geoapp.synth.canvas import WorldCanvas
from geoapp.synth.figure import make_figure
from geoapp.synth.geo import GeoFrame
from geoapp.synth.layout import TEST, TRAIN, VAL, split_ok
from geoapp.synth.views import RenderConfig, render_panorama, render_satellite
from geoapp.synth.world import World, WorldConfig, generate_world
from geoapp.synth.writer import ImageOptions, SynthConfigError, location_paths, write_dataset

SMALL = WorldConfig(seed=7, n_train=24, n_val=6, n_test=8, tile_metres=64.0, block_metres=256.0, train_spacing=24.0,
                    test_spacing=32.0, district_metres=160.0, area_mix=(0.25, 0.25, 0.25, 0.25))
SMALL_IMAGES = ImageOptions(tile_size=128, pano_height=64, pano_width=256, polar_height=64, polar_width=256,
                            mosaic_size=512)


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(SMALL)


@pytest.fixture(scope="module")
def dataset(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    write_dataset(out, SMALL, SMALL_IMAGES, workers=2, progress=False, log=lambda m: None, world=world)
    return out


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_world(world):
    again = generate_world(SMALL)
    for name in ("terrain", "height", "kind", "area", "sat", "street"):
        assert np.array_equal(getattr(world, name), getattr(again, name)), name
    assert np.array_equal(world.locations.x, again.locations.x)
    assert np.array_equal(world.locations.y, again.locations.y)
    assert list(world.locations.split) == list(again.locations.split)
    other = generate_world(WorldConfig(**{**SMALL.__dict__, "seed": 8}))
    assert other.sat.shape != world.sat.shape or not np.array_equal(other.sat, world.sat)


def test_parallel_painting_gives_the_same_world(world):
    parallel = generate_world(SMALL, workers=2)
    for name in ("height", "kind", "sat", "street"):
        assert np.array_equal(getattr(world, name), getattr(parallel, name)), name


def test_same_seed_same_images(world):
    cfg = SMALL_IMAGES.render_config(SMALL.tile_metres)
    x, y = world.locations.x[0], world.locations.y[0]
    for render in (render_satellite, render_panorama):
        a, b = render(world, x, y, cfg, seed=3), render(world, x, y, cfg, seed=3)
        assert a.dtype == np.uint8 and np.array_equal(a, b)
        assert not np.array_equal(a, render(world, x, y, cfg, seed=4))  # lighting jitter / noise follow the seed


def test_world_has_every_area_type_and_kind(world):
    assert set(np.unique(world.area)) == {P.URBAN, P.SUBURBAN, P.RURAL, P.FOREST}
    kinds = set(np.unique(world.kind).tolist())
    assert {P.ROAD, P.BUILDING, P.TREE, P.GROUND} <= kinds
    assert world.height.max() > 8.0  # buildings / trees stand up


# ---------------------------------------------------------------------------------------------- alignment

COLOURS = {"east": ((230, 20, 20), 0.0), "north": ((20, 210, 20), 120.0), "west": ((230, 210, 20), 55.0),
           "south": ((220, 20, 220), 300.0)}


def _hue_columns(img: np.ndarray, hue_deg: float) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL).astype(np.float64)
    hue = hsv[..., 0] / 256.0 * 360.0
    d = np.abs((hue - hue_deg + 180.0) % 360.0 - 180.0)
    mask = (d < 18.0) & (hsv[..., 1] > 100) & (hsv[..., 2] > 60)
    return np.nonzero(mask)[1]


def _circular_mean_column(cols: np.ndarray, width: int) -> float:
    ang = cols / width * 2 * np.pi
    return (math.atan2(np.sin(ang).mean(), np.cos(ang).mean()) / (2 * np.pi) * width) % width


@pytest.fixture(scope="module")
def compass_world() -> tuple[World, float, float]:
    """A flat, empty world with one coloured tower due east, north, west and south of the centre."""
    mpp = 0.5
    canvas = WorldCanvas.blank(400, 400, mpp)
    cx = cy = 200.0
    for (dx, dy), (name, dist) in zip(((1, 0), (0, -1), (-1, 0), (0, 1)),
                                      (("east", 16.0), ("north", 20.0), ("west", 12.0), ("south", 14.0))):
        rgb = COLOURS[name][0]
        canvas.add_box(cx + dx * dist / mpp, cy + dy * dist / mpp, 4.0, 4.0, 9.0, rgb, rgb)
    return World.from_canvas(canvas), cx, cy


@pytest.mark.parametrize("name,column", [("east", 384), ("north", 256), ("west", 128), ("south", 0)])
def test_panorama_and_polar_tile_line_up_at_shift_zero(compass_world, name, column):
    world, cx, cy = compass_world
    cfg = RenderConfig(tile_size=300, tile_metres=64.0, pano_height=128, pano_width=512)
    pano = render_panorama(world, cx, cy, cfg)
    polar = polar_transform(render_satellite(world, cx, cy, cfg), 128, 512)
    hue = COLOURS[name][1]
    for img, label in ((pano, "panorama"), (polar, "polar tile")):
        cols = _hue_columns(img, hue)
        assert len(cols) > 20, f"{name} tower not found in the {label}"
        got = _circular_mean_column(cols, 512)
        err = abs((got - column + 256) % 512 - 256)
        assert err <= 4, f"{name} tower at column {got:.1f} of the {label}, expected {column}"


def test_panorama_sky_above_ground_below(compass_world):
    world, cx, cy = compass_world
    pano = render_panorama(world, cx, cy, RenderConfig(tile_metres=64.0)).astype(float)
    sky, ground = pano[:40].mean(axis=(0, 1)), pano[-30:].mean(axis=(0, 1))
    assert sky[2] > sky[0] + 30  # blue sky on top
    assert abs(ground[0] - ground[2]) < 25 and ground.mean() < sky.mean()  # grey ground at the bottom


def test_written_polar_is_the_spec_polar_transform_of_the_tile(world, dataset):
    i = 1
    cfg = SMALL_IMAGES.render_config(SMALL.tile_metres)
    from geoapp.synth.rand import hash_u32

    tile = render_satellite(world, world.locations.x[0], world.locations.y[0], cfg, int(hash_u32(SMALL.seed, i)))
    expected = polar_transform(tile, SMALL_IMAGES.polar_height, SMALL_IMAGES.polar_width)
    written = cv2.cvtColor(_read(dataset / location_paths(i)["polar"]), cv2.COLOR_BGR2RGB)
    assert np.array_equal(written, expected)


# ---------------------------------------------------------------------------------------------- splits


def test_train_val_and_test_tiles_never_overlap(world):
    loc = world.locations
    tile_px = SMALL.tile_metres / SMALL.metres_per_pixel
    masks = {split: loc.split == split for split in (TRAIN, VAL, TEST)}
    assert [int(m.sum()) for m in masks.values()] == [SMALL.n_train, SMALL.n_val, SMALL.n_test]
    for a, b in ((VAL, TRAIN), (TEST, TRAIN), (VAL, TEST)):
        dx = np.abs(loc.x[masks[a]][:, None] - loc.x[masks[b]][None, :])
        dy = np.abs(loc.y[masks[a]][:, None] - loc.y[masks[b]][None, :])
        assert np.all((dx >= tile_px) | (dy >= tile_px)), f"a {a} tile overlaps a {b} tile"
    # every val / test tile lies inside a block of its split, every training tile outside all of them
    xm, ym = loc.x * SMALL.metres_per_pixel, loc.y * SMALL.metres_per_pixel
    for split, mask in masks.items():
        assert split_ok(world.plan, split, xm[mask], ym[mask], SMALL.tile_metres).all(), split
    # the three splits share no block: each camera stands in a block of its own split
    plan = world.plan
    assert (len(plan.val_blocks), len(plan.test_blocks)) == (plan.n_val_blocks, plan.n_test_blocks) == (1, 1)
    gx, _ = plan.grid
    block_of = (ym // plan.block_m).astype(int) * gx + (xm // plan.block_m).astype(int)
    blocks = {split: set(block_of[mask].tolist()) for split, mask in masks.items()}
    assert not (blocks[TRAIN] & blocks[VAL]) and not (blocks[TRAIN] & blocks[TEST]) and not (blocks[VAL] & blocks[TEST])
    for split, found in blocks.items():
        assert {plan.blocks[k].split for k in found} == {split}
    # ids (1-based positions) are contiguous per split: train, then val, then test
    assert list(loc.split) == [TRAIN] * SMALL.n_train + [VAL] * SMALL.n_val + [TEST] * SMALL.n_test


def test_cameras_stand_on_open_ground(world):
    loc = world.locations
    kinds = world.kind[loc.y.astype(int), loc.x.astype(int)]
    assert not np.isin(kinds, [P.BUILDING, P.TREE, P.WATER, P.POOL]).any()
    assert loc.on_road.mean() > 0.3


# ---------------------------------------------------------------------------------------------- geo


def test_latlon_grows_north_and_east():
    geo = GeoFrame(41.6, -93.6, 0.5, 2000, 1000)
    lat0, lon0 = geo.latlon(1000.0, 500.0)
    assert lat0 == pytest.approx(41.6) and lon0 == pytest.approx(-93.6)
    lat_n, lon_n = geo.latlon(1000.0, 300.0)  # 100 m north
    lat_e, lon_e = geo.latlon(1200.0, 500.0)  # 100 m east
    assert lat_n > lat0 and lon_n == pytest.approx(lon0)
    assert lon_e > lon0 and lat_e == pytest.approx(lat0)
    assert (lat_n - lat0) * 111_000 == pytest.approx(100.0, rel=0.01)
    assert (lon_e - lon0) * 111_000 * math.cos(math.radians(41.6)) == pytest.approx(100.0, rel=0.01)
    x, y = geo.pixel(lat_e, lon_e)
    assert (x, y) == (pytest.approx(1200.0), pytest.approx(500.0))
    b = geo.bounds()
    assert b["north"] > b["south"] and b["east"] > b["west"]


def test_all_csv_latlon_follows_world_coordinates(world, dataset):
    with open(dataset / "split_locations/all.csv", newline="") as fh:
        rows = [[float(v) for v in r] for r in csv.reader(fh)]
    lat, lon = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    x, y = world.locations.x, world.locations.y
    # larger y (further south) = smaller latitude; larger x (further east) = larger longitude
    assert np.all(np.sign(np.diff(lat[np.argsort(y)])) <= 0)
    assert np.all(np.sign(np.diff(lon[np.argsort(x)])) >= 0)
    assert np.array_equal([r[0] for r in rows], [r[2] for r in rows])  # camera at the tile centre


# ---------------------------------------------------------------------------------------------- layout


def test_dataset_layout(dataset):
    total = SMALL.n_train + SMALL.n_val + SMALL.n_test
    for i in range(1, total + 1):
        p = location_paths(i)
        assert _read(dataset / p["tile"]).shape == (SMALL_IMAGES.tile_size, SMALL_IMAGES.tile_size, 3)
        assert _read(dataset / p["pano"]).shape == (SMALL_IMAGES.pano_height, SMALL_IMAGES.pano_width, 3)
        assert _read(dataset / p["polar"]).shape == (SMALL_IMAGES.polar_height, SMALL_IMAGES.polar_width, 3)
        assert not (dataset / p["annotation"]).exists()
    splits = {}
    for name in ("train-19zl.csv", "selection-19zl.csv", "val-19zl.csv"):
        with open(dataset / "splits" / name, newline="") as fh:
            rows = list(csv.reader(fh))
        assert all(len(r) == 3 for r in rows)
        for sat, gnd, ann in rows:
            sid = Path(sat).stem
            assert len(sid) == 7 and sid.isdigit()
            assert (sat, gnd, ann) == (f"bingmap/19/{sid}.jpg", f"streetview/panos/{sid}.jpg",
                                       f"annotations/{sid}.png")
        splits[name] = [int(Path(r[0]).stem) for r in rows]
    assert splits["train-19zl.csv"] == list(range(1, SMALL.n_train + 1))
    assert splits["selection-19zl.csv"] == list(range(SMALL.n_train + 1, SMALL.n_train + SMALL.n_val + 1))
    assert splits["val-19zl.csv"] == list(range(SMALL.n_train + SMALL.n_val + 1, total + 1))
    with open(dataset / "split_locations/all.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == total and all(len(r) == 4 for r in rows)
    with open(dataset / "locations.csv", newline="") as fh:
        meta = list(csv.DictReader(fh))
    assert [int(r["id"]) for r in meta] == list(range(1, total + 1))
    assert [r["split"] for r in meta] == ["train"] * SMALL.n_train + ["val"] * SMALL.n_val + ["test"] * SMALL.n_test
    assert {r["area"] for r in meta} <= set(P.AREA_NAMES)
    assert _read(dataset / "map/mosaic.jpg").shape[1] <= SMALL_IMAGES.mosaic_size


def test_the_reader_opens_the_three_splits(dataset):
    from geoapp.data.datasets import build_dataset

    ids = {split: [r.id for r in build_dataset("synth", dataset, split, 90, train=False).records]
           for split in ("train", "val", "test")}
    assert [len(v) for v in ids.values()] == [SMALL.n_train, SMALL.n_val, SMALL.n_test]
    assert ids["val"] == [f"{i:07d}" for i in range(SMALL.n_train + 1, SMALL.n_train + SMALL.n_val + 1)]
    assert not set(ids["train"]) & set(ids["val"]) and not set(ids["train"]) & set(ids["test"])
    assert not set(ids["val"]) & set(ids["test"])


def test_a_world_without_val_writes_no_selection_split(tmp_path):
    from geoapp.data.datasets import NoSelectionSplitError, build_dataset

    out = tmp_path / "ds"
    cfg = WorldConfig(**{**SMALL.__dict__, "n_train": 4, "n_val": 0, "n_test": 2})
    m = write_dataset(out, cfg, SMALL_IMAGES, workers=1, progress=False, log=lambda m: None)
    assert m["counts"] == {"train": 4, "val": 0, "test": 2, "total": 6} and m["world"]["val_blocks"] == 0
    assert not (out / "splits/selection-19zl.csv").exists() and m["mosaic"]["val_regions"] == []
    assert len(build_dataset("synth", out, "test", 90, train=False)) == 2
    with pytest.raises(NoSelectionSplitError, match="no model-selection split.*carves"):
        build_dataset("synth", out, "val", 90, train=False)


def test_a_split_of_which_only_spread_locations_are_rendered(world, dataset, tmp_path):
    """--sample train:5 (the app's first start: the calibration's distractors, the familiarity test's training
    photos): the same bytes as the whole world's for those five locations, none of the others; the split opens as
    those five pairs, and a later run completes it."""
    from geoapp.data.datasets import DatasetError, build_dataset
    from geoapp.synth.writer import sampled_ids

    out = tmp_path / "ds"
    write_dataset(out, SMALL, SMALL_IMAGES, workers=1, progress=False, log=lambda m: None, world=world,
                  splits=("val", "test"))
    with pytest.raises(DatasetError, match=r"split 'train' was not rendered.* --splits val test train"):
        build_dataset("synth", out, "train", 90, train=False)
    m = write_dataset(out, SMALL, SMALL_IMAGES, workers=1, progress=False, log=lambda m: None, world=world,
                      splits=("val", "test"), sampled={"train": 5})
    assert m["rendered_splits"] == ["val", "test"] and m["sampled"] == {"train": 5}
    chosen = sampled_ids(SMALL, "train", 5)
    assert chosen == [1, 7, 13, 18, 24]  # spread over the 24 training ids, the first and the last included
    served = list(range(SMALL.n_train + 1, SMALL.n_train + SMALL.n_val + SMALL.n_test + 1))
    assert sorted(int(p.stem) for p in (out / "bingmap/19").iterdir()) == chosen + served
    assert sorted(int(p.stem) for p in (out / "polarmap/19").iterdir()) == chosen + served
    assert sorted(int(p.stem) for p in (out / "streetview/panos").iterdir()) == chosen + served
    for i in chosen + served[:3]:
        for kind in ("tile", "polar", "pano"):
            assert (out / location_paths(i)[kind]).read_bytes() == (dataset / location_paths(i)[kind]).read_bytes()
    sample = build_dataset("synth", out, "train", 90, train=False)
    assert [int(r.id) for r in sample.records] == chosen and sample.load_polar(4).shape[:2] == (128, 512)
    assert sample.load_panorama(4).shape[:2] == (128, 512)
    again = write_dataset(out, SMALL, SMALL_IMAGES, workers=1, progress=False, log=lambda m: None,
                          splits=("val", "test"), sampled={"train": 5})
    assert again.get("up_to_date") is True  # nothing is missing: not even the world is built
    whole = write_dataset(out, SMALL, SMALL_IMAGES, workers=1, progress=False, log=lambda m: None, world=world)
    assert whole["rendered_splits"] == ["train", "val", "test"] and whole["sampled"] == {}
    assert whole["timing"]["locations_rendered"] == SMALL.n_train - len(chosen)  # the five are kept
    assert len(build_dataset("synth", out, "train", 90, train=False)) == SMALL.n_train
    with pytest.raises(ValueError, match="rendered whole already"):
        write_dataset(out, SMALL, SMALL_IMAGES, progress=False, log=lambda m: None, sampled={"train": 5})
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--sample", "train"])  # SPLIT:N


def test_manifest_fields(dataset):
    m = json.loads((dataset / "dataset.json").read_text())
    for key in ("generator_version", "seed", "settings", "flags", "command", "code_revision", "counts", "area_types",
                "image_sizes", "origin", "metres_per_pixel", "mosaic", "timing", "files", "geometry", "world"):
        assert key in m, key
    assert m["seed"] == SMALL.seed
    total = SMALL.n_train + SMALL.n_val + SMALL.n_test
    assert m["counts"] == {"train": SMALL.n_train, "val": SMALL.n_val, "test": SMALL.n_test, "total": total}
    assert m["image_sizes"] == {"tile": [128, 128], "pano": [64, 256], "polar": [64, 256]}
    # the keys the dataset readers (geoapp.data.base) check the files against
    assert (m["panorama_size"], m["satellite_size"], m["polar_size"]) == ([64, 256], 128, [64, 256])
    assert sum(m["area_types"]["train"].values()) == SMALL.n_train
    assert sum(m["area_types"]["val"].values()) == SMALL.n_val
    assert sum(m["area_types"]["test"].values()) == SMALL.n_test
    assert m["metres_per_pixel"] == SMALL.metres_per_pixel
    assert m["origin"]["lat"] == SMALL.origin[0] and m["origin"]["lon"] == SMALL.origin[1]
    b = m["mosaic"]["bounds"]
    assert m["mosaic"]["file"] == "map/mosaic.jpg" and b["north"] > b["south"] and b["east"] > b["west"]
    assert (m["world"]["val_blocks"], m["world"]["test_blocks"]) == (1, 1)
    assert len(m["mosaic"]["test_regions"]) == len(m["mosaic"]["val_regions"]) == 1
    for box in m["mosaic"]["test_regions"] + m["mosaic"]["val_regions"]:  # inside the world, not the same block
        assert b["south"] - 1e-9 <= box["south"] < box["north"] <= b["north"] + 1e-9
        assert b["west"] - 1e-9 <= box["west"] < box["east"] <= b["east"] + 1e-9
    assert m["mosaic"]["test_regions"] != m["mosaic"]["val_regions"]
    assert m["timing"]["total_s"] > 0 and m["timing"]["locations_rendered"] == total
    assert m["settings"]["world"]["train_spacing"] == SMALL.train_spacing


def test_figure_is_small_png(dataset, tmp_path):
    out = make_figure(dataset, tmp_path / "fig.png")
    img = _read(out)
    assert img.ndim in (2, 3) and img.shape[1] > 800
    assert out.stat().st_size < 500_000


# ---------------------------------------------------------------------------------------------- resume / refusal


def test_resume_renders_only_missing_files(world, dataset):
    pano = dataset / location_paths(3)["pano"]
    pano.unlink()
    tile = dataset / location_paths(5)["tile"]
    tile.write_bytes(tile.read_bytes()[:100])  # an interrupted, truncated file
    untouched = dataset / location_paths(1)["tile"]
    before = untouched.stat().st_mtime_ns
    logs = []
    m = write_dataset(dataset, SMALL, SMALL_IMAGES, workers=1, progress=False, log=logs.append, world=world)
    assert m["timing"]["locations_rendered"] == 2
    assert m["timing"]["locations_skipped"] == SMALL.n_train + SMALL.n_val + SMALL.n_test - 2
    assert pano.exists() and _read(tile).shape == (128, 128, 3)
    assert untouched.stat().st_mtime_ns == before
    assert not [p for p in dataset.rglob("*.tmp")]
    # everything complete now: a rerun does not even build the world
    again = write_dataset(dataset, SMALL, SMALL_IMAGES, workers=1, progress=False, log=logs.append)
    assert again.get("up_to_date") is True


def test_other_settings_into_the_same_folder_are_refused(dataset):
    with pytest.raises(SynthConfigError, match="seed"):
        write_dataset(dataset, WorldConfig(**{**SMALL.__dict__, "seed": 99}), SMALL_IMAGES, progress=False,
                      log=lambda m: None)
    with pytest.raises(SynthConfigError, match="tile_size"):
        write_dataset(dataset, SMALL, ImageOptions(**{**SMALL_IMAGES.__dict__, "tile_size": 96}), progress=False,
                      log=lambda m: None)


def test_outputs_of_other_generator_code_are_refused(tmp_path):
    out = tmp_path / "ds"
    cfg = WorldConfig(**{**SMALL.__dict__, "n_train": 4, "n_val": 2, "n_test": 2})
    write_dataset(out, cfg, SMALL_IMAGES, workers=1, progress=False, log=lambda m: None)
    settings = json.loads((out / "synth_config.json").read_text())
    settings["code"] = "0123456789abcdef"  # as if written by an older version of geoapp/synth
    (out / "synth_config.json").write_text(json.dumps(settings))
    with pytest.raises(SynthConfigError, match="code: was '0123456789abcdef'"):
        write_dataset(out, cfg, SMALL_IMAGES, workers=1, progress=False, log=lambda m: None)


def test_cli_refuses_mismatch_with_a_clear_message(dataset, capsys):
    rc = main(["--out", str(dataset), "--seed", "99", "--train", "24", "--val", "6", "--test", "8", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "different settings" in err and "seed" in err and "another --out" in err


def test_foreign_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SynthConfigError, match="not empty"):
        write_dataset(tmp_path, SMALL, SMALL_IMAGES, progress=False, log=lambda m: None)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_help_documents_every_flag():
    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        for opt in action.option_strings:
            assert opt in text
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"
    assert "figure" in text
    for flag in ("--train", "--val", "--test", "--seed", "--out", "--tile-size", "--pano-size", "--workers"):
        assert flag in text


def test_uint8_polar_transform_equals_the_float_path_rounded():
    """polar_transform gathers uint8 tiles as bytes (the fast path the world writer uses): bit for bit the float32
    path, rounded."""
    rng = np.random.default_rng(0)
    for size in (750, 301, 128):
        tile = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        for hw in ((128, 512), (64, 256)):
            floats = polar_transform(tile.astype(np.float32), *hw)
            assert np.array_equal(polar_transform(tile, *hw), np.clip(np.rint(floats), 0, 255).astype(np.uint8))


def test_same_settings_write_byte_identical_files(tmp_path):
    """Two runs (one and two workers) of the same settings write the same bytes (dataset.json aside: it
    records timings and the command line)."""
    cfg = WorldConfig(**{**SMALL.__dict__, "n_train": 6, "n_val": 2, "n_test": 3})
    hashes = []
    for workers, name in ((1, "a"), (2, "b")):
        write_dataset(tmp_path / name, cfg, SMALL_IMAGES, workers=workers, progress=False, log=lambda m: None)
        files = sorted(p for p in (tmp_path / name).rglob("*") if p.is_file() and p.name != "dataset.json")
        hashes.append({p.relative_to(tmp_path / name).as_posix(): p.read_bytes() for p in files})
    assert hashes[0].keys() == hashes[1].keys() and len(hashes[0]) == 3 * 11 + 8  # 3 split CSVs among the tables
    for key in hashes[0]:
        assert hashes[0][key] == hashes[1][key], key
