"""Satellite tiles and ground panoramas rendered from the same world.

Satellite tile: an orthographic, north-up crop of the shaded world centred on the camera, covering
``tile_metres`` and resampled to ``tile_size`` pixels (its centre, index S/2, is the camera position as
in conventions §3).

Panorama: a "voxel space" column renderer over the height field. Panorama column ``c`` looks toward
azimuth ``c / W * 360 - 180`` (conventions §2: column 0 south, W/4 west, W/2 north, 3W/4 east). For every
column a ray is marched outward (fine steps near the camera, ~2 % of the distance further out); each
sample's top is projected to a row (equirectangular in elevation, ``pano_vfov`` degrees over the image
height, horizon at ``horizon`` of the height), and a running minimum of the projected rows gives
occlusion: pixel (r, c) shows the first sample whose top reaches above row r. Raised objects (buildings,
trees) show their wall / foliage colour (a sloping roof seen below its ridge shows the roof colour, as
from above), everything else its top colour (fields, lawns, roads, water); then distance haze, which is
complete at ``haze_factor`` x half the tile, so the ground visible in the panorama is roughly the tile's
disc (the part the polar transform uses), and a sky with a few clouds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np

from geoapp.synth import palette

if TYPE_CHECKING:
    from geoapp.synth.world import World

CVUSA_VFOV = 360.0 * 224 / 1232  # 65.45 degrees: CVUSA panoramas are 224 x 1232 for 360 degrees


@dataclass(frozen=True)
class RenderConfig:
    tile_size: int = 750
    tile_metres: float = 128.0
    pano_height: int = 128
    pano_width: int = 512
    pano_vfov: float = CVUSA_VFOV
    horizon: float = 0.5  # horizon row as a fraction of the panorama height, from the top
    camera_height: float = 2.0  # metres above the ground
    haze_factor: float = 1.15  # haze is complete at haze_factor * tile_metres / 2

    @property
    def view_distance(self) -> float:
        return self.haze_factor * self.tile_metres / 2.0


# ---------------------------------------------------------------------------------------------- satellite


@lru_cache(maxsize=4)
def _noise_bank(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed sensor-noise patterns (positive and negative parts, uint8) of (size + 64)^2 x 3."""
    rng = np.random.default_rng(20240611)
    n = np.clip(np.rint(rng.normal(0.0, 2.2, (size + 64, size + 64, 3))), -12, 12).astype(np.int16)
    pos = np.clip(n, 0, None).astype(np.uint8)
    neg = np.clip(-n, 0, None).astype(np.uint8)
    return pos, neg


def _photometric(img: np.ndarray, rng: np.random.Generator, gain_range: float, tint_range: float) -> np.ndarray:
    gain = 1.0 + rng.uniform(-gain_range, gain_range)
    tint = 1.0 + rng.uniform(-tint_range, tint_range, 3)
    return cv2.transform(img, np.diag(gain * tint).astype(np.float32))


def render_config_for(world: World) -> RenderConfig:
    """The rendering of ``world``'s own tile footprint (the default render config when it has no config)."""
    return RenderConfig(tile_metres=world.config.tile_metres) if world.config else RenderConfig()


