"""One coherent procedural world: terrain, water, districts with streets, buildings, fields and trees.

``generate_world(WorldConfig(seed=...))`` builds everything from the seed:

1. a plan: the world's size and its train / val / test blocks (:mod:`geoapp.synth.layout`);
2. a gently rolling terrain (fractal noise, a few metres of relief);
3. lakes and a river, and a few straight-ish main roads crossing the world;
4. districts: domain-warped Voronoi cells, each urban, suburban, rural or forest (one or two city cores
   with suburbs around them, farmland and forest further out), painted by :mod:`geoapp.synth.districts`;
5. trees scattered with the density each district asked for (yards, parks, hedgerows, forests);
6. lighting (:mod:`geoapp.synth.shading`) and camera locations.

The resulting :class:`World` holds the shaded rasters the renderers read, and is shared read-only
with worker processes (fork, copy-on-write).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.ndimage import find_objects
from scipy.spatial import cKDTree

from geoapp.provenance import config_to_dict
from geoapp.synth import palette
from geoapp.synth.blocks import District, Pixels, make_grid
from geoapp.synth.canvas import WorldCanvas
from geoapp.synth.districts import GRID_PARAMS, PAINTERS
from geoapp.synth.geo import DEFAULT_ORIGIN, GeoFrame
from geoapp.synth.layout import (
    Locations,
    WorldPlan,
    assign_blocks,
    free_ground,
    plan_world,
    sample_locations,
)
from geoapp.synth.parallel import WORKER_STATE, fork_map
from geoapp.synth.rand import fbm, value_noise
from geoapp.synth.shading import Sun, shade_world

GENERATOR_VERSION = "2.0"  # 2.0: three disjoint sets of blocks (train, val, test)
COARSE_M = 2.0  # resolution of the district / blocking maps (m)
NO_OWNER = -1


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    n_train: int = 5000
    n_test: int = 1000
    n_val: int = 500  # model-selection locations, placed like the test ones in blocks of their own
    metres_per_pixel: float = 0.5
    tile_metres: float = 128.0
    block_metres: float = 768.0
    train_spacing: float = 32.0
    test_spacing: float = 48.0
    district_metres: float = 420.0
    area_mix: tuple[float, float, float, float] = (0.15, 0.4, 0.3, 0.15)  # urban, suburban, rural, forest
    lakes: float = 0.03  # share of the world covered by lakes
    rivers: int = 1
    origin: tuple[float, float] = DEFAULT_ORIGIN
    sun_azimuth: float = 155.0  # satellite view; the ground view's sun differs by a few degrees
    sun_elevation: float = 58.0

    def to_dict(self) -> dict:
        return config_to_dict(self)


@dataclass
class World:
    """Shaded world rasters (row = south, col = east; ``mpp`` metres per pixel) plus metadata."""

    mpp: float
    terrain: np.ndarray  # float32 ground elevation (m)
    height: np.ndarray  # float32 surface elevation incl. buildings and trees (m)
    kind: np.ndarray  # uint8 surface kind (palette.GROUND ...)
    area: np.ndarray  # uint8 area type (palette.URBAN ...)
    sat: np.ndarray  # uint8 RGB, satellite view (sun A)
    street: np.ndarray  # 2 x H x W x 3 uint8 RGB seen from the street (sun B): [0] top surfaces, [1] walls / foliage
    geo: GeoFrame
    config: WorldConfig | None = None
    plan: WorldPlan | None = None
    locations: Locations = field(default_factory=Locations.empty)
    timings: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height.shape

    @property
    def top(self) -> np.ndarray:
        return self.street[0]

    @property
    def side(self) -> np.ndarray:
        return self.street[1]

    @classmethod
    def from_canvas(cls, canvas: WorldCanvas, sun_sat: Sun | None = None, sun_ground: Sun | None = None,
                    origin: tuple[float, float] = DEFAULT_ORIGIN, workers: int = 1) -> World:
        """Light a finished canvas (see :class:`~geoapp.synth.canvas.WorldCanvas`) into a renderable world.
        The ground view's sun defaults to the satellite's moved by 14 degrees in azimuth, 5 lower."""
        sun_sat = sun_sat or Sun(155.0, 58.0)
        sun_ground = sun_ground or Sun(sun_sat.azimuth_deg + 14.0, sun_sat.elevation_deg - 5.0)
        height = canvas.terrain + canvas.objh
        sat, street = shade_world(height, canvas.objh, canvas.albedo, canvas.wall, canvas.mpp, sun_sat, sun_ground,
                                  workers=workers)
        h, w = canvas.shape
        return cls(mpp=canvas.mpp, terrain=canvas.terrain, height=height, kind=canvas.kind, area=canvas.area,
                   sat=sat, street=street, geo=GeoFrame(origin[0], origin[1], canvas.mpp, w, h))

    def latlon(self, x, y):
        return self.geo.latlon(x, y)

    def mosaic(self, max_side: int = 4096) -> np.ndarray:
        """The satellite view of the whole world, downscaled so its long side is at most ``max_side``."""
        h, w = self.shape
        s = min(1.0, max_side / max(h, w))
        if s >= 1.0:
            return self.sat.copy()
        return cv2.resize(self.sat, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------------------------- generation


def generate_world(config: WorldConfig = WorldConfig(), log=None, workers: int = 1) -> World:
    """Build the world of ``config`` (deterministic in the seed and the other fields; ``workers`` > 1 paints
    districts in that many forked processes, with the same result)."""
    log = log or (lambda msg: None)
    t_start = time.perf_counter()
    timings = {}
    seeds = np.random.SeedSequence([config.seed, 0x5EED])
    rngs = dict(zip(["plan", "terrain", "water", "roads", "districts", "trees", "locations", "tex"],
                    (np.random.default_rng(s) for s in seeds.spawn(8))))
    mpp = config.metres_per_pixel
    plan = plan_world(config.n_train, config.n_test, config.tile_metres, config.block_metres, config.train_spacing,
                      config.test_spacing, n_val=config.n_val)
    w_px, h_px = int(round(plan.width_m / mpp)), int(round(plan.height_m / mpp))
    log(f"world {plan.width_m / 1000:.2f} x {plan.height_m / 1000:.2f} km = {w_px} x {h_px} px, "
        f"{len(plan.blocks)} blocks ({plan.n_val_blocks} val, {plan.n_test_blocks} test)")
    canvas = WorldCanvas.blank(w_px, h_px, mpp, shared=workers > 1)
    plan = _paint_land(canvas, config, plan, rngs, workers, timings)
    log(f"districts painted in {timings['districts_s']:.1f} s")

    t = time.perf_counter()
    n_trees = _plant_trees(canvas, rngs["trees"])
    timings["trees_s"] = time.perf_counter() - t
    log(f"{n_trees} trees planted in {timings['trees_s']:.1f} s")

    t = time.perf_counter()
    free = free_ground(canvas.kind, canvas.objh, mpp)
    locations = sample_locations(plan, canvas.centre, free, canvas.area, mpp, config.tile_metres, config.n_train,
                                 config.n_test, config.train_spacing, config.test_spacing, rngs["locations"],
                                 n_val=config.n_val)
    del free
    timings["locations_s"] = time.perf_counter() - t

    t = time.perf_counter()
    sun = Sun(config.sun_azimuth, config.sun_elevation)
    world = World.from_canvas(canvas, sun, origin=config.origin, workers=workers)
    timings["lighting_s"] = time.perf_counter() - t
    world.config, world.plan, world.locations = config, plan, locations
    timings["total_s"] = time.perf_counter() - t_start
    world.timings = timings
    log(f"world built in {timings['total_s']:.1f} s")
    return world


def _paint_land(canvas: WorldCanvas, config: WorldConfig, plan: WorldPlan, rngs: dict[str, np.random.Generator],
                workers: int, timings: dict[str, float]) -> WorldPlan:
    """Terrain, water, main roads and the districts' land use on ``canvas``; returns the plan with its blocks'
    area mix (the val and test blocks are chosen to match it) and records the two stages' ``timings``."""
    mpp = canvas.mpp
    h_px, w_px = canvas.shape
    cf = max(1, int(round(COARSE_M / mpp)))
    coarse_shape = (math.ceil(h_px / cf), math.ceil(w_px / cf))

    t = time.perf_counter()
    canvas.terrain[:] = _terrain(rngs["terrain"], (h_px, w_px), mpp)
    water = _water(rngs["water"], config, (h_px, w_px), mpp)
    arterials = _arterials(rngs["roads"], plan, mpp)
    timings["terrain_water_s"] = time.perf_counter() - t

    t = time.perf_counter()
    districts, labels = _districts(rngs["districts"], config, plan, coarse_shape, cf * mpp)
    owner = labels.copy()
    owner[_blocked_mask(water, arterials, coarse_shape, cf, mpp)] = NO_OWNER
    area_coarse = np.array([d.area for d in districts], dtype=np.uint8)[labels]
    plan = assign_blocks(plan, _block_mix(plan, area_coarse, cf * mpp), rngs["plan"])
    canvas.area[:] = cv2.resize(area_coarse, (coarse_shape[1] * cf, coarse_shape[0] * cf),
                                interpolation=cv2.INTER_NEAREST)[:h_px, :w_px]
    _paint_districts(canvas, districts, labels, owner, cf, rngs["tex"], config.seed, workers)
    _paint_water(canvas, water)
    _paint_arterials(canvas, arterials)
    timings["districts_s"] = time.perf_counter() - t
    return plan


