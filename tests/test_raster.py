"""Reference tiles cut from a georeferenced orthophoto: north-up to true north (meridian convergence at the edge of a
UTM zone), nodata borders skipped, bad rasters refused with a specific message, and a database built from one."""

import json

import cv2
import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import Affine, from_origin

from geoapp.retrieval.database import DatabaseError, ReferenceDatabase
from geoapp.retrieval.raster import RasterSource, sample_positions

UTM32 = "EPSG:32632"  # central meridian 9 E: at 12 E, 48 N true north is about 2.2 deg off the grid's north
ORIGIN = (48.0, 11.99)  # lat, lon near the zone's eastern edge
PERIOD_M = 12.0


def pattern(east: np.ndarray, north: np.ndarray) -> np.ndarray:
    """RGB of the ground at true-frame metres (east, north) from ORIGIN: stripes that show any rotation."""
    r = 128 + 100 * np.sin(2 * np.pi * east / PERIOD_M)
    g = 128 + 100 * np.sin(2 * np.pi * north / PERIOD_M)
    b = 128 + 60 * np.sin(2 * np.pi * (east + north) / (2 * PERIOD_M))
    return np.stack([r, g, b]).clip(0, 255)


def local_frame():
    """UTM -> true-frame metres around ORIGIN (an azimuthal equidistant projection centred there)."""
    aeqd = f"+proj=aeqd +lat_0={ORIGIN[0]} +lon_0={ORIGIN[1]} +datum=WGS84 +units=m"
    return Transformer.from_crs(UTM32, aeqd, always_xy=True)


def write_raster(path, size_m=256.0, pixel=0.5, bands=3, dtype="uint8", crs=UTM32, transform=None, nodata_right=False,
                 values=None):
    centre = Transformer.from_crs("EPSG:4326", UTM32, always_xy=True).transform(ORIGIN[1], ORIGIN[0])
    left, top = centre[0] - size_m / 2, centre[1] + size_m / 2
    n = int(size_m / pixel)
    transform = transform if transform is not None else from_origin(left, top, pixel, pixel)
    if values is None:
        cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
        x, y = left + cols * pixel, top - rows * pixel
        east, north = local_frame().transform(x, y)
        values = pattern(np.asarray(east), np.asarray(north))[:bands]
    values = values.astype(dtype)
    nodata = None
    if nodata_right:
        values[:, :, int(0.6 * n):] = 0  # the east 40 %
        nodata = 0
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=bands, dtype=dtype, crs=crs,
                       transform=transform, nodata=nodata) as dst:
        dst.write(values)
    return path


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    return write_raster(tmp_path_factory.mktemp("ortho") / "ortho.tif")


def test_tiles_are_north_up_to_true_north_at_the_edge_of_a_utm_zone(raster):
    source = RasterSource(raster, (32, 128), tile_metres=64.0, spacing=48.0, tile_px=128)
    assert len(source) == 25 and source.skipped == 0  # a 5 x 5 grid of whole 64 m tiles, 48 m apart, in 256 m
    assert np.degrees(source.grid.north).mean() == pytest.approx(-2.23, abs=0.05)  # east of the central meridian
    offsets = (np.arange(128) - 63.5) * 0.5
    east, south = np.meshgrid(offsets, offsets)
    errors, unrotated = [], []
    for i in (0, 12, 24):
        ce, cn = local_frame().transform(*source.grid.xy[i])
        expected = pattern(ce + east, cn - south).transpose(1, 2, 0)
        errors.append(np.abs(source.tile(i).astype(float) - expected)[4:-4, 4:-4].mean())
        # the same tile cut along the grid's north instead: the convergence turns it by 2.2 deg
        cols, rows = sample_positions(source.transform, source.grid.xy[i], 0.0, 64.0, 128)
        with rasterio.open(raster) as src:
            data = src.read().transpose(1, 2, 0).astype(np.float32)
        grid_up = cv2.remap(data, cols.astype(np.float32), rows.astype(np.float32), cv2.INTER_LINEAR)
        unrotated.append(np.abs(grid_up - expected)[4:-4, 4:-4].mean())
    assert max(errors) < 4.0  # grey levels: bilinear resampling of 0.5 m stripes only
    assert min(unrotated) > 5 * max(errors)
    lat, lon = source.latlon[12]
    assert (lat, lon) == pytest.approx(ORIGIN, abs=1e-6)  # the centre tile sits on the raster's centre


