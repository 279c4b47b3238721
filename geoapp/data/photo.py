"""User photos: robust decoding, field of view from EXIF, and reprojection onto the panorama grid.

A phone photo is a pinhole (perspective) image; the network was trained on crops of equirectangular
panoramas (column linear in azimuth, row linear in elevation). :func:`photo_to_cylindrical` resamples
a photo onto that grid so it looks like the crops the model saw in training.

Decoding rules of :func:`load_image` (every input ends up as uint8 H x W x 3 RGB):

- EXIF orientation is applied first, so the array is the photo as a viewer shows it.
- Grayscale, 1-bit and palette images are expanded to RGB; CMYK (including Adobe-inverted CMYK JPEG)
  and YCbCr are converted by Pillow.
- Transparency (RGBA, LA, palette or grayscale with a transparent colour) is composited on WHITE,
  which is what a viewer shows and avoids black halos around cut-outs.
- 16-bit images are scaled to 8 bits (``round(v / 257)`` for 16-bit grayscale; Pillow already keeps the
  high byte of 16-bit RGB(A) PNGs). 32-bit floating-point images are refused.
- The pixel count is checked from the header BEFORE any pixel is decoded (decompression-bomb guard).
- HEIC/HEIF (the iPhone default) decode through pillow-heif, registered with Pillow when this module is imported,
  so every decoder of the project (the app, ``python -m geoapp.localize``, ``build_db --tiles``) reads them; AVIF
  through Pillow's own plugin where the installed Pillow has it. :data:`DECODABLE_FORMATS` and :data:`ACCEPTED`
  say what decodes on this install, :data:`IMAGE_SUFFIXES` which file names a folder walk takes.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError, features

from geoapp.angles import PANO_WIDTH, fov_width
from geoapp.data.transforms import resize_image

try:  # HEIC/HEIF: a requirement, but a missing or broken install only loses the format, not the module
    import pillow_heif
except ImportError:  # pragma: no cover - pillow-heif is in requirements.txt
    pillow_heif = None
else:
    pillow_heif.register_heif_opener()

MAX_PIXELS = 50_000_000  # larger uploads are refused before decoding (a 50 MP RGB array is 150 MB)
MIN_SIDE = 16  # smaller images carry no usable content (the network downsamples by 32)

# CVUSA panoramas are 224 x 1232 and cover 360 deg horizontally with square pixels, so they cover
# 224 / 1232 * 360 = 65.45 deg vertically, centred on the horizon: the default vertical extent of the
# grid photos are reprojected onto (models trained on other panoramas pass their own value).
CVUSA_PANO_VFOV_DEG = 224 / 1232 * 360.0

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 35 mm film frame, 43.27 mm



def _heif_decodes() -> bool:
    if pillow_heif is None:
        return False
    try:
        return bool(pillow_heif.libheif_info().get("decoders"))  # libheif built without any decoder reads nothing
    except Exception:  # an unusable libheif: the format is not offered
        return False


def _decodable_formats() -> dict[str, str]:
    """Pillow format id -> the name shown, for the formats that open AND decode with this install's libraries."""
    Image.init()  # every plugin registered, so ``Image.OPEN`` is complete
    wanted = [("JPEG", "JPEG", features.check("jpg")), ("PNG", "PNG", features.check("zlib")),
              ("WEBP", "WebP", features.check("webp")), ("BMP", "BMP", True),
              ("TIFF", "TIFF", True),  # uncompressed, LZW and packbits TIFF need no libtiff
              ("GIF", "GIF", True), ("HEIF", "HEIC/HEIF", _heif_decodes()),
              ("AVIF", "AVIF", features.check("avif") if "avif" in features.modules else False)]
    return {fmt: name for fmt, name, works in wanted if works and fmt in Image.OPEN}


DECODABLE_FORMATS = _decodable_formats()
# file suffixes (lower case, with the dot) of those formats, e.g. .jpg .jpeg .png .heic .heif .avif
IMAGE_SUFFIXES = frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items()
                           if fmt in DECODABLE_FORMATS)
_NAMES = list(DECODABLE_FORMATS.values())
ACCEPTED = (
    f"accepted: a {', '.join(_NAMES[:-1])} or {_NAMES[-1]} image (RGB, grayscale, palette, RGBA, 16-bit or CMYK), "
    f"at least {MIN_SIDE} px on each side and at most {MAX_PIXELS // 1_000_000} megapixels"
)
# a pinhole camera's plausible horizontal field of view in degrees; an EXIF value outside it is wrong
PLAUSIBLE_HFOV_DEG = (10.0, 170.0)

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray

