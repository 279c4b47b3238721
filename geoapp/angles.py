"""Headings, window offsets and field-of-view widths: the angle conventions of conventions §1, 2, 4 and 5.

Azimuths are compass bearings in degrees (0 = north, 90 = east, clockwise). A north-aligned panorama
of width W has column c looking toward ``c / W * 360 - 180`` (column 0 = south, W/2 = north).
All functions accept any panorama width; conventions §1's 512 is the default. Plain arithmetic on numbers and
arrays, so the data, the model and the search share one definition.
"""

from __future__ import annotations

import numpy as np

PANO_WIDTH = 512  # conventions §1: width of the satellite polar image and of the resized ground panorama


def fov_width(fov_deg: float, pano_width: int = PANO_WIDTH) -> int:
    """Width in pixels of a ``fov_deg`` crop of a ``pano_width`` panorama: ``int(fov / 360 * W)`` (conventions §1)."""
    if not 0 < fov_deg <= 360:
        raise ValueError(f"field of view must be in (0, 360] degrees, got {fov_deg}")
    return int(fov_deg / 360.0 * pano_width)


def wrap_degrees(angle):
    """Wrap an angle (scalar or array) to [-180, 180)."""
    return (np.asarray(angle, dtype=np.float64) + 180.0) % 360.0 - 180.0


def heading_from_shift(shift, fov_deg: float, width: int = PANO_WIDTH):
    """Heading (azimuth of the crop centre, in [-180, 180)) of the crop made with ``shift`` (conventions §4)."""
    shift = np.asarray(shift, dtype=np.float64)
    out = ((width - shift) / width * 360.0 + fov_deg / 2.0) % 360.0 - 180.0
    return float(out) if out.ndim == 0 else out


def shift_from_heading(heading_deg, fov_deg: float, width: int = PANO_WIDTH):
    """Inverse of :func:`heading_from_shift`: the (real-valued) shift in [0, W) whose crop looks toward
    ``heading_deg``. Round it to use it with :func:`crop_fov`."""
    heading = np.asarray(heading_deg, dtype=np.float64)
    left_edge_turns = ((heading + 180.0 - fov_deg / 2.0) % 360.0) / 360.0  # (W - shift) / W
    out = (width - left_edge_turns * width) % width
    return float(out) if out.ndim == 0 else out


def heading_from_offset(offset, window_width: int, map_width: int):
    """Heading predicted from a window offset ``o`` at a feature map of width ``W_b`` whose window is
    ``w_b`` wide (conventions §5): ``((o + w_b / 2) / W_b * 360) mod 360 - 180``."""
    o = np.asarray(offset, dtype=np.float64)
    out = ((o + window_width / 2.0) / map_width * 360.0) % 360.0 - 180.0
    return float(out) if out.ndim == 0 else out


def offset_from_heading(heading_deg, window_width: int, map_width: int):
    """Inverse of :func:`heading_from_offset`: the (real-valued) window offset in [0, W_b)."""
    h = np.asarray(heading_deg, dtype=np.float64)
    out = ((h + 180.0) / 360.0 * map_width - window_width / 2.0) % map_width
    out = np.where(out >= map_width, 0.0, out)  # float % can round up to exactly W_b; W_b is offset 0
    return float(out) if out.ndim == 0 else out


def true_offset(shift, map_width: int, pano_width: int = PANO_WIDTH):
    """The offset of the true window at a feature map of width ``W_b`` for a crop made with ``shift``:
    ``o* = (W - shift) / W * W_b`` (conventions §5), real-valued, in [0, W_b)."""
    s = np.asarray(shift, dtype=np.float64)
    out = ((pano_width - s) / pano_width * map_width) % map_width
    return float(out) if out.ndim == 0 else out


def angular_error(a_deg, b_deg):
    """Absolute circular difference in degrees, in [0, 180]."""
    return np.abs(wrap_degrees(np.asarray(a_deg, dtype=np.float64) - np.asarray(b_deg, dtype=np.float64)))
