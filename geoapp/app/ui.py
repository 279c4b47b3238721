"""The Gradio page: layout, and the thin wrappers that turn handler results into component values.

Events (each has an ``api_name``): ``localize`` (the button: the photo, FoV, kind of image, more photos from
the same spot, the location prior's latitude, longitude and radius in km, whether to use the photo's EXIF GPS,
the area to search (default: the first; see ``geoapp.app.areas``) and, last, the distinct places' distance in metres
(empty: the area's, half its tile footprint; 0: every tile, neighbours included; see ``geoapp.retrieval.places``);
its outputs are the gallery, the best candidate's heading, compass (an SVG document), text and map, the query's
texts and, last, the answer as a JSON record, with the calibrated confidence: ``LOCALIZE_OUTPUTS``, in the order API
clients receive them), then ``views`` (after an answer: the picture of where the model looked for the best
candidate, drawn on demand); ``photo_kind`` (an upload that is a bundled example sets the radio and slider to what
it will be used as); ``gallery_click`` (a click in the gallery records the candidate's rank), then
``select_candidate`` (the heading, compass, text, map and views picture of the candidate of that rank, in the area
that query searched; API clients call it with a rank: ``SELECT_OUTPUTS``); ``area_view``
(with several areas, choosing one shows its coverage, examples and box on the map); Gradio's own ``load_example``
(an example click fills the inputs).
The page's components are kept by name (``Page``), and each event returns its values by name
(:func:`localize_values`, :func:`select_values`), so a panel is added in one place without moving the others.
Input problems become ``gr.Error`` with the handler's message; anything unexpected is logged with its traceback on
the server and reported as a short error, so the page never shows a traceback and the app keeps serving.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from pathlib import Path
from urllib.parse import quote

import gradio as gr
import numpy as np
from gradio import utils as gradio_utils
from gradio.route_utils import API_PREFIX

from geoapp.files import atomic_write_bytes
from geoapp.retrieval.engine import Localizer

from . import figures, handlers
from .areas import Areas
from .context import DEFAULT_TOP_K, AppContext
from .mapview import LEAFLET_DIR, Leaflet

log = logging.getLogger(__name__)

QUEUE_MAX_SIZE = 32  # requests waiting beyond this are refused at once instead of piling up
PICTURE_QUALITY = 85  # JPEG quality of the result pictures
# events answered at once (``python app.py --concurrency``): on a 2-core CPU, two at once answered a crowd no faster
# than one and cost more CPU per answer (docs/results.md); the model's threads are set by geoapp.app.main
CONCURRENCY = 1

VIEWS_CAPTION = ("**Where the model looked** (the selected candidate): the photo as the model saw it, with its "
                 "attention; the satellite tile with its attention and field-of-view cones (red: predicted, green: "
                 "true); the tile in the polar view with the aligned window outlined (S, W, N, E: the direction each "
                 "column looks) over the score of every heading (the heading is its peak).")

INTRO = """# Where was this photo taken?
Upload a ground photo with a narrow field of view (or pick an example from the synthetic test set). The app
matches it against geotagged satellite tiles and shows the best matches, the direction the camera looked,
and where the model paid attention."""


def picture_file(rgb: np.ndarray) -> str:
    """Save a result picture as JPEG where Gradio serves it from, once per content, written atomically.

    The file is named by a digest of the pixels: a picture made before (a tile that was in an earlier answer's
    gallery) is neither encoded nor written again. JPEG at PICTURE_QUALITY, because it encodes far faster than the
    WebP it replaced (docs/results.md, "The app under a crowd"). Returning arrays would let Gradio encode them into
    its content-addressed cache with a plain ``write_bytes``: two requests with an identical picture (the same
    example, at the same time) rewrite the same file while the first response is being downloaded, and that download
    breaks. A file that is already inside Gradio's cache folder is served as is, so writing it once, atomically,
    avoids the race.
    """
    rgb = np.ascontiguousarray(rgb)
    digest = hashlib.sha256(repr(rgb.shape).encode() + rgb.tobytes()).hexdigest()
    path = Path(gradio_utils.get_upload_folder()) / "geoapp-results" / f"{digest}.jpg"
    if not path.exists():
        atomic_write_bytes(path, figures.jpeg_bytes(rgb, PICTURE_QUALITY))
    return str(path)


def served_url(path: Path) -> str:
    """The URL of a static file of the app, relative to the page (so it also works under a proxy's path prefix;
    the map's srcdoc frame resolves it against the page's address)."""
    return f"{API_PREFIX.lstrip('/')}/file={quote(str(Path(path).resolve()))}"


def upload_path(record, name: str) -> str | None:
    """The server-side path of an uploaded file as the event receives it (preprocess=False): Gradio's file record
    (a dict with ``path``), or a plain path string from older clients; None when nothing was uploaded."""
    if record is None or isinstance(record, str):
        return record
    if isinstance(record, dict) and isinstance(record.get("path"), str):
        return record["path"]
    raise handlers.UserInputError(f"{name} must be an uploaded image file, got {type(record).__name__} "
                                  f"{str(record)[:80]!r}.")


def upload_paths(records) -> list[str]:
    if records is None:
        return []
    if not isinstance(records, list):
        records = [records]
    return [upload_path(r, f"Extra photo {i}") for i, r in enumerate(records, start=1)]


def _guard(fn):
    """Run a handler; input problems -> gr.Error with their message, bugs -> logged and a short gr.Error."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except handlers.UserInputError as exc:
            raise gr.Error(str(exc), title="Cannot use this input", print_exception=False) from exc
        except gr.Error:
            raise
        except Exception as exc:
            log.exception("request failed")
            raise gr.Error(
                f"Something went wrong on the server ({type(exc).__name__}: {exc}). It is logged; please try "
                "another photo.", title="Internal error", print_exception=False,
            ) from exc

    return wrapper