# EXIF tags (IFD0 and the Exif sub-IFD)
_TAG_ORIENTATION = 0x0112
_TAG_FOCAL_LENGTH = 0x920A
_TAG_FOCAL_LENGTH_35MM = 0xA405
_TAG_PIXEL_X_DIMENSION = 0xA002
_TAG_PIXEL_Y_DIMENSION = 0xA003
_TAG_FOCAL_PLANE_X_RESOLUTION = 0xA20E
_TAG_FOCAL_PLANE_Y_RESOLUTION = 0xA20F
_TAG_FOCAL_PLANE_RESOLUTION_UNIT = 0xA210
# FocalPlaneResolutionUnit: 2 = inch (the EXIF default), 3 = cm; 4 = mm and 5 = um are DNG/TIFF-EP
# extensions some cameras write. 1 ("no absolute unit") gives no sensor size.
_RESOLUTION_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
_ORIENTATIONS_ROTATED_90 = {5, 6, 7, 8}  # orientations whose display swaps width and height
# the GPS sub-IFD (EXIF 2.3, section 4.6.6)
_TAG_GPS_LATITUDE_REF = 0x0001  # "N" or "S"
_TAG_GPS_LATITUDE = 0x0002  # degrees, minutes, seconds (rationals)
_TAG_GPS_LONGITUDE_REF = 0x0003  # "E" or "W"
_TAG_GPS_LONGITUDE = 0x0004
_TAG_GPS_STATUS = 0x0009  # "A" measurement active, "V" measurement void

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # "I": 16-bit PNGs in older Pillow
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


class ImageError(ValueError):
    """An input that is not a usable photo; the message says what was wrong and what is accepted."""


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"'{os.fspath(source)}'"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"the uploaded data ({len(source)} bytes)"
    return "the image"


@contextmanager
def _open_image(source: ImageSource, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE,
                what: str | None = None) -> Iterator[Image.Image]:
    """Open ``source`` lazily (header only) and check its size; pixels are not decoded yet. ``what``: how messages
    name the source (default: its path, or "the uploaded data").

    A PIL image passed in is used as is (and not closed); files and bytes are opened and closed here (a file object
    is read, not closed: its owner closes it).
    """
    what = what or _describe(source)
    if isinstance(source, Image.Image):
        _check_size(source.size, what, max_pixels, min_side)
        yield source
        return
    if isinstance(source, np.ndarray):
        image = _array_to_pil(source)
        _check_size(image.size, what, max_pixels, min_side)
        yield image
        return
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(f"{what} is empty; {ACCEPTED}")
        fp = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise ImageError(f"{what} does not exist or is not a file; {ACCEPTED}")
        fp = source
    elif hasattr(source, "read"):
        fp = source
    else:
        raise ImageError(
            f"expected a file path, bytes, a PIL image or a uint8 array, got {type(source).__name__}; {ACCEPTED}"
        )
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below replaces Pillow's warning; its hard error is converted.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(fp)
    except UnidentifiedImageError as exc:
        raise ImageError(f"{what} is not a recognised image file; {ACCEPTED}") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"{what} declares more pixels than allowed (limit {max_pixels / 1e6:g} megapixels): {exc}; "
            "downscale it first"
        ) from exc
    except Exception as exc:  # malformed headers surface as many exception types inside Pillow
        raise ImageError(f"{what} could not be read ({exc}); {ACCEPTED}") from exc
    try:
        _check_size(image.size, what, max_pixels, min_side)
        yield image
    finally:
        image.close()


def _check_size(size: tuple[int, int], what: str, max_pixels: int, min_side: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageError(
            f"{what} is {width} x {height} = {width * height / 1e6:.3g} megapixels, over the limit of "
            f"{max_pixels / 1e6:g} megapixels (decompression-bomb guard); downscale it first"
        )
    if min(width, height) < min_side:
        raise ImageError(f"{what} is only {width} x {height} px; {ACCEPTED}")


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        return Image.fromarray(np.ascontiguousarray(array))
    if array.dtype == np.uint16 and array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array), mode="I;16")
    raise ImageError(
        f"an image array must be uint8 H x W, H x W x 3 (RGB) or H x W x 4 (RGBA), or uint16 H x W; "
        f"got {array.dtype} with shape {array.shape}"
    )


