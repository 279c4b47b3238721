"""Pictures of a localization result: attention heatmaps, the aligned polar window, the FoV cone, a compass.

The pictures take and return uint8 RGB arrays (H x W x 3) and draw with Pillow and OpenCV only (Pillow's bundled
font, no font files or network); :func:`compose` puts several side by side as one picture, :func:`jpeg_bytes`
encodes one. The compass is a small SVG document (:func:`compass_svg`): vector, a kilobyte, nothing to encode.
Angles are compass bearings in degrees (conventions §2: 0 = north, 90 = east, clockwise); a north-up top-down tile
has north at the top and east on the right.
"""

from __future__ import annotations

import html
import math

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

HEATMAP_ALPHA = 0.45
PREDICTED_COLOUR = (230, 40, 40)
TRUE_COLOUR = (20, 170, 60)
WINDOW_COLOUR = (255, 255, 255)


def display_heading(heading_deg: float) -> float:
    """A heading for display: in [0, 360) after rounding to 0.1 deg (359.96 shows as 0.0, never 360.0)."""
    return round(float(heading_deg) % 360.0, 1) % 360.0


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def normalise(values: np.ndarray) -> np.ndarray:
    """Min-max stretch to [0, 1] (attention masks live in a narrow band; the stretch shows their shape)."""
    values = np.asarray(values, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    if not math.isfinite(low) or not math.isfinite(high) or high - low < 1e-12:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def colorize(values01: np.ndarray) -> np.ndarray:
    """[0, 1] map -> RGB with the perceptually even 'turbo' colour map."""
    lut_index = np.clip(np.rint(values01 * 255), 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(lut_index, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)


def heatmap_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = HEATMAP_ALPHA, valid=None) -> np.ndarray:
    """Blend a (normalised, bilinearly upsampled) attention mask over ``image``; ``valid`` limits where."""
    height, width = image.shape[:2]
    resized = cv2.resize(np.asarray(mask, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    colour = colorize(normalise(resized)).astype(np.float32)
    weight = np.full((height, width, 1), alpha, np.float32)
    if valid is not None:
        weight *= np.asarray(valid, np.float32)[:, :, None]
    out = image.astype(np.float32) * (1 - weight) + colour * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def upscale(image: np.ndarray, min_height: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor so small model inputs stay crisp on screen."""
    factor = max(1, math.ceil(min_height / image.shape[0]))
    return image if factor == 1 else cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)


def window_columns(offset: float, window_width: float, map_width: float, image_width: int) -> tuple[float, float]:
    """Start and width, in image columns, of the window ``offset``/``window_width`` of a ``map_width`` map."""
    scale = image_width / map_width
    return offset * scale, window_width * scale


def polar_window_view(
    polar: np.ndarray, mask: np.ndarray | None, offset: float, window_width: float, map_width: float,
    min_height: int = 256, window_scores: np.ndarray | None = None,
) -> np.ndarray:
    """The polar satellite image with its attention heatmap and the aligned window (conventions §5) outlined.

    The window covers columns ``(offset + k) mod map_width`` of the stage map, so it may wrap around the
    right edge; it is then drawn as two rectangles. Compass letters mark the columns that look S, W, N, E
    (conventions §2: column 0 = south, W/4 = west, W/2 = north, 3W/4 = east).
    """
    image = heatmap_overlay(polar, mask) if mask is not None else polar.copy()
    image = upscale(image, min_height)
    height, width = image.shape[:2]
    start, span = window_columns(offset, window_width, map_width, width)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    pieces = [(start, min(start + span, width))]
    if start + span > width:
        pieces.append((0.0, start + span - width))
    for left, right in pieces:
        draw.rectangle([left, 1, right - 1, height - 2], outline=WINDOW_COLOUR, width=3)
    font = _font(max(12, height // 12))
    for letter, fraction in (("S", 0.0), ("W", 0.25), ("N", 0.5), ("E", 0.75)):  # at the bottom: the page's
        x = fraction * width + 4  # image label covers the top-left corner
        draw.text((x, height - 4), letter, fill=(255, 255, 255), font=font, anchor="ld", stroke_width=2,
                  stroke_fill=(0, 0, 0))
    image = np.asarray(canvas)
    if window_scores is not None:
        image = np.concatenate([image, score_strip(window_scores, window_width / map_width, width)], axis=0)
    return image


def score_strip(scores: np.ndarray, window_fraction: float, width: int, height: int = 28) -> np.ndarray:
    """A strip under the polar view: for each direction (image column) the gate-corr score of the window centred
    there, as a heat colour and a white curve, so a person sees where the photo's attention fits the tile and how
    sharply (the heading is the peak)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    centres = (np.arange(n) + window_fraction * n / 2) / n  # window centre of each offset, as a width fraction
    cols = (np.arange(width) + 0.5) / width
    order = np.argsort(centres % 1.0)
    xs, ys = (centres % 1.0)[order], scores[order]
    values = np.interp(cols, np.concatenate([xs - 1, xs, xs + 1]), np.tile(ys, 3))  # circular
    canvas = Image.fromarray(np.ascontiguousarray(np.repeat(colorize(normalise(values)[None]), height, axis=0)))
    draw = ImageDraw.Draw(canvas)
    lo, hi = float(values.min()), float(values.max())
    ys_px = (height - 3) - (values - lo) / max(hi - lo, 1e-9) * (height - 6)
    draw.line(list(zip(range(width), ys_px.tolist())), fill=(255, 255, 255), width=2)
    return np.asarray(canvas)


def polar_to_topdown(polar_map: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of the conventions §3 polar transform: resample an H x W polar map onto an S x S top-down grid.

    Returns the S x S map and a validity mask (inside the circle the polar image covers). For tile pixel
    (y, x): ``r = hypot(y - S/2, x - S/2)``, column ``j = atan2(-(x - S/2), y - S/2) / 2 pi * W`` and row
    ``i = H - 1 - r * H / (S/2)``, which undoes ``y = S/2 + r cos(2 pi j / W)``, ``x = S/2 - r sin(...)``.
    """
    polar_map = np.asarray(polar_map, np.float32)
    height, width = polar_map.shape[:2]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = ys - size / 2.0, xs - size / 2.0
    radius = np.hypot(dy, dx)
    theta = np.mod(np.arctan2(-dx, dy), 2 * np.pi)
    cols = (theta / (2 * np.pi) * width).astype(np.float32)
    rows = (height - 1 - radius * height / (size / 2.0)).astype(np.float32)
    wrapped = np.concatenate([polar_map, polar_map[:, :1]], axis=1)  # column W interpolates back to column 0
    out = cv2.remap(wrapped, cols, rows, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    valid = rows >= 0
    return out, valid


def cone_points(cx: float, cy: float, radius: float, heading_deg: float, fov_deg: float, steps: int = 24):
    """Polygon of a field-of-view wedge from (cx, cy) in image coordinates (north up, x right, y down)."""
    points = [(cx, cy)]
    for a in np.linspace(heading_deg - fov_deg / 2, heading_deg + fov_deg / 2, steps):
        rad = math.radians(a)
        points.append((cx + radius * math.sin(rad), cy - radius * math.cos(rad)))
    return points


def _draw_cone(canvas: Image.Image, centre, radius, heading_deg, fov_deg, colour, fill_alpha=70):
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    points = cone_points(*centre, radius, heading_deg, fov_deg)
    draw.polygon(points, fill=(*colour, fill_alpha), outline=(*colour, 255), width=3)
    tip = cone_points(*centre, radius, heading_deg, 0.0, steps=1)[1]
    draw.line([centre, tip], fill=(*colour, 255), width=2)
    canvas.alpha_composite(overlay)


def topdown_view(
    tile: np.ndarray, polar_mask: np.ndarray | None, heading_deg: float, fov_deg: float,
    true_heading_deg: float | None = None, size: int = 320,
) -> np.ndarray:
    """The north-up satellite tile with the attention heatmap mapped back from polar and the FoV cone
    of the predicted heading (red), plus the true heading's cone outline (green) when known."""
    tile = cv2.resize(tile, (size, size), interpolation=cv2.INTER_AREA if tile.shape[0] > size else cv2.INTER_LINEAR)
    if polar_mask is not None:
        topdown, valid = polar_to_topdown(polar_mask, size)
        tile = heatmap_overlay(tile, np.where(valid, topdown, topdown[valid].min() if valid.any() else 0), valid=valid)
    canvas = Image.fromarray(tile).convert("RGBA")
    centre = (size / 2.0, size / 2.0)
    if true_heading_deg is not None:
        _draw_cone(canvas, centre, size * 0.48, true_heading_deg, fov_deg, TRUE_COLOUR, fill_alpha=0)
    _draw_cone(canvas, centre, size * 0.48, heading_deg, fov_deg, PREDICTED_COLOUR)
    draw = ImageDraw.Draw(canvas)
    draw.text((size / 2 - 5, 2), "N", fill=(255, 255, 255), font=_font(16), stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(canvas.convert("RGB"))


def _bearing_point(cx: float, cy: float, radius: float, heading_deg: float) -> tuple[float, float]:
    rad = math.radians(heading_deg)
    return cx + radius * math.sin(rad), cy - radius * math.cos(rad)


def _svg_needle(cx: float, cy: float, length: float, heading_deg: float, colour) -> str:
    tip = _bearing_point(cx, cy, length, heading_deg)
    head = [tip, *(_bearing_point(*tip, 12, heading_deg + side) for side in (-150, 150))]
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in head)
    return (f'<line x1="{cx:.1f}" y1="{cy:.1f}" x2="{tip[0]:.1f}" y2="{tip[1]:.1f}" stroke="{_hex(colour)}" '
            f'stroke-width="4"/><polygon points="{points}" fill="{_hex(colour)}"/>')


def _hex(colour) -> str:
    return "#" + "".join(f"{c:02x}" for c in colour)


def compass_svg(heading_deg: float, fov_deg: float, true_heading_deg: float | None = None, size: int = 200) -> str:
    """A compass rose as an SVG document: the predicted viewing direction (red needle and FoV wedge) and, when
    known, the true heading (green needle); below it the predicted heading in [0, 360)."""
    label_height = size // 8
    cx = cy = size / 2.0
    radius = size * 0.40
    parts = [f'<circle cx="{cx}" cy="{cy}" r="{radius}" fill="#fff" stroke="#3c3c3c" stroke-width="2"/>']
    for deg in range(0, 360, 15):
        inner = _bearing_point(cx, cy, radius * (0.86 if deg % 90 else 0.78), deg)
        outer = _bearing_point(cx, cy, radius, deg)
        parts.append(f'<line x1="{inner[0]:.1f}" y1="{inner[1]:.1f}" x2="{outer[0]:.1f}" y2="{outer[1]:.1f}" '
                     f'stroke="#5a5a5a" stroke-width="{2 if deg % 90 == 0 else 1}"/>')
    for letter, deg in (("N", 0), ("E", 90), ("S", 180), ("W", 270)):
        x, y = _bearing_point(cx, cy, radius * 1.16, deg)
        parts.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle" dominant-baseline="central" '
                     f'font-size="{max(12, size // 14)}" fill="#1e1e1e">{letter}</text>')
    wedge = radius * 0.95
    left, right = (_bearing_point(cx, cy, wedge, heading_deg + side * fov_deg / 2) for side in (-1, 1))
    parts.append(f'<path d="M{cx:.1f},{cy:.1f} L{left[0]:.1f},{left[1]:.1f} A{wedge:.1f},{wedge:.1f} 0 '
                 f'{int(fov_deg > 180)} 1 {right[0]:.1f},{right[1]:.1f} Z" fill="{_hex(PREDICTED_COLOUR)}" '
                 f'fill-opacity="0.2" stroke="{_hex(PREDICTED_COLOUR)}" stroke-width="2"/>')
    if true_heading_deg is not None:
        parts.append(_svg_needle(cx, cy, radius * 0.9, true_heading_deg, TRUE_COLOUR))
    parts.append(_svg_needle(cx, cy, radius * 0.9, heading_deg, PREDICTED_COLOUR))
    parts.append(f'<circle cx="{cx}" cy="{cy}" r="4" fill="#1e1e1e"/>')
    heading = f"{display_heading(heading_deg):.1f}°"
    parts.append(f'<text x="{cx}" y="{size + label_height - 4}" text-anchor="middle" font-size="{label_height - 4}" '
                 f'font-weight="bold" fill="{_hex(PREDICTED_COLOUR)}">{heading}</text>')
    title = f"Compass: predicted heading {heading}" + (
        f", true heading {display_heading(true_heading_deg):.1f}°" if true_heading_deg is not None else "")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="geoapp-compass" role="img" font-family="sans-serif" '
            f'viewBox="0 0 {size} {size + label_height}" width="{size}" height="{size + label_height}">'
            f'<title>{html.escape(title)}</title>{"".join(parts)}</svg>')


def compose(panels: list[tuple[str, np.ndarray]], gap: int = 8, title_height: int = 22) -> np.ndarray:
    """Pictures side by side on white, top-aligned, each under its title: one picture instead of several."""
    height = max(image.shape[0] for _, image in panels) + title_height
    width = sum(image.shape[1] for _, image in panels) + gap * (len(panels) - 1)
    canvas = np.full((height, width, 3), 255, np.uint8)
    x = 0
    for _, image in panels:
        canvas[title_height:title_height + image.shape[0], x:x + image.shape[1]] = image
        x += image.shape[1] + gap
    drawn = Image.fromarray(canvas)
    draw = ImageDraw.Draw(drawn)
    font = _font(title_height - 8)
    x = 0
    for title, image in panels:
        draw.text((x + 2, title_height // 2), title, fill=(30, 30, 30), font=font, anchor="lm")
        x += image.shape[1] + gap
    return np.asarray(drawn)


def jpeg_bytes(rgb: np.ndarray, quality: int = 85) -> bytes:
    """An RGB picture as JPEG (OpenCV's libjpeg-turbo: cheap beside a query for the app's pictures)."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape} picture as JPEG")
    return encoded.tobytes()


def jpeg_array(data: bytes) -> np.ndarray:
    """The RGB picture of JPEG bytes (:func:`jpeg_bytes`'s inverse, up to the compression)."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a JPEG picture")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
