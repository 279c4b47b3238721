"""Land use of the four area types, painted pixel by pixel in each district's own street grid.

Every pixel finds its grid cell (a city block) and its distance to the block's four edges
(:mod:`geoapp.synth.blocks`); lots, houses, fields and farmsteads are then decided from hashed per-block /
per-lot tables, so the whole district is classified at once with numpy, without a Python loop over buildings.

Each painter returns a :class:`Paint` (kind, object height, top colour, wall colour, tree density and
road centre lines) for the district's pixels; :mod:`geoapp.synth.world` writes it into the canvas.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from geoapp.synth import palette
from geoapp.synth.blocks import (
    Cells,
    District,
    EdgeFrame,
    Lookup,
    Paint,
    Pixels,
    edge_frame,
    gable,
    jitter_rgb,
    locate,
    paint_roads,
    rect_ok,
)
from geoapp.synth.rand import rand01

# Salts: one per independent random attribute.
(S_LOTW, S_PRESENT, S_HWID, S_OFF, S_SETBACK, S_DEPTH, S_STOREYS, S_RISE, S_FAMILY, S_TONE, S_GARAGE, S_POOL,
 S_LAWN, S_USE, S_FLOORS, S_TOWER, S_BOX, S_NCUT, S_CUT, S_CROP, S_ORIENT, S_PERIOD, S_HEDGE, S_FARM, S_FARMX,
 S_FARMY, S_SILO, S_BARN, S_SURFACE, S_WALLTONE, S_COURT, S_TRACK) = range(32)


# ---------------------------------------------------------------------------------------------- suburban


class SuburbanLots(NamedTuple):
    """The lots along a suburban district's block edges, per pixel."""

    inside: np.ndarray  # in a lot (not a corner garden, not the road)
    key: np.ndarray  # the lot's entry in the hashed tables
    table: Lookup  # the lot's random attributes
    x: np.ndarray  # position inside the lot, along the block edge (m)
    width: np.ndarray  # the lot's width along the edge (m)


class HousePlot(NamedTuple):
    """Where a suburban lot's buildings stand: what the yard's trees keep clear of."""

    built: np.ndarray  # house, garage, driveway or pool
    setback: np.ndarray  # the house's distance from the road border (m)
    depth: np.ndarray  # the house's depth (m)
    pool: np.ndarray  # the lot has a pool


def paint_suburban(d: District, px: Pixels) -> Paint:
    g = d.grid
    n = len(px.x)
    c = locate(g, px.uw, px.vw)
    out = Paint(n, palette.LAWN[0], px.tex)
    hw = g.half_width
    f = edge_frame(c, hw)
    lots = suburban_lots(d, px, c, f)
    lt = lots.table
    lawn = palette.LAWN[np.minimum((lt(S_LAWN) * 4.6).astype(np.int64), 3)] * (0.92 + 0.16 * lt(S_TONE))[:, None]
    out.albedo[:] = lawn * (1.0 + 0.10 * px.tex)[:, None]
    out.wall[:] = out.albedo
    plot = put_houses(out, d, px, f, lots)
    setback, hd = plot.setback, plot.depth

    yard = (f.depth >= 0) & ~plot.built
    back = yard & (f.depth > setback + hd + 1.5)
    front = yard & (f.depth < setback - 1.5)
    out.treed[back] = 0.22
    out.treed[front & lots.inside] = 0.05
    out.treed[yard & ~lots.inside] = 0.12
    out.treed[plot.pool & (f.depth > setback + hd + 1.5) & (f.depth < setback + hd + 10.5)] = 0.0

    paint_roads(out, c, px, hw, np.broadcast_to(palette.ASPHALT, (n, 3)))
    return out


