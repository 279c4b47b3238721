"""Inputs shared by the app tests: awkward uploads, refused or answered.

A plain module (no fixtures), so test modules can import it for ``parametrize`` while the fixtures in
``app_fixtures`` are loaded as a plugin (``pytest_plugins = ["app_fixtures"]``).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

TOP_K = 4  # candidates the test app shows
EXIF_IFD = 0x8769
GPS_IFD = 0x8825


# ------------------------------------------------------------------------------------------------ uploads


@dataclass(frozen=True)
class Upload:
    """A file to upload and what the app must do with it: refuse it with ``message`` or answer it."""

    name: str
    data: bytes
    message: str | None = None  # a fragment of the clear refusal; None: the app must answer the query
    note: str | None = None  # a fragment of the advice that comes with an answer

    def write(self, folder: Path) -> Path:
        path = Path(folder) / self.name
        path.write_bytes(self.data)
        return path


def _dms(value: float) -> tuple:
    from PIL.TiffImagePlugin import IFDRational

    value = abs(value)
    minutes = (value - int(value)) * 60
    return (IFDRational(int(value), 1), IFDRational(int(minutes), 1),
            IFDRational(round((minutes - int(minutes)) * 60 * 10000), 10000))


def camera_exif(lat: float | None = None, lon: float | None = None, focal_35mm: int | None = None) -> bytes:
    """An EXIF block with a GPS position (to 1 cm) and / or a 35 mm equivalent focal length."""
    exif = Image.Exif()
    if lat is not None:
        exif.get_ifd(GPS_IFD).update({1: "N" if lat >= 0 else "S", 2: _dms(lat), 3: "E" if lon >= 0 else "W",
                                      4: _dms(lon)})
    if focal_35mm is not None:
        exif.get_ifd(EXIF_IFD)[0xA405] = focal_35mm
    return exif.tobytes()


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _scene(width: int = 160, height: int = 120) -> np.ndarray:
    """A smooth colourful picture (compresses well, decodes to something non-trivial)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1).astype(np.uint8)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(side: int = 20000) -> bytes:
    """A real, valid 1-bit PNG of side x side pixels (400 megapixels at 20000) in about 50 kB."""
    row = b"\x00" + bytes((side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def bad_uploads() -> list[Upload]:
    """Inputs the app must refuse, each with a fragment of its explanation."""
    jpeg = _encode(Image.fromarray(_scene()), "JPEG", quality=90)
    return [
        Upload("not_an_image.jpg", b"this is a text file, not a photo\n" * 20, "not a recognised image file"),
        Upload("truncated.jpg", jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        Upload("one_pixel.png", _encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), "only 1 x 1 px"),
        Upload("bomb_20000x20000.png", bomb_png(20000), "megapixels"),
    ]


def odd_uploads() -> list[Upload]:
    """Unusual but valid inputs the app must answer (converted, rotated, or cropped with a note)."""
    scene = _scene()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, shown rotated 90 degrees clockwise
    exif.get_ifd(EXIF_IFD)[0xA405] = 26  # 26 mm full-frame equivalent: the horizontal FoV is in the EXIF
    sixteen = (np.mgrid[0:96, 0:128][1] * 500).astype(np.uint16)
    return [
        Upload("grayscale.png", _encode(Image.fromarray(scene).convert("L"), "PNG")),
        Upload("rgba.png", _encode(Image.fromarray(np.dstack([scene, np.full(scene.shape[:2], 128, np.uint8)])),
                                   "PNG")),
        Upload("palette.png", _encode(Image.fromarray(scene).convert("P", palette=Image.Palette.ADAPTIVE), "PNG")),
        Upload("sixteen_bit.png", _encode(Image.fromarray(sixteen), "PNG")),
        Upload("cmyk.jpg", _encode(Image.fromarray(scene).convert("CMYK"), "JPEG", quality=90)),
        Upload("exif_rotated.jpg", _encode(Image.fromarray(scene), "JPEG", exif=exif.tobytes()), note=None),
        Upload("panorama_360.jpg", _encode(Image.fromarray(_scene(1024, 224)), "JPEG"), note="360° panorama"),
    ]
