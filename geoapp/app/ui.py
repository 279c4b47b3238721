"""The Gradio page: layout, and the thin wrappers that turn handler results into component values.

Events (each has an ``api_name``): ``localize`` (the button: the photo, FoV, kind of image, more photos from
the same spot, the location prior's latitude, longitude and radius in km, whether to use the photo's EXIF GPS, and
the area to search (default: the first; see ``geoapp.app.areas``); its last output is the answer as a JSON record,
with the calibrated confidence); ``photo_kind`` (an upload that is a bundled example sets the radio and slider to
what it will be used as); ``gallery_click`` (a click in the gallery records the candidate's rank), then
``select_candidate`` (the views of the candidate of that rank, in the area that query searched; API clients call it
with a rank); ``area_view`` (with several areas, choosing one shows its coverage, examples and box on the map);
Gradio's own ``load_example`` (an example click fills the inputs). Input problems become
``gr.Error`` with the handler's message; anything unexpected is logged with its traceback on the server and
reported as a short error, so the page never shows a traceback and the app keeps serving.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from urllib.parse import quote

import cv2
import gradio as gr
import numpy as np
from gradio import utils as gradio_utils
from gradio.route_utils import API_PREFIX

from geoapp.files import atomic_write_bytes, sha256_bytes
from geoapp.retrieval.engine import Localizer

from . import handlers
from .areas import Areas
from .context import DEFAULT_TOP_K, AppContext

log = logging.getLogger(__name__)

QUEUE_MAX_SIZE = 32  # requests waiting beyond this are refused at once instead of piling up
CONCURRENCY = 1  # one model in memory: queries run one at a time (each already uses every core)

INTRO = """# Where was this photo taken?
Upload a ground photo with a narrow field of view (or pick an example from the synthetic test set). The app
matches it against geotagged satellite tiles and shows the best matches, the direction the camera looked,
and where the model paid attention."""


def picture_file(rgb: np.ndarray) -> str:
    """Save a result picture where Gradio serves it from, once per content, written atomically.

    Returning arrays would let Gradio encode them into its content-addressed cache with a plain
    ``write_bytes``: two requests with an identical picture (the same example, at the same time) rewrite the
    same file while the first response is being downloaded, and that download breaks. A file that is already
    inside Gradio's cache folder is served as is, so writing it once, atomically, avoids the race.
    """
    ok, encoded = cv2.imencode(".webp", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 92])
    if not ok:
        raise RuntimeError("could not encode a result picture as WebP")
    data = encoded.tobytes()
    path = Path(gradio_utils.get_upload_folder()) / "geoapp-results" / f"{sha256_bytes(data)}.webp"
    if not path.exists():
        atomic_write_bytes(path, data)
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


def served_world(ctx: AppContext) -> AppContext:
    """The context with its world image loaded by the map from the app (once, then from the browser's cache)
    instead of inlined into every map."""
    if ctx.world is None or ctx.world.file is None:
        return ctx
    gr.set_static_paths([ctx.world.file])
    return dataclasses.replace(ctx, world=dataclasses.replace(ctx.world, url=served_url(ctx.world.file)))


def as_areas(app: Localizer | AppContext | Areas, top_k: int = DEFAULT_TOP_K) -> Areas:
    """What the page serves: the given areas, or the single area of a localizer or context."""
    if isinstance(app, Areas):
        return app
    return Areas.of(app if isinstance(app, AppContext) else AppContext.create(app, top_k))


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


def build_demo(app: Localizer | AppContext | Areas, top_k: int = DEFAULT_TOP_K) -> gr.Blocks:
    """The app's page for a loaded localizer, a ready :class:`AppContext` or several :class:`Areas` (a dropdown
    then chooses the area), with its queue configured."""
    given = as_areas(app, top_k)
    areas = Areas({name: served_world(c) for name, c in given.contexts.items()}, given.refused)
    ctx = areas.first  # the area the page opens on, and the API's default
    k = ctx.top_k

    @_guard
    def on_localize(photo, fov, photo_type, more_photos=None, prior_lat=None, prior_lon=None, prior_radius_km=None,
                    use_exif_gps=True, area=None):
        # preprocess=False (see the event below): files arrive as their upload records, not decoded images, and
        # every other value exactly as the client sent it (the handlers check each one)
        out = handlers.localize_photo(handlers.area_context(areas, area), upload_path(photo, "The ground photo"), fov,
                                      photo_type, upload_paths(more_photos), prior_lat, prior_lon, prior_radius_km,
                                      use_exif_gps)
        for note in out.notes:
            gr.Warning(note, duration=20)
        sel = out.selection
        gallery = [(picture_file(image), caption) for image, caption in out.gallery]
        return (gallery, sel.heading_deg, picture_file(sel.compass), sel.summary, sel.map_html,
                picture_file(out.ground_view), picture_file(sel.polar_view), picture_file(sel.topdown_view),
                out.query_summary, out.status, out.answer, out.state)

    def bundled_example(photo):
        """The example (of any area) whose bytes the upload has, or None."""
        sets = [c.examples for c in areas.contexts.values() if c.examples is not None] if isinstance(photo, str) else []
        return next((e for e in (s.lookup(photo) for s in sets) if e is not None), None)

    def on_photo_change(photo):
        # a bundled example is always used as a panorama crop at its own FoV: show that, however it arrived
        example = bundled_example(photo)
        if example is None:
            return gr.update(), gr.update()
        return list(handlers.PHOTO_TYPES)[1], example.fov_deg

    def on_gallery_click(evt: gr.SelectData):
        return evt.index + 1

    @_guard
    def on_select(state, rank):
        # the candidates are rows of the database of the area they were found in, whatever is chosen now
        chosen = handlers.area_context(areas, getattr(state, "area", None))
        sel = handlers.select_candidate(chosen, state, handlers.candidate_position(rank))
        return (sel.heading_deg, picture_file(sel.compass), sel.summary, sel.map_html, picture_file(sel.polar_view),
                picture_file(sel.topdown_view))

    # analytics off: the app makes no network requests of its own (it must work offline)
    with gr.Blocks(title="geoapp: where was this photo taken?", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        area = gr.Dropdown(areas.choices(), value=ctx.name, label="Area (reference database) to search",
                           visible=len(areas) > 1, interactive=True, elem_id="area")
        gr.Markdown(areas.report(), visible=bool(areas.refused), elem_id="areas-report")
        coverage = gr.Markdown(handlers.area_coverage_text(ctx), elem_id="coverage")
        status = gr.Markdown(handlers.status_line(ctx), elem_id="status")
        state = gr.State(None)
        selected_rank = gr.Number(1, precision=0, visible=False, label="Candidate rank (1 = best)")
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                photo = gr.Image(label="Ground photo", type="filepath", image_mode=None, height=260,
                                 sources=["upload", "clipboard"], elem_id="photo")
                photo_type = gr.Radio(list(handlers.PHOTO_TYPES), value=next(iter(handlers.PHOTO_TYPES)),
                                      label="Kind of image", elem_id="photo-type")
                fov = gr.Slider(handlers.FOV_MIN, handlers.FOV_MAX, value=handlers.FOV_DEFAULT, step=1,
                                label="Horizontal field of view (°)", elem_id="fov",
                                info="Used when the photo carries no EXIF focal length (EXIF wins when present).")
                with gr.Accordion("More photos from the same spot, location prior", open=False):
                    more_photos = gr.File(label=f"Up to {handlers.MAX_VIEWS - 1} more photos taken at the same "
                                          "place in other directions (combined into one answer)",
                                          file_count="multiple", file_types=["image"], elem_id="more-photos")
                    with gr.Row():
                        prior_lat = gr.Number(None, label="Prior centre: latitude (°)", elem_id="prior-lat")
                        prior_lon = gr.Number(None, label="Prior centre: longitude (°)", elem_id="prior-lon")
                        prior_radius = gr.Number(None, label="Prior radius (km)", elem_id="prior-radius",
                                                 info=f"{handlers.RADIUS_RANGE_M[0] / 1000:g} to "
                                                 f"{handlers.RADIUS_RANGE_M[1] / 1000:g} km; empty: "
                                                 f"{handlers.EXIF_PRIOR_RADIUS_KM:g} km")
                    use_gps = gr.Checkbox(True, label="Use the photo's GPS (EXIF) as the prior when it has one",
                                          elem_id="use-gps")
                button = gr.Button("Localize", variant="primary", elem_id="localize")
                example_groups = {name: example_group(c, len(areas) > 1, name == ctx.name, [photo, fov, photo_type])
                                  for name, c in areas.contexts.items()}
                query_md = gr.Markdown(elem_id="query-summary")
            with gr.Column(scale=3):
                gallery = gr.Gallery(
                    label=f"Top-{k} satellite tiles; click one to inspect it. {handlers.GALLERY_LABEL}",
                    columns=k, rows=1, height=200, allow_preview=False, object_fit="cover", elem_id="gallery",
                )
                with gr.Row():
                    heading = gr.Number(label="Predicted heading (° clockwise from north)", precision=1,
                                        interactive=False, elem_id="heading")
                    compass = gr.Image(label="Compass (red: predicted, green: true)", interactive=False,
                                       height=200, elem_id="compass")
                selection_md = gr.Markdown(elem_id="selection")
        map_html = gr.HTML(handlers.areas_map_html(areas, ctx), label="Map", elem_id="map", min_height=300)
        polar_view = gr.Image(label="Satellite attention in the polar view; the aligned window is outlined "
                              "(S, W, N, E: the direction each column looks)", interactive=False,
                              elem_id="polar-attention")
        with gr.Row():
            ground_view = gr.Image(label="Ground attention (the model's input)", interactive=False, height=320,
                                   elem_id="ground-attention")
            topdown_view = gr.Image(label="Satellite tile: attention and field-of-view cone (red: predicted, "
                                    "green: true)", interactive=False, height=320, elem_id="topdown-attention")

        with gr.Accordion("The answer as data (what API clients read from /localize)", open=False):
            answer = gr.JSON(label="answer", elem_id="answer")

        # preprocess=False: gr.Image's own preprocessing opens every upload with Pillow, so a non-image or a
        # decompression bomb would fail inside Gradio with a generic error, before the handler could explain it.
        # Gradio still copies the file into its cache first, as it does for any file input; load_image decodes it.
        # The other inputs also arrive as sent, so a malformed API value gets the handler's specific message.
        button.click(
            on_localize,
            inputs=[photo, fov, photo_type, more_photos, prior_lat, prior_lon, prior_radius, use_gps, area],
            outputs=[gallery, heading, compass, selection_md, map_html, ground_view, polar_view, topdown_view,
                     query_md, status, answer, state],
            api_name="localize", preprocess=False,
        )
        # (photo_kind only mirrors an example's kind and FoV into the radio and slider, for the page)
        photo.change(on_photo_change, inputs=photo, outputs=[photo_type, fov], api_name="photo_kind",
                     api_visibility="undocumented", queue=False)
        # A click only records the rank; the views follow from (session state, rank), so API clients can ask
        # for a candidate by rank (/select_candidate) without gallery event data.
        # (gallery_click needs the click's event data, so it stays out of the API docs)
        gallery.select(on_gallery_click, inputs=None, outputs=selected_rank, api_name="gallery_click",
                       api_visibility="undocumented", queue=False).then(
            on_select, inputs=[state, selected_rank],
            outputs=[heading, compass, selection_md, map_html, polar_view, topdown_view],
            api_name="select_candidate", preprocess=False,  # the rank as sent: the handler says what is wrong
        )
        if len(areas) > 1:
            groups = [g for g in example_groups.values() if g is not None]

            @_guard
            def on_area_change(name):
                chosen = handlers.area_context(areas, name)
                shown = [gr.update(visible=n == chosen.name) for n, g in example_groups.items() if g is not None]
                return (handlers.area_coverage_text(chosen), handlers.status_line(chosen),
                        handlers.areas_map_html(areas, chosen), *shown)

            # (the page's own view of the chosen area; API clients pass the area to /localize)
            area.change(on_area_change, inputs=area, outputs=[coverage, status, map_html, *groups],
                        api_name="area_view", api_visibility="undocumented", queue=False)
    return demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=CONCURRENCY)