def suburban_lots(d: District, px: Pixels, c: Cells, f: EdgeFrame) -> SuburbanLots:
    """Lots of 16-26 m along each block edge, leaving the corners (24 m) as gardens; a house per lot."""
    max_lots = 16
    corner_d = 24.0
    side_key = c.block * 4 + f.side
    lot_w0 = 16.0 + 10.0 * Lookup(px, d, c.n_blocks * 4, side_key)(S_LOTW)
    nlots = np.floor((f.length - 2 * corner_d) / lot_w0)
    lot_w = (f.length - 2 * corner_d) / np.maximum(nlots, 1)
    lot = np.floor((f.along - corner_d) / lot_w).astype(np.int64)
    in_lots = (nlots >= 1) & (f.along >= corner_d) & (f.along < f.length - corner_d) & (f.depth >= 0)
    lot = np.clip(lot, 0, max_lots - 1)
    lot_key = side_key * max_lots + lot
    lt = Lookup(px, d, c.n_blocks * 4 * max_lots, lot_key)
    x = f.along - corner_d - lot * lot_w  # position inside the lot
    return SuburbanLots(in_lots, lot_key, lt, x, lot_w)


def put_houses(out: Paint, d: District, px: Pixels, f: EdgeFrame, lots: SuburbanLots) -> HousePlot:
    """A house on most lots, with its garage, driveway and pool, where the whole house fits the district."""
    lt, x, lot_w = lots.table, lots.x, lots.width
    present = lots.inside & (lt(S_PRESENT) < 0.93)
    hwid = lot_w * (0.45 + 0.22 * lt(S_HWID))
    garage = lt(S_GARAGE) < 0.45
    gw = np.where(garage, 6.5, 0.0)
    spare = np.maximum(lot_w - hwid - gw - 4.5, 0.0)
    off = 1.0 + spare * lt(S_OFF)
    setback = 6.0 + 4.0 * lt(S_SETBACK)
    hd = 8.0 + 5.0 * lt(S_DEPTH)
    storeys = 1 + (lt(S_STOREYS) < 0.45)
    eave = 2.9 * storeys + 0.3
    rise = hd / 2 * (0.35 + 0.3 * lt(S_RISE))
    fam = np.minimum((lt(S_FAMILY) * len(palette.HOUSE_ROOFS)).astype(np.int64), len(palette.HOUSE_ROOFS) - 1)
    tone = 0.88 + 0.24 * lt(S_TONE)
    wall_tone = 0.9 + 0.2 * lt(S_WALLTONE)

    house_box = present & (x >= off) & (x < off + hwid) & (f.depth >= setback) & (f.depth < setback + hd)
    lot_start = f.along - x  # along coordinate where the lot begins
    ok = rect_ok(px, d, house_box, f.side, f.depth, f.along, setback, setback + hd + 6.0, lot_start + off - 0.5,
                 lot_start + off + hwid + gw + 3.5)
    # A house decides for its whole lot: recompute per lot by keeping lots whose house pixels passed.
    built = np.zeros(lt.size, dtype=bool)
    built[lots.key[ok]] = True
    present &= built[lots.key]
    house = present & house_box
    gar = present & garage & (x >= off + hwid) & (x < off + hwid + gw) & (f.depth >= setback + 0.5) & (
        f.depth < setback + 7.0)
    drive_x0 = off + hwid + 0.6  # beside the house, in front of the garage when there is one
    drive = present & (x >= drive_x0) & (x < drive_x0 + 3.2) & (f.depth >= 0) & (f.depth < setback + 0.5) & ~gar
    pool_on = present & (lt(S_POOL) < 0.2)
    pool = pool_on & (x >= off + 1.0) & (x < off + 1.0 + 4.0) & (f.depth >= setback + hd + 3.0) & (
        f.depth < setback + hd + 9.0)

    out.put(house, kind=palette.BUILDING, objh=gable(f.depth, setback, setback + hd, eave, rise)[house],
            albedo=jitter_rgb(palette.HOUSE_ROOFS, fam, tone, house),
            wall=jitter_rgb(palette.HOUSE_WALLS, fam, wall_tone, house),
            treed=0.0)
    out.put(gar, kind=palette.BUILDING, objh=3.0, albedo=jitter_rgb(palette.HOUSE_ROOFS, fam, tone * 0.95, gar),
            wall=jitter_rgb(palette.HOUSE_WALLS, fam, wall_tone, gar), treed=0.0)
    out.put(drive, kind=palette.PAVED, albedo=palette.CONCRETE * (1.0 + 0.05 * px.tex[drive])[:, None], treed=0.0)
    out.put(pool, kind=palette.POOL, albedo=palette.POOL_RGB * (1.0 + 0.04 * px.tex[pool])[:, None], treed=0.0)
    return HousePlot(house | gar | drive | pool, setback, hd, pool_on)


