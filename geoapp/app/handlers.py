"""The functions behind the UI, free of Gradio so they can be tested without a server.

``localize_photo`` answers the main event (a photo in, the answer the page shows out); ``select_candidate``
answers a click on another candidate in the gallery; ``candidate_views`` draws, on demand, the picture of where the
model looked for one candidate (the photo's attention, the tile's, the aligned polar window). Problems with the
input raise :class:`UserInputError` with a message for the person; advice that does not stop the query (a panorama
was cropped, an EXIF FoV was unusable) comes back in ``notes``. Headings are compass bearings shown in [0, 360)
(conventions §2).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geoapp.angles import angular_error
from geoapp.data.geo import haversine_m
from geoapp.data.photo import DecodedPhoto, ImageError, decode_photo, load_image
from geoapp.data.polar import polar_transform
from geoapp.data.transforms import resize_image
from geoapp.retrieval.prior import RADIUS_RANGE_M, LocationPrior, PriorError
from geoapp.retrieval.query import MAX_VIEWS, camera_placement, choose_prior
from geoapp.retrieval.results import Candidate, LocalizationResult
from geoapp.search_options import DISTINCT_RANGE_M

from . import figures
from .areas import Areas
from .context import AppContext
from .examples import Example, ExampleSet
from .mapview import MapMarker, area_map, build_map, map_iframe

FOV_MIN, FOV_MAX, FOV_DEFAULT = 60.0, 120.0, 90.0
PANORAMA_ASPECT = 3.0  # width / height from which an upload is taken for a 360 deg panorama
GALLERY_LABEL = ("rank · similarity score (0-1; not a probability: see the confidence) · distance to the true "
                 "location (examples) · ✓ the true tile")
EXIF_PRIOR_RADIUS_KM = 1.0  # the search radius around a photo's EXIF GPS when the person gives none
PHOTO_TYPES = {"Phone photo (perspective)": "pinhole", "Panorama crop (already on the panorama grid)": "crop"}
GALLERY_SIDE = 192  # px: a gallery picture at about the size the page shows it (5 across, 200 px high)
VIEW_SIDE = 256  # px: the height of each attention picture in the candidate's views
GALLERY_CACHE = 256  # gallery pictures kept made (192 x 192 RGB: 110 KB each)


class UserInputError(ValueError):
    """The request cannot be answered as given; the message tells the person what to change."""


def number_argument(value, name: str, low: float, high: float, unit: str = "", optional: bool = False):
    """``value`` as a float in [low, high], or a UserInputError naming the argument, its type and range (API
    clients send anything: strings, lists, booleans). Empty (None or "") is None when ``optional``."""
    span = f"between {low:g}{unit} and {high:g}{unit}"
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return None
        raise UserInputError(f"{name} is required: a number {span}.")
    if isinstance(value, bool) or not isinstance(value, (int, float, str, np.integer, np.floating)):
        raise UserInputError(f"{name} must be a number {span}, got {type(value).__name__} {value!r}.")
    try:
        number = float(value)
    except ValueError:
        raise UserInputError(f"{name} must be a number {span}, got {value!r}.") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise UserInputError(f"{name} must be {span}, got {number:g}{unit}.")
    return number


def choice_argument(value, name: str, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise UserInputError(f"{name} must be one of {list(choices)}, got {value!r}.")
    return value


def flag_argument(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise UserInputError(f"{name} must be true or false, got {value!r}.")
    return value


def prior_arguments(lat, lon, radius_km, use_exif_gps: bool) -> tuple[LocationPrior | None, float | None]:
    """The query's prior as the person asked for it, the arguments of the query policy's
    :func:`~geoapp.retrieval.query.choose_prior`: the given centre with the given radius (default
    EXIF_PRIOR_RADIUS_KM), and that radius in metres around the photo's EXIF GPS when it may be used (else None).
    Half a centre is an error, not silently ignored."""
    lat = number_argument(lat, "The prior's latitude", -90.0, 90.0, "°", optional=True)
    lon = number_argument(lon, "The prior's longitude", -180.0, 180.0, "°", optional=True)
    low, high = (r / 1000.0 for r in RADIUS_RANGE_M)
    radius = number_argument(radius_km, "The prior's radius", low, high, " km", optional=True)
    if (lat is None) != (lon is None):
        raise UserInputError("Give both the latitude and the longitude of the prior's centre (or neither).")
    radius_m = 1000.0 * (radius or EXIF_PRIOR_RADIUS_KM)
    return (None if lat is None else LocationPrior(lat, lon, radius_m)), (radius_m if use_exif_gps else None)


def prior_notes(prior: LocationPrior | None) -> list[str]:
    """What the page says about a prior the person did not type in."""
    if prior is None or prior.source != "exif":
        return []
    return [f"The photo's EXIF GPS was used as a location prior: searched {prior.describe()}. Untick 'Use the "
            "photo's GPS' to search everywhere."]


@dataclass
class Selection:
    """What follows the selected candidate (rank 1 after a query); its attention views are drawn on demand
    (:func:`candidate_views`)."""

    heading_deg: float  # [0, 360)
    compass: str  # an SVG document (figures.compass_svg)
    map_html: str
    summary: str


@dataclass
class QueryState:
    """What a later gallery click needs from the query, kept per browser session.

    The candidates are stored without their thumbnails and upsampled masks (over 1 MB per session at full
    resolution, and Gradio keeps thousands of sessions): the views read both from the database by index. The photo
    as the model saw it, with its attention, is kept as a small JPEG at the model's input size (a few kB).
    """

    candidates: list[Candidate]
    fov_deg: float
    truth: Example | None
    distances_m: list[float | None]
    mask_stage: int
    prior: LocationPrior | None = None
    area: str = ""  # the area the candidates belong to (their indices are rows of its database)
    ground_jpeg: bytes = b""  # the model's input with its attention (figures.jpeg_bytes), b"" when not kept

    @classmethod
    def of(cls, result: LocalizationResult, truth: Example | None, distances_m: list[float | None],
           area: str = "") -> QueryState:
        light = [replace(c, thumbnail=None, satellite_mask=None) for c in result.candidates]
        ground = result.input_image
        if result.ground_mask is not None:
            ground = figures.heatmap_overlay(ground, result.ground_mask)
        return cls(light, result.fov_deg, truth, distances_m, result.mask_stage, result.prior, area,
                   figures.jpeg_bytes(ground, quality=90))


@dataclass
class LocalizeOutputs:
    gallery: list[tuple[np.ndarray, str]]  # read-only pictures, shared between requests (gallery_picture)
    selection: Selection
    query_summary: str
    status: str
    state: QueryState
    notes: list[str] = field(default_factory=list)
    answer: dict = field(default_factory=dict)  # answer_record: what API clients read


# ------------------------------------------------------------------------------------------- the photo


def read_upload(path: str | os.PathLike, examples: ExampleSet | None = None) -> tuple[DecodedPhoto, Example | None]:
    """An upload, opened once: its pixels and EXIF fields, and the bundled example whose bytes it has (looked up
    only in ``examples``, when given)."""
    name = os.path.basename(path)  # the upload as the person knows it, not by its server-side path
    try:
        with open(path, "rb") as file:
            example = examples.lookup(file) if examples is not None else None
            file.seek(0)
            return decode_photo(file, name=f"'{name}'"), example
    except ImageError as exc:
        raise UserInputError(f"This file cannot be used as a photo: {exc}.") from exc


@dataclass(frozen=True)
class PreparedPhoto:
    """An upload as the engine is asked to place it, and its words for the page."""

    photo: DecodedPhoto
    fov_deg: float  # a crop's field of view; a phone photo's when its EXIF gives no plausible one
    projection: str  # "pinhole" or "crop"
    fov_text: str
    notes: tuple[str, ...] = ()


def prepare_photo(photo: DecodedPhoto, fov_slider: float, photo_type: str, example: Example | None) -> PreparedPhoto:
    """Decide how a decoded upload is used, and say so:

    - a bundled example: its own FoV, projection "crop";
    - a panorama (width >= 3 x height): taken as a 360 deg equirectangular image, its central ``fov`` window is
      cut out and used as a crop;
    - a phone photo: the query policy's FoV (:func:`~geoapp.retrieval.query.camera_placement`: from EXIF when the
      photo carries a plausible one, else the slider); reprojected by the engine;
    - a panorama-grid crop: the slider's FoV.
    """
    if example is not None:
        notes = () if PHOTO_TYPES.get(photo_type) == "crop" else (
            f"This file is a bundled example, a crop of a test panorama: it was used as a panorama crop at its own "
            f"{example.fov_deg:g}° field of view (the 'Kind of image' choice does not apply).",)
        return PreparedPhoto(photo, example.fov_deg, "crop", f"{example.fov_deg:g}° (bundled example)", notes)
    fov = float(fov_slider)
    if not FOV_MIN <= fov <= FOV_MAX:
        raise UserInputError(f"The field of view must be between {FOV_MIN:g}° and {FOV_MAX:g}°, got {fov:g}°.")
    height, width = photo.rgb.shape[:2]
    if width >= PANORAMA_ASPECT * height:
        return panorama_window(photo, fov)
    if photo_type not in PHOTO_TYPES:
        raise UserInputError(f"The kind of image must be one of {list(PHOTO_TYPES)}, got {photo_type!r}.")
    if PHOTO_TYPES[photo_type] == "crop":
        return PreparedPhoto(photo, fov, "crop", f"{fov:g}° (slider)")
    placement = camera_placement(photo, fov)
    if placement.fov_source == "exif":
        return PreparedPhoto(photo, fov, "pinhole", f"{placement.fov_deg:.1f}° (read from the photo's EXIF)")
    notes = () if placement.exif_fov_ignored is None else (
        f"The photo's EXIF gives a horizontal field of view of {placement.exif_fov_ignored:.1f}°, which is not "
        f"plausible; the slider's {fov:g}° was used instead.",)
    return PreparedPhoto(photo, fov, "pinhole", f"{fov:g}° (slider; the photo has no EXIF focal length)", notes)


def panorama_window(photo: DecodedPhoto, fov: float) -> PreparedPhoto:
    """A 360 deg panorama's central ``fov`` window, as a crop."""
    height, width = photo.rgb.shape[:2]
    keep = max(1, round(width * fov / 360.0))
    left = (width - keep) // 2
    note = (f"This image is {width} x {height} px (aspect {width / height:.1f}:1), so it was taken for a 360° "
            f"panorama: its central {fov:g}° ({keep} px wide) was used as the query. Upload a single photo, or a "
            "crop of the panorama, to choose the direction yourself.")
    window = replace(photo, rgb=photo.rgb[:, left:left + keep])
    return PreparedPhoto(window, fov, "crop", f"{fov:g}° (slider; central window of a 360° panorama)", (note,))


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


