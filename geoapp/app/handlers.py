"""The functions behind the UI, free of Gradio so they can be tested without a server.

``localize_photo`` answers the main event (a photo in, everything the page shows out); ``select_candidate``
answers a click on another candidate in the gallery. Problems with the input raise :class:`UserInputError`
with a message for the person; advice that does not stop the query (a panorama was cropped, an EXIF FoV
was unusable) comes back in ``notes``. Headings are compass bearings shown in [0, 360) (SPEC 2).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from geoapp.data.fov import angular_error
from geoapp.data.photo import ImageError, hfov_from_exif, load_image
from geoapp.data.polar import polar_transform
from geoapp.data.transforms import resize_image
from geoapp.retrieval.engine import Candidate, LocalizationResult

from . import render
from .context import AppContext
from .examples import Example
from .mapview import MapMarker, build_map, haversine_m, map_iframe

FOV_MIN, FOV_MAX, FOV_DEFAULT = 60.0, 120.0, 90.0
EXIF_FOV_RANGE = (10.0, 170.0)  # a pinhole camera's plausible horizontal FoV; outside it the EXIF is wrong
PANORAMA_ASPECT = 3.0  # width / height from which an upload is taken for a 360 deg panorama
GALLERY_LABEL = "rank · similarity score (0-1) · distance to the true location (examples) · ✓ the true tile"
PHOTO_TYPES = {"Phone photo (perspective)": "pinhole", "Panorama crop (already on the panorama grid)": "crop"}
GALLERY_SIDE = 256


class UserInputError(ValueError):
    """The request cannot be answered as given; the message tells the person what to change."""


@dataclass
class Selection:
    """The pictures and texts that follow the selected candidate (rank 1 after a query)."""

    heading_deg: float  # [0, 360)
    compass: np.ndarray
    polar_view: np.ndarray
    topdown_view: np.ndarray
    map_html: str
    summary: str


@dataclass
class QueryState:
    """What a later gallery click needs from the query, kept per browser session.

    The candidates are stored without their thumbnails and upsampled masks (over 1 MB per session at full
    resolution, and Gradio keeps thousands of sessions): the views read both from the database by index.
    """

    candidates: list[Candidate]
    fov_deg: float
    truth: Example | None
    distances_m: list[float | None]
    mask_stage: int

    @classmethod
    def of(cls, result: LocalizationResult, truth: Example | None, distances_m: list[float | None]) -> QueryState:
        light = [replace(c, thumbnail=None, satellite_mask=None) for c in result.candidates]
        return cls(light, result.fov_deg, truth, distances_m, result.mask_stage)


@dataclass
class LocalizeOutputs:
    gallery: list[tuple[np.ndarray, str]]
    ground_view: np.ndarray
    selection: Selection
    query_summary: str
    status: str
    state: QueryState
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- the photo


def prepare_photo(path: str | os.PathLike, fov_slider: float, photo_type: str,
                  example: Example | None) -> tuple[np.ndarray, float, str, str, list[str]]:
    """Decode the upload and decide its FoV and projection: (RGB, fov, fov source text, projection, notes).

    - a bundled example: its own FoV, projection "crop";
    - a panorama (width >= 3 x height): taken as a 360 deg equirectangular image, its central ``fov`` window is
      cut out and used as a crop;
    - a phone photo: the FoV from EXIF when the photo carries it, else the slider; reprojected by the engine;
    - a panorama-grid crop: the slider's FoV.
    """
    try:
        rgb = load_image(path)
    except ImageError as exc:  # name the upload as the person knows it, not by its server-side path
        message = str(exc).replace(os.fspath(path), os.path.basename(path))
        raise UserInputError(f"This file cannot be used as a photo: {message}.") from exc
    notes: list[str] = []
    if example is not None:
        return rgb, example.fov_deg, f"{example.fov_deg:g}° (bundled example)", "crop", notes
    fov = float(fov_slider)
    if not FOV_MIN <= fov <= FOV_MAX:
        raise UserInputError(f"The field of view must be between {FOV_MIN:g}° and {FOV_MAX:g}°, got {fov:g}°.")
    height, width = rgb.shape[:2]
    if width >= PANORAMA_ASPECT * height:
        keep = max(1, round(width * fov / 360.0))
        left = (width - keep) // 2
        notes.append(
            f"This image is {width} x {height} px (aspect {width / height:.1f}:1), so it was taken for a 360° "
            f"panorama: its central {fov:g}° ({keep} px wide) was used as the query. Upload a single photo, or a "
            "crop of the panorama, to choose the direction yourself."
        )
        return rgb[:, left:left + keep], fov, f"{fov:g}° (slider; central window of a 360° panorama)", "crop", notes
    if photo_type not in PHOTO_TYPES:
        raise UserInputError(f"The kind of image must be one of {list(PHOTO_TYPES)}, got {photo_type!r}.")
    projection = PHOTO_TYPES[photo_type]
    if projection == "crop":
        return rgb, fov, f"{fov:g}° (slider)", projection, notes
    exif_fov = hfov_from_exif(path)
    if exif_fov is not None and EXIF_FOV_RANGE[0] <= exif_fov <= EXIF_FOV_RANGE[1]:
        return rgb, float(exif_fov), f"{exif_fov:.1f}° (read from the photo's EXIF)", projection, notes
    if exif_fov is not None:
        notes.append(f"The photo's EXIF gives a horizontal field of view of {exif_fov:.1f}°, which is not plausible; "
                     f"the slider's {fov:g}° was used instead.")
    return rgb, fov, f"{fov:g}° (slider; the photo has no EXIF focal length)", projection, notes


# -------------------------------------------------------------------------------------------- pictures


@functools.lru_cache(maxsize=16)  # the gallery and the selected views read the same few tiles
def _read_tile(path: str) -> np.ndarray | None:
    try:
        tile = load_image(path)
    except (ImageError, OSError):
        return None
    tile.setflags(write=False)  # shared between requests
    return tile if tile.shape[0] == tile.shape[1] else None


def tile_image(ctx: AppContext, candidate: Candidate) -> np.ndarray:
    """The candidate's satellite tile at full resolution, or the database's thumbnail when the file is unusable."""
    tile = _read_tile(candidate.path)
    return ctx.localizer.db.thumbnail(candidate.index) if tile is None else tile


def _distance_text(distance_m: float | None) -> str:
    if distance_m is None:
        return ""
    return f"{distance_m / 1000:.2f} km" if distance_m >= 1000 else f"{distance_m:.0f} m"


def gallery_items(ctx: AppContext, candidates: list[Candidate], distances_m: list[float | None],
                  truth: Example | None) -> list[tuple[np.ndarray, str]]:
    items = []
    for candidate, distance in zip(candidates, distances_m):
        # short (the gallery's label explains the parts): captions share a narrow gallery
        caption = f"#{candidate.rank} · {candidate.score:.3f}"
        if distance is not None:
            caption += f" · {_distance_text(distance)}"
        if truth is not None and candidate.index == truth.reference_index:
            caption += " ✓"
        items.append((resize_image(tile_image(ctx, candidate), (GALLERY_SIDE, GALLERY_SIDE)), caption))
    return items


def select_view(ctx: AppContext, state: QueryState, position: int) -> Selection:
    """Heading, compass, satellite views and map for the candidate at ``position`` (0 = best) of a query."""
    if not state.candidates:
        raise UserInputError("There are no results yet: localize a photo first.")
    if not 0 <= position < len(state.candidates):
        raise UserInputError(f"There is no candidate #{position + 1}; the query returned {len(state.candidates)}.")
    chosen = state.candidates[position]
    truth = state.truth
    true_heading = truth.heading_deg if truth is not None else None
    tile = tile_image(ctx, chosen)
    config = ctx.localizer.config
    polar = polar_transform(tile, config.sat_height, config.sat_width)
    mask = ctx.localizer.db.mask(chosen.index, state.mask_stage)  # stage resolution; the views upsample it
    polar_view = render.polar_window_view(polar, mask, chosen.window_offset, chosen.window_width, config.sat_width,
                                          window_scores=chosen.window_scores)
    topdown = render.topdown_view(tile, mask, chosen.heading_deg, state.fov_deg, true_heading)
    heading = render.display_heading(chosen.heading_deg)
    summary = (f"**Candidate #{chosen.rank}** · score {chosen.score:.3f} · predicted heading **{heading:.1f}°** · "
               f"tile centre {chosen.lat:.6f}, {chosen.lon:.6f}")
    distance = state.distances_m[position]
    if distance is not None:
        summary += f" · {_distance_text(distance)} from the true location"
    if true_heading is not None:
        error = float(angular_error(chosen.heading_deg, true_heading))
        summary += f" · heading error {error:.1f}° (true {render.display_heading(true_heading):.1f}°)"
    return Selection(heading, render.compass_image(chosen.heading_deg, state.fov_deg, true_heading),
                     polar_view, topdown, map_html(ctx, state, chosen), summary)


def map_html(ctx: AppContext, state: QueryState, chosen: Candidate) -> str:
    """The map of a query's candidates, centred on ``chosen`` with its field-of-view cone."""
    markers = [MapMarker(c.rank, c.lat, c.lon, c.score, d) for c, d in zip(state.candidates, state.distances_m)]
    if not any(math.isfinite(m.lat) and math.isfinite(m.lon) for m in markers):
        return "<p>The reference tiles have no coordinates, so there is no map.</p>"
    truth = state.truth
    true_location = (truth.lat, truth.lon) if truth is not None and math.isfinite(truth.lat) else None
    return map_iframe(build_map(markers, chosen.rank, chosen.heading_deg, state.fov_deg, ctx.cone_length_m,
                                truth=true_location, world=ctx.world))