# ---------------------------------------------------------------------------------------------- urban


class UrbanLots(NamedTuple):
    """The lots of an urban district's blocks, per pixel: lots along each edge and a lot at each corner."""

    corner: np.ndarray  # in a corner lot
    in_lots: np.ndarray  # in an edge lot
    key: np.ndarray  # the lot's entry in the hashed tables
    table: Lookup  # the lot's random attributes
    depth: np.ndarray  # the corner lots' depth from both edges (m)
    start: np.ndarray  # where the lot begins along the edge (m)
    length: np.ndarray  # the lot's length along the edge (m)


def paint_urban(d: District, px: Pixels, floors: tuple[int, int] = (3, 9)) -> Paint:
    g = d.grid
    n = len(px.x)
    c = locate(g, px.uw, px.vw)
    hw = g.half_width
    walk = 3.5
    border = hw + walk
    out = Paint(n, palette.PLAZA, px.tex, kind=palette.PAVED)
    f = edge_frame(c, border)
    inside = f.depth >= 0
    bt = Lookup(px, d, c.n_blocks, c.block)

    use = bt(S_USE)
    park = use < 0.08
    parking = (use >= 0.08) & (use < 0.16)
    built_block = use >= 0.16
    lots = urban_lots(d, px, c, f, border, bt(S_DEPTH))
    bldg = put_urban_buildings(out, d, px, f, lots, built_block, floors)
    put_urban_open_space(out, px, inside, bt(S_COURT), court=inside & built_block & ~bldg, park=inside & park,
                         parking=inside & parking)
    put_urban_streets(out, c, px, hw, border)
    return out


def urban_lots(d: District, px: Pixels, c: Cells, f: EdgeFrame, border: float, depth_draw: np.ndarray) -> UrbanLots:
    """Corner lots 14-24 m deep from both edges, the rest of each edge cut into lots of 12-30 m."""
    inside = f.depth >= 0
    corner_d = 14.0 + 10.0 * depth_draw
    # Corner lots: near two perpendicular edges at once.
    da = np.minimum(c.a0, c.a1) - border
    db = np.minimum(c.b0, c.b1) - border
    corner = inside & (da < corner_d) & (db < corner_d)
    corner_id = 2 * (c.a0 > c.a1) + (c.b0 > c.b1)
    max_lots = 16
    lot_w0 = 12.0 + 18.0 * Lookup(px, d, c.n_blocks * 4, c.block * 4 + f.side)(S_LOTW)
    span = f.length - 2 * corner_d
    nlots = np.floor(span / lot_w0)
    lot_w = span / np.maximum(nlots, 1)
    lot = np.clip(np.floor((f.along - corner_d) / lot_w).astype(np.int64), 0, max_lots - 1)
    in_lots = inside & ~corner & (nlots >= 1) & (f.along >= corner_d) & (f.along < f.length - corner_d)
    # One table over edge lots (side 0..3, lot) and corner lots (side 4..7, lot 0).
    slot_side = np.where(corner, 4 + corner_id, f.side)
    slot_lot = np.where(corner, 0, lot)
    lot_key = (c.block * 8 + slot_side) * max_lots + slot_lot
    lt = Lookup(px, d, c.n_blocks * 8 * max_lots, lot_key)
    # corner lots span [0, corner_d) from both edges; rect_ok checks the lot's footprint
    lot_start = np.where(corner, np.where(f.along < f.length / 2, 0.0, f.length - corner_d), corner_d + lot * lot_w)
    lot_len = np.where(corner, corner_d, lot_w)
    return UrbanLots(corner, in_lots, lot_key, lt, corner_d, lot_start, lot_len)


