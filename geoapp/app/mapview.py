"""The interactive map: top-k markers, the best match's field-of-view cone, the true location, the served areas.

A map is a small JSON record of what to draw (:func:`build_map`, :func:`area_map`) put into one fixed Leaflet page
(:data:`MAP_PAGE`, written once; a short script draws the record), shown in an ``<iframe srcdoc=...>``. The map
must work without internet (the synthetic demo, tests, air-gapped machines): Leaflet 1.9.3 (``static/leaflet``,
BSD-2-Clause) is either loaded from the app's own file route (:class:`Leaflet` URLs: the browser fetches it once and
caches it, so each answer carries a few kilobytes) or, for a self-contained page, inlined. Markers are HTML
``divIcon``s (no marker images to fetch) and the synthetic world's base layer is its own mosaic as an image overlay;
real datasets get OpenStreetMap tiles, which the viewer's browser fetches.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from geoapp.data.geo import destination, haversine_m
from geoapp.files import atomic_write_bytes

STATIC_DIR = Path(__file__).resolve().parent / "static"
LEAFLET_DIR = STATIC_DIR / "leaflet"
MAP_HEIGHT_PX = 520
MAX_OVERLAY_SIDE = 2048  # about 1 m per pixel for the demo world: sharp at the zoom the candidates are shown
BEST_COLOUR = "#e62828"
OTHER_COLOUR = "#2864c8"
TRUE_COLOUR = "#14aa3c"
PRIOR_COLOUR = "#8a2be2"
CHOSEN_AREA_COLOUR = "#ff8c00"  # the chosen area's coverage box
OTHER_AREA_COLOUR = "#707070"
OSM_TILES = {"url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png", "max_native_zoom": 19,
             "attribution": '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'}
DATA_ID = "geoapp-map-data"  # the page's JSON record: <script type="application/json" id=...>


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


@dataclass(frozen=True)
class Leaflet:
    """Where a map page loads Leaflet from: URLs of ``leaflet.js`` and ``leaflet.css`` (relative URLs resolve
    against the app's page, as the ``srcdoc`` frame inherits its address)."""

    js_url: str
    css_url: str


def _rounded(lat: float, lon: float) -> list[float]:
    return [round(float(lat), 7), round(float(lon), 7)]  # about a centimetre


def _area_boxes(areas, chosen: str | None) -> list[dict]:
    """Every area's coverage box; the chosen one solid and orange, the others dashed grey (drawn first, below)."""
    boxes = []
    for box in sorted(areas, key=lambda b: b.name == chosen):
        mine = box.name == chosen
        boxes.append({"bounds": [_rounded(box.south, box.west), _rounded(box.north, box.east)],
                      "colour": CHOSEN_AREA_COLOUR if mine else OTHER_AREA_COLOUR, "weight": 3 if mine else 2,
                      "dash": None if mine else "6 4",
                      "tooltip": html.escape(f"area {box.name}: {box.references:,} references")  # (shown as HTML)
                      + (" (chosen)" if mine else "")})
    return boxes


def _worlds(worlds) -> list[dict]:
    return [{"url": w.url, "bounds": [_rounded(w.south, w.west), _rounded(w.north, w.east)]} for w in worlds]


def area_map(areas: list[AreaBox], chosen: str | None, worlds: list[WorldImage] = ()) -> dict:
    """The map before a query: every area's coverage box (the chosen one highlighted) over the areas' own world
    images, or web tiles when an area has none; fitted to all the areas."""
    if not areas:
        raise ValueError("no area has coordinates; the map cannot be drawn")
    south, west = min(b.south for b in areas), min(b.west for b in areas)
    north, east = max(b.north for b in areas), max(b.east for b in areas)
    span = max(haversine_m(south, west, north, east), 50.0)
    centre = [(south + north) / 2, (west + east) / 2]
    return {"centre": _rounded(*centre), "zoom": zoom_for(span, centre[0]),
            "fit": [_rounded(south, west), _rounded(north, east)],  # every area in view, whatever the map's size
            "tiles": None if len(worlds) == len(areas) else OSM_TILES, "worlds": _worlds(worlds),
            "boxes": _area_boxes(areas, chosen), "circle": None, "cone": None, "markers": []}


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
) -> dict:
    """The map's record: centred on the selected candidate, with every candidate, the selected one's FoV cone
    toward ``heading_deg``, the true location (green) when known, the location prior's circle (lat, lon, radius in
    metres) when the query had one and the served areas' boxes (``chosen_area`` highlighted) when there are
    several. Candidates without coordinates are skipped."""
    placed = [m for m in markers if math.isfinite(m.lat) and math.isfinite(m.lon)]
    if not placed:
        raise ValueError("none of the candidates has a location; the map cannot be drawn")
    selected = next((m for m in placed if m.rank == selected_rank), placed[0])
    others = [(m.lat, m.lon) for m in placed] + ([truth] if truth else [])
    span = 2 * max([haversine_m(selected.lat, selected.lon, *p) for p in others] + [cone_length_m])
    cone_length_m = max(cone_length_m, 0.1 * span)  # stays visible when the candidates are far apart
    points = []
    for m in sorted(placed, key=lambda m: -m.rank):  # best drawn last, on top
        lines = [f"<b>Rank {m.rank}</b>", f"score {m.score:.3f}", f"{m.lat:.6f}, {m.lon:.6f}"]
        if m.distance_m is not None:
            lines.append(f"{m.distance_m:,.0f} m from the true location")
        points.append({"at": _rounded(m.lat, m.lon), "text": str(m.rank), "size": 22, "tooltip": f"rank {m.rank}",
                       "colour": BEST_COLOUR if m.rank == selected.rank else OTHER_COLOUR, "popup": "<br>".join(lines)})
    if truth is not None:
        points.append({"at": _rounded(*truth), "text": "T", "size": 24, "colour": TRUE_COLOUR,
                       "tooltip": "true location",
                       "popup": f"<b>True location</b><br>{truth[0]:.6f}, {truth[1]:.6f}"})
    circle = None if prior is None else {
        "at": _rounded(prior[0], prior[1]), "radius_m": float(prior[2]),
        "tooltip": f"location prior: {prior[2]:,.0f} m around {prior[0]:.5f}, {prior[1]:.5f}"}
    cone = {"points": [_rounded(*p) for p in cone_polygon(selected.lat, selected.lon, heading_deg, fov_deg,
                                                           cone_length_m)],
            "tooltip": f"rank {selected.rank}: looking toward {heading_deg % 360:.1f}° (FoV {fov_deg:.0f}°)"}
    return {"centre": _rounded(selected.lat, selected.lon), "zoom": zoom_for(span, selected.lat), "fit": None,
            "tiles": None if world is not None else OSM_TILES, "worlds": _worlds([world] if world else []),
            "boxes": _area_boxes(areas, chosen_area), "circle": circle, "cone": cone, "markers": points}