def served_context(ctx: AppContext) -> AppContext:
    """The context with Leaflet and its world image loaded by the maps from the app (once, then from the browser's
    cache) instead of inlined into every map."""
    gr.set_static_paths([LEAFLET_DIR])
    leaflet = Leaflet(served_url(LEAFLET_DIR / "leaflet.js"), served_url(LEAFLET_DIR / "leaflet.css"))
    world = ctx.world
    if world is not None and world.file is not None:
        gr.set_static_paths([world.file])
        world = dataclasses.replace(world, url=served_url(world.file))
    return dataclasses.replace(ctx, world=world, leaflet=leaflet)


def as_areas(app: Localizer | AppContext | Areas, top_k: int = DEFAULT_TOP_K) -> Areas:
    """What the page serves: the given areas, or the single area of a localizer or context."""
    if isinstance(app, Areas):
        return app
    return Areas.of(app if isinstance(app, AppContext) else AppContext.create(app, top_k))


Page = dict[str, gr.blocks.Block]  # the page's components by name: what its events read and write

# The outputs of /localize in the order API clients receive them (README, "Run the demo"); a panel added to the answer
# goes at the end, so clients that read by position keep working. The event also keeps the session's state.
LOCALIZE_OUTPUTS = ("gallery", "heading", "compass", "selection", "map", "query", "status", "answer")
# The inputs of /localize in the order of its parameters (on_localize's; new ones go at the end, with a default).
LOCALIZE_INPUTS = ("photo", "fov", "photo_type", "more_photos", "prior_lat", "prior_lon", "prior_radius", "use_gps",
                   "area", "distinct")
SELECT_OUTPUTS = ("heading", "compass", "selection", "map", "views")  # /select_candidate's, in their order


def localize_values(out: handlers.LocalizeOutputs) -> dict[str, object]:
    """What each output of /localize shows for an answer, by name (LOCALIZE_OUTPUTS and the session's state)."""
    sel = out.selection
    return {"gallery": [(picture_file(image), caption) for image, caption in out.gallery],
            "heading": sel.heading_deg, "compass": sel.compass, "selection": sel.summary, "map": sel.map_html,
            "query": out.query_summary, "status": out.status, "answer": out.answer, "state": out.state}


def select_values(ctx: AppContext, state: handlers.QueryState | None, position: int) -> dict[str, object]:
    """What each output of /select_candidate shows for the candidate at ``position``, by name (SELECT_OUTPUTS)."""
    sel = handlers.select_candidate(ctx, state, position)
    return {"heading": sel.heading_deg, "compass": sel.compass, "selection": sel.summary, "map": sel.map_html,
            "views": picture_file(handlers.candidate_views(ctx, state, position))}