def put_urban_buildings(out: Paint, d: District, px: Pixels, f: EdgeFrame, lots: UrbanLots, built_block: np.ndarray,
                        floors: tuple[int, int]) -> np.ndarray:
    """A building of ``floors`` storeys (a few towers) on most lots of the built blocks, where it fits the district,
    with rooftop boxes; returns the buildings' pixels."""
    lt, corner, corner_d = lots.table, lots.corner, lots.depth
    present = lt(S_PRESENT) < 0.94
    bdepth = np.where(corner, corner_d, corner_d * (0.75 + 0.25 * lt(S_HWID)))
    lo, hi = floors
    nfl = lo + np.floor((hi - lo + 1) * lt(S_FLOORS))
    nfl = np.where(lt(S_TOWER) < 0.06, 12 + np.floor(14 * lt(S_STOREYS)), nfl)
    height = nfl * 3.3 + 0.6
    fam = np.minimum((lt(S_FAMILY) * len(palette.URBAN_ROOFS)).astype(np.int64), len(palette.URBAN_ROOFS) - 1)

    cand = built_block & present & (corner | lots.in_lots) & (f.depth < bdepth)
    ok = rect_ok(px, d, cand, f.side, f.depth, f.along, 0.0, bdepth, lots.start, lots.start + lots.length)
    good = np.zeros(lt.size, dtype=bool)
    good[lots.key[ok]] = True
    bldg = cand & good[lots.key]
    # Rooftop boxes (air conditioning, stair houses) on a 6 m sub-grid.
    cu = np.floor(px.uw / 6.0).astype(np.int64)
    cv = np.floor(px.vw / 6.0).astype(np.int64)
    fu, fv = px.uw - cu * 6.0, px.vw - cv * 6.0
    box = bldg & (rand01(px.seed, d.id, S_BOX, cu, cv) < 0.16) & (fu > 1.5) & (fu < 3.8) & (fv > 1.5) & (fv < 3.8)
    box &= f.depth > 1.5
    roof = jitter_rgb(palette.URBAN_ROOFS, fam, (0.9 + 0.2 * lt(S_TONE)) * (1.0 + 0.04 * px.tex), bldg)
    out.put(bldg, kind=palette.BUILDING, objh=height[bldg], albedo=roof,
            wall=jitter_rgb(palette.URBAN_WALLS, fam, 0.9 + 0.2 * lt(S_WALLTONE), bldg), treed=0.0)
    out.put(box, objh=height[box] + 1.8, albedo=palette.ROOFTOP_BOX)
    return bldg


def put_urban_open_space(out: Paint, px: Pixels, inside: np.ndarray, court_draw: np.ndarray, court: np.ndarray,
                         park: np.ndarray, parking: np.ndarray) -> None:
    """Courtyards (green where the block's ``court_draw`` < 0.4), parks, and parking lots with their stalls."""
    green_court = court_draw < 0.4
    lawn = palette.LAWN[0] * (1.0 + 0.1 * px.tex)[:, None]
    gc = court & green_court
    out.put(gc, kind=palette.GROUND, albedo=lawn[gc], treed=0.12)
    out.treed[court & ~green_court] = 0.05
    out.put(park, kind=palette.GROUND, albedo=lawn[park], treed=0.35)
    out.put(parking, kind=palette.PAVED, albedo=palette.PARKING * (1.0 + 0.05 * px.tex[parking])[:, None], treed=0.0)
    row = np.mod(px.vw, 14.0)
    stall = parking & (np.mod(px.uw, 2.7) < 0.5) & (((row > 1.0) & (row < 5.5)) | ((row > 8.5) & (row < 13.0)))
    out.put(stall, albedo=palette.MARKING_WHITE)


