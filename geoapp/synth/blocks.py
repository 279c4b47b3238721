"""A district's street grid and the toolkit its painters share (one street-grid block at a time).

A district is a (domain-warped) Voronoi cell of the world with an area type, a rotation and a street grid: lines
``u = U_i`` and ``v = V_j`` in the district's local, optionally sine-warped, coordinates. :func:`locate` finds each
pixel's grid cell (a city block) and its distance to the block's four edges; :class:`Lookup` gives hashed per-block
/ per-lot random tables; :class:`Paint` collects what a painter decides per pixel. The painters of the four area
types are in :mod:`geoapp.synth.districts`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from geoapp.synth import palette
from geoapp.synth.rand import rand01


@dataclass
class Grid:
    """Street grid of a district in warped local coordinates (metres)."""

    u: np.ndarray  # sorted positions of the lines u = const
    v: np.ndarray  # sorted positions of the lines v = const
    u_on: np.ndarray  # bool [len(u), len(v) - 1]: segment of line u_i between v_j and v_j+1 exists
    v_on: np.ndarray  # bool [len(v), len(u) - 1]
    half_width: float  # half width of the carriageway (m)
    warp_amp: float = 0.0
    warp_len: float = 200.0
    phase_u: float = 0.0
    phase_v: float = 0.0

    def warp(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.warp_amp == 0.0:
            return u, v
        k = 2.0 * math.pi / self.warp_len
        return u + self.warp_amp * np.sin(k * v + self.phase_u), v + self.warp_amp * np.sin(k * u + self.phase_v)


def make_grid(rng: np.random.Generator, extent: tuple[float, float, float, float], spacing_u: tuple[float, float],
              spacing_v: tuple[float, float], drop: float, half_width: float, warp_amp: float = 0.0,
              warp_len: float = 200.0) -> Grid:
    """Random street grid covering ``extent`` = (umin, umax, vmin, vmax) with one spacing of margin."""
    umin, umax, vmin, vmax = extent

    def lines(lo, hi, spacing):
        pos = [lo - spacing[1] - rng.uniform(0, spacing[1])]
        while pos[-1] < hi + spacing[1]:
            pos.append(pos[-1] + rng.uniform(*spacing))
        return np.asarray(pos)

    u = lines(umin - warp_amp, umax + warp_amp, spacing_u)
    v = lines(vmin - warp_amp, vmax + warp_amp, spacing_v)
    u_on = rng.random((len(u), len(v) - 1)) >= drop
    v_on = rng.random((len(v), len(u) - 1)) >= drop
    return Grid(u, v, u_on, v_on, half_width, warp_amp, warp_len, rng.uniform(0, 2 * math.pi),
                rng.uniform(0, 2 * math.pi))


@dataclass
class District:
    id: int
    area: int  # palette.URBAN ...
    cx: float  # centre of the local frame, metres east of the world's west edge
    cy: float  # metres south of the world's north edge
    angle: float  # radians: local u axis = (cos, sin) in world (x east, y south)
    grid: Grid

    def to_local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx, dy = x - self.cx, y - self.cy
        return c * dx + s * dy, -s * dx + c * dy

    def local_delta_to_world(self, du: np.ndarray, dv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        return c * du - s * dv, s * du + c * dv


@dataclass
class Pixels:
    """The pixels of one district (1-D arrays) and the world lookups the painters need."""

    x: np.ndarray  # world metres (pixel centres)
    y: np.ndarray
    uw: np.ndarray  # warped local coordinates
    vw: np.ndarray
    tex: np.ndarray  # fine albedo noise, about N(0, 0.5)
    clearing: np.ndarray  # low-frequency noise in [-1, 1] (forest clearings)
    owner_ok: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x_m, y_m) -> point is in this district, buildable
    mpp: float
    seed: int


class Paint:
    """Per-pixel output of a painter; colours are float32 RGB."""

    def __init__(self, n: int, ground_rgb: np.ndarray, tex: np.ndarray, kind: int = palette.GROUND):
        self.kind = np.full(n, kind, dtype=np.uint8)
        self.objh = np.zeros(n, dtype=np.float32)
        self.albedo = np.empty((n, 3), dtype=np.float32)
        self.albedo[:] = ground_rgb
        self.albedo *= (1.0 + 0.10 * tex)[:, None]
        self.wall = self.albedo.copy()
        self.treed = np.zeros(n, dtype=np.float32)
        self.centre = np.zeros(n, dtype=bool)

    def put(self, mask, kind=None, objh=None, albedo=None, wall=None, treed=None) -> None:
        """Set attributes where ``mask``; array values must already be restricted to ``mask``."""
        if kind is not None:
            self.kind[mask] = kind
        if objh is not None:
            self.objh[mask] = objh
        if albedo is not None:
            self.albedo[mask] = albedo
            self.wall[mask] = albedo if wall is None else wall
        elif wall is not None:
            self.wall[mask] = wall
        if treed is not None:
            self.treed[mask] = treed


# ---------------------------------------------------------------------------------------------- helpers


class Lookup:
    """Hashed uniform [0, 1) tables over ``size`` entries (blocks, lots, parcels...) of a district, read at
    each pixel's flat entry index ``index``: ``lookup(salt)`` is one random attribute per pixel."""

    def __init__(self, px: Pixels, district: District, size: int, index: np.ndarray):
        self.key = (px.seed, district.id)
        self.size = int(size)
        self.index = index

    def table(self, salt: int) -> np.ndarray:
        return rand01(*self.key, salt, np.arange(self.size))

    def __call__(self, salt: int) -> np.ndarray:
        return self.table(salt)[self.index]


