"""Reference tiles cut from a georeferenced orthophoto (GeoTIFF / cloud-optimised GeoTIFF, any projected CRS).

:class:`RasterSource` is a build source (see :mod:`geoapp.retrieval.build`): north-up square tiles of the ground
footprint the model was trained on, centred on a grid of the user's spacing in the raster's CRS. Each tile is
sampled from a window of the raster around its centre (windowed reads: memory stays bounded whatever the raster's
size), rotated so that its top looks to TRUE north: a projected grid's north differs from true north by the meridian
convergence (about 2 degrees at the edge of a UTM zone in mid latitudes), which would otherwise turn every heading.
Tiles that are mostly nodata (an orthophoto's border) are skipped, and counted.

Rasters that cannot be used are refused with what is wrong and what is accepted: no CRS, no georeference, a
geographic CRS, a rotated or sheared transform, fewer than 3 bands, a resolution much coarser than the model's, an
area smaller than one tile. 16-bit and float imagery is scaled to 8 bits per band between its 2nd and 98th
percentiles (measured on a decimated read of the whole raster), and the rule is recorded.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pyproj import Transformer

from ..data.polar import polar_transform
from ..data.transforms import to_tensor
from ..files import sha256_file
from .build import LAT_COLUMNS, LON_COLUMNS, is_number, thumbnail_of
from .database import DatabaseError

MAX_NODATA_SHARE = 0.5  # a tile with more of its area outside the raster's data is skipped
OVERVIEW_SIDE = 1024  # the decimated read that finds the nodata tiles and the scaling percentiles
PERCENTILES = (2.0, 98.0)  # 16-bit / float imagery: per band, these percentiles map to 0 and 255
# tiles are cut at the size the training tiles had (CVUSA's and the synthetic world's 750 px), whatever the raster's
# pixel: cut at the raster's own 256 px (0.5 m) and bilinear, the demo model lost R@1 against its rendered tiles; at
# 750 px, bicubic, none (docs/results.md, "From an orthophoto")
TILE_PX = 750
MAX_COARSER = 2.0  # refuse a raster whose pixel is this many times the model's ground sampling or coarser


@dataclass(frozen=True)
class TileGrid:
    """Tile centres in the raster's CRS (x, y in its units), their lat/lon and true-north directions."""

    xy: np.ndarray  # N x 2
    latlon: np.ndarray  # N x 2
    north: np.ndarray  # N: the grid azimuth of true north, radians clockwise from the grid's up


def training_footprint(meta: dict) -> tuple[float, str]:
    """The ground footprint (metres) of the tiles a checkpoint was trained on, and where it was read: the checkpoint's
    own record, else the training dataset's manifest (the synthetic world records it) when its folder is here, else
    the layout's approximate one."""
    from ..data.datasets import DATASETS

    recorded = (meta.get("dataset") or {}).get("tile_metres")
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) and recorded > 0:
        return float(recorded), "the checkpoint's record of its training tiles"
    trained = meta.get("train_config") or {}
    manifest = Path(trained.get("data_root") or "") / "dataset.json"
    if trained.get("data_root") and manifest.is_file():
        geometry = json.loads(manifest.read_text(encoding="utf-8")).get("geometry") or {}
        if geometry.get("tile_metres"):
            return float(geometry["tile_metres"]), f"the training world's manifest {manifest}"
    dataset = DATASETS.get(trained.get("dataset", ""))
    if dataset is None:
        raise DatabaseError("the checkpoint records no training dataset whose tile footprint is known: give "
                            "--tile-metres M (the ground width of the tiles the model was trained on)")
    return float(dataset.default_tile_metres), f"{trained['dataset']}'s approximate tile footprint"


def read_locations(path: str | Path) -> np.ndarray:
    """An N x 2 lat/lon array from a CSV (header optional; without one the columns are lat,lon; with one, the tile
    folder CSV's names for latitude and longitude)."""
    rows = [r for r in csv.reader(Path(path).read_text(encoding="utf-8-sig").splitlines()) if any(c.strip() for c in r)]
    if not rows:
        raise DatabaseError(f"{path} lists no locations")
    header = [c.strip().lower() for c in rows[0]]
    has_header = not is_number(header[0])
    cols = (0, 1)
    if has_header:
        try:
            cols = tuple(next(header.index(n) for n in names if n in header) for names in (LAT_COLUMNS, LON_COLUMNS))
        except StopIteration:
            raise DatabaseError(f"{path}:1: header {rows[0]} needs a latitude ({'/'.join(LAT_COLUMNS)}) and a "
                                f"longitude ({'/'.join(LON_COLUMNS)}) column") from None
        rows = rows[1:]
    out = []
    for line, row in enumerate(rows, 2 if has_header else 1):
        try:
            lat, lon = float(row[cols[0]]), float(row[cols[1]])
        except (IndexError, ValueError):
            raise DatabaseError(f"{path}:{line}: expected lat,lon numbers, got {row}") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise DatabaseError(f"{path}:{line}: lat/lon out of range: {lat}, {lon}")
        out.append((lat, lon))
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def model_ground_sampling(tile_metres: float, sat_height: int) -> float:
    """Metres per polar row: the polar image's H rows span the tile's half width (conventions §3)."""
    return tile_metres / 2.0 / sat_height