def put_urban_streets(out: Paint, c: Cells, px: Pixels, hw: float, border: float) -> None:
    """Sidewalks with street trees, then the carriageway with lane markings."""
    sw = (c.road_d >= hw) & (c.road_d < border)
    out.put(sw, kind=palette.PAVED, albedo=palette.SIDEWALK * (1.0 + 0.04 * px.tex[sw])[:, None], treed=0.0)
    out.treed[sw & (c.road_d > border - 2.0) & (c.road_d < border - 0.8)] = 0.3
    road = paint_roads(out, c, px, hw, np.broadcast_to(palette.ASPHALT, (len(px.x), 3)))
    lane = road & (np.abs(c.road_d - hw / 2) < 0.6 * px.mpp) & (np.mod(c.road_along, 6.0) < 3.0)
    out.put(lane, albedo=palette.MARKING_WHITE)
    out.put(road & (c.road_d < 0.6 * px.mpp), albedo=palette.MARKING_YELLOW)


# ---------------------------------------------------------------------------------------------- rural


class Parcels(NamedTuple):
    """A rural block's fields, per pixel, in the block's own coordinates (inside its verges)."""

    a: np.ndarray  # position across the block along u, from its verge (m)
    b: np.ndarray  # the same along v
    len_u: np.ndarray  # the block's extent inside its verges along u (m)
    len_v: np.ndarray
    cut_d: np.ndarray  # distance to the nearest field border (m)
    hedge: np.ndarray  # that border is a hedge
    track: np.ndarray  # that border is a farm track
    table: Lookup  # the field's random attributes


def paint_rural(d: District, px: Pixels) -> Paint:
    g = d.grid
    n = len(px.x)
    c = locate(g, px.uw, px.vw)
    hw = g.half_width
    verge = hw + 2.5
    out = Paint(n, palette.MEADOW, px.tex)
    f = edge_frame(c, verge)
    inside = f.depth >= 0

    bt = Lookup(px, d, c.n_blocks, c.block)
    parcels = rural_parcels(d, px, c, bt, verge)
    put_fields(out, px, inside, parcels)
    put_farmstead(out, d, px, c, bt, inside, parcels)

    line_gravel = Lookup(px, d, len(g.u) + len(g.v), c.road_line)(S_SURFACE) < 0.4
    surface = np.where(line_gravel[:, None], palette.GRAVEL, palette.ASPHALT_OLD)
    road = paint_roads(out, c, px, hw, surface)
    marking = road & ~line_gravel & (c.road_d < 0.6 * px.mpp) & (np.mod(c.road_along, 9.0) < 4.5)
    out.put(marking, albedo=palette.MARKING_YELLOW)
    return out