@functools.lru_cache(maxsize=GALLERY_CACHE)
def _gallery_picture(path: str) -> np.ndarray | None:
    try:
        with Image.open(path) as image:
            # a JPEG tile is decoded at the smallest scale still at least the gallery's size: a fifth of the work
            image.draft("RGB", (GALLERY_SIDE, GALLERY_SIDE))
            tile = load_image(image)
    except (ImageError, OSError):
        return None
    if tile.shape[0] != tile.shape[1]:
        return None
    picture = resize_image(tile, (GALLERY_SIDE, GALLERY_SIDE))
    picture.setflags(write=False)  # shared between requests
    return picture


def gallery_picture(ctx: AppContext, candidate: Candidate) -> np.ndarray:
    """The candidate's tile at the gallery's size, made once per tile file (read-only: shared between requests);
    the database's thumbnail, enlarged, when the file is unusable."""
    picture = _gallery_picture(candidate.path)
    if picture is None:
        return resize_image(ctx.localizer.db.thumbnail(candidate.index), (GALLERY_SIDE, GALLERY_SIDE))
    return picture


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
        items.append((gallery_picture(ctx, candidate), caption))
    return items


def _chosen(state: QueryState, position: int) -> Candidate:
    if not state.candidates:
        raise UserInputError("There are no results yet: localize a photo first.")
    if not 0 <= position < len(state.candidates):
        raise UserInputError(f"There is no candidate #{position + 1}; the query returned {len(state.candidates)}.")
    return state.candidates[position]