def _terrain(rng: np.random.Generator, shape: tuple[int, int], mpp: float) -> np.ndarray:
    """Gently rolling terrain: a few metres of relief over kilometres, about a metre over hundreds of
    metres, small bumps (slopes of a few percent at most)."""
    f = max(1, int(round(8.0 / mpp)))
    small = (int(math.ceil(shape[0] / f)), int(math.ceil(shape[1] / f)))
    z = 6.0 * value_noise(rng, small, 1500.0 / (f * mpp)) + 2.0 * fbm(rng, small, 300.0 / (f * mpp), octaves=2)
    z += 0.5 * value_noise(rng, small, 40.0 / (f * mpp))
    big = cv2.resize(z, (small[1] * f, small[0] * f), interpolation=cv2.INTER_CUBIC)
    return big[: shape[0], : shape[1]]


def _water(rng: np.random.Generator, config: WorldConfig, shape: tuple[int, int], mpp: float) -> np.ndarray:
    """Full-resolution water mask: smooth lakes (a noise level set) and rivers (wandering polylines)."""
    h, w = shape
    f = max(1, int(round(4.0 / mpp)))
    small = (int(math.ceil(h / f)), int(math.ceil(w / f)))
    noise = value_noise(rng, small, 260.0 / (f * mpp)) + 0.35 * value_noise(rng, small, 70.0 / (f * mpp))
    water = np.zeros(shape, dtype=np.uint8)
    if config.lakes > 0:
        level = float(np.quantile(noise, 1.0 - config.lakes))
        big = cv2.resize(noise, (small[1] * f, small[0] * f), interpolation=cv2.INTER_LINEAR)[:h, :w]
        water[big > level] = 1
        del big
    for _ in range(config.rivers):
        pts = _wander(rng, w * mpp, h * mpp, step=120.0, turn=0.25)
        width = rng.uniform(16.0, 30.0)
        cv2.polylines(water, [np.round(pts / mpp * 16).astype(np.int32)], False, 1,
                      thickness=max(1, int(round(width / mpp))), lineType=cv2.LINE_8, shift=4)
    return water.astype(bool)