def rural_parcels(d: District, px: Pixels, c: Cells, bt: Lookup, verge: float) -> Parcels:
    """Each block is cut into 1-8 columns along u (60-180 m wide), each column into 1-8 fields along v (60-200 m
    long), so field edges do not line up from one column to the next."""
    a = c.a0 - verge
    b = c.b0 - verge
    lu, lv = c.len_u - 2 * verge, c.len_v - 2 * verge
    max_parts = 8
    n_u = np.clip(np.round(lu / (60.0 + 120.0 * bt(S_NCUT))), 1, max_parts)
    fu = np.clip(a / np.maximum(lu, 1.0), 0.0, 0.9999) * n_u
    pu = fu.astype(np.int64)
    col = Lookup(px, d, c.n_blocks * max_parts, c.block * max_parts + pu)
    n_v = np.clip(np.round(lv / (60.0 + 140.0 * col(S_NCUT))), 1, max_parts)
    fv = np.clip(b / np.maximum(lv, 1.0), 0.0, 0.9999) * n_v
    pv = fv.astype(np.int64)
    # distance to the nearest parcel border, and that border's id (for hedges and farm tracks)
    ru, rv = fu - pu, fv - pv
    du = np.minimum(ru, 1.0 - ru) * lu / n_u
    dv = np.minimum(rv, 1.0 - rv) * lv / n_v
    near_u = du <= dv
    cut_d = np.minimum(du, dv)
    border_id = np.where(near_u, c.block * 2 * (max_parts + 1) + pu + (ru > 0.5),
                         (c.block * 2 + 1) * (max_parts + 1) * (max_parts + 1) + pu * (max_parts + 1) + pv + (rv > 0.5))
    border = Lookup(px, d, 2 * c.n_blocks * (max_parts + 1) ** 2 + 1, border_id)
    hedge = (cut_d < 2.0) & (border(S_HEDGE) < 0.4)
    track = (cut_d < 2.0) & (border(S_TRACK) < 0.12) & ~hedge
    pt = Lookup(px, d, c.n_blocks * max_parts * max_parts, (c.block * max_parts + pu) * max_parts + pv)
    return Parcels(a, b, lu, lv, cut_d, hedge, track, pt)


def put_fields(out: Paint, px: Pixels, inside: np.ndarray, parcels: Parcels) -> None:
    """A striped crop per field, hedges and farm tracks on its borders, a few lone trees in pastures."""
    pt, cut_d = parcels.table, parcels.cut_d
    cum = np.cumsum(palette.CROP_WEIGHTS) / palette.CROP_WEIGHTS.sum()
    crop = np.minimum(np.searchsorted(cum, pt(S_CROP), side="right"), len(palette.CROP_COLOURS) - 1)
    orient = pt(S_ORIENT) < 0.5
    period = 1.2 + 2.4 * pt(S_PERIOD)
    s = np.where(orient, px.uw, px.vw)
    stripes = 1.0 + palette.CROP_STRIPES[crop] * np.sin(2 * np.pi * s / period)
    colour = palette.CROP_COLOURS[crop] * ((0.92 + 0.16 * pt(S_TONE)) * stripes * (1.0 + 0.06 * px.tex))[:, None]
    field = inside & (cut_d >= 1.5)
    out.put(field, kind=palette.FIELD, objh=palette.CROP_HEIGHTS[crop][field], albedo=colour[field])
    out.treed[inside & parcels.hedge] = 0.8
    out.treed[field & (crop == 4)] = 0.015  # a few lone trees in pastures
    tr = inside & parcels.track
    out.put(tr, kind=palette.ROAD, objh=0.0, albedo=palette.GRAVEL * (1.0 + 0.08 * px.tex[tr])[:, None], treed=0.0)
    out.centre |= tr & (cut_d < 0.75 * px.mpp)