def select_view(ctx: AppContext, state: QueryState, position: int) -> Selection:
    """Heading, compass, summary and map for the candidate at ``position`` (0 = best) of a query."""
    chosen = _chosen(state, position)
    truth = state.truth
    true_heading = truth.heading_deg if truth is not None else None
    config = ctx.localizer.config
    heading = figures.display_heading(chosen.heading_deg)
    where = f" in area {ctx.name!r}" if ctx.area_boxes else ""  # the chosen area may have changed since the query
    summary = (f"**Candidate #{chosen.rank}**{where} · score {chosen.score:.3f} · predicted heading "
               f"**{heading:.1f}°** · tile centre {chosen.lat:.6f}, {chosen.lon:.6f}")
    distance = state.distances_m[position]
    if distance is not None:
        summary += f" · {_distance_text(distance)} from the true location"
    if true_heading is not None:
        error = float(angular_error(chosen.heading_deg, true_heading))
        summary += f" · heading error {error:.1f}° (true {figures.display_heading(true_heading):.1f}°)"
    chooser = ("the attention that chose the window" if config.alignment.is_fca
               else "the feature correlation chose the window")
    summary += f"  \nHeat maps: block {state.mask_stage}'s attention masks ({chooser})"
    if config.gate_weight:
        summary += (f"; score = (descriptor cosine + {config.gate_weight:g} x their agreement with the photo's "
                    f"attention) / {1 + config.gate_weight:g}")
    return Selection(heading, figures.compass_svg(chosen.heading_deg, state.fov_deg, true_heading),
                     map_html(ctx, state, chosen), summary)