@dataclass
class Cells:
    iu: np.ndarray
    iv: np.ndarray
    a0: np.ndarray  # distance to line u[iu] (west side of the cell in local coordinates)
    a1: np.ndarray
    b0: np.ndarray
    b1: np.ndarray
    road_d: np.ndarray  # distance to the nearest existing road centre line
    road_along: np.ndarray  # coordinate along that road
    road_line: np.ndarray  # id of that road's line: u lines 0..len(u)-1, then v lines
    len_u: np.ndarray  # cell size between the centre lines
    len_v: np.ndarray
    block: np.ndarray  # flat block index iu * n_blocks_v + iv
    n_blocks: int


def locate(grid: Grid, uw: np.ndarray, vw: np.ndarray) -> Cells:
    nu, nv = len(grid.u), len(grid.v)
    uw = uw.astype(np.float32, copy=False)
    vw = vw.astype(np.float32, copy=False)
    gu, gv = grid.u.astype(np.float32), grid.v.astype(np.float32)
    iu = np.clip(np.searchsorted(gu, uw, side="right") - 1, 0, nu - 2)
    iv = np.clip(np.searchsorted(gv, vw, side="right") - 1, 0, nv - 2)
    u0, u1 = np.take(gu, iu), np.take(gu, iu + 1)
    v0, v1 = np.take(gv, iv), np.take(gv, iv + 1)
    a0, a1, b0, b1 = uw - u0, u1 - uw, vw - v0, v1 - vw
    west, north = a0 <= a1, b0 <= b1
    lu = iu + ~west
    lv = iv + ~north
    du = np.where(np.take(grid.u_on.reshape(-1), lu * (nv - 1) + iv), np.where(west, a0, a1), np.float32(np.inf))
    dv = np.where(np.take(grid.v_on.reshape(-1), lv * (nu - 1) + iu), np.where(north, b0, b1), np.float32(np.inf))
    road_d = np.minimum(du, dv)
    is_u = du <= dv
    road_along = np.where(is_u, vw, uw)
    road_line = np.where(is_u, lu, nu + lv)
    return Cells(iu, iv, a0, a1, b0, b1, road_d, road_along, road_line, u1 - u0, v1 - v0, iu * (nv - 1) + iv,
                 (nu - 1) * (nv - 1))


