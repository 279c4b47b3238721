"""Photo decoding, field of view from EXIF, and pinhole -> panorama-grid reprojection."""

from __future__ import annotations

import io
import math
import struct
import zlib

import cv2
import numpy as np
import pytest
from file_opens import opened_files, times_opened
from PIL import Image, features
from PIL.TiffImagePlugin import IFDRational

from geoapp.angles import fov_width, heading_from_shift
from geoapp.data.fov import crop_fov
from geoapp.data.photo import (
    ACCEPTED,
    CVUSA_PANO_VFOV_DEG,
    IMAGE_SUFFIXES,
    DecodedPhoto,
    ImageError,
    decode_photo,
    gps_from_exif,
    hfov_from_exif,
    load_image,
    panorama_to_pinhole,
    photo_to_cylindrical,
)

EXIF_IFD = 0x8769
GPS_IFD = 0x8825
ORIENTATION = 0x0112


def encode(image: Image.Image, fmt: str = "PNG", exif: Image.Exif | None = None, **params) -> bytes:
    buffer = io.BytesIO()
    if exif is not None:
        params["exif"] = exif.tobytes()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def make_exif(orientation: int | None = None, **exif_ifd_tags) -> Image.Exif:
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    sub = exif.get_ifd(EXIF_IFD)
    for tag, value in exif_ifd_tags.items():
        sub[int(tag[2:], 16)] = value
    return exif


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but that carries no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def smooth_rgb(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    base = np.stack([rows * 255 // height, cols * 255 // width, (rows + cols + 30 * seed) % 256], axis=2)
    return base.astype(np.uint8)


# ------------------------------------------------------------------------------------- load_image


def test_load_rgb_from_path_bytes_pil_and_array(tmp_path):
    array = smooth_rgb()
    data = encode(Image.fromarray(array))
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    for source in (path, str(path), data, bytearray(data), Image.open(io.BytesIO(data)), array, io.BytesIO(data)):
        out = load_image(source)
        assert out.dtype == np.uint8 and out.shape == (48, 64, 3)
        np.testing.assert_array_equal(out, array)


def test_grayscale_and_one_bit_become_rgb():
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    out = load_image(encode(Image.fromarray(gray)))
    assert out.shape == (48, 64, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[:, :, channel], gray)
    bilevel = Image.fromarray(gray > 128).convert("1")
    assert set(np.unique(load_image(encode(bilevel)))) <= {0, 255}


def test_rgba_is_composited_on_white():
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 200  # red
    rgba[:, :16, 3] = 0  # left half transparent
    rgba[:, 16:, 3] = 255  # right half opaque
    rgba[:4, 16:, 3] = 128  # a half-transparent strip
    out = load_image(encode(Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(out[10, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[10, 20], [200, 0, 0])
    np.testing.assert_allclose(out[0, 20], [228, 127, 127], atol=1)  # 0.5 * colour + 0.5 * white


def test_gray_alpha_and_palette_transparency():
    la = Image.fromarray(np.dstack([np.full((32, 32), 50, np.uint8), np.zeros((32, 32), np.uint8)]), "LA")
    np.testing.assert_array_equal(load_image(encode(la))[0, 0], [255, 255, 255])
    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.paste(0, (0, 0, 16, 32))
    data = encode(palette, transparency=0)
    out = load_image(data)
    np.testing.assert_array_equal(out[5, 2], [255, 255, 255])  # transparent index -> white
    np.testing.assert_array_equal(out[5, 20], [10, 20, 30])


def test_sixteen_bit_png_is_scaled_to_eight_bits():
    values = np.zeros((32, 32), np.uint16)
    values[:, :8] = 65535
    values[:, 8:16] = 257 * 100
    values[:, 16:24] = 1000  # 1000 / 257 = 3.9 -> 4
    out = load_image(encode(Image.fromarray(values)))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, [0, 8, 16, 24]], [[255] * 3, [100] * 3, [4] * 3, [0] * 3])


def test_cmyk_jpeg_is_converted():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    out = load_image(encode(cmyk, "JPEG", quality=95))
    np.testing.assert_allclose(out[16, 16], [255, 0, 0], atol=6)


def test_exif_orientation_is_applied():
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:5, :5] = [255, 0, 0]  # marker at the stored top-left
    data = encode(Image.fromarray(stored), "PNG", exif=make_exif(orientation=6))  # display: rotate 90 cw
    out = load_image(data)
    assert out.shape == (60, 40, 3)
    np.testing.assert_array_equal(out[0, -1], [255, 0, 0])  # top-left goes to top-right
    np.testing.assert_array_equal(out[-1, 0], [0, 0, 0])


def check_error(source, *fragments, **kwargs):
    with pytest.raises(ImageError) as info:
        load_image(source, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_not_an_image(tmp_path):
    check_error(b"hello, this is text", "not a recognised image", ACCEPTED)
    text = tmp_path / "notes.jpg"
    text.write_text("not a jpeg")
    check_error(text, "notes.jpg", "not a recognised image")
    check_error(b"", "empty")
    check_error(tmp_path / "missing.jpg", "missing.jpg", "does not exist")
    check_error(12345, "expected a file path", "int")
    check_error(np.zeros((32, 32), np.float64), "uint8")


def test_truncated_and_corrupt_files():
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (128, 128, 3)).astype(np.uint8)
    jpeg = encode(Image.fromarray(noisy), "JPEG", quality=90)
    check_error(jpeg[: len(jpeg) // 2], "truncated or corrupt", ACCEPTED)
    png = encode(Image.fromarray(noisy))
    corrupt = png[:60] + bytes(rng.integers(0, 256, len(png) - 60).astype(np.uint8))
    with pytest.raises(ImageError, match="corrupt|could not be read"):
        load_image(corrupt)


def test_too_small():
    check_error(encode(Image.new("RGB", (8, 40))), "8 x 40 px", "at least 16 px")
    check_error(np.zeros((1, 1, 3), np.uint8), "1 x 1 px")
    assert load_image(encode(Image.new("RGB", (16, 16)))).shape == (16, 16, 3)


def test_decompression_bomb_refused_before_decoding():
    message = check_error(png_header_only(8000, 8000), "8000 x 8000 = 64 megapixels", "limit of 50 megapixels")
    assert "downscale" in message
    check_error(png_header_only(20000, 20000), "50 megapixels")  # beyond Pillow's own hard limit too
    check_error(encode(Image.new("RGB", (100, 100))), "0.01 megapixels", max_pixels=5000)


def test_float_images_refused():
    float_image = Image.fromarray(np.zeros((32, 32), np.float32), "F")
    check_error(encode(float_image, "TIFF"), "floating-point", ACCEPTED)


# ---------------------------------------------------------------------------------- hfov_from_exif


def test_hfov_from_35mm_equivalent_landscape_and_portrait():
    landscape = encode(Image.new("RGB", (60, 40)), "JPEG", exif=make_exif(orientation=1, x_A405=26))
    assert hfov_from_exif(landscape) == pytest.approx(math.degrees(2 * math.atan(36 / 52)))  # 69.39
    rotated = encode(Image.new("RGB", (60, 40)), "JPEG", exif=make_exif(orientation=6, x_A405=26))
    assert hfov_from_exif(rotated) == pytest.approx(math.degrees(2 * math.atan(24 / 52)))  # 49.58
    portrait = encode(Image.new("RGB", (40, 60)), "JPEG", exif=make_exif(x_A405=26))
    assert hfov_from_exif(portrait) == pytest.approx(math.degrees(2 * math.atan(24 / 52)))


def test_hfov_from_35mm_equivalent_uses_the_frame_diagonal_for_other_aspects():
    four_three = encode(Image.new("RGB", (64, 48)), "JPEG", exif=make_exif(x_A405=26))
    horizontal_mm = math.hypot(36, 24) * 0.8  # 34.6 mm of the 43.27 mm diagonal for 4:3
    assert hfov_from_exif(four_three) == pytest.approx(math.degrees(2 * math.atan(horizontal_mm / 52)))


def test_hfov_from_focal_plane_resolution(tmp_path):
    # A 5.6 x 4.2 mm sensor imaged at 4000 x 3000 px, focal length 4.25 mm; the file is a downscaled copy.
    exif = make_exif(
        x_920A=4.25, x_A20E=4000 / (5.6 / 25.4), x_A20F=3000 / (4.2 / 25.4), x_A210=2, x_A002=4000, x_A003=3000,
        x_A405=99,  # the physical route wins over the 35 mm equivalent
    )
    path = tmp_path / "camera.jpg"
    path.write_bytes(encode(Image.new("RGB", (64, 48)), "JPEG", exif=exif))
    assert hfov_from_exif(path) == pytest.approx(math.degrees(2 * math.atan(5.6 / 8.5)), abs=1e-6)
    exif[ORIENTATION] = 8
    assert hfov_from_exif(encode(Image.new("RGB", (64, 48)), "JPEG", exif=exif)) == pytest.approx(
        math.degrees(2 * math.atan(4.2 / 8.5)), abs=1e-6)
    # centimetres, no pixel dimensions: the stored size is used
    cm = make_exif(x_920A=4.25, x_A20E=64 / 0.56, x_A210=3)
    assert hfov_from_exif(encode(Image.new("RGB", (64, 48)), "JPEG", exif=cm)) == pytest.approx(
        math.degrees(2 * math.atan(5.6 / 8.5)), abs=1e-6)


def test_hfov_unknown_returns_none():
    assert hfov_from_exif(encode(Image.new("RGB", (64, 48)), "JPEG")) is None
    assert hfov_from_exif(encode(Image.new("RGB", (64, 48)), "JPEG", exif=make_exif(x_920A=4.25))) is None
    assert hfov_from_exif(encode(Image.new("RGB", (64, 48)), "JPEG", exif=make_exif(x_A405=0))) is None
    no_unit = make_exif(x_920A=4.25, x_A20E=100.0, x_A210=1)  # "no absolute unit"
    assert hfov_from_exif(encode(Image.new("RGB", (64, 48)), "JPEG", exif=no_unit)) is None
    assert hfov_from_exif(np.zeros((48, 64, 3), np.uint8)) is None
    with pytest.raises(ImageError):
        hfov_from_exif(b"not an image")


def test_hfov_from_pil_image():
    data = encode(Image.new("RGB", (60, 40)), "JPEG", exif=make_exif(x_A405=26))
    assert hfov_from_exif(Image.open(io.BytesIO(data))) == pytest.approx(69.3903, abs=1e-3)


# ------------------------------------------------------------------------------------- HEIC / AVIF


def heif_available() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    return bool(pillow_heif.libheif_info().get("decoders"))


def test_accepted_formats_are_the_ones_that_decode_here():
    assert ("HEIC/HEIF" in ACCEPTED) == heif_available()
    assert ("AVIF" in ACCEPTED) == bool("avif" in features.modules and features.check("avif"))
    assert {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"} <= IMAGE_SUFFIXES
    assert (".heic" in IMAGE_SUFFIXES and ".heif" in IMAGE_SUFFIXES) == heif_available()
    assert ".txt" not in IMAGE_SUFFIXES and all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)


@pytest.mark.skipif(not heif_available(), reason="pillow-heif (requirements.txt) is not installed")
def test_heic_decodes_through_load_image_with_its_exif(tmp_path):
    rgb = smooth_rgb(96, 128)  # red follows the rows, green the columns: a swapped channel would show
    path = tmp_path / "IMG_0001.HEIC"
    Image.fromarray(rgb).save(path, format="HEIF", quality=95, exif=make_exif(x_A405=26).tobytes())
    assert path.read_bytes()[4:12] == b"ftypheic"  # a real HEIC (HEVC in an ISO-BMFF box), not a renamed file
    for source in (path, path.read_bytes()):
        out = load_image(source)
        assert out.dtype == np.uint8 and out.shape == (96, 128, 3)
        error = np.abs(out.astype(int) - rgb)
        assert error.mean() < 2.5 and error.max() <= 16  # lossy HEVC at quality 95, 4:2:0 chroma
    assert hfov_from_exif(path) == pytest.approx(math.degrees(2 * math.atan(math.hypot(36, 24) * 0.8 / 52)))
    data = path.read_bytes()
    check_error(data[:40], "not a recognised image file", ACCEPTED)
    check_error(data[:-16], ACCEPTED)  # libheif reads the cut EXIF item when opening: refused at open
    plain = encode(Image.fromarray(rgb), "HEIF", quality=95)
    check_error(plain[: len(plain) // 2], "truncated or corrupt", ACCEPTED)  # whole header, cut HEVC data


@pytest.mark.skipif(not heif_available(), reason="pillow-heif (requirements.txt) is not installed")
def test_build_db_reads_heic_tiles(tmp_path):
    from geoapp.retrieval.build import TileFolderSource

    tile = smooth_rgb(96, 96)
    Image.fromarray(tile).save(tmp_path / "tile.heic", format="HEIF", quality=95)
    (tmp_path / "tiles.csv").write_text("file,lat,lon\ntile.heic,48.8584,2.2945\n")
    source = TileFolderSource(tmp_path, tmp_path / "tiles.csv", (64, 256))
    polar, thumbnail = source.load(0)
    assert tuple(polar.shape) == (3, 64, 256) and source.latlon.tolist() == [[48.8584, 2.2945]]
    expected = cv2.resize(tile, thumbnail.shape[:2][::-1], interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(thumbnail.astype(int) - expected).mean() < 3  # the decoded tile, not a blank one


@pytest.mark.skipif(not ("avif" in features.modules and features.check("avif")), reason="no AVIF in this Pillow")
def test_avif_decodes_through_load_image():
    rgb = smooth_rgb(64, 80)
    out = load_image(encode(Image.fromarray(rgb), "AVIF", quality=95))
    assert out.shape == (64, 80, 3) and np.abs(out.astype(int) - rgb).mean() < 2.5


# ---------------------------------------------------------------------------------- gps_from_exif


def dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    """Degrees as EXIF degrees, minutes and seconds (seconds to 1/10000)."""
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = ((value - degrees) * 60 - minutes) * 60
    return IFDRational(degrees, 1), IFDRational(minutes, 1), IFDRational(round(seconds * 10000), 10000)


def gps_exif(lat: float | None, lon: float | None, lat_ref=None, lon_ref=None, extra=None) -> Image.Exif:
    exif = Image.Exif()
    gps = exif.get_ifd(GPS_IFD)
    if lat is not None:
        gps[1] = lat_ref if lat_ref is not None else ("N" if lat >= 0 else "S")
        gps[2] = dms(lat)
    if lon is not None:
        gps[3] = lon_ref if lon_ref is not None else ("E" if lon >= 0 else "W")
        gps[4] = dms(lon)
    gps.update(extra or {})
    return exif


def jpeg_with(exif: Image.Exif) -> bytes:
    return encode(Image.new("RGB", (64, 48), (90, 120, 150)), "JPEG", exif=exif)


@pytest.mark.parametrize("lat, lon", [(40.446195, -79.982233), (-33.856784, 151.215297), (0.0, 0.0),
                                      (89.9999, 179.9999), (-90.0, -180.0)])
def test_gps_round_trips_through_a_jpeg(tmp_path, lat, lon):
    path = tmp_path / "gps.jpg"
    path.write_bytes(jpeg_with(gps_exif(lat, lon)))
    got = gps_from_exif(path)
    assert got is not None
    assert got[0] == pytest.approx(lat, abs=1e-7) and got[1] == pytest.approx(lon, abs=1e-7)  # about 1 cm
    assert gps_from_exif(Image.open(path)) == got and gps_from_exif(path.read_bytes()) == got


def test_decode_photo_reads_pixels_fov_and_gps_from_one_opening(tmp_path):
    exif = gps_exif(-33.856784, 151.215297)
    exif[ORIENTATION] = 6  # stored sideways: the pixels are turned and the FoV is the stored height's
    exif.get_ifd(EXIF_IFD)[0xA405] = 26
    path = tmp_path / "rotated.jpg"
    y, x = np.mgrid[0:48, 0:64]
    path.write_bytes(encode(Image.fromarray(np.stack([x * 4, y * 5, x + y], -1).astype(np.uint8)), "JPEG",
                            exif=exif, quality=95))
    with opened_files() as opened:
        photo = decode_photo(path)
    assert times_opened(opened, path) == 1
    with opened_files() as opened:
        separately = load_image(path), hfov_from_exif(path), gps_from_exif(path)
    assert times_opened(opened, path) == 3  # (the recorder sees Pillow's openings)
    assert photo.rgb.shape == (64, 48, 3) and np.array_equal(photo.rgb, separately[0])
    assert photo.exif_fov_deg == separately[1] == pytest.approx(math.degrees(2 * math.atan(
        math.hypot(36, 24) * 48 / 80 / 52)))  # the displayed width: 48 of a 48 x 64 portrait
    assert photo.exif_gps == separately[2] == pytest.approx((-33.856784, 151.215297), abs=1e-7)
    with open(path, "rb") as file:  # a file object is read, not closed: its owner closes it
        assert decode_photo(file).exif_gps == photo.exif_gps and not file.closed
    assert decode_photo(photo) is photo
    array = decode_photo(photo.rgb)  # an array carries no EXIF
    assert np.array_equal(array.rgb, photo.rgb) and array.exif_fov_deg is None and array.exif_gps is None
    assert isinstance(array, DecodedPhoto)
    with pytest.raises(ImageError, match="^'IMG_1.jpg' is not a recognised image file"):
        decode_photo(b"not an image", name="'IMG_1.jpg'")


def test_gps_known_value_and_other_containers():
    # 40 deg 26' 46.302" S, 79 deg 58' 56.04" W, written as rationals the way cameras do
    exif = Image.Exif()
    exif.get_ifd(GPS_IFD).update({1: "S", 2: (IFDRational(40), IFDRational(26), IFDRational(46302, 1000)),
                                  3: "W", 4: (IFDRational(79), IFDRational(58), IFDRational(5604, 100)), 9: "A"})
    expected = (-(40 + 26 / 60 + 46.302 / 3600), -(79 + 58 / 60 + 56.04 / 3600))
    for fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        got = gps_from_exif(encode(Image.new("RGB", (32, 32)), fmt, exif=exif))
        assert got == pytest.approx(expected, abs=1e-9), fmt
    assert expected == pytest.approx((-40.446195, -79.982233), abs=1e-6)
    if heif_available():
        assert gps_from_exif(encode(Image.new("RGB", (32, 32)), "HEIF", exif=exif)) == pytest.approx(expected)


def test_gps_absent_or_malformed_is_none():
    assert gps_from_exif(jpeg_with(Image.Exif())) is None  # no EXIF at all
    assert gps_from_exif(encode(Image.new("RGB", (32, 32)), "PNG")) is None
    assert gps_from_exif(jpeg_with(make_exif(x_A405=26))) is None  # EXIF without a GPS block
    assert gps_from_exif(np.zeros((32, 32, 3), np.uint8)) is None  # arrays carry no EXIF
    assert gps_from_exif(jpeg_with(gps_exif(40.0, None))) is None  # no longitude
    assert gps_from_exif(jpeg_with(gps_exif(40.0, 10.0, lat_ref="X"))) is None  # unknown hemisphere
    missing_ref = gps_exif(40.0, 10.0)
    del missing_ref.get_ifd(GPS_IFD)[1]
    assert gps_from_exif(jpeg_with(missing_ref)) is None  # N or S unknown: no sign
    assert gps_from_exif(jpeg_with(gps_exif(40.0, 10.0, extra={9: "V"}))) is None  # GPSStatus: measurement void
    too_far = gps_exif(40.0, 10.0)
    too_far.get_ifd(GPS_IFD)[2] = (IFDRational(95), IFDRational(0), IFDRational(0))  # latitude 95 deg
    assert gps_from_exif(jpeg_with(too_far)) is None
    lon_too_far = gps_exif(40.0, 10.0)
    lon_too_far.get_ifd(GPS_IFD)[4] = (IFDRational(180), IFDRational(30), IFDRational(0))
    assert gps_from_exif(jpeg_with(lon_too_far)) is None
    sixty_minutes = gps_exif(40.0, 10.0)
    sixty_minutes.get_ifd(GPS_IFD)[2] = (IFDRational(40), IFDRational(60), IFDRational(0))
    assert gps_from_exif(jpeg_with(sixty_minutes)) is None
    zero_denominator = gps_exif(40.0, 10.0)
    zero_denominator.get_ifd(GPS_IFD)[2] = (IFDRational(40), IFDRational(1, 0), IFDRational(0))
    assert gps_from_exif(jpeg_with(zero_denominator)) is None
    # not an image: None, not an error (load_image explains what is wrong; the app asks for the GPS first)
    assert gps_from_exif(b"not an image") is None and gps_from_exif(b"") is None


def test_gps_reference_in_lower_case():
    exif = gps_exif(12.5, 45.25, lat_ref="s", lon_ref="w")
    assert gps_from_exif(jpeg_with(exif)) == pytest.approx((-12.5, -45.25))


# ---------------------------------------------------------------------------------- reprojection


def pinhole_photo(width: int, height: int, hfov_deg: float, intensity) -> np.ndarray:
    """Render a level pinhole photo whose pixel (u, v) gets intensity(azimuth_deg, elevation_deg)."""
    focal = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    u = np.arange(width)[None, :] - (width - 1) / 2
    v = np.arange(height)[:, None] - (height - 1) / 2
    azimuth = np.degrees(np.arctan2(u, focal))
    elevation = np.degrees(np.arctan2(-v, np.hypot(u, focal)))
    value = np.clip(intensity(azimuth, elevation), 0, 255).astype(np.uint8)
    return np.repeat(value[:, :, None], 3, axis=2)


def centroid(profile: np.ndarray) -> float:
    profile = profile.astype(np.float64)
    return float((np.arange(profile.size) * profile).sum() / profile.sum())


def gaussian(x, sigma):
    return 255 * np.exp(-0.5 * (x / sigma) ** 2)


def test_vertical_line_lands_at_the_column_linear_in_azimuth():
    hfov = 70.0
    photo = pinhole_photo(800, 600, hfov, lambda az, el: gaussian(az - 20.0, 1.5) + 0 * el)
    out = photo_to_cylindrical(photo, hfov)
    assert out.shape == (128, 99, 3) and out.dtype == np.uint8
    expected_column = (20.0 + hfov / 2) * 512 / 360  # column k looks toward -hfov/2 + k * 360/512: 78.22
    rows_inside = range(20, 108)  # the photo covers +-27.7 deg of the 65.5 deg output
    columns = [centroid(out[row, :, 0]) for row in rows_inside]
    assert np.abs(np.array(columns) - expected_column).max() < 0.1  # and the line stays vertical


def test_horizon_lands_at_the_centre_row():
    photo = pinhole_photo(800, 600, 70.0, lambda az, el: gaussian(el, 1.0) + 0 * az)
    out = photo_to_cylindrical(photo, 70.0)
    rows = [centroid(out[:, col, 0]) for col in range(5, 95)]
    assert np.abs(np.array(rows) - 63.5).max() < 0.05  # between rows 63 and 64 of 128


def test_tilted_camera_horizon_row_is_undone():
    height, width, hfov = 600, 800, 70.0
    focal = (width / 2) / math.tan(math.radians(hfov) / 2)
    horizon_row = 400.0  # camera pitched up: the horizon appears below the centre
    v = np.arange(height)[:, None] - horizon_row
    photo = np.repeat(np.clip(gaussian(np.degrees(np.arctan2(-v, focal)), 1.0), 0, 255).astype(np.uint8)[:, :, None],
                      3, axis=2)
    photo = np.ascontiguousarray(np.broadcast_to(photo, (height, width, 3)))
    level = photo_to_cylindrical(photo, hfov)
    undone = photo_to_cylindrical(photo, hfov, horizon_row=horizon_row)
    assert abs(centroid(undone[:, 49, 0]) - 63.5) < 0.15
    assert centroid(level[:, 49, 0]) > 70  # without the correction the horizon sits well below the centre


def test_photo_of_a_panorama_reprojects_onto_its_training_crop():
    """A pinhole photo rendered from a panorama at heading h lines up with crop_fov(pano, fov, shift(h))."""
    hfov, shift = 70.0, 300
    heading = heading_from_shift(shift, hfov)
    coarse = np.random.default_rng(3).integers(0, 256, (8, 32, 3)).astype(np.uint8)
    pano = cv2.resize(coarse, (512, 128), interpolation=cv2.INTER_CUBIC)  # smooth, 128 x 512, CVUSA extent
    width, height = 400, 300
    focal = (width / 2) / math.tan(math.radians(hfov) / 2)
    u = np.arange(width)[None, :] - (width - 1) / 2
    v = np.arange(height)[:, None] - (height - 1) / 2
    azimuth = heading + np.degrees(np.arctan2(u, focal))
    elevation = np.degrees(np.arctan2(-v, np.hypot(u, focal)))
    pano_col = ((azimuth + 180) / 360 * 512) % 512  # conventions §2
    pano_row = (CVUSA_PANO_VFOV_DEG / 2 - elevation) / CVUSA_PANO_VFOV_DEG * 128 - 0.5
    map_x, map_y = (np.broadcast_to(m, (height, width)).astype(np.float32) for m in (pano_col, pano_row))
    photo = cv2.remap(pano, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    out = photo_to_cylindrical(photo, hfov).astype(np.float64)
    crop = crop_fov(pano, hfov, shift).astype(np.float64)
    inside = slice(20, 108)  # rows the photo's 55 deg vertical field of view covers
    assert np.abs(out[inside, 1:-1] - crop[inside, 1:-1]).mean() < 1.0  # only interpolation blur
    for off_by_one in (shift - 1, shift + 1):  # one column off is already clearly worse
        misaligned = crop_fov(pano, hfov, off_by_one).astype(np.float64)
        assert np.abs(out[inside, 1:-1] - misaligned[inside, 1:-1]).mean() > 3.0


def test_outside_the_photo_is_black_and_sizes_follow_the_panorama():
    photo = np.full((600, 800, 3), 255, np.uint8)  # vertical FoV 55.4 deg < 65.5 deg of the output
    out = photo_to_cylindrical(photo, 70.0)
    assert out[0].max() == 0 and out[-1].max() == 0
    assert out[64, 1:-1].min() == 255
    assert photo_to_cylindrical(photo, 90.0).shape == (128, 128, 3)
    assert photo_to_cylindrical(photo, 70.0, out_height=64, pano_width=256).shape == (64, 49, 3)
    tall = photo_to_cylindrical(photo, 70.0, pano_vfov_deg=40.0)
    assert tall[0, 1:-1].min() == 255  # a 40 deg output lies inside the photo's 55 deg


def test_default_vertical_extent_matches_cvusa():
    assert CVUSA_PANO_VFOV_DEG == pytest.approx(65.4545, abs=1e-4)


def test_reprojection_accepts_files(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(smooth_rgb(120, 160)).save(path)
    assert photo_to_cylindrical(path, 60.0).shape == (128, 85, 3)


def test_reprojection_errors():
    with pytest.raises(ImageError, match="1 x 1 px"):
        photo_to_cylindrical(np.zeros((1, 1, 3), np.uint8), 70.0)
    with pytest.raises(ImageError, match="not a recognised image"):
        photo_to_cylindrical(b"definitely not an image", 70.0)
    with pytest.raises(ImageError, match="uint8 H x W x 3"):
        photo_to_cylindrical(np.zeros((64, 64), np.float32), 70.0)
    for bad_fov in (0, 180, -5, float("nan")):
        with pytest.raises(ValueError, match="field of view"):
            photo_to_cylindrical(np.zeros((64, 64, 3), np.uint8), bad_fov)


def test_a_pinhole_view_of_a_panorama_reprojects_onto_its_crop():
    rng = np.random.default_rng(3)
    pano = cv2.GaussianBlur(rng.integers(0, 256, (128, 512, 3), dtype=np.uint8), (0, 0), 3)
    photo = panorama_to_pinhole(pano, 90.0, heading_column=200.0, width=640)
    # a 90 deg view keeps the panorama's 65.45 deg vertical extent: tan(32.7) / tan(45) of the width, under 3/4
    assert photo.shape == (int(np.tan(np.radians(CVUSA_PANO_VFOV_DEG / 2)) * 640), 640, 3)
    back = photo_to_cylindrical(photo, 90.0, out_height=128, pano_width=512)
    width = fov_width(90.0, 512)
    inside = back.sum(2) > 0  # the photo's corners reach less far up and down than its centre column
    errors = [np.abs(back.astype(int) - crop_fov(pano, 90.0, (512 - left) % 512).astype(int))[inside].mean()
              for left in (136, 131)]  # the view's left edge is column 200 - 64 = 136; 5 columns off for contrast
    assert back.shape == (128, width, 3) and inside.mean() > 0.85
    assert errors[0] < 2.0 < 5.0 < errors[1]
    with pytest.raises(ValueError, match="uint8 H x W x 3"):
        panorama_to_pinhole(pano[..., 0], 90.0, 0.0, 64)