VIEW_TITLES = ("the photo as the model saw it", "the tile: attention, view cones", "the polar tile: aligned window, "
               "score of each heading")


def candidate_views(ctx: AppContext, state: QueryState | None, position: int) -> np.ndarray:
    """Where the model looked, for the candidate at ``position`` (0 = best), as one picture: the photo (the model's
    input) with its attention, the north-up tile with its attention and the predicted (red) and true (green) view
    cones, and the polar tile with its attention, the aligned window outlined and the score of every heading
    below it (the heading is its peak)."""
    if state is None:
        raise UserInputError("There are no results yet: localize a photo first.")
    chosen = _chosen(state, position)
    truth = state.truth
    tile = tile_image(ctx, chosen)
    config = ctx.localizer.config
    polar = polar_transform(tile, config.sat_height, config.sat_width)
    mask = ctx.localizer.db.mask(chosen.index, state.mask_stage)  # stage resolution; the views upsample it
    polar_view = figures.polar_window_view(polar, mask, chosen.window_offset, chosen.window_width, config.sat_width,
                                          min_height=VIEW_SIDE, window_scores=chosen.window_scores)
    topdown = figures.topdown_view(tile, mask, chosen.heading_deg, state.fov_deg,
                                   truth.heading_deg if truth is not None else None, size=VIEW_SIDE)
    panels = [(VIEW_TITLES[1], topdown), (VIEW_TITLES[2], polar_view)]
    if state.ground_jpeg:
        panels.insert(0, (VIEW_TITLES[0], figures.upscale(figures.jpeg_array(state.ground_jpeg), VIEW_SIDE)))
    return figures.compose(panels)