def _decode_to_rgb(image: Image.Image, what: str) -> np.ndarray:
    """Decode the pixels, apply EXIF orientation and convert to uint8 RGB (rules in the module docstring)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except MemoryError:
        raise
    except Exception as exc:  # truncated or corrupt data: OSError, SyntaxError, ValueError, struct.error...
        raise ImageError(f"{what} is truncated or corrupt and cannot be decoded ({exc}); {ACCEPTED}") from exc
    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken EXIF block should not make a readable photo unusable
        warnings.warn(f"ignoring unreadable EXIF orientation of {what}: {exc}", stacklevel=3)
        oriented = image
    mode = oriented.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(oriented).astype(np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "F":
        raise ImageError(f"{what} has floating-point pixels, which have no defined display range; {ACCEPTED}")
    try:
        if mode in _ALPHA_MODES or "transparency" in oriented.info:
            rgba = oriented.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(white, rgba).convert("RGB")
        else:
            rgb = oriented.convert("RGB")
    except ValueError as exc:
        raise ImageError(f"{what} uses the unsupported colour mode {mode!r} ({exc}); {ACCEPTED}") from exc
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


@dataclass(frozen=True, eq=False)
class DecodedPhoto:
    """A photo decoded once: its pixels as a viewer shows them and the EXIF fields a query reads, so nothing
    downstream opens the file again."""

    rgb: np.ndarray  # uint8 H x W x 3 (load_image's rules)
    exif_fov_deg: float | None = None  # the horizontal FoV the EXIF focal length gives (hfov_from_exif), as recorded
    exif_gps: tuple[float, float] | None = None  # (latitude, longitude) of the EXIF GPS block (gps_from_exif)


def decode_photo(source: ImageSource | DecodedPhoto, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE,
                 name: str | None = None) -> DecodedPhoto:
    """Open ``source`` once and read its pixels (:func:`load_image`) and EXIF fields (:func:`hfov_from_exif`,
    :func:`gps_from_exif`) from that one opening; a :class:`DecodedPhoto` is returned as it is, an array has no
    EXIF. ``name``: how an :class:`ImageError` names the photo (default: its path, or "the uploaded data")."""
    if isinstance(source, DecodedPhoto):
        return source
    if isinstance(source, np.ndarray):
        return DecodedPhoto(load_image(source, max_pixels, min_side))
    what = name or _describe(source)
    with _open_image(source, max_pixels, min_side, what) as image:
        rgb = _decode_to_rgb(image, what)  # first: a corrupt file is reported as such, not as missing EXIF
        return DecodedPhoto(rgb, _exif_hfov(image), _exif_gps(image))


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """Decode a photo (file path, bytes, file object, PIL image or uint8 array) to uint8 H x W x 3 RGB.

    Raises :class:`ImageError` (a ``ValueError``) for anything that is not a usable image: missing file,
    not an image, truncated/corrupt data, fewer than ``min_side`` px on a side, more than ``max_pixels``
    pixels (checked from the header before decoding), or an unsupported pixel format.
    """
    what = _describe(source)
    with _open_image(source, max_pixels, min_side) as image:
        return _decode_to_rgb(image, what)


def _positive_float(value) -> float | None:
    """An EXIF number (int, float, IFDRational, or a one-element tuple) as a positive finite float."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _fov_degrees(sensor_side_mm: float, focal_mm: float) -> float:
    return math.degrees(2.0 * math.atan(sensor_side_mm / (2.0 * focal_mm)))


def hfov_from_exif(source: ImageSource) -> float | None:
    """Horizontal field of view in degrees of a photo as displayed (after EXIF rotation), or None.

    Two EXIF routes, the first that is complete wins:

    1. ``FocalLength`` with ``FocalPlaneXResolution``/``FocalPlaneYResolution`` and
       ``FocalPlaneResolutionUnit``: the imaged sensor side is ``pixels / resolution`` (pixels from
       ``PixelXDimension``/``PixelYDimension`` when present, else the stored image size), which is exact
       even for photos cropped on the sensor (16:9 modes).
    2. ``FocalLengthIn35mmFilm``: the 35 mm equivalent refers to the 43.27 mm diagonal of the
       36 x 24 mm frame, so the horizontal side is that diagonal times ``width / hypot(width, height)``
       of the displayed image: 36 mm for a 3:2 landscape photo, 24 mm for a 2:3 portrait one
       (``hfov = 2 atan(36 / (2 f35))`` there), 34.6 mm for 4:3 landscape.

    After an EXIF rotation by 90/270 deg (orientations 5-8) the displayed horizontal side is the stored
    vertical one. Needs the raw EXIF, so pass the file/bytes or the PIL image as opened, not an array.
    """
    if isinstance(source, np.ndarray):
        return None
    with _open_image(source, max_pixels=2**62, min_side=1) as image:
        return _exif_hfov(image)


