"""World plan (size, train / val / test regions) and camera locations.

The world is a grid of square blocks; some blocks are *test* blocks (the reported split), some *val*
blocks (model selection), the rest *train*. A val or test location keeps its whole satellite tile inside a
block of its own split, and a train location keeps its tile at least half a tile away from every val and
test block, so no tile of one split overlaps a tile of another (and, because the ground panorama only sees
as far as the tile reaches, no panorama sees into another split's area).

Cameras stand on road centre lines when a road is near (like Street View), otherwise on free ground
(never inside a building, a tree, or water), on a jittered grid with a minimum spacing per split (val
cameras use the test spacing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geoapp.synth import palette

TRAIN, VAL, TEST = "train", "val", "test"
HELD_OUT = (VAL, TEST)  # splits whose tiles stay inside blocks of their own
# share of jittered-grid candidates that end up as valid, well separated cameras (measured on default worlds)
EXPECTED_YIELD = {TRAIN: 0.7, VAL: 0.9, TEST: 0.9}


@dataclass(frozen=True)
class Block:
    x0: float  # metres east of the west edge
    y0: float  # metres south of the north edge
    x1: float
    y1: float
    split: str


@dataclass(frozen=True)
class WorldPlan:
    width_m: float
    height_m: float
    block_m: float
    blocks: tuple[Block, ...]
    n_test_blocks: int = 0
    n_val_blocks: int = 0

    @property
    def grid(self) -> tuple[int, int]:
        """Blocks along x and along y."""
        return int(round(self.width_m / self.block_m)), int(round(self.height_m / self.block_m))

    def blocks_of(self, split: str) -> list[Block]:
        return [b for b in self.blocks if b.split == split]

    @property
    def test_blocks(self) -> list[Block]:
        return self.blocks_of(TEST)

    @property
    def val_blocks(self) -> list[Block]:
        return self.blocks_of(VAL)

    @property
    def held_out_blocks(self) -> list[Block]:
        """The val and test blocks: training tiles keep half a tile away from all of them."""
        return [b for b in self.blocks if b.split in HELD_OUT]


def plan_world(n_train: int, n_test: int, tile_m: float, block_m: float, train_spacing: float,
               test_spacing: float, slack: float = 1.2, n_val: int = 0) -> WorldPlan:
    """Size the world (a grid of blocks, all *train* for now) for the requested numbers of locations (val
    locations are placed like test locations, with the test spacing, in blocks of their own)."""
    usable_test = block_m - tile_m
    if (n_test > 0 or n_val > 0) and usable_test < test_spacing:
        raise ValueError(f"--block-metres ({block_m:g}) must exceed --tile-metres ({tile_m:g}) plus "
                         f"--test-spacing ({test_spacing:g}) so that val and test tiles fit inside their blocks")
    cap_test = (usable_test / test_spacing) ** 2 * EXPECTED_YIELD[TEST]
    cap_train = (block_m / train_spacing) ** 2 * EXPECTED_YIELD[TRAIN] * 0.8  # 0.8: room lost next to held-out blocks
    n_tb = math.ceil(n_test * slack / cap_test) if n_test > 0 else 0
    n_vb = math.ceil(n_val * slack / cap_test) if n_val > 0 else 0
    n_rb = max(1, math.ceil(n_train * slack / cap_train)) if n_train > 0 else 0
    n = max(1, n_tb + n_vb + n_rb)
    gx = math.ceil(math.sqrt(n))
    gy = math.ceil(n / gx)
    blocks = tuple(Block(i * block_m, j * block_m, (i + 1) * block_m, (j + 1) * block_m, TRAIN)
                   for j in range(gy) for i in range(gx))
    return WorldPlan(gx * block_m, gy * block_m, block_m, blocks, n_tb, n_vb)


def _choose_blocks(plan: WorldPlan, count: int, free: list[int], avoid: list[int], block_mix: np.ndarray,
                   rng: np.random.Generator, trials: int) -> list[int]:
    """``count`` of the ``free`` blocks whose mix of area types best matches the whole world's, preferring
    blocks that touch neither each other nor the ``avoid`` blocks."""
    gx, _ = plan.grid
    target = block_mix.mean(axis=0)
    free_arr = np.asarray(free, dtype=np.int64)

    def apart(k: int, others) -> bool:
        return all(max(abs(k % gx - c % gx), abs(k // gx - c // gx)) > 1 for c in others)

    best, best_score = None, np.inf
    for _ in range(trials):
        chosen: list[int] = []
        for k in rng.permutation(free_arr):
            if len(chosen) == count:
                break
            if apart(int(k), chosen) and apart(int(k), avoid):
                chosen.append(int(k))
        if len(chosen) < count:  # too crowded to keep the blocks apart: fill up anyway
            rest = [int(k) for k in rng.permutation(free_arr) if k not in chosen]
            chosen += rest[: count - len(chosen)]
        score = float(np.abs(block_mix[chosen].mean(axis=0) - target).sum())
        if score < best_score - 1e-12:
            best, best_score = sorted(chosen), score
    return best


def assign_blocks(plan: WorldPlan, block_mix: np.ndarray, rng: np.random.Generator, trials: int = 400) -> WorldPlan:
    """Choose ``plan.n_test_blocks`` test blocks, then ``plan.n_val_blocks`` val blocks among the others, each set
    with a mix of area types (``block_mix``: blocks x types, fractions) that best matches the whole world's,
    preferring blocks that do not touch each other (nor, for val, a test block)."""
    n_tb, n_vb = plan.n_test_blocks, plan.n_val_blocks
    if n_tb + n_vb == 0:
        return plan
    if n_tb + n_vb >= len(plan.blocks):
        raise ValueError(f"{n_tb} test + {n_vb} val blocks leave no training block in a world of {len(plan.blocks)}")
    everything = list(range(len(plan.blocks)))
    test = _choose_blocks(plan, n_tb, everything, [], block_mix, rng, trials) if n_tb else []
    rest = [k for k in everything if k not in set(test)]
    val = _choose_blocks(plan, n_vb, rest, test, block_mix, rng, trials) if n_vb else []
    split_of = {**{k: TEST for k in test}, **{k: VAL for k in val}}
    blocks = tuple(Block(b.x0, b.y0, b.x1, b.y1, split_of.get(k, TRAIN)) for k, b in enumerate(plan.blocks))
    return WorldPlan(plan.width_m, plan.height_m, plan.block_m, blocks, n_tb, n_vb)


def assign_test_blocks(plan: WorldPlan, block_mix: np.ndarray, rng: np.random.Generator,
                       trials: int = 400) -> WorldPlan:
    """The former name of :func:`assign_blocks` (it now assigns val blocks too)."""
    return assign_blocks(plan, block_mix, rng, trials)


def split_ok(plan: WorldPlan, split: str, x_m: np.ndarray, y_m: np.ndarray, tile_m: float) -> np.ndarray:
    """Whether cameras at (x_m, y_m) keep their tile inside the world and on their split's side: a val or test
    tile inside a block of its split, a train tile at least half a tile from every val and test block."""
    half = tile_m / 2
    x_m, y_m = np.asarray(x_m, dtype=np.float64), np.asarray(y_m, dtype=np.float64)
    ok = (x_m >= half) & (x_m <= plan.width_m - half) & (y_m >= half) & (y_m <= plan.height_m - half)
    if split in HELD_OUT:
        inside = np.zeros(x_m.shape, dtype=bool)
        for b in plan.blocks_of(split):
            inside |= (x_m >= b.x0 + half) & (x_m <= b.x1 - half) & (y_m >= b.y0 + half) & (y_m <= b.y1 - half)
        return ok & inside
    for b in plan.held_out_blocks:
        # Chebyshev distance from the point to the block rectangle must be at least half a tile.
        dx = np.maximum(np.maximum(b.x0 - x_m, x_m - b.x1), 0.0)
        dy = np.maximum(np.maximum(b.y0 - y_m, y_m - b.y1), 0.0)
        ok &= np.maximum(dx, dy) >= half + 1e-6
    return ok


@dataclass
class Locations:
    x: np.ndarray  # world pixel coordinates of the camera (float64, whole numbers; x east, y south)
    y: np.ndarray
    split: np.ndarray  # "train" / "val" / "test"
    area: np.ndarray  # palette area type at the camera
    on_road: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.x)

    @classmethod
    def empty(cls) -> Locations:
        return cls(np.zeros(0), np.zeros(0), np.zeros(0, dtype="<U5"), np.zeros(0, np.uint8), np.zeros(0, bool))


def free_ground(kind: np.ndarray, objh: np.ndarray, mpp: float, clearance_m: float = 2.0) -> np.ndarray:
    """Where a camera may stand: open ground at least ``clearance_m`` from buildings, trees and water."""
    import cv2

    obstacle = (np.isin(kind, (palette.BUILDING, palette.TREE, palette.WATER, palette.POOL)) | (objh > 1.2))
    r = max(1, int(round(clearance_m / mpp)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(obstacle.astype(np.uint8), kernel) == 0


def sample_locations(plan: WorldPlan, centre: np.ndarray, free: np.ndarray, area: np.ndarray, mpp: float,
                     tile_m: float, n_train: int, n_test: int, train_spacing: float, test_spacing: float,
                     rng: np.random.Generator, n_val: int = 0) -> Locations:
    """Exactly ``n_train`` + ``n_val`` + ``n_test`` camera locations (train first, then val, then test; each split
    in random order; val cameras use the test spacing)."""
    out = []
    for split, n_want, spacing in ((TRAIN, n_train, train_spacing), (VAL, n_val, test_spacing),
                                   (TEST, n_test, test_spacing)):
        if n_want == 0:
            continue
        xs, ys, road = _candidates(plan, split, centre, free, mpp, tile_m, spacing, rng)
        if len(xs) < n_want:
            spacing_flag = "--train-spacing" if split == TRAIN else "--test-spacing"
            raise RuntimeError(
                f"the world has room for only {len(xs)} {split} locations, {n_want} were asked for; "
                f"lower {spacing_flag}, or raise --block-metres"
            )
        pick = rng.permutation(len(xs))[:n_want]
        out.append((xs[pick], ys[pick], np.full(n_want, split), road[pick]))
    if not out:
        return Locations.empty()
    x = np.concatenate([o[0] for o in out])
    y = np.concatenate([o[1] for o in out])
    ar = area[y.astype(np.int64), x.astype(np.int64)]
    return Locations(x, y, np.concatenate([o[2] for o in out]), ar, np.concatenate([o[3] for o in out]))


def _candidates(plan: WorldPlan, split: str, centre: np.ndarray, free: np.ndarray, mpp: float, tile_m: float,
                spacing: float, rng: np.random.Generator):
    """Jittered-grid candidates of one split, snapped to a road or free ground, at least spacing/2 apart."""
    grid_x, grid_y = [], []
    for b in plan.blocks:
        if b.split != split:
            continue
        gx = np.arange(b.x0 + spacing / 2, b.x1, spacing)
        gy = np.arange(b.y0 + spacing / 2, b.y1, spacing)
        mx, my = np.meshgrid(gx, gy)
        mx = mx.ravel() + rng.uniform(-spacing / 4, spacing / 4, mx.size)
        my = my.ravel() + rng.uniform(-spacing / 4, spacing / 4, my.size)
        keep = split_ok(plan, split, mx, my, tile_m)
        grid_x.append(mx[keep])
        grid_y.append(my[keep])
    cx = np.concatenate(grid_x) / mpp
    cy = np.concatenate(grid_y) / mpp
    road_r = int(round(min(0.6 * spacing, 25.0) / mpp))  # cameras prefer roads, like Street View
    free_r = int(round(min(0.3 * spacing, 10.0) / mpp))
    h, w = centre.shape
    xs, ys, road = [], [], []
    taken: dict[tuple[int, int], list[tuple[float, float]]] = {}
    min_d = spacing / 2 / mpp
    cell = max(1.0, min_d)
    for i in rng.permutation(len(cx)):
        px, py = int(cx[i]), int(cy[i])
        found = None
        for grid, radius, is_road in ((centre, road_r, True), (None, free_r, False)):
            y0, y1, x0, x1 = max(0, py - radius), min(h, py + radius + 1), max(0, px - radius), min(w, px + radius + 1)
            mask = free[y0:y1, x0:x1] if grid is None else grid[y0:y1, x0:x1] & free[y0:y1, x0:x1]
            yy, xx = np.nonzero(mask)
            if len(yy):
                j = int(np.argmin((yy + y0 - py) ** 2 + (xx + x0 - px) ** 2))
                # cameras sit on the pixel's north-west corner: integer coordinates keep the tile
                # crop aligned with the world grid (a plain resize renders it)
                found = (float(xx[j] + x0), float(yy[j] + y0), is_road)
                break
        if found is None:
            continue
        fx, fy, is_road = found
        if not split_ok(plan, split, np.array([fx * mpp]), np.array([fy * mpp]), tile_m)[0]:
            continue
        key = (int(fx // cell), int(fy // cell))
        near = [p for dx in (-1, 0, 1) for dy in (-1, 0, 1) for p in taken.get((key[0] + dx, key[1] + dy), ())]
        if any((fx - qx) ** 2 + (fy - qy) ** 2 < min_d**2 for qx, qy in near):
            continue
        taken.setdefault(key, []).append((fx, fy))
        xs.append(fx)
        ys.append(fy)
        road.append(is_road)
    return np.asarray(xs), np.asarray(ys), np.asarray(road, dtype=bool)
