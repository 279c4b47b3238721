"""A small explanatory figure of one synthetic location: tile, polar transform, panorama, with the
conventions §2 column convention (S / W / N / E ticks) under both strips, which line up at shift 0."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from geoapp.files import atomic_write_bytes
from geoapp.synth.writer import location_paths

BG = (255, 255, 255)
INK = (30, 30, 30)
FONT = cv2.FONT_HERSHEY_SIMPLEX
MAX_BYTES = 450_000


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read {path}; generate the dataset first (python -m geoapp.synth --out ...)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _text(img, text, x, y, scale=0.5, colour=INK, thickness=1, centre=False):
    if centre:
        (w, _), _ = cv2.getTextSize(text, FONT, scale, thickness)
        x = int(x - w / 2)
    cv2.putText(img, text, (int(x), int(y)), FONT, scale, colour, thickness, cv2.LINE_AA)


def _pick(data_root: Path) -> tuple[int, dict]:
    with open(data_root / "locations.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{data_root}/locations.csv lists no locations")
    for row in rows:
        if row["split"] == "test" and row["area"] == "suburban":
            return int(row["id"]), row
    return int(rows[0]["id"]), rows[0]


def _row(data_root: Path, loc_id: int) -> dict:
    with open(data_root / "locations.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if int(row["id"]) == loc_id:
                return row
    raise ValueError(f"location id {loc_id} is not in {data_root}/locations.csv")


def make_figure(data_root, out, loc_id: int | None = None) -> Path:
    data_root, out = Path(data_root), Path(out)
    if loc_id is None:
        loc_id, row = _pick(data_root)
    else:
        row = _row(data_root, loc_id)
    paths = location_paths(loc_id)
    tile = _read_rgb(data_root / paths["tile"])
    polar = _read_rgb(data_root / paths["polar"])
    pano = _read_rgb(data_root / paths["pano"])

    tile_px, strip_w, strip_h = 330, 720, 180
    margin, tick_h, title_h = 16, 34, 34
    width = margin * 3 + tile_px + strip_w + 60
    height = title_h + 2 * (strip_h + tick_h + 22) + margin
    img = np.full((height, width, 3), BG, dtype=np.uint8)
    _text(img, f"geoapp.synth location {loc_id:07d}: {row['area']}, {row['split']} split, "
               f"lat {float(row['lat']):.5f} lon {float(row['lon']):.5f}", margin, 22, 0.55)

    # satellite tile, north up, with compass letters and the camera at the centre
    tx, ty = margin + 14, title_h + 26
    t = cv2.resize(tile, (tile_px, tile_px), interpolation=cv2.INTER_AREA)
    cv2.circle(t, (tile_px // 2, tile_px // 2), 6, (255, 255, 255), -1, cv2.LINE_AA)
    cv2.circle(t, (tile_px // 2, tile_px // 2), 4, (230, 20, 20), -1, cv2.LINE_AA)
    img[ty:ty + tile_px, tx:tx + tile_px] = t
    _text(img, "satellite tile (north up)", tx + tile_px / 2, ty - 8, 0.45, centre=True)
    _text(img, "N", tx + tile_px / 2, ty + 14, 0.5, (255, 255, 255), 2, centre=True)
    _text(img, "S", tx + tile_px / 2, ty + tile_px - 5, 0.5, (255, 255, 255), 2, centre=True)
    _text(img, "W", tx + 3, ty + tile_px / 2 + 6, 0.5, (255, 255, 255), 2)
    _text(img, "E", tx + tile_px - 16, ty + tile_px / 2 + 6, 0.5, (255, 255, 255), 2)
    _text(img, "red dot = camera", tx, ty + tile_px + 18, 0.4)

    sx = tx + tile_px + margin + 20
    y = title_h + 26
    for label, strip in ((f"polar transform of the tile ({polar.shape[0]}x{polar.shape[1]}, conventions §3)", polar),
                         (f"ground panorama ({pano.shape[0]}x{pano.shape[1]}, north-aligned, conventions §2)", pano)):
        _text(img, label, sx, y - 8, 0.45)
        img[y:y + strip_h, sx:sx + strip_w] = cv2.resize(strip, (strip_w, strip_h), interpolation=cv2.INTER_AREA)
        for k, name in enumerate(("S", "W", "N", "E", "S")):
            cx = sx + k * (strip_w - 1) / 4
            cv2.line(img, (int(cx), y + strip_h), (int(cx), y + strip_h + 6), INK, 1)
            _text(img, f"{name} {k * 90 - 180:+d}", cx, y + strip_h + 21, 0.42, centre=True)
        y += strip_h + tick_h + 22
    _text(img, "column c looks toward azimuth c/W*360-180: polar and panorama line up at shift 0",
          sx, height - margin + 4, 0.42)

    pil = Image.fromarray(img)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    if buf.tell() > MAX_BYTES:  # keep the committed figure small: 256-colour palette
        buf = io.BytesIO()
        pil.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
    atomic_write_bytes(out, buf.getvalue())
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(out, 0o666 & ~mask)  # a document to commit, not a private temporary file
    return out