def query_summary(result: LocalizationResult, fov_text: str, truth: Example | None,
                  distances_m: list[float | None]) -> str:
    lines = [f"**Field of view:** {fov_text}",
             f"**Projection:** {'reprojected phone photo' if result.projection == 'pinhole' else 'panorama-grid crop'}"
             f" → model input {result.input_image.shape[1]} x {result.input_image.shape[0]} px"]
    if truth is not None:
        lines.append(f"**Bundled example ({truth.label()}):** true location {truth.lat:.6f}, {truth.lon:.6f}; "
                     f"true heading {render.display_heading(truth.heading_deg):.1f}°")
        ranks = [c.rank for c in result.candidates if c.index == truth.reference_index]
        lines.append(f"**True tile:** rank {ranks[0]}" if ranks
                     else f"**True tile:** not in the top {len(result.candidates)}")
        if distances_m and distances_m[0] is not None:
            lines.append(f"**Best match:** {_distance_text(distances_m[0])} from the true location")
    return "  \n".join(lines)


def status_line(ctx: AppContext, result: LocalizationResult | None = None) -> str:
    text = ctx.localizer.describe()
    if result is not None:
        parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in result.timings.items())
        text += f" · query took {result.elapsed_s:.2f} s ({parts})"
    return text


# ------------------------------------------------------------------------------------------- the events