def map_html(ctx: AppContext, state: QueryState, chosen: Candidate) -> str:
    """The map of a query's candidates, centred on ``chosen`` with its field-of-view cone."""
    markers = [MapMarker(c.rank, c.lat, c.lon, c.score, d) for c, d in zip(state.candidates, state.distances_m)]
    if not any(math.isfinite(m.lat) and math.isfinite(m.lon) for m in markers):
        return "<p>The reference tiles have no coordinates, so there is no map.</p>"
    truth = state.truth
    true_location = (truth.lat, truth.lon) if truth is not None and math.isfinite(truth.lat) else None
    prior = None if state.prior is None else (state.prior.lat, state.prior.lon, state.prior.radius_m)
    return map_iframe(build_map(markers, chosen.rank, chosen.heading_deg, state.fov_deg, ctx.cone_length_m,
                                truth=true_location, world=ctx.world, prior=prior, areas=ctx.area_boxes,
                                chosen_area=ctx.name), leaflet=ctx.leaflet)


def areas_map_html(areas: Areas, chosen: AppContext) -> str:
    """The map before a query when the app serves several areas: every area's box, the chosen one highlighted
    (empty for a single area: its page shows no map until a query, as it always did)."""
    if not chosen.area_boxes:
        return ""
    worlds = [ctx.world for ctx in areas.contexts.values() if ctx.world is not None]
    return map_iframe(area_map(list(chosen.area_boxes), chosen.name, worlds), title="map of the served areas",
                      leaflet=chosen.leaflet)


def confidence_text(result: LocalizationResult, ctx: AppContext) -> list[str]:
    """How much to trust this answer, in words: the calibrated probability, and what lowers it; for a photo the
    model cannot know, that plainly and no probability."""
    conf = result.confidence
    if conf is None:
        return ["**Confidence:** not calibrated: this reference database has no calibration record (build it with "
                "`--calibrate val`), so the scores below are similarities, not probabilities."]
    if conf.unfamiliar:
        return unfamiliar_text(conf, ctx)
    record = ctx.localizer.calibration.record
    lines = [f"**Confidence:** {conf.words()} (calibrated on {record.get('queries', '?')} "
             f"{record.get('split', '?')!r}-split photos against {record.get('gallery_size', '?')} references)"]
    if len(result.views) > 1:
        lines.append("(fitted on single photos: with several photos the true probability is usually higher)")
    if result.prior is not None and result.searched < record.get("gallery_size", result.searched):
        lines.append(f"(the prior left {result.searched:,} references, fewer look-alikes than the calibration "
                     "saw: the probability is conservative)")
    return lines


def unfamiliar_text(conf, ctx: AppContext) -> list[str]:
    """The answer to a photo that gets no probability: one the model cannot know (the familiarity test), or one whose
    best score is below every calibrated answer's."""
    if not conf.unknown_place:
        return [f"**Confidence:** {conf.words()}."]
    if ctx.localizer.coverage()["synthetic"]:
        head = ("**This is not a place the demo knows.** The photo looks unlike the demo's synthetic world, so the "
                "demo cannot tell where it was taken: the tiles below are only look-alikes, not an answer, and no "
                "probability is given.")
    else:
        head = ("**This photo looks unlike every photo the model was trained on**, so it cannot be placed: the tiles "
                "below are only look-alikes, not an answer, and no probability is given.")
    return [head, f"(why: {conf.why_unfamiliar()})"]