def _wander(rng: np.random.Generator, width_m: float, height_m: float, step: float, turn: float) -> np.ndarray:
    """A polyline (metres) crossing the world from one edge to the opposite one with gentle bends."""
    horizontal = rng.random() < 0.5
    length, across = (width_m, height_m) if horizontal else (height_m, width_m)
    pos = np.array([-step, rng.uniform(0.2, 0.8) * across])
    heading = rng.normal(0.0, 0.2)
    pts = [pos.copy()]
    while pos[0] < length + step:
        heading = float(np.clip(heading + rng.normal(0.0, turn), -0.7, 0.7))
        pos = pos + step * np.array([math.cos(heading), math.sin(heading)])
        pts.append(pos.copy())
    arr = np.asarray(pts)
    return arr if horizontal else arr[:, ::-1]


@dataclass
class _Arterial:
    points: np.ndarray  # metres
    width: float


def _arterials(rng: np.random.Generator, plan: WorldPlan, mpp: float) -> list[_Arterial]:
    out = []
    for horizontal, across in ((True, plan.height_m), (False, plan.width_m)):
        n = max(1, int(round(across / 1800.0)))
        for i in range(n):
            length = plan.width_m if horizontal else plan.height_m
            xs = np.linspace(-50.0, length + 50.0, max(3, int(length / 350.0)))
            base = (i + 0.5 + rng.uniform(-0.25, 0.25)) * across / n
            ys = base + np.cumsum(rng.normal(0.0, 12.0, len(xs)))
            pts = np.stack([xs, ys], axis=1) if horizontal else np.stack([ys, xs], axis=1)
            out.append(_Arterial(pts, rng.uniform(12.0, 15.0)))
    return out


