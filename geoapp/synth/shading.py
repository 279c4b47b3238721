"""Sun lighting of the world: Lambert shading from the height field and cast shadows.

The satellite view and the ground view are lit by two slightly different suns (a few degrees apart,
as when the two photos are taken at different times), so shadows and shading differ mildly between
the views while the objects stay the same. Work is done in horizontal strips to bound memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from geoapp.synth.parallel import WORKER_STATE, fork_map, shared_zeros

AMBIENT = 0.42  # share of light that reaches shadowed / facing-away surfaces


@dataclass(frozen=True)
class Sun:
    azimuth_deg: float  # compass bearing toward the sun (0 = north, 90 = east)
    elevation_deg: float

    def vector(self) -> tuple[float, float, float]:
        """Unit vector toward the sun in world axes (x east, y south, z up)."""
        az = math.radians(self.azimuth_deg)
        el = math.radians(self.elevation_deg)
        return math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)


def cast_shadows(height: np.ndarray, sun: Sun, mpp: float, factor: int = 2) -> np.ndarray:
    """Shadow mask (uint8, 255 = in shadow) by marching toward the sun over the height field.

    The march runs at ``1/factor`` resolution on the max-pooled heights (thin objects keep their
    shadows); each distinct integer offset toward the sun is tested once, and the result is upsampled
    with linear interpolation, which softens the shadow edges a little like a real penumbra.
    """
    h_full, w_full = height.shape
    hh, ww = h_full // factor, w_full // factor
    h2 = height[0 : hh * factor : factor, 0 : ww * factor : factor].copy()
    for oy in range(factor):
        for ox in range(factor):
            if oy or ox:
                np.maximum(h2, height[oy : hh * factor : factor, ox : ww * factor : factor], out=h2)
    sx, sy, sz = sun.vector()
    horiz = math.hypot(sx, sy)
    tan_e = sz / max(horiz, 1e-6)
    step_m = factor * mpp
    rise = float(h2.max() - h2.min())
    n_steps = int(min(400, math.ceil(rise / tan_e / step_m) + 1))
    occluder = np.full(h2.shape, -np.inf, dtype=np.float32)
    buf = np.empty(h2.shape, dtype=np.float32)
    seen = set()
    for k in range(1, n_steps + 1):
        dx = int(round(k * sx / horiz))
        dy = int(round(k * sy / horiz))
        if (dx, dy) in seen or (dx == 0 and dy == 0):
            continue
        seen.add((dx, dy))
        drop = math.hypot(dx, dy) * step_m * tan_e
        # destination p and source p + (dx, dy) must both lie inside the grid
        y0, y1 = max(0, -dy), min(hh, hh - dy)
        x0, x1 = max(0, -dx), min(ww, ww - dx)
        if y1 <= y0 or x1 <= x0:
            continue
        tmp = buf[: y1 - y0, : x1 - x0]
        np.subtract(h2[y0 + dy : y1 + dy, x0 + dx : x1 + dx], np.float32(drop), out=tmp)
        np.maximum(occluder[y0:y1, x0:x1], tmp, out=occluder[y0:y1, x0:x1])
    small = ((occluder > h2 + 0.25) * np.uint8(255)).astype(np.uint8)
    full = cv2.resize(small, (ww * factor, hh * factor), interpolation=cv2.INTER_LINEAR)
    if full.shape != (h_full, w_full):
        full = cv2.copyMakeBorder(full, 0, h_full - full.shape[0], 0, w_full - full.shape[1], cv2.BORDER_REPLICATE)
    return full


def _strips(n_rows: int, strip: int, halo: int):
    for r0 in range(0, n_rows, strip):
        r1 = min(n_rows, r0 + strip)
        a0, a1 = max(0, r0 - halo), min(n_rows, r1 + halo)
        yield r0, r1, a0, a1


def _lambert(gx: np.ndarray, gy: np.ndarray, sun: Sun) -> np.ndarray:
    """Direct light relative to flat ground (1.0 on flat ground, 0 facing away) from height gradients."""
    sx, sy, sz = sun.vector()
    inv = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    lam = (-gx * sx - gy * sy + sz) * inv
    return np.clip(lam / sz, 0.0, 1.35)


def shade_world(height: np.ndarray, objh: np.ndarray, albedo: np.ndarray, wall: np.ndarray, mpp: float,
                sun_sat: Sun, sun_ground: Sun, strip: int = 1024, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Return (satellite colour H x W x 3, street-view colours 2 x H x W x 3: [0] top surfaces, [1] walls
    and foliage), uint8. With ``workers`` > 1 the two shadow maps and the strips are computed by forked
    processes writing into shared memory (same result)."""
    new = shared_zeros if workers > 1 else np.zeros
    shadows = new((2,) + height.shape, np.uint8)
    sat = new(albedo.shape, np.uint8)
    street = new((2,) + albedo.shape, np.uint8)
    state = dict(height=height, objh=objh, albedo=albedo, wall=wall, mpp=mpp, suns=(sun_sat, sun_ground),
                 shadows=shadows, sat=sat, street=street)
    for _ in fork_map(_shadow_task, (0, 1), workers, state):
        pass
    sigma = max(1.0, 1.5 / mpp)
    halo = int(3 * sigma) + 3
    for _ in fork_map(_shade_strip, list(_strips(height.shape[0], strip, halo)), workers, state):
        pass
    return sat, street


