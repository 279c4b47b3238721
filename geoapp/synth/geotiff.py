"""The synthetic world's satellite map as a georeferenced GeoTIFF in a projected CRS (UTM by default).

So that the orthophoto path (``python -m geoapp.build_db --raster``) is tested against exact truth: every pixel of
the output is the world's satellite view sampled (bicubic) at the WGS84 position the CRS gives that pixel, through
the world's own geographic frame (:class:`~geoapp.synth.geo.GeoFrame`), so the raster carries the world's
geometry exactly, the meridian convergence of the CRS included. Written in strips of rows: bounded memory.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from pyproj import CRS, Transformer

from geoapp.synth.world import World

STRIP_ROWS = 256


def utm_crs(lat: float, lon: float) -> str:
    """The UTM zone's EPSG code of a position."""
    zone = int(math.floor((lon + 180.0) / 6.0)) + 1
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def export_geotiff(world: World, path: str | Path, crs: str | None = None, pixel_m: float | None = None,
                   log=print) -> dict:
    """Write ``world.sat`` to ``path`` in ``crs`` (default: the UTM zone of the world's centre) at ``pixel_m`` metres
    per pixel (default: the world's own). Returns what was written (CRS, size, transform, bounds)."""
    import rasterio
    from rasterio.transform import from_origin

    geo = world.geo
    crs = crs or utm_crs(geo.origin_lat, geo.origin_lon)
    if not CRS.from_user_input(crs).is_projected:
        raise ValueError(f"the export's CRS must be projected (metres), got {crs}")
    pixel_m = float(pixel_m or world.mpp)
    to_grid = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    to_geo = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    h, w = world.shape
    edge_x = np.concatenate([np.linspace(0, w, 64), np.full(64, w), np.linspace(w, 0, 64), np.zeros(64)])
    edge_y = np.concatenate([np.zeros(64), np.linspace(0, h, 64), np.full(64, h), np.linspace(h, 0, 64)])
    lat, lon = geo.latlon(edge_x, edge_y)
    gx, gy = to_grid.transform(lon, lat)
    left, right = math.floor(min(gx) / pixel_m) * pixel_m, math.ceil(max(gx) / pixel_m) * pixel_m
    bottom, top = math.floor(min(gy) / pixel_m) * pixel_m, math.ceil(max(gy) / pixel_m) * pixel_m
    width, height = round((right - left) / pixel_m), round((top - bottom) / pixel_m)
    transform = from_origin(left, top, pixel_m, pixel_m)
    profile = dict(driver="GTiff", width=width, height=height, count=3, dtype="uint8", crs=crs, transform=transform,
                   nodata=0, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        for row0 in range(0, height, STRIP_ROWS):
            rows = min(STRIP_ROWS, height - row0)
            cols, rr = np.meshgrid(np.arange(width) + 0.5, np.arange(row0, row0 + rows) + 0.5)
            x, y = left + cols * pixel_m, top - rr * pixel_m
            lon_s, lat_s = to_geo.transform(x, y)
            px, py = geo.pixel(np.asarray(lat_s), np.asarray(lon_s))
            # world pixel centres sit at integer + 0.5 (views.render_satellite's convention); cv2 samples at integers
            strip = cv2.remap(world.sat, (px - 0.5).astype(np.float32), (py - 0.5).astype(np.float32),
                              cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            strip[strip.max(axis=2) == 0] = (1, 1, 1)  # a black pixel inside the world is data, not nodata
            outside = (px < 0) | (px > w) | (py < 0) | (py > h)
            strip[outside] = 0
            dst.write(strip.transpose(2, 0, 1), window=rasterio.windows.Window(0, row0, width, rows))
    log(f"wrote {path}: {width} x {height} px at {pixel_m:g} m in {crs}")
    return {"crs": crs, "size": [width, height], "pixel_m": pixel_m, "bounds": [left, bottom, right, top]}