def test_mostly_nodata_tiles_are_skipped_and_counted(tmp_path):
    path = write_raster(tmp_path / "half.tif", nodata_right=True)
    source = RasterSource(path, (32, 128), tile_metres=64.0, spacing=48.0, tile_px=128)
    # the two eastern columns of tiles are 85 % and 100 % nodata; the middle one 10 %, kept
    assert source.candidates == 25 and source.skipped == 10 and len(source) == 15
    assert source.identity()["skipped_nodata"] == 10


@pytest.mark.parametrize("problem, message", [
    ("no_crs", "has no CRS"),
    ("identity", "has no georeference"),
    ("rotated", "rotated or sheared transform"),
    ("geographic", "geographic CRS"),
    ("one_band", "has 1 band"),
    ("coarse", "coarser than the model's"),
    ("small", "less than one 64-unit tile"),
])
def test_bad_rasters_are_refused_with_a_specific_message(tmp_path, problem, message):
    path = tmp_path / f"{problem}.tif"
    flat = np.full((3, 200, 200), 100, np.uint8)
    if problem == "no_crs":
        write_raster(path, crs=None, values=flat, size_m=100.0)
    elif problem == "identity":
        write_raster(path, transform=Affine.identity(), values=flat, size_m=100.0)
    elif problem == "rotated":
        write_raster(path, transform=Affine(0.5, 0.1, 500000.0, 0.1, -0.5, 5300000.0), values=flat, size_m=100.0)
    elif problem == "geographic":
        write_raster(path, crs="EPSG:4326", transform=from_origin(11.9, 48.1, 1e-5, 1e-5), values=flat, size_m=100.0)
    elif problem == "one_band":
        write_raster(path, bands=1, values=flat[:1], size_m=100.0)
    elif problem == "coarse":
        write_raster(path, pixel=2.0, values=np.full((3, 200, 200), 100, np.uint8), size_m=400.0)
    else:
        write_raster(path, values=np.full((3, 100, 100), 100, np.uint8), size_m=50.0)
    with pytest.raises(DatabaseError, match=message):
        RasterSource(path, (32, 128), tile_metres=64.0, spacing=48.0)