def query_summary(result: LocalizationResult, fov_text: str, truth: Example | None,
                  distances_m: list[float | None], ctx: AppContext | None = None) -> str:
    lines = confidence_text(result, ctx) if ctx is not None else []
    lines += [f"**Field of view:** {fov_text}",
              f"**Projection:** {'reprojected phone photo' if result.projection == 'pinhole' else 'panorama-grid crop'}"
              f" → model input {result.input_image.shape[1]} x {result.input_image.shape[0]} px"]
    if len(result.views) > 1:
        best = result.candidates[0]
        headings = ", ".join(f"{figures.display_heading(h):.1f}°" for h in best.view_headings)
        lines.append(f"**{len(result.views)} photos from one spot:** combined; at the best tile they look toward "
                     f"{headings}")
    if result.prior is not None:
        lines.append(f"**Location prior:** {result.prior.describe()}; {result.searched:,} references searched")
    if result.distinct_m:
        left = f"; {result.distinct_skipped} tiles near a better one left out" if result.distinct_skipped else ""
        lines.append(f"**Distinct places:** no two candidates within {result.distinct_m:g} m of each other{left}")
    if truth is not None:
        label = ctx.example_label(truth) if ctx is not None else truth.label()
        lines.append(f"**Bundled example ({label}):** true location {truth.lat:.6f}, {truth.lon:.6f}; "
                     f"true heading {figures.display_heading(truth.heading_deg):.1f}°")
        ranks = [c.rank for c in result.candidates if c.index == truth.reference_index]
        lines.append(f"**True tile:** rank {ranks[0]}" if ranks
                     else f"**True tile:** not in the top {len(result.candidates)}")
        if distances_m and distances_m[0] is not None:
            lines.append(f"**Best match:** {_distance_text(distances_m[0])} from the true location")
    return "  \n".join(lines)


def coverage_text(ctx: AppContext) -> str:
    """What the loaded database can answer, and how to localize photos it cannot."""
    cov = ctx.localizer.coverage()
    box = cov["box"]
    extent = ("tiles without coordinates" if box is None else
              f"latitudes {box[0]:.4f} to {box[2]:.4f}, longitudes {box[1]:.4f} to {box[3]:.4f}")
    if box is not None:
        extent += (f" (about {haversine_m(box[0], box[1], box[2], box[1]) / 1000:.1f} x "
                   f"{haversine_m(box[0], box[1], box[0], box[3]) / 1000:.1f} km)")
    trained = cov["trained_on"] or "an unrecorded dataset"
    how = ("To localize real photos: train a paper preset on CVUSA or CVACT (`python -m geoapp.train --preset "
           "paper-cvusa-90 --data-root data/cvusa`) and build a database of your region from its orthophoto "
           "(`python -m geoapp.build_db --checkpoint ... --raster my_area.tif --spacing 20`), then "
           "start the app with `--checkpoint` and `--reference-db`.")
    if cov["synthetic"]:
        return (f"**What this demo can answer:** its reference database is a **generated (synthetic) world**, "
                f"{cov['references']:,} tiles over {extent}; the model was trained on {trained}. **No real place can "
                f"be found in it:** a real photo is told that it is not a place the demo knows, and the tiles shown "
                f"for it are only look-alikes. {how}")
    what = ", ".join(f"{d} ({s})" for d, s in zip(cov["datasets"], cov["splits"])) or source_text(ctx.source)
    return (f"**What this database covers:** {cov['references']:,} reference tiles from {what}, {extent}; the "
            f"model was trained on {trained}. A photo taken elsewhere cannot be found. {how}")


def source_text(source: dict) -> str:
    """Where a database's tiles came from, in words (a dataset's are named by :func:`coverage_text`)."""
    if source.get("kind") == "raster":
        return (f"the orthophoto {Path(source.get('raster', '?')).name} ({source.get('crs')}, "
                f"{source.get('pixel_metres', 0):g} m pixels; north-up {source.get('tile_metres', 0):g} m tiles)")
    return "a folder of tiles"


def area_coverage_text(ctx: AppContext) -> str:
    """:func:`coverage_text`, after the area's name when the app serves several."""
    return (f"**Area {ctx.name!r}.** " if ctx.area_boxes else "") + coverage_text(ctx)


def status_line(ctx: AppContext, result: LocalizationResult | None = None) -> str:
    text = (f"area {ctx.name!r}: " if ctx.area_boxes else "") + ctx.localizer.describe()
    if result is not None:
        parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in result.timings.items())
        text += (f" · searched {result.searched:,} of {len(ctx.localizer.db):,} references · query took "
                 f"{result.elapsed_s:.2f} s ({parts})")
    return text