def _districts(rng: np.random.Generator, config: WorldConfig, plan: WorldPlan, coarse_shape: tuple[int, int],
               coarse_m: float) -> tuple[list[District], np.ndarray]:
    """District seeds, area types and the coarse owner map (district id per coarse cell)."""
    seeds, areas = _district_seeds(rng, config, plan)
    labels = _warped_voronoi(rng, seeds, coarse_shape, coarse_m)
    base_angle = rng.uniform(-0.15, 0.15)
    extents = find_objects(labels + 1, max_label=len(seeds))
    districts = [_district(rng, i, int(areas[i]), seeds[i], base_angle, extents[i], coarse_m)
                 for i in range(len(seeds))]
    return districts, labels


def _district_seeds(rng: np.random.Generator, config: WorldConfig, plan: WorldPlan) -> tuple[np.ndarray, np.ndarray]:
    """District seed points (N x 2, metres) on a jittered grid of ``district_metres``, and their area types."""
    sp = config.district_metres
    nx, ny = max(1, math.ceil(plan.width_m / sp)), max(1, math.ceil(plan.height_m / sp))
    gx, gy = np.meshgrid((np.arange(nx) + 0.5) * plan.width_m / nx, (np.arange(ny) + 0.5) * plan.height_m / ny)
    seeds = np.stack([gx.ravel(), gy.ravel()], axis=1) + rng.uniform(-0.35, 0.35, (nx * ny, 2)) * sp
    n = len(seeds)
    # Urbanity: closeness to one of the city cores (one per ~10 km^2), plus noise; area types by rank.
    n_cores = max(1, int(round(plan.width_m * plan.height_m / 10e6)))
    cores = rng.uniform(0.2, 0.8, (n_cores, 2)) * [plan.width_m, plan.height_m]
    sigma = 0.3 * math.sqrt(plan.width_m * plan.height_m / n_cores)
    d2 = ((seeds[:, None, :] - cores[None, :, :]) ** 2).sum(-1).min(1)
    urb = np.exp(-d2 / (2 * sigma**2)) + 0.25 * rng.random(n)
    mix = np.asarray(config.area_mix, dtype=np.float64)
    mix = mix / mix.sum()
    order = np.argsort(-urb, kind="stable")
    n_urban = int(round(mix[0] * n))
    n_sub = int(round(mix[1] * n))
    areas = np.full(n, palette.RURAL, dtype=np.int64)
    areas[order[:n_urban]] = palette.URBAN
    areas[order[n_urban:n_urban + n_sub]] = palette.SUBURBAN
    rest = order[n_urban + n_sub:]
    n_forest = int(round(mix[3] / max(mix[2] + mix[3], 1e-9) * len(rest)))
    areas[rest[np.argsort(-rng.random(len(rest)), kind="stable")[:n_forest]]] = palette.FOREST
    return seeds, areas


def _warped_voronoi(rng: np.random.Generator, seeds: np.ndarray, coarse_shape: tuple[int, int],
                    coarse_m: float) -> np.ndarray:
    """The nearest seed of every coarse cell after a smooth domain warp: district borders that wander."""
    ch, cw = coarse_shape
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    warp = 45.0
    wx = warp * value_noise(rng, coarse_shape, 220.0 / coarse_m)
    wy = warp * value_noise(rng, coarse_shape, 220.0 / coarse_m)
    qx = (xx + 0.5) * coarse_m + wx
    qy = (yy + 0.5) * coarse_m + wy
    _, labels = cKDTree(seeds).query(np.stack([qx.ravel(), qy.ravel()], axis=1))
    return labels.reshape(coarse_shape).astype(np.int32)


