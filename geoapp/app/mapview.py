"""The interactive folium map: top-k markers, the best match's field-of-view cone, the true location.

The map must work without internet (the synthetic demo, tests, air-gapped machines): Leaflet's script and
style sheet are inlined from ``static/leaflet`` (Leaflet 1.9.3, BSD-2-Clause, the version folium targets)
instead of folium's CDN links, markers are HTML ``DivIcon``s (no marker images to fetch) and the synthetic
world's base layer is its own mosaic as an inline image overlay (``tiles=None``). Real datasets get normal
web map tiles, which the viewer's browser fetches.
"""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import folium
import numpy as np
from branca.element import MacroElement
from jinja2 import Template

from geoapp.data.geo import destination, haversine_m
from geoapp.files import atomic_write_bytes

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAP_HEIGHT_PX = 520
MAX_OVERLAY_SIDE = 2048  # about 1 m per pixel for the demo world: sharp at the zoom the candidates are shown
BEST_COLOUR = "#e62828"
OTHER_COLOUR = "#2864c8"
TRUE_COLOUR = "#14aa3c"
PRIOR_COLOUR = "#8a2be2"
CHOSEN_AREA_COLOUR = "#ff8c00"  # the chosen area's coverage box
OTHER_AREA_COLOUR = "#707070"


@dataclass(frozen=True)
class MapMarker:
    """A candidate on the map: its rank (1 = best), lat/lon and similarity score in [0, 1]."""

    rank: int
    lat: float
    lon: float
    score: float
    distance_m: float | None = None  # to the true location, when known


@dataclass(frozen=True)
class WorldImage:
    """A north-up image of the whole area and its bounds, the offline base layer of the map.

    ``url`` is where the map page loads it from: a ``data:`` URL (self-contained, the default) or, in the running
    app, the app's own file route for ``file`` (the browser then fetches it once and caches it, instead of
    receiving it inlined with every map).
    """

    url: str
    south: float
    west: float
    north: float
    east: float
    file: Path | None = None

    @classmethod
    def from_array(cls, rgb: np.ndarray, south: float, west: float, north: float, east: float,
                   file: str | os.PathLike | None = None) -> WorldImage:
        """Downscale to MAX_OVERLAY_SIDE and JPEG-encode; also written to ``file`` when given."""
        scale = MAX_OVERLAY_SIDE / max(rgb.shape[:2])
        if scale < 1:
            rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise ValueError("could not encode the world image as JPEG")
        if file is not None:
            atomic_write_bytes(file, jpeg.tobytes())
        url = "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii")
        return cls(url, float(south), float(west), float(north), float(east), Path(file) if file else None)

    @property
    def bounds(self) -> list[list[float]]:
        return [[self.south, self.west], [self.north, self.east]]


@dataclass(frozen=True)
class AreaBox:
    """A served area's coverage on the map: the box around its reference tiles, and how many there are."""

    name: str
    south: float
    west: float
    north: float
    east: float
    references: int

    @property
    def bounds(self) -> list[list[float]]:
        return [[self.south, self.west], [self.north, self.east]]


def draw_areas(fmap: folium.Map, areas, chosen: str | None) -> None:
    """Every area's coverage box; the chosen one solid and orange, the others dashed grey (drawn first, below)."""
    for box in sorted(areas, key=lambda b: b.name == chosen):
        mine = box.name == chosen
        folium.Rectangle(
            box.bounds, color=CHOSEN_AREA_COLOUR if mine else OTHER_AREA_COLOUR, weight=3 if mine else 2,
            dash_array=None if mine else "6 4", fill=False,
            tooltip=f"area {box.name}: {box.references:,} references" + (" (chosen)" if mine else ""),
        ).add_to(fmap)