def _exif_hfov(image: Image.Image) -> float | None:
    """:func:`hfov_from_exif` of an opened image (its stored size, before any EXIF rotation)."""
    stored_width, stored_height = image.size
    try:
        exif = image.getexif()
        exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
    except Exception:  # unreadable EXIF block: the field of view cannot be known
        return None
    if not exif and not exif_ifd:
        return None
    rotated = exif.get(_TAG_ORIENTATION, 1) in _ORIENTATIONS_ROTATED_90

    focal_mm = _positive_float(exif_ifd.get(_TAG_FOCAL_LENGTH))
    x_resolution = _positive_float(exif_ifd.get(_TAG_FOCAL_PLANE_X_RESOLUTION))
    y_resolution = _positive_float(exif_ifd.get(_TAG_FOCAL_PLANE_Y_RESOLUTION)) or x_resolution
    unit_mm = _RESOLUTION_UNIT_MM.get(int(_positive_float(exif_ifd.get(_TAG_FOCAL_PLANE_RESOLUTION_UNIT)) or 2))
    if focal_mm and x_resolution and unit_mm:
        pixel_width = _positive_float(exif_ifd.get(_TAG_PIXEL_X_DIMENSION))
        pixel_height = _positive_float(exif_ifd.get(_TAG_PIXEL_Y_DIMENSION))
        if not (pixel_width and pixel_height):
            pixel_width, pixel_height = stored_width, stored_height
        sensor_width_mm = pixel_width / x_resolution * unit_mm
        sensor_height_mm = pixel_height / y_resolution * unit_mm
        return _fov_degrees(sensor_height_mm if rotated else sensor_width_mm, focal_mm)

    focal_35mm = _positive_float(exif_ifd.get(_TAG_FOCAL_LENGTH_35MM))
    if focal_35mm:
        shown_width, shown_height = (stored_height, stored_width) if rotated else (stored_width, stored_height)
        horizontal_mm = FULL_FRAME_DIAGONAL_MM * shown_width / math.hypot(shown_width, shown_height)
        return _fov_degrees(horizontal_mm, focal_35mm)
    return None


def _exif_text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return value.strip("\x00 ").upper() if isinstance(value, str) else None


def _gps_degrees(value, ref, positive: str, negative: str, limit: float) -> float | None:
    """An EXIF GPS coordinate (degrees, minutes, seconds rationals; 1-3 of them) and its hemisphere reference as
    signed degrees, or None when malformed or outside [-limit, limit]."""
    ref = _exif_text(ref)
    if ref not in (positive, negative):  # no (or an unknown) hemisphere: the sign cannot be known
        return None
    parts = value if isinstance(value, tuple) else (value,)
    if not 1 <= len(parts) <= 3:
        return None
    try:
        numbers = [float(v) for v in parts]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not all(math.isfinite(n) and n >= 0 for n in numbers) or any(n >= 60 for n in numbers[1:]):
        return None
    degrees = sum(n / 60.0**i for i, n in enumerate(numbers))
    if degrees > limit:
        return None
    return -degrees if ref == negative else degrees


def gps_from_exif(source: ImageSource) -> tuple[float, float] | None:
    """The (latitude, longitude) in signed degrees recorded in a photo's EXIF GPS block, or None.

    Reads ``GPSLatitude``/``GPSLongitude`` (degrees, minutes, seconds as rationals) with their ``N``/``S`` and
    ``E``/``W`` references. None when the photo has no GPS block, when a coordinate or its reference is missing or
    malformed (zero denominators, minutes or seconds of 60 or more), when the latitude is outside [-90, 90] or the
    longitude outside [-180, 180], or when ``GPSStatus`` says the measurement is void. Needs the raw EXIF, so
    pass the file/bytes or the PIL image as opened, not an array. Never raises for a bad input: a file that is not
    an image also gives None (reading the pixels with :func:`load_image` says what is wrong with it), so callers
    may ask before decoding.
    """
    if isinstance(source, np.ndarray):
        return None
    try:
        with _open_image(source, max_pixels=2**62, min_side=1) as image:
            return _exif_gps(image)
    except Exception:  # not an image, or an unreadable EXIF block: no position
        return None


