"""The world while it is being built: raster layers at ``mpp`` metres per pixel and drawing primitives.

Raster convention: pixel (row, col) covers world coordinates x in [col, col + 1), y in [row, row + 1)
(pixel units); x grows east, y grows south, like the satellite image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from geoapp.synth import palette
from geoapp.synth.parallel import shared_zeros


@dataclass
class WorldCanvas:
    mpp: float
    terrain: np.ndarray  # float32 ground elevation (m)
    objh: np.ndarray  # float32 object height above the ground (m)
    albedo: np.ndarray  # uint8 RGB, colour seen from above
    wall: np.ndarray  # uint8 RGB, colour of the object's sides seen from the street
    kind: np.ndarray  # uint8 surface kind (palette.GROUND...)
    area: np.ndarray  # uint8 area type of the district (palette.URBAN...)
    treed: np.ndarray  # uint8 tree density 0..255 (generation only)
    centre: np.ndarray  # bool road centre lines (generation only: where cameras go)
    shared: bool = False  # arrays live in shared memory (forked painters write into them)

    @property
    def shape(self) -> tuple[int, int]:
        return self.terrain.shape

    @classmethod
    def blank(cls, width_px: int, height_px: int, mpp: float = 0.5, ground_rgb=(120, 124, 112),
              area: int = palette.SUBURBAN, shared: bool = False) -> WorldCanvas:
        """A flat, empty world (no terrain relief, no objects): a starting point for tests and demos.
        ``shared`` allocates the layers in anonymous shared memory, so processes forked later can write
        into them."""
        shape = (height_px, width_px)
        new = shared_zeros if shared else np.zeros
        albedo = new(shape + (3,), np.uint8)
        albedo[:] = np.asarray(ground_rgb, dtype=np.uint8)
        wall = new(shape + (3,), np.uint8)
        wall[:] = albedo
        area_map = new(shape, np.uint8)
        area_map[:] = area
        return cls(mpp=mpp, terrain=new(shape, np.float32), objh=new(shape, np.float32), albedo=albedo, wall=wall,
                   kind=new(shape, np.uint8), area=area_map, treed=new(shape, np.uint8), centre=new(shape, bool),
                   shared=shared)

    # ------------------------------------------------------------------ primitives
    def add_box(self, x: float, y: float, width_m: float, depth_m: float, height_m: float, roof_rgb, wall_rgb,
                angle_deg: float = 0.0, kind: int = palette.BUILDING) -> None:
        """A flat-roofed box centred at pixel coordinates (x, y); ``width_m`` runs east-west before rotating
        clockwise by ``angle_deg``."""
        a = math.radians(angle_deg)
        ex = np.array([math.cos(a), math.sin(a)]) * width_m / 2 / self.mpp
        ey = np.array([-math.sin(a), math.cos(a)]) * depth_m / 2 / self.mpp
        c = np.array([x, y])
        corners = np.array([c - ex - ey, c + ex - ey, c + ex + ey, c - ex + ey])
        # cv2 fills pixels whose centres lie inside; shift by -0.5 to use centre coordinates.
        poly = np.round((corners - 0.5) * 16).astype(np.int32)
        mask = np.zeros(self.shape, np.uint8)
        cv2.fillConvexPoly(mask, poly, 1, lineType=cv2.LINE_8, shift=4)
        m = mask.astype(bool)
        self.objh[m] = height_m
        self.kind[m] = kind
        self.albedo[m] = np.asarray(roof_rgb, np.uint8)
        self.wall[m] = np.asarray(wall_rgb, np.uint8)
        self.treed[m] = 0

    def stamp_trees(self, xs: np.ndarray, ys: np.ndarray, radius_m: np.ndarray, height_m: np.ndarray,
                    colours: np.ndarray, cone: np.ndarray) -> None:
        """Draw trees (dome or cone crowns) centred at pixel coordinates; taller crowns win where they
        overlap, buildings are never overwritten."""
        hgt, wid = self.shape
        # the leaf texture brightens by at most 1.18: keep colours low enough to need no clipping
        colours = np.clip(np.asarray(colours, dtype=np.float32), 0, 255 / 1.18)
        walls = (colours * 0.85).astype(np.uint8)
        for x, y, r_m, top, col, wall, is_cone in zip(xs, ys, radius_m, height_m, colours, walls, cone):
            r = max(1.0, float(r_m) / self.mpp)
            big_r = int(math.ceil(r))
            cx, cy = int(x), int(y)
            y0, y1 = max(0, cy - big_r), min(hgt, cy + big_r + 1)
            x0, x1 = max(0, cx - big_r), min(wid, cx + big_r + 1)
            if y1 <= y0 or x1 <= x0:
                continue
            base_d2, tex = _disc(big_r)
            sl = (slice(y0 - cy + big_r, y1 - cy + big_r), slice(x0 - cx + big_r, x1 - cx + big_r))
            d2 = base_d2[sl] * np.float32(1.0 / (r * r))
            inside = d2 < 1.0
            if is_cone:
                prof = np.float32(0.15 * top) + np.float32(0.85 * top) * (1.0 - np.sqrt(np.minimum(d2, 1.0)))
            else:
                prof = np.float32(0.4 * top) + np.float32(0.6 * top) * np.sqrt(np.maximum(1.0 - d2, 0.0))
            oh = self.objh[y0:y1, x0:x1]
            kd = self.kind[y0:y1, x0:x1]
            m = inside & (prof > oh) & (kd != palette.BUILDING)
            oh[m] = prof[m]
            kd[m] = palette.TREE
            self.albedo[y0:y1, x0:x1][m] = (col[None, :] * tex[sl][m][:, None]).astype(np.uint8)
            self.wall[y0:y1, x0:x1][m] = wall


@lru_cache(maxsize=64)
def _disc(big_r: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared pixel distances from the centre of a (2R+1)^2 patch, and a fixed leafy texture factor."""
    d = np.arange(-big_r, big_r + 1, dtype=np.float32)
    d2 = d[:, None] ** 2 + d[None, :] ** 2
    rng = np.random.default_rng(1000 + big_r)
    tex = (0.82 + 0.36 * rng.random(d2.shape)).astype(np.float32)
    tex = cv2.GaussianBlur(tex, (3, 3), 0.7)
    d2.setflags(write=False)
    tex.setflags(write=False)
    return d2, tex