def _district(rng: np.random.Generator, i: int, area: int, seed: np.ndarray, base_angle: float,
              extent: tuple[slice, slice] | None, coarse_m: float) -> District:
    """District ``i``: its street grid's angle, and the grid over its cells (``extent``, the coarse slices
    find_objects gives) in the grid's own coordinates."""
    gp = GRID_PARAMS[area]
    if area == palette.RURAL:
        angle = rng.normal(0.0, 0.03)  # section roads run north-south / east-west
    elif area == palette.FOREST:
        angle = rng.uniform(0, math.pi)
    else:
        angle = base_angle + (rng.normal(0.0, 0.08) if rng.random() < 0.7 else rng.uniform(-0.8, 0.8))
    # grid extent: the district's cells, in local coordinates
    sl = extent
    if sl is None:  # a seed whose cell vanished under the domain warp: give it a token extent
        sl = (slice(int(seed[1] / coarse_m), int(seed[1] / coarse_m) + 1),
              slice(int(seed[0] / coarse_m), int(seed[0] / coarse_m) + 1))
    corners_x = np.array([sl[1].start, sl[1].stop]) * coarse_m - seed[0]
    corners_y = np.array([sl[0].start, sl[0].stop]) * coarse_m - seed[1]
    c, s = math.cos(angle), math.sin(angle)
    us = [c * x + s * y for x in corners_x for y in corners_y]
    vs = [-s * x + c * y for x in corners_x for y in corners_y]
    grid = make_grid(rng, (min(us), max(us), min(vs), max(vs)), gp["spacing_u"], gp["spacing_v"], gp["drop"],
                     rng.uniform(*gp["half_width"]), rng.uniform(*gp["warp"]), rng.uniform(*gp["warp_len"]))
    return District(i, area, float(seed[0]), float(seed[1]), angle, grid)