def _exif_gps(image: Image.Image) -> tuple[float, float] | None:
    """:func:`gps_from_exif` of an opened image."""
    try:
        gps = image.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    except Exception:  # an unreadable EXIF block: no position
        return None
    if not gps or _exif_text(gps.get(_TAG_GPS_STATUS)) == "V":  # V: measurement void (A: active)
        return None
    lat = _gps_degrees(gps.get(_TAG_GPS_LATITUDE), gps.get(_TAG_GPS_LATITUDE_REF), "N", "S", 90.0)
    lon = _gps_degrees(gps.get(_TAG_GPS_LONGITUDE), gps.get(_TAG_GPS_LONGITUDE_REF), "E", "W", 180.0)
    if lat is None or lon is None:
        return None
    return lat, lon


def _as_rgb_photo(photo: ImageSource) -> np.ndarray:
    if isinstance(photo, np.ndarray):
        if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
            raise ImageError(
                f"photo_to_cylindrical needs a uint8 H x W x 3 RGB array (use load_image for files), got "
                f"{photo.dtype} with shape {photo.shape}"
            )
        _check_size((photo.shape[1], photo.shape[0]), "the photo", MAX_PIXELS, MIN_SIDE)
        return photo
    return load_image(photo)


def photo_to_cylindrical(
    photo: ImageSource,
    hfov_deg: float,
    out_height: int = 128,
    pano_width: int = PANO_WIDTH,
    pano_vfov_deg: float = CVUSA_PANO_VFOV_DEG,
    horizon_row: float | None = None,
    pano_center_elevation_deg: float = 0.0,
) -> np.ndarray:
    """Reproject a pinhole photo onto the equirectangular grid of the training panoramas.

    The output is ``out_height x fov_width(hfov_deg, pano_width) x 3`` uint8, i.e. exactly the size of a
    ``hfov_deg`` crop of a panorama resized to ``out_height x pano_width`` (128 x 512 by default; pass the
    reduced sizes of a reduced-resolution model). Geometry:

    - Columns: column k looks toward azimuth ``-hfov/2 + k * 360 / pano_width`` relative to the photo's
      optical axis, the same angular step and left-edge convention as the panorama crops of conventions §4, so
      the photo's heading (its centre) falls where a training crop's heading does.
    - Rows: linear in elevation over ``pano_vfov_deg`` centred on ``pano_center_elevation_deg`` (the
      horizon for CVUSA), pixel centres at ``top - (i + 0.5) * vfov / out_height``, as ``cv2.resize``
      places them when a panorama is resized: the horizon lies between rows H/2 - 1 and H/2.
    - The photo is a pinhole image with square pixels, principal point at its centre and horizontal
      focal length ``(width / 2) / tan(hfov / 2)``. ``horizon_row`` is the photo row (pixel-centre
      coordinates) where the horizon appears; None means a level camera (horizon at the centre row).
      Otherwise the camera pitch ``atan((horizon_row - cy) / f)`` is undone exactly (no roll).
    - Directions outside the photo are filled with 0, as the crops' out-of-image areas are.

    Large photos are first area-downscaled to about twice the output's angular resolution so the
    bilinear ``cv2.remap`` does not alias.
    """
    rgb = _as_rgb_photo(photo)
    if not (isinstance(hfov_deg, (int, float, np.number)) and 0 < float(hfov_deg) < 180):
        raise ValueError(f"a pinhole photo's horizontal field of view must be in (0, 180) degrees, got {hfov_deg}")
    if not 0 < pano_vfov_deg < 180:
        raise ValueError(f"pano_vfov_deg must be in (0, 180) degrees, got {pano_vfov_deg}")
    if out_height <= 0 or pano_width <= 0:
        raise ValueError(f"out_height and pano_width must be positive, got {out_height} and {pano_width}")
    hfov_deg = float(hfov_deg)
    out_width = fov_width(hfov_deg, pano_width)
    if out_width < 1:
        raise ValueError(f"a {hfov_deg} deg photo is narrower than one column of a {pano_width}-wide panorama")

    height, width = rgb.shape[:2]
    focal = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    center_x, center_y = (width - 1) / 2.0, (height - 1) / 2.0
    if horizon_row is None:
        pitch = 0.0
    else:
        if not math.isfinite(float(horizon_row)):
            raise ValueError(f"horizon_row must be a finite row coordinate, got {horizon_row}")
        pitch = math.atan((float(horizon_row) - center_y) / focal)  # > 0: camera tilted up, horizon low

    # Anti-aliasing: the output samples the photo every 360 / pano_width degrees; keep ~2 photo pixels per
    # output column and scale the intrinsics with the image (pixel-centre convention as in cv2.resize).
    target_width = int(math.ceil(2.0 * hfov_deg * pano_width / 360.0))
    if width > target_width:
        scale = target_width / width
        new_height = max(1, int(round(height * scale)))
        scale_x, scale_y = target_width / width, new_height / height
        rgb = resize_image(rgb, (new_height, target_width))
        focal_x, focal_y = focal * scale_x, focal * scale_y
        center_x, center_y = (center_x + 0.5) * scale_x - 0.5, (center_y + 0.5) * scale_y - 0.5
    else:
        focal_x = focal_y = focal

    azimuth = np.radians(-hfov_deg / 2.0 + np.arange(out_width) * 360.0 / pano_width)[None, :]
    top = pano_center_elevation_deg + pano_vfov_deg / 2.0
    elevation = np.radians(top - (np.arange(out_height) + 0.5) * pano_vfov_deg / out_height)[:, None]
    # Viewing direction in a level camera frame (x right, y down, z forward) ...
    x = np.cos(elevation) * np.sin(azimuth)
    y = np.broadcast_to(-np.sin(elevation), x.shape)
    z = np.cos(elevation) * np.cos(azimuth)
    # ... rotated into the pitched camera: the level forward direction (0, 0, 1) maps to (0, sin p, cos p).
    y_cam = math.cos(pitch) * y + math.sin(pitch) * z
    z_cam = -math.sin(pitch) * y + math.cos(pitch) * z
    in_front = z_cam > 1e-9
    safe_z = np.where(in_front, z_cam, 1.0)
    map_x = np.where(in_front, center_x + focal_x * x / safe_z, -2.0).astype(np.float32)
    map_y = np.where(in_front, center_y + focal_y * y_cam / safe_z, -2.0).astype(np.float32)
    return cv2.remap(rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def panorama_to_pinhole(
    pano: np.ndarray,
    hfov_deg: float,
    heading_column: float,
    width: int,
    pano_vfov_deg: float = CVUSA_PANO_VFOV_DEG,
) -> np.ndarray:
    """A level pinhole photo looking out of an equirectangular panorama: the inverse of :func:`photo_to_cylindrical`,
    used to make phone-like photos of a world known only by its panoramas.

    ``pano`` is H x W x 3 (360 deg wide, rows linear in elevation over ``pano_vfov_deg`` centred on the horizon, as
    :func:`photo_to_cylindrical` assumes); the photo looks toward panorama column ``heading_column`` (its optical
    axis, pixel-centre coordinates; it wraps) and is ``width`` px wide with a ``hfov_deg`` horizontal field of view.
    Its height is the largest that stays inside the panorama's vertical extent, at most 3/4 of the width (a phone's
    landscape 4:3), so no part of it is empty.
    """
    if pano.ndim != 3 or pano.shape[2] != 3 or pano.dtype != np.uint8:
        raise ValueError(f"need a uint8 H x W x 3 panorama, got {pano.dtype} with shape {pano.shape}")
    if not 0 < hfov_deg < 180 or width < 2:
        raise ValueError(f"need 0 < hfov_deg < 180 and width >= 2, got {hfov_deg} and {width}")
    half_h = math.tan(math.radians(pano_vfov_deg) / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    height = max(2, int(min(0.75, half_h) * width))
    pano_h, pano_w = pano.shape[:2]
    focal = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    x = (np.arange(width) - (width - 1) / 2.0)[None, :] / focal
    y = (np.arange(height) - (height - 1) / 2.0)[:, None] / focal
    azimuth = np.arctan2(x, 1.0)
    elevation = np.degrees(np.arctan2(-y, np.sqrt(x * x + 1.0)))
    column = np.broadcast_to((heading_column + azimuth / (2.0 * math.pi) * pano_w) % pano_w, (height, width))
    row = (pano_vfov_deg / 2.0 - elevation) / pano_vfov_deg * pano_h - 0.5
    wrapped = np.concatenate([pano, pano[:, :1]], axis=1)  # bilinear reads between the last and the first column
    return cv2.remap(wrapped, column.astype(np.float32), row.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