def by_component(page: Page, values: dict[str, object]) -> dict[gr.blocks.Block, object]:
    """Named values as Gradio takes them from an event: keyed by the page's components."""
    return {page[name]: value for name, value in values.items()}


def example_group(ctx: AppContext, several: bool, visible: bool, inputs: list) -> gr.Column | None:
    """The area's bundled examples (None when it has none), in a column the area dropdown shows or hides."""
    if ctx.examples is None or not len(ctx.examples):
        return None
    gr.set_static_paths([ctx.examples.folder])  # servable even when the app starts elsewhere
    crop_type = list(handlers.PHOTO_TYPES)[1]
    what = f"area {ctx.name!r} ({ctx.source.get('split')} split)" if several else "the synthetic test set"
    with gr.Column(visible=visible, elem_classes=["area-examples"]) as group:
        gr.Examples(
            examples=[[str(ctx.examples.path(e)), e.fov_deg, crop_type] for e in ctx.examples.examples],
            inputs=inputs, example_labels=[ctx.example_label(e) for e in ctx.examples.examples],
            label=f"Examples from {what} (true location and heading are known)",
        )
    return group


# ------------------------------------------------------------------------------------------- the page's parts


def header_parts(areas: Areas) -> Page:
    """The top of the page: the intro, the area chooser (shown for several areas), the areas not served, the
    coverage and the status line; and the session's state and selected rank (not shown)."""
    ctx = areas.first
    gr.Markdown(INTRO)
    return {
        "area": gr.Dropdown(areas.choices(), value=ctx.name, label="Area (reference database) to search",
                            visible=len(areas) > 1, interactive=True, elem_id="area"),
        "areas_report": gr.Markdown(areas.report(), visible=bool(areas.refused), elem_id="areas-report"),
        "coverage": gr.Markdown(handlers.area_coverage_text(ctx), elem_id="coverage"),
        "status": gr.Markdown(handlers.status_line(ctx), elem_id="status"),
        "state": gr.State(None),
        "selected_rank": gr.Number(1, precision=0, visible=False, label="Candidate rank (1 = best)"),
    }


def photo_inputs() -> Page:
    """The ground photo, the kind of image it is and its field of view."""
    return {
        "photo": gr.Image(label="Ground photo", type="filepath", image_mode=None, height=260,
                          sources=["upload", "clipboard"], elem_id="photo"),
        "photo_type": gr.Radio(list(handlers.PHOTO_TYPES), value=next(iter(handlers.PHOTO_TYPES)),
                               label="Kind of image", elem_id="photo-type"),
        "fov": gr.Slider(handlers.FOV_MIN, handlers.FOV_MAX, value=handlers.FOV_DEFAULT, step=1,
                         label="Horizontal field of view (°)", elem_id="fov",
                         info="Used when the photo carries no EXIF focal length (EXIF wins when present)."),
    }


def distinct_info(areas: Areas) -> str:
    place_m = areas.first.localizer.place_distance_m
    default = ("empty: half the chosen area's tile footprint" if len(areas) > 1
               else f"empty: {place_m:g} m, half a tile" if place_m
               else "empty: every tile (the tiles' footprint is unknown)")
    return default + "; 0: every tile, neighbours of a better one included"


def more_inputs(areas: Areas) -> Page:
    """The folded options: more photos from the same spot, the location prior and the distinct places."""
    with gr.Accordion("More photos from the same spot, location prior, distinct places", open=False):
        page = {"more_photos": gr.File(label=f"Up to {handlers.MAX_VIEWS - 1} more photos taken at the same place in "
                                       "other directions (combined into one answer)", file_count="multiple",
                                       file_types=["image"], elem_id="more-photos")}
        with gr.Row():
            page["prior_lat"] = gr.Number(None, label="Prior centre: latitude (°)", elem_id="prior-lat")
            page["prior_lon"] = gr.Number(None, label="Prior centre: longitude (°)", elem_id="prior-lon")
            page["prior_radius"] = gr.Number(None, label="Prior radius (km)", elem_id="prior-radius",
                                             info=f"{handlers.RADIUS_RANGE_M[0] / 1000:g} to "
                                             f"{handlers.RADIUS_RANGE_M[1] / 1000:g} km; empty: "
                                             f"{handlers.EXIF_PRIOR_RADIUS_KM:g} km")
        page["use_gps"] = gr.Checkbox(True, label="Use the photo's GPS (EXIF) as the prior when it has one",
                                      elem_id="use-gps")
        page["distinct"] = gr.Number(None, label="Distinct places: no two candidates closer than (m)",
                                     elem_id="distinct-m", minimum=handlers.DISTINCT_RANGE_M[0],
                                     maximum=handlers.DISTINCT_RANGE_M[1], info=distinct_info(areas))
    return page