def localize_photo(ctx: AppContext, path: str | os.PathLike | None, fov_slider: float = FOV_DEFAULT,
                   photo_type: str = next(iter(PHOTO_TYPES))) -> LocalizeOutputs:
    """Everything the page shows for one uploaded photo."""
    if path is None or not os.path.isfile(path):
        raise UserInputError("Upload a ground photo first (or pick one of the examples).")
    truth = ctx.examples.lookup(path) if ctx.examples is not None else None
    rgb, fov, fov_text, projection, notes = prepare_photo(path, fov_slider, photo_type, truth)
    with torch.inference_mode():
        try:
            result = ctx.localizer.localize(rgb, fov_deg=fov, top_k=ctx.top_k, projection=projection)
        except ImageError as exc:  # e.g. a crop too narrow for the network after resizing
            raise UserInputError(f"This photo cannot be localized: {exc}.") from exc
    distances = [haversine_m(c.lat, c.lon, truth.lat, truth.lon)
                 if truth is not None and math.isfinite(truth.lat) and math.isfinite(c.lat) else None
                 for c in result.candidates]
    state = QueryState.of(result, truth, distances)
    ground = result.input_image
    ground_view = render.upscale(
        render.heatmap_overlay(ground, result.ground_mask) if result.ground_mask is not None else ground, 256)
    return LocalizeOutputs(
        gallery=gallery_items(ctx, result.candidates, distances, truth),
        ground_view=ground_view,
        selection=select_view(ctx, state, 0),
        query_summary=query_summary(result, fov_text, truth, distances),
        status=status_line(ctx, result),
        state=state,
        notes=notes,
    )


def select_candidate(ctx: AppContext, state: QueryState | None, position: int | None) -> Selection:
    """The views of the gallery item at ``position`` (0-based) of the session's last query."""
    if state is None or position is None:
        raise UserInputError("There are no results yet: localize a photo first.")
    return select_view(ctx, state, int(position))