def area_map(areas: list[AreaBox], chosen: str | None, worlds: list[WorldImage] = ()) -> folium.Map:
    """The map before a query: every area's coverage box (the chosen one highlighted) over the areas' own world
    images, or web tiles when an area has none."""
    if not areas:
        raise ValueError("no area has coordinates; the map cannot be drawn")
    south, west = min(b.south for b in areas), min(b.west for b in areas)
    north, east = max(b.north for b in areas), max(b.east for b in areas)
    span = max(haversine_m(south, west, north, east), 50.0)
    centre = [(south + north) / 2, (west + east) / 2]
    fmap = _offline_map(centre, zoom_for(span, centre[0]), tiles=None if len(worlds) == len(areas) else "OpenStreetMap")
    for world in worlds:
        _add_world(fmap, world)
    draw_areas(fmap, areas, chosen)
    fmap.fit_bounds([[south, west], [north, east]])  # every area in view, whatever the map's size on the page
    return fmap


def _add_world(fmap: folium.Map, world: WorldImage) -> None:
    overlay = folium.raster_layers.ImageOverlay("data:,", bounds=world.bounds, name="synthetic world")
    overlay.url = world.url  # set afterwards: folium would open a scheme-less (relative) URL as a local file
    overlay.add_to(fmap)


def cone_polygon(lat: float, lon: float, heading_deg: float, fov_deg: float, length_m: float, steps: int = 16):
    """Lat/lon vertices of the field-of-view wedge of a camera at (lat, lon) looking toward ``heading_deg``."""
    arc = [destination(lat, lon, a, length_m) for a in np.linspace(heading_deg - fov_deg / 2,
                                                                    heading_deg + fov_deg / 2, steps)]
    return [(lat, lon), *arc, (lat, lon)]


ZOOM_STEP = 0.25  # Leaflet zoomSnap: quarter zoom levels fit the view more tightly than whole ones


def zoom_for(span_m: float, lat: float, viewport_px: int = MAP_HEIGHT_PX) -> float:
    """Web-Mercator zoom (a multiple of ZOOM_STEP) at which ``span_m`` metres fill about 85% of the viewport."""
    metres_per_px_z0 = 156543.03392 * math.cos(math.radians(lat))
    zoom = math.log2(metres_per_px_z0 * viewport_px * 0.85 / max(span_m, 50.0))
    return float(np.clip(math.floor(zoom / ZOOM_STEP) * ZOOM_STEP, 1, 20))


@lru_cache(maxsize=1)
def _leaflet_inline() -> str:
    js = (STATIC_DIR / "leaflet" / "leaflet.js").read_text(encoding="utf-8")
    css = (STATIC_DIR / "leaflet" / "leaflet.css").read_text(encoding="utf-8")
    # folium creates every marker with Leaflet's default image icon and then swaps in ours; a DivIcon default
    # keeps Leaflet from requesting marker-icon.png in between
    default_icon = "L.Marker.prototype.options.icon = L.divIcon({className: 'geoapp-default-icon'});"
    return f"<style>{css}</style>\n<script>{js}\n{default_icon}</script>"


def _offline_map(location, zoom: float, tiles) -> folium.Map:
    fmap = folium.Map(location=location, zoom_start=zoom, tiles=tiles, control_scale=True, max_zoom=22,
                      zoom_snap=ZOOM_STEP, zoom_delta=0.5)
    # Instance attributes shadow folium's CDN lists; Leaflet itself is inlined into the header instead.
    fmap.default_js = []
    fmap.default_css = []
    fmap.get_root().header.add_child(folium.Element(_leaflet_inline()), name="leaflet_inline", index=0)
    return fmap


class _Popup(MacroElement):
    """A popup bound with plain Leaflet (folium's own Popup parses its HTML with jQuery, which we do not load)."""

    _template = Template(
        "{% macro script(this, kwargs) %}"
        "{{ this._parent.get_name() }}.bindPopup({{ this.html|tojson }}, {maxWidth: {{ this.max_width }}});"
        "{% endmacro %}"
    )

    def __init__(self, html_text: str, max_width: int = 260):
        super().__init__()
        self._name = "Popup"
        self.html = html_text
        self.max_width = int(max_width)