def answer_panels(k: int) -> Page:
    """The answer beside the inputs: the gallery of the top tiles, the heading, the compass and the selected
    candidate's text."""
    page = {"gallery": gr.Gallery(label=f"Top-{k} satellite tiles; click one to inspect it. {handlers.GALLERY_LABEL}",
                                  columns=k, rows=1, height=200, allow_preview=False, object_fit="cover",
                                  elem_id="gallery")}
    with gr.Row():
        page["heading"] = gr.Number(label="Predicted heading (° clockwise from north)", precision=1,
                                    interactive=False, elem_id="heading")
        page["compass"] = gr.HTML(label="Compass (red: predicted, green: true)", show_label=True, container=True,
                                  elem_id="compass", min_height=225)
    page["selection"] = gr.Markdown(elem_id="selection")
    return page


def detail_panels(areas: Areas) -> Page:
    """The answer below: the map, the picture of where the model looked and the answer as data."""
    page = {"map": gr.HTML(handlers.areas_map_html(areas, areas.first), label="Map", elem_id="map", min_height=300)}
    gr.Markdown(VIEWS_CAPTION, elem_id="views-caption")
    page["views"] = gr.Image(label="Where the model looked", show_label=False, interactive=False, elem_id="views")
    with gr.Accordion("The answer as data (what API clients read from /localize)", open=False):
        page["answer"] = gr.JSON(label="answer", elem_id="answer")
    return page


def page_layout(areas: Areas) -> tuple[Page, dict[str, gr.Column | None]]:
    """Every part of the page in its place; returns the components by name and each area's examples column."""
    page = header_parts(areas)
    with gr.Row():
        with gr.Column(scale=2, min_width=300):
            page |= photo_inputs()
            page |= more_inputs(areas)
            page["button"] = gr.Button("Localize", variant="primary", elem_id="localize")
            example_inputs = [page["photo"], page["fov"], page["photo_type"]]
            example_groups = {name: example_group(c, len(areas) > 1, name == areas.first.name, example_inputs)
                              for name, c in areas.contexts.items()}
            page["query"] = gr.Markdown(elem_id="query-summary")
        with gr.Column(scale=3):
            page |= answer_panels(areas.first.top_k)
    page |= detail_panels(areas)
    return page, example_groups


# ---------------------------------------------------------------------------------------------- the events


def query_context(areas: Areas, state) -> AppContext:
    """The area a query searched: its candidates are rows of that area's database, whatever is chosen now."""
    return handlers.area_context(areas, getattr(state, "area", None))


def bundled_example(areas: Areas, photo):
    """The example (of any area) whose bytes the upload has, or None."""
    sets = [c.examples for c in areas.contexts.values() if c.examples is not None] if isinstance(photo, str) else []
    return next((e for e in (s.lookup(photo) for s in sets) if e is not None), None)