def render_satellite(world: World, x: float, y: float, cfg: RenderConfig | None = None,
                     seed: int | None = None) -> np.ndarray:
    """Top-down tile (tile_size^2 x 3, RGB uint8) centred on world pixel coordinates (x, y); ``cfg`` defaults to
    :func:`render_config_for` the world.

    Tile pixel u samples the world at ``x - span/2 + (u + 0.5) * span/size`` (pixel-centre convention,
    bicubic), so the tile's continuous centre is exactly (x, y). ``seed`` (e.g. derived from the location
    id) adds mild exposure / tint variation and sensor noise; None renders the plain shaded world.
    """
    cfg = cfg or render_config_for(world)
    size = cfg.tile_size
    span = cfg.tile_metres / world.mpp  # tile extent in world pixels
    h, w = world.sat.shape[:2]
    x0, y0 = x - span / 2, y - span / 2
    ix0, iy0, ispan = int(round(x0)), int(round(y0)), int(round(span))
    aligned = abs(x0 - ix0) < 1e-6 and abs(y0 - iy0) < 1e-6 and abs(span - ispan) < 1e-6
    if aligned and ix0 >= 0 and iy0 >= 0 and ix0 + ispan <= w and iy0 + ispan <= h:
        # the common case (cameras sit on pixel corners): a plain resize of the crop, far cheaper than a warp
        tile = cv2.resize(world.sat[iy0:iy0 + ispan, ix0:ix0 + ispan], (size, size), interpolation=cv2.INTER_CUBIC)
    else:
        scale = span / size
        cx0, cy0 = max(0, int(math.floor(x0)) - 3), max(0, int(math.floor(y0)) - 3)
        cx1, cy1 = min(w, int(math.ceil(x0 + span)) + 4), min(h, int(math.ceil(y0 + span)) + 4)
        m = np.array([[scale, 0.0, x0 + 0.5 * scale - 0.5 - cx0], [0.0, scale, y0 + 0.5 * scale - 0.5 - cy0]])
        tile = cv2.warpAffine(world.sat[cy0:cy1, cx0:cx1], m, (size, size),
                              flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    if seed is None:
        return tile
    rng = np.random.default_rng([seed, 1])
    tile = _photometric(tile, rng, 0.05, 0.02)
    pos, neg = _noise_bank(size)
    oy, ox, ny, nx = (int(v) for v in rng.integers(0, 64, 4))
    tile = cv2.add(tile, pos[oy:oy + size, ox:ox + size])
    return cv2.subtract(tile, neg[ny:ny + size, nx:nx + size])


# ---------------------------------------------------------------------------------------------- panorama


@dataclass(frozen=True)
class _PanoGeometry:
    """Everything about a panorama that depends only on its configuration (cached)."""

    steps: np.ndarray  # K ray sample distances (m)
    inv_steps: np.ndarray  # 1 / steps
    off_x: np.ndarray  # W x K sample offsets from the camera in world pixels (east)
    off_y: np.ndarray  # W x K (south)
    col_bins: np.ndarray  # W x 1: c * (H + 1), the histogram bins of column c
    query_offset: np.ndarray  # H x W: c * K, start of column c in the W x K arrays
    tan_row: np.ndarray  # H x 1: tangent of each row's elevation
    along_y: np.ndarray  # W: True where the column looks mostly east / west (facades run north-south)
    horizon: float  # continuous row index of the horizon
    rows_per_rad: float
    sky: np.ndarray  # H x 2W x 3 float32 sky with clouds (a W-wide window is used per panorama)


@lru_cache(maxsize=8)
def _pano_geometry(hgt: int, wid: int, vfov: float, horizon: float, view_distance: float, mpp: float):
    # ray samples: 0.7 px apart near the camera, growing 2.2 % per step further out
    d, dists = 1.0, []
    while d <= view_distance:
        dists.append(d)
        d += max(0.7 * mpp, 0.022 * d)
    steps = np.asarray(dists, dtype=np.float32)
    n_k = len(steps)
    az = np.arange(wid, dtype=np.float64) / wid * 2.0 * np.pi - np.pi  # conventions §2
    dx, dy = np.sin(az), -np.cos(az)
    off_x = (dx[:, None] * steps[None, :] / mpp).astype(np.float32)
    off_y = (dy[:, None] * steps[None, :] / mpp).astype(np.float32)
    cols = np.arange(wid)
    rows = np.arange(hgt, dtype=np.float64)
    col_bins = (cols * (hgt + 1))[:, None]
    query_offset = np.broadcast_to(cols * n_k, (hgt, wid))
    rows_per_rad = hgt / math.radians(vfov)
    h0 = horizon * hgt - 0.5
    tan_row = np.tan((h0 - rows) / rows_per_rad).astype(np.float32)[:, None]
    sky, clouds = _sky(hgt, wid, vfov, horizon)
    sky_full = sky[:, None, :] * (1.0 - clouds[:, :, None]) + np.float32(246.0) * clouds[:, :, None]
    return _PanoGeometry(steps, (1.0 / steps).astype(np.float32), off_x, off_y, col_bins, query_offset,
                         tan_row, np.abs(dx) > np.abs(dy), h0, rows_per_rad, sky_full.astype(np.float32))


@lru_cache(maxsize=8)
def _sky(height: int, width: int, vfov: float, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """Sky colour per row (H x 3, float32) and a cloud-cover texture (H x 2W, float32 in [0, 1])."""
    rad_per_row = math.radians(vfov) / height
    h0 = horizon * height - 0.5
    el = (h0 - np.arange(height)) * rad_per_row
    t = np.clip(el / math.radians(40.0), 0.0, 1.0) ** 0.7
    sky = palette.SKY_HORIZON[None, :] * (1 - t[:, None]) + palette.SKY_ZENITH[None, :] * t[:, None]
    rng = np.random.default_rng(77)
    cells = max(4, width // 24)
    noise = rng.random((max(3, height // 12), cells)).astype(np.float32)
    noise = cv2.resize(noise, (2 * width, height), interpolation=cv2.INTER_CUBIC)
    clouds = np.clip((noise - 0.55) * 2.5, 0.0, 1.0) * np.clip(el / math.radians(6.0), 0.0, 1.0)[:, None]
    return sky.astype(np.float32), clouds.astype(np.float32)


class _RayHits(NamedTuple):
    """What each panorama pixel sees: the first sample of its column's ray whose top reaches its row."""

    sx: np.ndarray  # W x K sample positions in world pixels (east)
    sy: np.ndarray  # W x K (south)
    ray_h: np.ndarray  # W x K the samples' top heights
    flat: np.ndarray  # W * K: the samples' indices into the world rasters
    sample: np.ndarray  # H x W: the pixel's sample, an index into the W x K arrays
    kk: np.ndarray  # H x W: its step along the ray
    hit: np.ndarray  # H x W: False where the pixel sees the sky
    fidx: np.ndarray  # H x W: the sample's index into the world rasters
    dist: np.ndarray  # H x W: its distance from the camera (m)


def render_panorama(world: World, x: float, y: float, cfg: RenderConfig | None = None,
                    seed: int | None = None) -> np.ndarray:
    """North-aligned 360-degree panorama (pano_height x pano_width x 3, RGB uint8) from a camera
    ``camera_height`` metres above the ground at world pixel coordinates (x, y); ``cfg`` defaults to
    :func:`render_config_for` the world."""
    cfg = cfg or render_config_for(world)
    hgt, wid = cfg.pano_height, cfg.pano_width
    g = _pano_geometry(hgt, wid, cfg.pano_vfov, cfg.horizon, cfg.view_distance, world.mpp)
    wh, ww = world.height.shape
    ix, iy = min(max(int(x), 0), ww - 1), min(max(int(y), 0), wh - 1)
    ground = world.terrain[iy, ix] if world.kind[iy, ix] in palette.RAISED_KINDS else world.height[iy, ix]
    cam_z = np.float32(ground + cfg.camera_height)
    rays = _march(world, x, y, cam_z, g)

    kind = np.take(world.kind.reshape(-1), rays.fidx)
    tree = kind == palette.TREE
    wall = (tree | (kind == palette.BUILDING)) & ~_roof_from_below(world, rays, kind, g)
    # walls and foliage use the street-view side colour, everything else the top colour
    colour = np.take(world.street.reshape(-1, 3), rays.fidx + wall * world.height.size, axis=0).astype(np.float32)

    # out = colour * gain + haze * to_haze (+ window tint), computed per pixel, then the sky
    gain, tint = _facade_light(world, rays, g, cam_z, wall, tree)
    water = kind == palette.WATER  # water mirrors the hazy sky
    fog = np.clip(rays.dist * np.float32(1.0 / cfg.view_distance), 0.0, 1.0) ** 1.8
    to_haze = np.where(water, 0.55 + 0.45 * fog, fog)
    gain *= np.where(water, 0.45, 1.0) * (1.0 - fog)
    colour *= gain[:, :, None]
    colour += to_haze[:, :, None] * palette.SKY_HORIZON
    colour += (tint * (1.0 - fog))[:, :, None] * np.float32([18.0, 26.0, 38.0])

    rng = np.random.default_rng([seed, 2]) if seed is not None else None
    shift = int(rng.integers(0, wid)) if rng is not None else 0
    sky = ~rays.hit
    colour[sky] = g.sky[:, shift:shift + wid][sky]
    out = np.clip(colour, 0, 255).astype(np.uint8)
    if rng is not None:
        out = _photometric(out, rng, 0.07, 0.03)
    return out


def _march(world: World, x: float, y: float, cam_z: np.float32, g: _PanoGeometry) -> _RayHits:
    """March all columns at once: W x K samples, their projected top rows, and a running minimum for occlusion."""
    hgt, wid = g.tan_row.shape[0], g.off_x.shape[0]
    n_k = len(g.steps)
    wh, ww = world.height.shape
    sx = np.float32(x) + g.off_x
    sy = np.float32(y) + g.off_y
    xi = np.clip(sx.astype(np.int64), 0, ww - 1)
    yi = np.clip(sy.astype(np.int64), 0, wh - 1)
    flat = (yi * ww + xi).reshape(-1)
    ray_h = np.take(world.height.reshape(-1), flat).reshape(wid, n_k)
    top_row = g.horizon - np.arctan((ray_h - cam_z) * g.inv_steps) * np.float32(g.rows_per_rad)
    running = np.minimum.accumulate(top_row, axis=1)
    # Pixel row r shows the first sample k whose running-minimum top row reaches it:
    # k*(r) = #{k : running[c, k] > r} = #{k : m[c, k] >= r} with m = ceil(running) - 1 (integer rows),
    # i.e. a per-column histogram of m summed from the bottom.
    m = np.clip(np.ceil(running).astype(np.int64) - 1, -1, hgt - 1) + 1  # 0 .. hgt
    hist = np.bincount((g.col_bins + m).reshape(-1), minlength=wid * (hgt + 1)).reshape(wid, hgt + 1)
    k_star = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:].T  # H x W
    hit = k_star < n_k
    kk = np.minimum(k_star, n_k - 1)
    sample = g.query_offset + kk  # index into the W x K arrays
    return _RayHits(sx, sy, ray_h, flat, sample, kk, hit, np.take(flat, sample), np.take(g.steps, kk))


def _roof_from_below(world: World, rays: _RayHits, kind: np.ndarray, g: _PanoGeometry) -> np.ndarray:
    """A building sample that rises above the previous sample of the same ray, itself on a building, is a
    sloping roof seen from below the ridge: it shows the roof colour, as in the satellite view."""
    sample, ray_h = rays.sample, rays.ray_h
    prev = np.maximum(sample - 1, g.query_offset)
    return (kind == palette.BUILDING) & (rays.kk > 0) & (
        np.take(world.kind.reshape(-1), np.take(rays.flat, prev)) == palette.BUILDING) & (
        np.take(ray_h, sample) > np.take(ray_h, prev) + 0.05)


def _facade_light(world: World, rays: _RayHits, g: _PanoGeometry, cam_z: np.float32, wall: np.ndarray,
                  tree: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the gain of walls and foliage (crowns darker toward the ground, dark windows) and the windows'
    blue tint (1 on a window); gain 1 and tint 0 elsewhere."""
    hgt, wid = wall.shape
    gain = np.ones((hgt, wid), dtype=np.float32)
    tint = np.zeros((hgt, wid), dtype=np.float32)
    facade = np.flatnonzero(wall.reshape(-1))
    if not len(facade):
        return gain, tint
    heights = world.height.reshape(-1)
    f_idx = rays.fidx.reshape(-1)[facade]
    ground_hit = np.take(world.terrain.reshape(-1), f_idx)
    objh = np.take(heights, f_idx) - ground_hit
    rows = facade // wid
    zr = cam_z + np.take(rays.dist.reshape(-1), facade) * g.tan_row[rows, 0] - ground_hit  # height above the ground
    is_tree = np.take(tree.reshape(-1), facade)
    # foliage darkens toward the ground (the shaded underside of the crowns, the trunks)
    fg = np.where(is_tree, 0.3 + 0.7 * np.clip(zr / np.maximum(objh, 0.1), 0.0, 1.0) ** 0.8, 1.0)
    # windows: floors of 3.2 m, 2.7 m wide bays along the facade
    cols = facade % wid
    smp = rays.sample.reshape(-1)[facade]
    along = np.where(g.along_y[cols], np.take(rays.sy, smp), np.take(rays.sx, smp)) * np.float32(world.mpp)
    fz = zr - np.float32(3.2) * np.floor(zr * np.float32(1 / 3.2))
    fa = along - np.float32(2.7) * np.floor(along * np.float32(1 / 2.7))
    window = ~is_tree & (fz > 1.0) & (fz < 2.2) & (zr < objh - 0.6) & (fa < 1.6)
    gain.reshape(-1)[facade] = np.where(window, 0.5, fg)
    tint.reshape(-1)[facade] = window
    return gain, tint