# The page every map shares; {leaflet} is Leaflet itself (links or inlined), {data} the map's record. The script
# draws the record: base layers, area boxes, the prior's circle, the cone, then the markers (best last, on top).
MAP_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
{leaflet}
<style>html, body, #map {{width: 100%; height: 100%; margin: 0; padding: 0;}}
.geoapp-marker {{box-sizing: border-box; border-radius: 50%; color: #fff; border: 2px solid #fff;
box-shadow: 0 0 3px #000; display: flex; align-items: center; justify-content: center; font: bold 12px sans-serif;}}
</style></head>
<body><div id="map"></div>
<script type="application/json" id="{data_id}">{data}</script>
<script>
(function () {{
  var d = JSON.parse(document.getElementById("{data_id}").textContent);
  var map = L.map("map", {{center: d.centre, zoom: d.zoom, maxZoom: 22, zoomSnap: {zoom_step}, zoomDelta: 0.5}});
  L.control.scale().addTo(map);
  if (d.tiles) L.tileLayer(d.tiles.url, {{maxZoom: 22, maxNativeZoom: d.tiles.max_native_zoom,
                                         attribution: d.tiles.attribution}}).addTo(map);
  d.worlds.forEach(function (w) {{ L.imageOverlay(w.url, w.bounds).addTo(map); }});
  d.boxes.forEach(function (b) {{
    L.rectangle(b.bounds, {{color: b.colour, weight: b.weight, dashArray: b.dash, fill: false}})
      .bindTooltip(b.tooltip).addTo(map);
  }});
  if (d.circle) L.circle(d.circle.at, {{radius: d.circle.radius_m, color: "{prior}", weight: 2, fill: false,
                                       dashArray: "6 6"}}).bindTooltip(d.circle.tooltip).addTo(map);
  if (d.cone) L.polygon(d.cone.points, {{color: "{best}", weight: 2, fill: true, fillOpacity: 0.25}})
    .bindTooltip(d.cone.tooltip).addTo(map);
  d.markers.forEach(function (m) {{
    var badge = document.createElement("div");
    badge.className = "geoapp-marker";
    badge.style.cssText = "width:" + m.size + "px;height:" + m.size + "px;background:" + m.colour;
    badge.textContent = m.text;
    var icon = L.divIcon({{html: badge, className: "geoapp-marker-icon", iconSize: [m.size, m.size],
                          iconAnchor: [m.size / 2, m.size / 2]}});
    L.marker(m.at, {{icon: icon}}).bindTooltip(m.tooltip).bindPopup(m.popup, {{maxWidth: 260}}).addTo(map);
  }});
  if (d.fit) map.fitBounds(d.fit);
}})();
</script></body></html>
"""


@lru_cache(maxsize=1)
def _leaflet_inline() -> str:
    js = (LEAFLET_DIR / "leaflet.js").read_text(encoding="utf-8")
    css = (LEAFLET_DIR / "leaflet.css").read_text(encoding="utf-8")
    return f"<style>{css}</style>\n<script>{js}</script>"


def _leaflet_tags(leaflet: Leaflet | None) -> str:
    if leaflet is None:
        return _leaflet_inline()
    return (f'<link rel="stylesheet" href="{html.escape(leaflet.css_url, quote=True)}">\n'
            f'<script src="{html.escape(leaflet.js_url, quote=True)}"></script>')


@lru_cache(maxsize=8)
def _page_template(leaflet: Leaflet | None) -> tuple[str, str]:
    """The page before and after its record, built once per Leaflet source."""
    page = MAP_PAGE.format(leaflet=_leaflet_tags(leaflet), data_id=DATA_ID, data="\0", zoom_step=ZOOM_STEP,
                           prior=PRIOR_COLOUR, best=BEST_COLOUR)
    before, after = page.split("\0")
    return before, after


def map_page(record: dict, leaflet: Leaflet | None = None) -> str:
    """The map's HTML page: the fixed template with ``record`` as its JSON (Leaflet inlined when ``leaflet`` is
    None, for a page that stands alone)."""
    before, after = _page_template(leaflet)
    # "</" never appears inside the JSON, so no text in the record can close its <script> element
    data = json.dumps(record, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    return before + data + after


def map_iframe(record: dict, height: int = MAP_HEIGHT_PX, title: str = "map of the candidates",
               leaflet: Leaflet | None = None) -> str:
    """The map as an ``<iframe srcdoc=...>`` (its scripts run inside the frame only)."""
    return (
        f'<iframe class="geoapp-map" title="{html.escape(title, quote=True)}" '
        f'srcdoc="{html.escape(map_page(record, leaflet), quote=True)}" '
        f'style="width:100%;height:{height}px;border:0" sandbox="allow-scripts allow-popups"></iframe>'
    )


def map_record(page_or_iframe: str) -> dict:
    """The JSON record of a map page or of its iframe (what :func:`build_map` or :func:`area_map` made): for API
    clients that read the map's content, and for tests."""
    text = html.unescape(page_or_iframe) if page_or_iframe.lstrip().startswith("<iframe") else page_or_iframe
    start = text.index(f'id="{DATA_ID}">') + len(f'id="{DATA_ID}">')
    return json.loads(text[start:text.index("</script>", start)])