def _badge(text: str, colour: str, size: int = 22) -> folium.DivIcon:
    style = (
        f"box-sizing:border-box;width:{size}px;height:{size}px;border-radius:50%;background:{colour};"
        "color:#fff;border:2px solid #fff;box-shadow:0 0 3px #000;display:flex;align-items:center;"
        "justify-content:center;font:bold 12px sans-serif"
    )
    return folium.DivIcon(
        html=f'<div class="geoapp-marker" style="{style}">{html.escape(text)}</div>',
        icon_size=(size, size), icon_anchor=(size // 2, size // 2), class_name="geoapp-marker-icon",
    )


def build_map(
    markers: list[MapMarker],
    selected_rank: int,
    heading_deg: float,
    fov_deg: float,
    cone_length_m: float,
    truth: tuple[float, float] | None = None,
    world: WorldImage | None = None,
    prior: tuple[float, float, float] | None = None,
    areas: tuple[AreaBox, ...] = (),
    chosen_area: str | None = None,
) -> folium.Map:
    """A map centred on the selected candidate, with every candidate, the selected one's FoV cone toward
    ``heading_deg``, the true location (green) when known, the location prior's circle (lat, lon, radius in
    metres) when the query had one and the served areas' boxes (``chosen_area`` highlighted) when there are
    several. Candidates without coordinates are skipped."""
    placed = [m for m in markers if math.isfinite(m.lat) and math.isfinite(m.lon)]
    if not placed:
        raise ValueError("none of the candidates has a location; the map cannot be drawn")
    selected = next((m for m in placed if m.rank == selected_rank), placed[0])
    others = [(m.lat, m.lon) for m in placed] + ([truth] if truth else [])
    span = 2 * max([haversine_m(selected.lat, selected.lon, *p) for p in others] + [cone_length_m])
    cone_length_m = max(cone_length_m, 0.1 * span)  # stays visible when the candidates are far apart
    fmap = _offline_map([selected.lat, selected.lon], zoom_for(span, selected.lat),
                        tiles=None if world is not None else "OpenStreetMap")
    if world is not None:
        _add_world(fmap, world)
    draw_areas(fmap, areas, chosen_area)
    if prior is not None:
        folium.Circle([prior[0], prior[1]], radius=float(prior[2]), color=PRIOR_COLOUR, weight=2, fill=False,
                      dash_array="6 6", tooltip=f"location prior: {prior[2]:,.0f} m around {prior[0]:.5f}, "
                      f"{prior[1]:.5f}").add_to(fmap)
    folium.Polygon(
        cone_polygon(selected.lat, selected.lon, heading_deg, fov_deg, cone_length_m),
        color=BEST_COLOUR, weight=2, fill=True, fill_opacity=0.25,
        tooltip=f"rank {selected.rank}: looking toward {heading_deg % 360:.1f}° (FoV {fov_deg:.0f}°)",
    ).add_to(fmap)
    for m in sorted(placed, key=lambda m: -m.rank):  # best drawn last, on top
        lines = [f"<b>Rank {m.rank}</b>", f"score {m.score:.3f}", f"{m.lat:.6f}, {m.lon:.6f}"]
        if m.distance_m is not None:
            lines.append(f"{m.distance_m:,.0f} m from the true location")
        colour = BEST_COLOUR if m.rank == selected.rank else OTHER_COLOUR
        folium.Marker(
            [m.lat, m.lon], icon=_badge(str(m.rank), colour),
            tooltip=f"rank {m.rank}",
        ).add_child(_Popup("<br>".join(lines))).add_to(fmap)
    if truth is not None:
        folium.Marker(
            list(truth), icon=_badge("T", TRUE_COLOUR, 24),
            tooltip="true location",
        ).add_child(_Popup(f"<b>True location</b><br>{truth[0]:.6f}, {truth[1]:.6f}")).add_to(fmap)
    return fmap


def map_iframe(fmap: folium.Map, height: int = MAP_HEIGHT_PX, title: str = "map of the candidates") -> str:
    """The map as a self-contained ``<iframe srcdoc=...>`` (its scripts run inside the frame only)."""
    page = fmap.get_root().render()
    return (
        f'<iframe class="geoapp-map" title="{html.escape(title, quote=True)}" srcdoc="{html.escape(page, quote=True)}" '
        f'style="width:100%;height:{height}px;border:0" sandbox="allow-scripts allow-popups"></iframe>'
    )