def test_16_bit_imagery_is_scaled_by_the_stated_rule(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(1000, 3000, size=(3, 200, 200)).astype(np.uint16)
    path = write_raster(tmp_path / "u16.tif", dtype="uint16", values=values, size_m=100.0)
    source = RasterSource(path, (32, 128), tile_metres=64.0, spacing=48.0, tile_px=64)
    rule = source.identity()["scaling"]
    assert "uint16" in rule["rule"] and "percentiles 2 -> 0 and 98 -> 255" in rule["rule"]
    assert rule["low"][0] == pytest.approx(np.percentile(values[0], 2), rel=0.02)
    tile = source.tile(0)
    assert tile.dtype == np.uint8 and 100 < tile.mean() < 155  # uniform values spread over the 8-bit range


def test_a_database_is_built_from_the_raster(raster, tmp_path):
    from geoapp.files import sha256_file
    from geoapp.model import read_metadata
    from geoapp.retrieval.build import build_database
    from geoapp.testing import demo_model_config, random_checkpoint

    config = demo_model_config(sat_height=32, sat_width=128, ground_height=32, base_channels=8)
    checkpoint = random_checkpoint(tmp_path / "tiny.safetensors", config)
    source = RasterSource(raster, (32, 128), tile_metres=64.0, spacing=48.0, tile_px=128)
    db_path = build_database(source, checkpoint, tmp_path / "db", batch_size=8, show_progress=False)
    db = ReferenceDatabase.open(db_path, model_config=config)
    assert len(db) == 25 and np.allclose(db.latlon, source.latlon)
    assert read_metadata(checkpoint)["model_config"]["sat_width"] == 128
    identity = json.loads((db_path / "metadata.json").read_text())["source"]
    assert identity["raster_sha256"] == sha256_file(raster) and identity["crs"] == UTM32
    assert identity["spacing_metres"] == 48.0 and identity["tile_metres"] == 64.0


def test_tiles_at_given_locations_keep_their_order_and_refuse_one_outside(raster):
    grid = RasterSource(raster, (32, 128), tile_metres=64.0, spacing=48.0, tile_px=128)
    wanted = grid.latlon[[12, 3, 20]]
    located = RasterSource(raster, (32, 128), tile_metres=64.0, locations=wanted, tile_px=128)
    assert np.allclose(located.latlon, wanted, atol=1e-9) and located.skipped == 0
    assert np.array_equal(located.tile(1), grid.tile(3))  # the same centre, the same pixels
    with pytest.raises(DatabaseError, match="1 of the 2 locations have tiles mostly outside"):
        RasterSource(raster, (32, 128), tile_metres=64.0, locations=np.array([wanted[0], [48.1, 12.0]]))
    with pytest.raises(DatabaseError, match="spacing .* or their locations"):
        RasterSource(raster, (32, 128), tile_metres=64.0)


def test_the_synthetic_world_exported_as_a_geotiff_gives_back_its_rendered_tiles(tmp_path):
    """A tiny world written as a UTM GeoTIFF (``python -m geoapp.synth geotiff``'s function): the tile cut from the
    raster at a location's lat/lon is the tile the world renders there (north-up, same footprint), and a tile cut
    5 m off is not."""
    from geoapp.synth.geotiff import export_geotiff, utm_crs
    from geoapp.synth.views import RenderConfig, render_satellite
    from geoapp.synth.world import WorldConfig, generate_world

    world = generate_world(WorldConfig(seed=1, n_train=2, n_val=0, n_test=2, tile_metres=64.0, block_metres=256.0,
                                       district_metres=200.0, metres_per_pixel=0.5))
    path = tmp_path / "world.tif"
    written = export_geotiff(world, path, log=lambda message: None)
    assert written["crs"] == utm_crs(world.geo.origin_lat, world.geo.origin_lon) == "EPSG:32615"
    h, w = world.shape
    points = [(w * 0.3, h * 0.4), (w * 0.7, h * 0.6), (w * 0.5, h * 0.5)]
    latlon = np.array([world.geo.latlon(x, y) for x, y in points])
    source = RasterSource(path, (32, 128), tile_metres=64.0, locations=latlon, tile_px=128)
    errors = []
    for i, (x, y) in enumerate(points):
        rendered = render_satellite(world, x, y, RenderConfig(tile_metres=64.0, tile_size=128)).astype(float)
        errors.append(np.abs(source.tile(i).astype(float) - rendered)[8:-8, 8:-8].mean())
    east = world.geo.latlon(points[2][0] + 10, points[2][1])  # 10 world pixels = 5 m east
    off = RasterSource(path, (32, 128), tile_metres=64.0, locations=np.array([east]), tile_px=128)
    rendered = render_satellite(world, *points[2], RenderConfig(tile_metres=64.0, tile_size=128)).astype(float)
    shifted = np.abs(off.tile(0).astype(float) - rendered)[8:-8, 8:-8].mean()
    assert max(errors) < 3.0 and shifted > 6 * max(errors)  # measured: about 1 grey level, and 23 at 5 m off


def test_build_db_takes_a_raster_on_a_grid_or_at_listed_locations(raster, tmp_path, capsys):
    from geoapp.build_db import main as build_db
    from geoapp.model import build_model, save_model
    from geoapp.retrieval.raster import training_footprint
    from geoapp.testing import demo_model_config

    world = tmp_path / "world"  # the training data the checkpoint records: a world whose manifest says 64 m tiles
    world.mkdir()
    (world / "dataset.json").write_text(json.dumps({"geometry": {"tile_metres": 64.0}}))
    model = build_model(demo_model_config(sat_height=32, sat_width=128, ground_height=32, base_channels=8)).eval()
    checkpoint = save_model(tmp_path / "tiny.safetensors", model,
                            {"train_config": {"dataset": "synth", "data_root": str(world)}})
    assert training_footprint({"train_config": {"dataset": "synth", "data_root": str(world)}})[0] == 64.0
    assert training_footprint({"train_config": {"dataset": "vigor", "data_root": "/nowhere"}})[0] == 73.0
    # the checkpoint's own record wins over a training folder that is no longer here
    assert training_footprint({"dataset": {"tile_metres": 58.5},
                               "train_config": {"dataset": "synth", "data_root": "/nowhere"}}) == (
        58.5, "the checkpoint's record of its training tiles")
    assert build_db(["--checkpoint", str(checkpoint), "--raster", str(raster), "--spacing", "48", "--out",
                     str(tmp_path / "grid"), "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "25 north-up 64 m tiles (the training world's manifest" in out and "0 of 25 skipped" in out
    assert len(ReferenceDatabase.open(tmp_path / "grid")) == 25
    grid = RasterSource(raster, (32, 128), tile_metres=64.0, spacing=48.0)
    csv_path = tmp_path / "where.csv"
    csv_path.write_text("name,lat,lon\n" + "".join(f"p{i},{lat:.9f},{lon:.9f}\n" for i, (lat, lon) in
                                                     enumerate(grid.latlon[[7, 2]])))
    assert build_db(["--checkpoint", str(checkpoint), "--raster", str(raster), "--locations", str(csv_path),
                     "--out", str(tmp_path / "listed"), "--first-stage-dims", "0"]) == 0
    assert np.allclose(ReferenceDatabase.open(tmp_path / "listed").latlon, grid.latlon[[7, 2]], atol=1e-8)
    with pytest.raises(SystemExit):
        build_db(["--checkpoint", str(checkpoint), "--raster", str(raster), "--out", str(tmp_path / "x")])
    assert "--raster needs --spacing M (a grid) or --locations CSV" in capsys.readouterr().err

    # the app serves it with the orthophoto under its map and says where the tiles came from
    from geoapp.app.context import AppContext
    from geoapp.app.handlers import coverage_text
    from geoapp.retrieval.engine import Localizer

    ctx = AppContext.create(Localizer(checkpoint, tmp_path / "grid", device="cpu"), cache_dir=tmp_path / "cache")
    assert ctx.world is not None and ctx.world.south < ORIGIN[0] < ctx.world.north
    assert ctx.cone_length_m == 32.0  # half the 64 m tile
    assert "the orthophoto ortho.tif (EPSG:32632, 0.5 m pixels; north-up 64 m tiles)" in coverage_text(ctx)


def test_overview_for_the_map_is_a_north_up_lat_lon_image_of_the_raster(raster):
    """The app's map shows the orthophoto as a lat/lon image: at interior points its colour is the ground's there
    (within the resampling's blur), and not the colour of a point 3 m (a quarter stripe) away."""
    from geoapp.retrieval.raster import raster_overview

    rgb, (south, west, north, east) = raster_overview(raster, max_side=256)
    assert rgb.dtype == np.uint8 and max(rgb.shape[:2]) == 256
    assert south < ORIGIN[0] < north and west < ORIGIN[1] < east
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(40, rgb.shape[0] - 40, 50), rng.integers(40, rgb.shape[1] - 40, 50)
    lat = north - (rows + 0.5) / rgb.shape[0] * (north - south)
    lon = west + (cols + 0.5) / rgb.shape[1] * (east - west)
    aeqd = f"+proj=aeqd +lat_0={ORIGIN[0]} +lon_0={ORIGIN[1]} +datum=WGS84 +units=m"
    e, n = Transformer.from_crs("EPSG:4326", aeqd, always_xy=True).transform(lon, lat)
    shown = rgb[rows, cols].astype(float)
    here = np.abs(shown - pattern(np.asarray(e), np.asarray(n)).T).mean()
    away = np.abs(shown - pattern(np.asarray(e) + 3.0, np.asarray(n) + 3.0).T).mean()
    assert here < 5 and away > 40  # measured: 1.3 and 80 grey levels