def put_farmstead(out: Paint, d: District, px: Pixels, c: Cells, bt: Lookup, inside: np.ndarray,
                  parcels: Parcels) -> None:
    """On most large blocks, a farmstead near the block's north-west corner: a gravel yard with a windbreak, a
    house, a barn and one or two silos, where the whole compound fits the district."""
    n = len(px.x)
    a, b = parcels.a, parcels.b
    farm = (bt(S_FARM) < 0.6) & (parcels.len_u > 130) & (parcels.len_v > 130)
    ox = 5.0 + 15.0 * bt(S_FARMX)
    oy = 5.0 + 35.0 * bt(S_FARMY)
    p, q = a - ox, b - oy
    compound = farm & inside & (p >= 0) & (p < 56) & (q >= 0) & (q < 48)
    zeros = np.zeros(n)
    ok = rect_ok(px, d, compound, np.zeros(n, dtype=np.int64), a, b, zeros + ox, zeros + ox + 56, zeros + oy,
                 zeros + oy + 48)
    good = np.zeros(c.n_blocks, dtype=bool)
    good[c.block[ok]] = True
    compound &= good[c.block]
    out.put(compound, kind=palette.PAVED, objh=0.0, albedo=palette.GRAVEL * (1.0 + 0.08 * px.tex[compound])[:, None],
            treed=0.0)
    wind = compound & ((p >= 50) | (q >= 42))
    out.put(wind, kind=palette.GROUND, albedo=palette.MEADOW, treed=0.9)
    fam = np.minimum((bt(S_FAMILY) * len(palette.HOUSE_ROOFS)).astype(np.int64), len(palette.HOUSE_ROOFS) - 1)
    house = compound & (p >= 4) & (p < 16) & (q >= 4) & (q < 14)
    storeys = 1 + (bt(S_STOREYS) < 0.5)
    out.put(house, kind=palette.BUILDING, objh=gable(q, 4.0, 14.0, 2.9 * storeys + 0.3, 2.5)[house],
            albedo=palette.HOUSE_ROOFS[fam[house]], wall=palette.HOUSE_WALLS[fam[house]])
    bfam = np.minimum((bt(S_BARN) * len(palette.BARN_ROOFS)).astype(np.int64), len(palette.BARN_ROOFS) - 1)
    barn = compound & (p >= 24) & (p < 38) & (q >= 6) & (q < 30)
    out.put(barn, kind=palette.BUILDING, objh=gable(p, 24.0, 38.0, 5.0, 4.0)[barn],
            albedo=palette.BARN_ROOFS[bfam[barn]], wall=palette.BARN_WALLS[bfam[barn]])
    silo1 = compound & ((p - 45.0) ** 2 + (q - 10.0) ** 2 < 3.6**2)
    silo2 = compound & (bt(S_SILO) < 0.5) & ((p - 45.0) ** 2 + (q - 19.0) ** 2 < 3.0**2)
    out.put(silo1, kind=palette.BUILDING, objh=15.0, albedo=palette.SILO)
    out.put(silo2, kind=palette.BUILDING, objh=12.0, albedo=palette.SILO * 0.96)


# ---------------------------------------------------------------------------------------------- forest


def paint_forest(d: District, px: Pixels) -> Paint:
    g = d.grid
    n = len(px.x)
    c = locate(g, px.uw, px.vw)
    out = Paint(n, palette.FOREST_FLOOR, px.tex)
    clearing = px.clearing > 0.75
    out.put(clearing, albedo=palette.MEADOW * (1.0 + 0.1 * px.tex[clearing])[:, None])
    out.treed[:] = np.where(clearing, 0.03, 0.92)
    out.treed[c.road_d < g.half_width + 2.0] = 0.0
    paint_roads(out, c, px, g.half_width, np.broadcast_to(palette.GRAVEL, (n, 3)))
    return out


PAINTERS = {palette.URBAN: paint_urban, palette.SUBURBAN: paint_suburban, palette.RURAL: paint_rural,
            palette.FOREST: paint_forest}

# Street grid parameters per area type: spacing along u and v (m), segment drop rate, carriageway half
# width (m), warp amplitude range (m), warp wavelength range (m).
GRID_PARAMS = {
    palette.URBAN: dict(spacing_u=(75, 115), spacing_v=(65, 100), drop=0.04, half_width=(5.5, 7.5), warp=(0, 0),
                  warp_len=(200, 300)),
    palette.SUBURBAN: dict(spacing_u=(100, 150), spacing_v=(62, 90), drop=0.12, half_width=(3.6, 4.4), warp=(0, 14),
                     warp_len=(160, 320)),
    palette.RURAL: dict(spacing_u=(300, 700), spacing_v=(300, 700), drop=0.2, half_width=(3.0, 3.6), warp=(0, 6),
                  warp_len=(300, 600)),
    palette.FOREST: dict(spacing_u=(220, 420), spacing_v=(220, 420), drop=0.45, half_width=(2.8, 3.2), warp=(10, 30),
                   warp_len=(200, 400)),
}