@dataclass
class EdgeFrame:
    """Position of a pixel relative to the nearest edge of its block (the road border)."""

    side: np.ndarray  # 0: west edge (u0), 1: east (u1), 2: north (v0), 3: south (v1), in local terms
    depth: np.ndarray  # distance from that edge into the block (negative on the road)
    along: np.ndarray  # position along the edge, from the block corner
    length: np.ndarray  # length of the edge
    cross: np.ndarray  # distance to the nearest perpendicular edge


def edge_frame(c: Cells, border: float) -> EdgeFrame:
    d = np.stack([c.a0, c.a1, c.b0, c.b1]) - border
    side = np.argmin(d, axis=0)
    depth = np.min(d, axis=0)
    ns = side < 2
    along = np.where(ns, c.b0, c.a0) - border
    length = np.where(ns, c.len_v, c.len_u) - 2 * border
    cross = np.where(ns, np.minimum(c.b0, c.b1), np.minimum(c.a0, c.a1)) - border
    return EdgeFrame(side, depth, along, length, cross)


_RECT_SAMPLES = tuple((fd, fa) for fd in (0.02, 0.5, 0.98) for fa in (0.02, 0.5, 0.98))
_DEPTH_DIR = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
_ALONG_DIR = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])


def rect_ok(px: Pixels, district: District, sel: np.ndarray, side: np.ndarray, depth: np.ndarray,
            along: np.ndarray, d0, d1, a0, a1) -> np.ndarray:
    """For pixels ``sel`` (bool mask) lying in a rectangle [d0, d1) x [a0, a1) of (depth, along) coordinates,
    True where 3 x 3 points spread over the rectangle (corners, edge midpoints, centre) are all in this
    district and not blocked (water, main roads, each with a buffer wider than the spacing of the
    points), so buildings are never cut by district borders, main roads or shores."""
    ok = np.zeros(sel.shape, dtype=bool)
    if not sel.any():
        return ok
    idx = np.flatnonzero(sel)
    s = side[idx]
    dd, ad = _DEPTH_DIR[s], _ALONG_DIR[s]
    dep, alo = depth[idx], along[idx]
    vals = [np.broadcast_to(np.asarray(t, dtype=np.float64), sel.shape)[idx] for t in (d0, d1, a0, a1)]
    good = np.ones(len(idx), dtype=bool)
    for fd, fa in _RECT_SAMPLES:
        td = vals[0] + fd * (vals[1] - vals[0]) - dep
        ta = vals[2] + fa * (vals[3] - vals[2]) - alo
        du = td * dd[:, 0] + ta * ad[:, 0]
        dv = td * dd[:, 1] + ta * ad[:, 1]
        wx, wy = district.local_delta_to_world(du, dv)
        good &= px.owner_ok(px.x[idx] + wx, px.y[idx] + wy)
    ok[idx] = good
    return ok


def jitter_rgb(colours: np.ndarray, family: np.ndarray, tone: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Palette colour of each family, scaled by a tone factor, for the pixels of ``mask``."""
    return colours[family[mask]] * tone[mask][:, None]


def gable(depth: np.ndarray, d0: np.ndarray, d1: np.ndarray, eave: np.ndarray, rise: np.ndarray) -> np.ndarray:
    """Height of a gable roof whose ridge runs along the edge, halfway between depths d0 and d1."""
    half = (d1 - d0) / 2
    t = 1.0 - np.abs(depth - (d0 + half)) / np.maximum(half, 1e-3)
    return eave + rise * np.clip(t, 0.0, 1.0)


def paint_roads(out: Paint, c: Cells, px: Pixels, half_width: float, surface: np.ndarray,
                centre_marking: np.ndarray | None = None) -> np.ndarray:
    """Carriageway where ``road_d < half_width`` with the given per-pixel surface colour."""
    road = c.road_d < half_width
    if road.any():
        col = surface[road] * (1.0 + 0.05 * px.tex[road])[:, None]
        out.put(road, kind=palette.ROAD, objh=0.0, albedo=col, treed=0.0)
        if centre_marking is not None:
            dash = (np.mod(c.road_along, 9.0) < 4.5) & (c.road_d < 0.6 * px.mpp) & road
            out.put(dash, albedo=centre_marking)
    out.centre |= c.road_d < 0.75 * px.mpp
    return road