def wire_localize(page: Page, areas: Areas) -> None:
    """The button (``localize``, then ``views``) and the photo's ``photo_kind``."""

    @_guard
    def on_localize(photo, fov, photo_type, more_photos=None, prior_lat=None, prior_lon=None, prior_radius_km=None,
                    use_exif_gps=True, area=None, distinct_m=None):
        # preprocess=False (see the event below): files arrive as their upload records, not decoded images, and
        # every other value exactly as the client sent it (the handlers check each one)
        out = handlers.localize_photo(handlers.area_context(areas, area), upload_path(photo, "The ground photo"), fov,
                                      photo_type, upload_paths(more_photos), prior_lat, prior_lon, prior_radius_km,
                                      use_exif_gps, distinct_m)
        for note in out.notes:
            gr.Warning(note, duration=20)
        return by_component(page, localize_values(out))

    @_guard
    def on_views(state):
        return picture_file(handlers.candidate_views(query_context(areas, state), state, 0))

    def on_photo_change(photo):
        # a bundled example is always used as a panorama crop at its own FoV: show that, however it arrived
        example = bundled_example(areas, photo)
        if example is None:
            return gr.update(), gr.update()
        return list(handlers.PHOTO_TYPES)[1], example.fov_deg

    # preprocess=False: gr.Image's own preprocessing opens every upload with Pillow, so a non-image or a
    # decompression bomb would fail inside Gradio with a generic error, before the handler could explain it.
    # Gradio still copies the file into its cache first, as it does for any file input; the handler opens it once.
    # The other inputs also arrive as sent, so a malformed API value gets the handler's specific message.
    # The answer comes first; the picture of where the model looked follows as its own event (an API client
    # that wants it calls /views, or /select_candidate for another rank).
    page["button"].click(
        on_localize, inputs=[page[name] for name in LOCALIZE_INPUTS],
        outputs=[page[name] for name in (*LOCALIZE_OUTPUTS, "state")], api_name="localize", preprocess=False,
    ).success(on_views, inputs=page["state"], outputs=page["views"], api_name="views", preprocess=False)
    # (photo_kind only mirrors an example's kind and FoV into the radio and slider, for the page)
    page["photo"].change(on_photo_change, inputs=page["photo"], outputs=[page["photo_type"], page["fov"]],
                         api_name="photo_kind", api_visibility="undocumented", queue=False)


def wire_selection(page: Page, areas: Areas) -> None:
    """A click in the gallery (``gallery_click``), then ``select_candidate``."""

    def on_gallery_click(evt: gr.SelectData):
        return evt.index + 1

    @_guard
    def on_select(state, rank):
        values = select_values(query_context(areas, state), state, handlers.candidate_position(rank))
        return by_component(page, values)

    # A click only records the rank; the views follow from (session state, rank), so API clients can ask
    # for a candidate by rank (/select_candidate) without gallery event data.
    # (gallery_click needs the click's event data, so it stays out of the API docs)
    page["gallery"].select(on_gallery_click, inputs=None, outputs=page["selected_rank"], api_name="gallery_click",
                           api_visibility="undocumented", queue=False).then(
        on_select, inputs=[page["state"], page["selected_rank"]], outputs=[page[name] for name in SELECT_OUTPUTS],
        api_name="select_candidate", preprocess=False,  # the rank as sent: the handler says what is wrong
    )


def wire_area_choice(page: Page, areas: Areas, example_groups: dict[str, gr.Column | None]) -> None:
    """With several areas, choosing one (``area_view``) shows its coverage, status, box on the map and examples."""
    groups = {name: g for name, g in example_groups.items() if g is not None}

    @_guard
    def on_area_change(name):
        chosen = handlers.area_context(areas, name)
        shown = {group: gr.update(visible=n == chosen.name) for n, group in groups.items()}
        return {**by_component(page, {"coverage": handlers.area_coverage_text(chosen),
                                      "status": handlers.status_line(chosen),
                                      "map": handlers.areas_map_html(areas, chosen)}), **shown}

    # (the page's own view of the chosen area; API clients pass the area to /localize)
    page["area"].change(on_area_change, inputs=page["area"],
                        outputs=[page["coverage"], page["status"], page["map"], *groups.values()],
                        api_name="area_view", api_visibility="undocumented", queue=False)


def build_demo(app: Localizer | AppContext | Areas, top_k: int = DEFAULT_TOP_K,
               concurrency: int = CONCURRENCY) -> gr.Blocks:
    """The app's page for a loaded localizer, a ready :class:`AppContext` or several :class:`Areas` (a dropdown
    then chooses the area), with its queue configured: ``concurrency`` events answered at once."""
    given = as_areas(app, top_k)
    areas = Areas({name: served_context(c) for name, c in given.contexts.items()}, given.refused)
    # analytics off: the app makes no network requests of its own (it must work offline)
    with gr.Blocks(title="geoapp: where was this photo taken?", analytics_enabled=False) as demo:
        page, example_groups = page_layout(areas)
        wire_localize(page, areas)
        wire_selection(page, areas)
        if len(areas) > 1:
            wire_area_choice(page, areas, example_groups)
    return demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=concurrency)