# ------------------------------------------------------------------------------------------- the events


def area_context(areas: Areas, name) -> AppContext:
    """The area called ``name`` (from the page's dropdown or an API client, so any JSON value); None or empty: the
    first area."""
    if name is None or name == "":
        return areas.first
    if isinstance(name, str) and name in areas.contexts:
        return areas.contexts[name]
    if isinstance(name, str) and name in areas.refused:
        raise UserInputError(f"The area {name!r} is not served: {areas.refused[name]}")
    known = ", ".join(repr(n) for n in areas.names)
    raise UserInputError(f"There is no area {name!r}; this app serves {len(areas)}: {known}.")


def localize_photo(ctx: AppContext, path: str | os.PathLike | None, fov_slider: float = FOV_DEFAULT,
                   photo_type: str = next(iter(PHOTO_TYPES)), more_paths: list | None = None, prior_lat=None,
                   prior_lon=None, prior_radius_km=None, use_exif_gps: bool = True,
                   distinct_m=None) -> LocalizeOutputs:
    """Everything the page shows for one uploaded photo (and up to MAX_VIEWS - 1 more from the same spot);
    ``distinct_m``: see :func:`distinct_distance`."""
    if path is None or not os.path.isfile(path):
        raise UserInputError("Upload a ground photo first (or pick one of the examples).")
    fov_slider = number_argument(fov_slider, "The field of view", FOV_MIN, FOV_MAX, "°")
    photo_type = choice_argument(photo_type, "The kind of image", PHOTO_TYPES)
    use_exif_gps = flag_argument(use_exif_gps, "'Use the photo's GPS'")
    distinct_m = distinct_distance(ctx, distinct_m)
    more_paths = [p for p in (more_paths or []) if p is not None]
    if len(more_paths) > MAX_VIEWS - 1:
        raise UserInputError(f"At most {MAX_VIEWS - 1} more photos can join the first one, got {len(more_paths)}.")
    for extra in more_paths:
        if not os.path.isfile(extra):
            raise UserInputError(f"The extra photo {os.path.basename(str(extra))!r} did not arrive; upload it again.")
    given_prior, exif_radius_m = prior_arguments(prior_lat, prior_lon, prior_radius_km, use_exif_gps)
    photo, truth = read_upload(path, ctx.examples if not more_paths else None)
    photos = [photo, *(read_upload(p)[0] for p in more_paths)]
    prepared = [prepare_photo(p, fov_slider, photo_type, truth if i == 0 else None) for i, p in enumerate(photos)]
    result, notes = _localize_prepared(ctx, prepared, choose_prior(photo, given_prior, exif_radius_m), distinct_m)
    notes = [n for p in prepared for n in p.notes] + notes
    distances = [haversine_m(c.lat, c.lon, truth.lat, truth.lon)
                 if truth is not None and math.isfinite(truth.lat) and math.isfinite(c.lat) else None
                 for c in result.candidates]
    state = QueryState.of(result, truth, distances, ctx.name)
    return LocalizeOutputs(
        gallery=gallery_items(ctx, result.candidates, distances, truth),
        selection=select_view(ctx, state, 0),
        query_summary=query_summary(result, prepared[0].fov_text, truth, distances, ctx),
        status=status_line(ctx, result),
        state=state,
        notes=notes,
        answer={"area": ctx.name, **answer_record(result, truth, distances)},
    )


def distinct_distance(ctx: AppContext, value) -> float:
    """The query's distinct-places distance in metres: none given (None or empty), the area's default (half its tile
    footprint, :attr:`Localizer.place_distance_m`; 0 when unknown); else the given one, 0 for every tile."""
    given = number_argument(value, "The distinct places' distance", *DISTINCT_RANGE_M, " m", optional=True)
    return (ctx.localizer.place_distance_m or 0.0) if given is None else given