class RasterSource:
    """North-up tiles of ``tile_metres`` cut from ``raster`` at ``spacing`` metres (see the module docstring)."""

    def __init__(self, raster: str | Path, sat_size: tuple[int, int], tile_metres: float, spacing: float | None = None,
                 tile_px: int | None = None, locations: np.ndarray | None = None):
        """Tiles on a grid ``spacing`` metres apart, or centred on ``locations`` (N x 2 lat/lon, in that order:
        row i of the database is location i; a location whose tile leaves the raster's data is an error)."""
        import rasterio

        self.raster = Path(raster)
        if not self.raster.is_file():
            raise DatabaseError(f"--raster {self.raster} does not exist")
        if (spacing is None) == (locations is None):
            raise DatabaseError("give the tiles' spacing (--spacing M) or their locations (--locations CSV), not both")
        self.sat_size, self.tile_metres = sat_size, float(tile_metres)
        self.spacing = None if spacing is None else float(spacing)
        if (self.spacing is not None and self.spacing <= 0) or self.tile_metres <= 0:
            raise DatabaseError(f"spacing and tile footprint must be positive metres, got {spacing} and {tile_metres}")
        with rasterio.open(self.raster) as src:
            self.metres_per_unit = check_raster(src, self.raster)
            self.pixel_m = abs(src.transform.a) * self.metres_per_unit
            check_resolution(self.raster, self.pixel_m, self.tile_metres, sat_size[0])
            self.tile_px = int(tile_px or TILE_PX)
            self.scaling = scaling_rule(src)
            self.crs = src.crs.to_string()
            self.transform = src.transform
            tile_units = self.tile_metres / self.metres_per_unit
            if locations is None:
                candidates = grid_centres(src, tile_units, self.spacing / self.metres_per_unit)
            else:
                candidates = located_centres(self.crs, np.asarray(locations, dtype=np.float64).reshape(-1, 2))
            share = nodata_shares(src, candidates, tile_units)
        keep = share <= MAX_NODATA_SHARE
        if locations is not None and not keep.all():
            bad = np.flatnonzero(~keep)
            raise DatabaseError(f"{len(bad)} of the {len(keep)} locations have tiles mostly outside {self.raster}'s "
                                f"data (the first: location {bad[0] + 1}, lat/lon {tuple(locations[bad[0]])})")
        self.candidates, self.skipped = len(candidates), int((~keep).sum())
        self.grid = true_north_grid(self.crs, candidates[keep])
        self.locations_sha256 = None if locations is None else hashlib.sha256(
            np.ascontiguousarray(locations, dtype=np.float64).tobytes()).hexdigest()
        self.latlon = self.grid.latlon
        self._src = None  # opened on first load, in each worker process

    def __len__(self) -> int:
        return len(self.grid.xy)

    @property
    def paths(self) -> list[str]:
        return [f"{self.raster}#x={x:.2f},y={y:.2f}" for x, y in self.grid.xy]

    def identity(self) -> dict:
        return {"kind": "raster", "raster": str(self.raster.resolve()), "raster_sha256": sha256_file(self.raster),
                "crs": self.crs, "pixel_metres": self.pixel_m, "tile_metres": self.tile_metres,
                "tile_px": self.tile_px, "spacing_metres": self.spacing, "locations_sha256": self.locations_sha256,
                "grid_candidates": self.candidates,
                "skipped_nodata": self.skipped, "max_nodata_share": MAX_NODATA_SHARE, "scaling": self.scaling}

    def tile(self, index: int) -> np.ndarray:
        """The north-up RGB tile (uint8, tile_px x tile_px) centred on grid point ``index``."""
        if self._src is None:
            import rasterio

            self._src = rasterio.open(self.raster)
        cols, rows = sample_positions(self.transform, self.grid.xy[index], self.grid.north[index],
                                      self.tile_metres / self.metres_per_unit, self.tile_px)
        window, origin = covering_window(cols, rows)
        data = self._src.read((1, 2, 3), window=window, boundless=True, masked=True)
        image = scale_to_uint8(np.ma.filled(data.astype(np.float32), 0.0), self.scaling)
        map_x, map_y = (cols - origin[0]).astype(np.float32), (rows - origin[1]).astype(np.float32)
        return cv2.remap(np.ascontiguousarray(image.transpose(1, 2, 0)), map_x, map_y, cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def load(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        tile = self.tile(index)
        return to_tensor(polar_transform(tile, *self.sat_size)), thumbnail_of(tile)


# ------------------------------------------------------------------------------------------ checks


def check_raster(src, path: Path) -> float:
    """Refuse what cannot be cut into north-up tiles; return the CRS's metres per unit."""
    if src.crs is None:
        raise DatabaseError(f"{path} has no CRS: a reference raster must be a georeferenced GeoTIFF in a projected "
                            "CRS (UTM, a national grid); assign one with gdal_edit.py -a_srs")
    t = src.transform
    if t.is_identity or (t.a == 1 and t.e == 1 and t.c == 0 and t.f == 0):
        raise DatabaseError(f"{path} has no georeference (its transform is the identity): it needs a geotransform or "
                            "a world file")
    if t.b != 0 or t.d != 0:
        raise DatabaseError(f"{path} has a rotated or sheared transform ({t.b:g}, {t.d:g} off-diagonal): warp it to a "
                            "north-up grid first (gdalwarp)")
    if not src.crs.is_projected:
        raise DatabaseError(f"{path} is in a geographic CRS ({src.crs.to_string()}): reproject it to a projected CRS "
                            "in metres, e.g. its UTM zone (gdalwarp -t_srs EPSG:326xx)")
    if src.count < 3:
        raise DatabaseError(f"{path} has {src.count} band(s); an orthophoto needs red, green and blue (bands 1-3)")
    factor = src.crs.linear_units_factor[1]
    if abs(abs(t.a) - abs(t.e)) > 1e-6 * abs(t.a):
        raise DatabaseError(f"{path} has non-square pixels ({abs(t.a):g} x {abs(t.e):g}); resample it to square ones")
    return float(factor)


def check_resolution(path: Path, pixel_m: float, tile_metres: float, sat_height: int) -> None:
    model_m = model_ground_sampling(tile_metres, sat_height)
    if pixel_m >= MAX_COARSER * model_m:
        raise DatabaseError(f"{path} has {pixel_m:.2f} m pixels, {pixel_m / model_m:.1f}x coarser than the model's "
                            f"{model_m:.2f} m per polar row ({tile_metres:g} m tiles, {sat_height} rows): its tiles "
                            f"would be blurred; use imagery of {model_m * MAX_COARSER:.2f} m per pixel or finer")


def scaling_rule(src) -> dict:
    """How the raster's values become 8 bits: as they are for uint8, else per-band percentiles of a decimated read."""
    if src.dtypes[0] == "uint8":
        return {"rule": "uint8 as stored"}
    data = src.read((1, 2, 3), out_shape=(3, *_overview_shape(src)), masked=True)
    lows, highs = [], []
    for band in data:
        values = band.compressed() if np.ma.isMaskedArray(band) else band.ravel()
        lo, hi = np.percentile(values, PERCENTILES) if values.size else (0.0, 1.0)
        lows.append(float(lo))
        highs.append(float(hi) if hi > lo else float(lo) + 1.0)
    return {"rule": f"{src.dtypes[0]}: per band, percentiles {PERCENTILES[0]:g} -> 0 and {PERCENTILES[1]:g} -> 255",
            "low": lows, "high": highs}


def scale_to_uint8(data: np.ndarray, scaling: dict) -> np.ndarray:
    if "low" not in scaling:
        return np.clip(data, 0, 255).astype(np.uint8)
    low = np.asarray(scaling["low"], np.float32)[:, None, None]
    high = np.asarray(scaling["high"], np.float32)[:, None, None]
    return np.clip((data - low) / (high - low) * 255.0 + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------ geometry


def _overview_shape(src) -> tuple[int, int]:
    scale = max(1.0, max(src.height, src.width) / OVERVIEW_SIDE)
    return max(1, int(src.height / scale)), max(1, int(src.width / scale))


def grid_centres(src, tile_units: float, spacing_units: float) -> np.ndarray:
    """Grid points at ``spacing`` in the CRS whose whole tile lies inside the raster's bounds (N x 2)."""
    b = src.bounds
    half = tile_units / 2.0
    if b.right - b.left < tile_units or b.top - b.bottom < tile_units:
        raise DatabaseError(f"the raster covers {b.right - b.left:.0f} x {b.top - b.bottom:.0f} CRS units, less than "
                            f"one {tile_units:.0f}-unit tile: it must be at least one tile wide and high")
    xs = np.arange(b.left + half, b.right - half + 1e-9, spacing_units)
    ys = np.arange(b.top - half, b.bottom + half - 1e-9, -spacing_units)  # north to south, rows as read
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def located_centres(crs: str, latlon: np.ndarray) -> np.ndarray:
    """The raster-CRS coordinates (N x 2) of lat/lon locations."""
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(latlon[:, 1], latlon[:, 0])
    return np.stack([np.asarray(x, np.float64), np.asarray(y, np.float64)], axis=1).reshape(-1, 2)


def nodata_shares(src, centres: np.ndarray, tile_units: float) -> np.ndarray:
    """Per centre, the share of its (axis-aligned) tile that holds no data, from a decimated read of the mask."""
    shape = _overview_shape(src)
    valid = src.dataset_mask(out_shape=shape) > 0  # GDAL's mask: nodata values, alpha band or internal mask
    scale_x, scale_y = src.width / shape[1], src.height / shape[0]
    inverse = ~src.transform
    out = np.empty(len(centres))
    for i, (x, y) in enumerate(centres):
        c0, r0 = inverse @ (x - tile_units / 2, y + tile_units / 2)
        c1, r1 = inverse @ (x + tile_units / 2, y - tile_units / 2)
        cols = slice(max(0, int(c0 / scale_x)), max(1, int(math.ceil(c1 / scale_x))))
        rows = slice(max(0, int(r0 / scale_y)), max(1, int(math.ceil(r1 / scale_y))))
        out[i] = 1.0 - float(valid[rows, cols].mean()) if valid[rows, cols].size else 1.0
    return out


def true_north_grid(crs: str, xy: np.ndarray) -> TileGrid:
    """Lat/lon of the centres and the grid azimuth of true north at each (meridian convergence), measured by
    projecting a point a little north of each centre."""
    to_geo = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    to_grid = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    lon, lat = to_geo.transform(xy[:, 0], xy[:, 1])
    nx, ny = to_grid.transform(lon, np.asarray(lat) + 1e-4)
    north = np.arctan2(np.asarray(nx) - xy[:, 0], np.asarray(ny) - xy[:, 1])
    return TileGrid(xy, np.stack([lat, lon], axis=1).astype(np.float64).reshape(-1, 2), north)


def sample_positions(transform, centre, north: float, tile_units: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Raster (col, row) of every pixel of a north-up ``size`` x ``size`` tile centred on ``centre`` (CRS units):
    tile column u runs east, row v south, each rotated by the grid azimuth of true north."""
    step = tile_units / size
    offsets = (np.arange(size) - (size - 1) / 2.0) * step
    east, south = np.meshgrid(offsets, offsets)
    north_m = -south
    x = centre[0] + east * math.cos(north) + north_m * math.sin(north)
    y = centre[1] - east * math.sin(north) + north_m * math.cos(north)
    inverse = ~transform
    cols = inverse.a * x + inverse.b * y + inverse.c - 0.5  # pixel centres at integer positions, as cv2 samples
    rows = inverse.d * x + inverse.e * y + inverse.f - 0.5
    return cols, rows


def covering_window(cols: np.ndarray, rows: np.ndarray):
    """The raster window holding every sampled position (two pixels of margin for bicubic), and its origin."""
    from rasterio.windows import Window

    c0, r0 = int(math.floor(cols.min())) - 2, int(math.floor(rows.min())) - 2
    c1, r1 = int(math.ceil(cols.max())) + 3, int(math.ceil(rows.max())) + 3
    return Window(c0, r0, c1 - c0, r1 - r0), (c0, r0)


def raster_overview(path: str | Path, max_side: int = 2048) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The orthophoto as a north-up lat/lon image of at most ``max_side`` pixels a side (a map's base layer) and its
    (south, west, north, east) bounds; scaled to 8 bits by the rule the database records (:func:`scaling_rule`),
    nodata black. GDAL reads the raster decimated (through its overviews when it has them), so memory stays bounded."""
    import rasterio
    from rasterio.warp import Resampling, reproject, transform_bounds

    with rasterio.open(path) as src:
        check_raster(src, Path(path))
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        metres_wide = (east - west) * 111_320.0 * math.cos(math.radians((south + north) / 2))
        metres_high = (north - south) * 110_540.0
        scale = max_side / max(metres_wide, metres_high)
        height, width = max(1, round(metres_high * scale)), max(1, round(metres_wide * scale))
        small = src.read((1, 2, 3), out_shape=(3, *_overview_shape(src)), masked=True)  # decimated first
        small_transform = src.transform @ src.transform.scale(src.width / small.shape[2], src.height / small.shape[1])
        rgb = scale_to_uint8(np.ma.filled(small.astype(np.float32), 0), scaling_rule(src))
        out = np.zeros((3, height, width), np.uint8)
        dst_transform = rasterio.transform.from_bounds(west, south, east, north, width, height)
        reproject(rgb, out, src_transform=small_transform, src_crs=src.crs, dst_transform=dst_transform,
                  dst_crs="EPSG:4326", resampling=Resampling.bilinear, src_nodata=None)
    return np.ascontiguousarray(out.transpose(1, 2, 0)), (south, west, north, east)