def _blocked_mask(water: np.ndarray, arterials: list[_Arterial], coarse_shape: tuple[int, int], cf: int,
                  mpp: float) -> np.ndarray:
    """Coarse cells where no building may stand: water and main roads, each with a 5 m buffer."""
    ch, cw = coarse_shape
    h, w = water.shape
    pad = np.zeros((ch * cf, cw * cf), dtype=np.uint8)
    pad[:h, :w] = water
    blocked = pad.reshape(ch, cf, cw, cf).max(axis=(1, 3))
    coarse_m = cf * mpp
    for a in arterials:
        cv2.polylines(blocked, [np.round(a.points / coarse_m * 16).astype(np.int32)], False, 1,
                      thickness=max(1, int(round(a.width / coarse_m))), lineType=cv2.LINE_8, shift=4)
    r = max(1, int(round(5.0 / coarse_m)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(blocked, kernel).astype(bool)


def _block_mix(plan: WorldPlan, area_coarse: np.ndarray, coarse_m: float) -> np.ndarray:
    """Fraction of each area type in each block (blocks in plan order x area types)."""
    gx, gy = plan.grid
    ch, cw = area_coarse.shape
    ys = np.minimum((np.arange(ch) + 0.5) * coarse_m // plan.block_m, gy - 1).astype(np.int64)
    xs = np.minimum((np.arange(cw) + 0.5) * coarse_m // plan.block_m, gx - 1).astype(np.int64)
    block = (ys[:, None] * gx + xs[None, :]).reshape(-1)
    counts = np.zeros((gx * gy, len(palette.AREA_NAMES)))
    np.add.at(counts, (block, area_coarse.reshape(-1).astype(np.int64)), 1.0)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)


TEXTURE_PX = 2048  # period of the fine albedo texture (1 km at 0.5 m per pixel: never noticed)


def _texture(rng: np.random.Generator, mpp: float) -> np.ndarray:
    """Fine albedo noise (features of 1.6 m and 6 m), periodic with TEXTURE_PX pixels so that one
    small tile serves the whole world."""
    n = TEXTURE_PX
    out = np.zeros((n, n), dtype=np.float32)
    for cell, amp in ((1.6 / mpp, 1.0), (6.0 / mpp, 0.5)):
        cells = max(2, int(round(n / cell)))
        grid = rng.standard_normal((cells, cells)).astype(np.float32)
        # wrap the grid so the cubic interpolation is periodic too
        padded = np.pad(grid, 2, mode="wrap")
        big = cv2.resize(padded, (int(round((cells + 4) * n / cells)),) * 2, interpolation=cv2.INTER_CUBIC)
        o = int(round(2 * n / cells))
        out += np.float32(amp) * big[o:o + n, o:o + n]
    return out


def _paint_districts(canvas: WorldCanvas, districts: list[District], labels: np.ndarray, owner: np.ndarray,
                     cf: int, rng: np.random.Generator, seed: int, workers: int = 1) -> None:
    """Run each district's painter on its pixels (the full-resolution pixels of its coarse cells).

    Districts cover disjoint pixels, so with ``workers`` > 1 (and a canvas in shared memory) forked
    processes paint them in parallel straight into the canvas.
    """
    h, w = canvas.shape
    ch, cw = labels.shape
    tex = _texture(rng, canvas.mpp)
    clearing = np.clip(value_noise(rng, (ch, cw), 60.0 / (cf * canvas.mpp)) * 1.4, -1.0, 1.0)
    extents = find_objects(labels + 1, max_label=len(districts))
    jobs = [k for k in range(len(districts)) if extents[k] is not None]
    # largest first, so the two workers finish together
    jobs.sort(key=lambda k: -(extents[k][0].stop - extents[k][0].start) * (extents[k][1].stop - extents[k][1].start))
    state = dict(canvas=canvas, districts=districts, labels=labels, owner=owner, cf=cf, tex=tex, clearing=clearing,
                 seed=seed, extents=extents)
    for _ in fork_map(_paint_one, jobs, workers if canvas.shared else 1, state):
        pass


def _paint_one(k: int) -> None:
    st = WORKER_STATE
    canvas, d, labels, owner, cf = st["canvas"], st["districts"][k], st["labels"], st["owner"], st["cf"]
    mpp = canvas.mpp
    h, w = canvas.shape
    ch, cw = labels.shape
    coarse_m = cf * mpp
    sl = st["extents"][k]
    mask_c = labels[sl] == d.id
    mask = np.repeat(np.repeat(mask_c, cf, axis=0), cf, axis=1)
    y0, x0 = sl[0].start * cf, sl[1].start * cf
    mask = mask[: min(h - y0, mask.shape[0]), : min(w - x0, mask.shape[1])]
    py, px = np.nonzero(mask)
    x_m = (px + x0 + 0.5).astype(np.float32) * np.float32(mpp)
    y_m = (py + y0 + 0.5).astype(np.float32) * np.float32(mpp)
    u, v = d.to_local(x_m, y_m)
    uw, vw = d.grid.warp(u, v)
    box = (slice(y0, y0 + mask.shape[0]), slice(x0, x0 + mask.shape[1]))

    def owner_ok(qx, qy, _id=d.id):
        ix = np.clip((qx / coarse_m).astype(np.int64), 0, cw - 1)
        iy = np.clip((qy / coarse_m).astype(np.int64), 0, ch - 1)
        return owner[iy, ix] == _id

    tex = st["tex"]  # periodic: read the box's rows and columns modulo the period
    tex = np.take(np.take(tex, np.arange(y0, y0 + mask.shape[0]) % tex.shape[0], axis=0),
                  np.arange(x0, x0 + mask.shape[1]) % tex.shape[1], axis=1)[mask]
    clearing = np.repeat(np.repeat(st["clearing"][sl], cf, axis=0), cf, axis=1)[: mask.shape[0], : mask.shape[1]]
    pixels = Pixels(x=x_m, y=y_m, uw=uw, vw=vw, tex=tex, clearing=clearing[mask], owner_ok=owner_ok, mpp=mpp,
                    seed=st["seed"])
    paint = PAINTERS[d.area](d, pixels)
    canvas.kind[box][mask] = paint.kind
    canvas.objh[box][mask] = paint.objh
    for src, dst in ((paint.albedo, canvas.albedo), (paint.wall, canvas.wall)):
        dst[box][mask] = np.clip(src, 0, 255, out=src).astype(np.uint8)
    canvas.treed[box][mask] = (np.clip(paint.treed, 0.0, 1.0) * 255).astype(np.uint8)
    canvas.centre[box][mask] = paint.centre


def _plant_trees(canvas: WorldCanvas, rng: np.random.Generator, cell_m: float = 5.0) -> int:
    """Scatter trees on a jittered 5 m grid, each kept with the local tree density; forests get more
    conifers, towns more deciduous and a few autumn-coloured landmark trees."""
    mpp = canvas.mpp
    h, w = canvas.shape
    nx, ny = math.ceil(w * mpp / cell_m), math.ceil(h * mpp / cell_m)
    gy, gx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    cx = (gx + 0.5 + rng.uniform(-0.3, 0.3, gx.shape)) * cell_m / mpp
    cy = (gy + 0.5 + rng.uniform(-0.3, 0.3, gy.shape)) * cell_m / mpp
    ix = np.clip(cx.astype(np.int64), 0, w - 1)
    iy = np.clip(cy.astype(np.int64), 0, h - 1)
    keep = rng.random(gx.shape) * 255.0 < canvas.treed[iy, ix]
    xs, ys = cx[keep], cy[keep]
    n = len(xs)
    if n == 0:
        return 0
    forest = canvas.area[iy[keep], ix[keep]] == palette.FOREST
    weights = palette.TREE_WEIGHTS / palette.TREE_WEIGHTS.sum()
    forest_w = weights * np.where(palette.TREE_CONE, 2.5, 1.0)
    species = np.where(forest, rng.choice(len(weights), n, p=forest_w / forest_w.sum()),
                       rng.choice(len(weights), n, p=weights))
    cone = palette.TREE_CONE[species]
    radius = np.where(forest, rng.uniform(2.5, 4.5, n), rng.uniform(1.8, 4.0, n)) * np.where(cone, 0.75, 1.0)
    height = np.where(cone, rng.uniform(10.0, 20.0, n), rng.uniform(6.0, 14.0, n))
    colours = palette.TREE_COLOURS[species] * rng.uniform(0.88, 1.12, n)[:, None]
    canvas.stamp_trees(xs, ys, radius, height, colours, cone)
    return n


def _paint_water(canvas: WorldCanvas, water: np.ndarray) -> None:
    wet = water & (canvas.kind != palette.ROAD)
    canvas.kind[wet] = palette.WATER
    canvas.objh[wet] = 0.0
    canvas.treed[wet] = 0
    canvas.centre[wet] = False
    n = int(wet.sum())
    if n:
        rng = np.random.default_rng(n)
        col = palette.WATER_RGB[None, :] * (1.0 + 0.04 * rng.standard_normal(n))[:, None]
        canvas.albedo[wet] = np.clip(col, 0, 255).astype(np.uint8)
        canvas.wall[wet] = canvas.albedo[wet]


def _paint_arterials(canvas: WorldCanvas, arterials: list[_Arterial]) -> None:
    mpp = canvas.mpp
    for a in arterials:
        mask = np.zeros(canvas.shape, dtype=np.uint8)
        pts = [np.round((a.points / mpp - 0.5) * 16).astype(np.int32)]
        cv2.polylines(mask, pts, False, 1, thickness=max(1, int(round(a.width / mpp))), lineType=cv2.LINE_8, shift=4)
        m = mask.astype(bool)
        canvas.kind[m] = palette.ROAD
        canvas.objh[m] = np.where(canvas.objh[m] < 0.6, 0.0, 0.6)  # bridges stay slightly above the water
        canvas.albedo[m] = palette.ASPHALT.astype(np.uint8)
        canvas.wall[m] = palette.ASPHALT.astype(np.uint8)
        canvas.treed[m] = 0
        canvas.centre[m] = False
        line = np.zeros(canvas.shape, dtype=np.uint8)
        cv2.polylines(line, pts, False, 1, thickness=1, lineType=cv2.LINE_8, shift=4)
        lm = line.astype(bool)
        canvas.centre[lm] = True
        canvas.albedo[lm] = palette.MARKING_YELLOW.astype(np.uint8)