def _localize_prepared(ctx: AppContext, prepared: list[PreparedPhoto], prior: LocationPrior | None,
                       distinct_m: float) -> tuple[LocalizationResult, list[str]]:
    """The engine's answer and the notes on its prior; a prior from the EXIF GPS that holds no reference is dropped
    with a note (the photo may have been taken elsewhere), a given one is the person's to change."""
    with torch.inference_mode():
        try:
            return _localize(ctx, prepared, prior, distinct_m), prior_notes(prior)
        except PriorError as exc:
            if prior is None or prior.source != "exif":
                raise UserInputError(f"The location prior cannot be used: {exc}.") from exc
            note = (f"The photo's EXIF GPS ({prior.lat:.5f}, {prior.lon:.5f}) is outside this database, so it was "
                    f"not used as a prior: {exc}.")
            return _localize(ctx, prepared, None, distinct_m), [note]
        except ImageError as exc:  # e.g. a crop too narrow for the network after resizing
            raise UserInputError(f"This photo cannot be localized: {exc}.") from exc


def _localize(ctx: AppContext, prepared: list[PreparedPhoto], prior, distinct_m: float = 0.0) -> LocalizationResult:
    photos, fovs, projections = ([getattr(p, name) for p in prepared] for name in ("photo", "fov_deg", "projection"))
    if len(photos) == 1:
        return ctx.localizer.localize(photos[0], fov_deg=fovs[0], top_k=ctx.top_k, projection=projections[0],
                                      prior=prior, distinct_m=distinct_m)
    return ctx.localizer.localize_together(photos, fov_deg=fovs, top_k=ctx.top_k, projection=projections,
                                           prior=prior, distinct_m=distinct_m)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def answer_record(result: LocalizationResult, truth: Example | None, distances_m: list[float | None]) -> dict:
    """The query's answer as plain data, what API clients read (the pictures come as the other outputs)."""
    conf = result.confidence
    return {
        "confidence": None if conf is None else {
            "tile_probability": _rounded(conf.stated()[0]), "heading_within_22.5deg_probability":
            _rounded(conf.stated()[1]), "unfamiliar": conf.unfamiliar, "unfamiliar_reason": conf.why_unfamiliar()
            or None, "words": conf.words()},
        "searched_references": result.searched,
        "distinct_places_m": result.distinct_m,  # no two candidates closer than this (0: every tile, neighbours too)
        "prior": None if result.prior is None else {"lat": result.prior.lat, "lon": result.prior.lon,
                                                    "radius_m": result.prior.radius_m, "source": result.prior.source},
        "photos": [{"fov_deg": v.fov_deg, "fov_source": v.fov_source, "projection": v.projection,
                    "familiarity": None if v.familiarity is None else v.familiarity.to_dict()}
                   for v in result.views],
        "candidates": [{"rank": c.rank, "lat": c.lat, "lon": c.lon, "heading_deg": round(c.heading_deg, 2),
                        "score": round(c.score, 4), "photo_headings_deg": [round(h, 2) for h in c.view_headings]
                        or [round(c.heading_deg, 2)], "distance_to_truth_m": d, "tile": os.path.basename(c.path)}
                       for c, d in zip(result.candidates, distances_m)],
        "example": None if truth is None else {"pair_id": truth.pair_id, "lat": truth.lat, "lon": truth.lon,
                                               "heading_deg": truth.heading_deg},
    }


def select_candidate(ctx: AppContext, state: QueryState | None, position: int | None) -> Selection:
    """The views of the gallery item at ``position`` (0-based) of the session's last query."""
    if state is None or position is None:
        raise UserInputError("There are no results yet: localize a photo first.")
    return select_view(ctx, state, int(position))


def candidate_position(rank) -> int:
    """A 1-based candidate rank from an API client (any JSON value) as a 0-based position."""
    number = number_argument(rank, "The candidate rank", 1, 10_000)
    if not number.is_integer():
        raise UserInputError(f"The candidate rank must be a whole number (1 = best), got {rank!r}.")
    return int(number) - 1