def _shadow_task(which: int) -> None:
    st = WORKER_STATE
    st["shadows"][which] = cast_shadows(st["height"], st["suns"][which], st["mpp"])


def _shade_strip(rows: tuple[int, int, int, int]) -> None:
    r0, r1, a0, a1 = rows
    st = WORKER_STATE
    mpp, (sun_sat, sun_ground) = st["mpp"], st["suns"]
    gsx, gsy, _ = sun_ground.vector()
    gh = math.hypot(gsx, gsy)
    gsx, gsy = gsx / gh, gsy / gh
    sigma = max(1.0, 1.5 / mpp)
    h = st["height"][a0:a1]
    gx = cv2.Sobel(h, cv2.CV_32F, 1, 0, ksize=3) * np.float32(1.0 / (8.0 * mpp))
    gy = cv2.Sobel(h, cv2.CV_32F, 0, 1, ksize=3) * np.float32(1.0 / (8.0 * mpp))
    s0, s1 = r0 - a0, r1 - a0
    gx, gy = gx[s0:s1], gy[s0:s1]
    alb = st["albedo"][r0:r1].astype(np.float32)
    for out, sun, shadow in ((st["sat"], sun_sat, st["shadows"][0]), (st["street"][0], sun_ground, st["shadows"][1])):
        direct = _lambert(gx, gy, sun) * (1.0 - np.float32(0.85 / 255.0) * shadow[r0:r1])
        shade = np.float32(AMBIENT) + np.float32(1.0 - AMBIENT) * direct
        out[r0:r1] = np.clip(alb * shade[:, :, None], 0, 255).astype(np.uint8)
    # Walls: horizontal outward normal from the blurred object-height gradient.
    ob = cv2.GaussianBlur(st["objh"][a0:a1], (0, 0), sigma)
    bx = cv2.Sobel(ob, cv2.CV_32F, 1, 0, ksize=3)[s0:s1]
    by = cv2.Sobel(ob, cv2.CV_32F, 0, 1, ksize=3)[s0:s1]
    norm = np.sqrt(bx * bx + by * by)
    facing = np.where(norm > 1e-3, -(bx * gsx + by * gsy) / np.maximum(norm, 1e-6), 0.25)
    wall_shade = np.float32(0.5) + np.float32(0.5) * np.clip(facing, 0.0, 1.0)
    st["street"][1][r0:r1] = np.clip(st["wall"][r0:r1].astype(np.float32) * wall_shade[:, :, None], 0,
                                     255).astype(np.uint8)
