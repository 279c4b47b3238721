"""A photo made ready for the ground branch: read, its field of view found, put on the panorama grid the model
was trained on; and the checks of a query's arguments."""

from __future__ import annotations

import numpy as np

from ..angles import fov_width
from ..data.photo import decode_photo, photo_to_cylindrical
from ..data.transforms import resize_image
from ..model import ModelConfig
from ..search_options import MAX_VIEWS, PROJECTIONS, TOP_K_RANGE
from .familiarity import on_grid


class FieldOfViewUnknown(ValueError):
    """A camera photo without EXIF focal length and without a given field of view."""


def prepare_query(image, config: ModelConfig, fov_deg: float | None = None,
                  projection: str = "auto") -> tuple[np.ndarray, float, str, str]:
    """Bring a photo (a path, bytes, a PIL image, a uint8 array or a :class:`~geoapp.data.photo.DecodedPhoto`, opened
    once) onto the model's panorama grid: returns (uint8 H x w_fov x 3, fov, fov source, projection).

    - ``pinhole``: a perspective photo (phone camera), reprojected with ``photo_to_cylindrical``; its horizontal
      FoV is ``fov_deg`` or read from EXIF.
    - ``crop``: already a crop of an equirectangular panorama (e.g. the synthetic examples); resized to
      ``H x fov_width(fov)``. Without ``fov_deg`` it must already be ``H`` rows high, and its width gives the FoV.
    - ``auto``: ``pinhole`` when the FoV is known from EXIF or given, ``crop`` for an image of exactly the model's
      ground height without EXIF FoV, else an error asking for ``fov_deg``.
    """
    photo = decode_photo(image)
    return place_photo(photo.rgb, photo.exif_fov_deg, config, fov_deg, projection)


def prepare_views(image, config: ModelConfig, fov_deg: float | None = None,
                  projection: str = "auto") -> tuple[tuple[np.ndarray, float, str, str], np.ndarray]:
    """:func:`prepare_query`, and the photo on the familiarity test's full-size grid
    (:func:`geoapp.retrieval.familiarity.on_grid`), from one decoding."""
    photo = decode_photo(image)
    prepared = place_photo(photo.rgb, photo.exif_fov_deg, config, fov_deg, projection)
    return prepared, on_grid(photo.rgb, prepared[1], prepared[3])


def place_photo(rgb: np.ndarray, exif_fov: float | None, config: ModelConfig, fov_deg: float | None,
                projection: str) -> tuple[np.ndarray, float, str, str]:
    """:func:`prepare_query` of a decoded photo."""
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    h, w_pano = config.ground_height, config.sat_width
    looks_like_crop = rgb.shape[0] == h and rgb.shape[1] <= w_pano
    if projection == "auto":
        if fov_deg is None and exif_fov is None and looks_like_crop:
            projection = "crop"
        else:
            projection = "pinhole"
    if projection == "crop":
        if fov_deg is not None:
            return resize_image(rgb, (h, fov_width(fov_deg, w_pano))), float(fov_deg), "given", "crop"
        if not looks_like_crop:
            raise ValueError(f"a panorama-grid crop without fov_deg must be {h} px high and at most {w_pano} px wide "
                             f"(the model's grid), got {rgb.shape[0]} x {rgb.shape[1]}; pass fov_deg")
        return rgb, rgb.shape[1] * 360.0 / w_pano, "crop width", "crop"
    fov, source = (float(fov_deg), "given") if fov_deg is not None else (exif_fov, "exif")
    if fov is None:
        raise FieldOfViewUnknown("the photo's field of view is unknown (no EXIF focal length); pass fov_deg, the "
                                 "horizontal field of view in degrees")
    return photo_to_cylindrical(rgb, fov, out_height=h, pano_width=w_pano), fov, source, "pinhole"


def query_arguments(images, fov_deg, projection, top_k) -> tuple[list, list, list]:
    """The photos of one query with one field of view and one projection each (``fov_deg`` / ``projection``: one
    value for all or one per photo); refuses a count outside 1 to MAX_VIEWS and a top_k outside TOP_K_RANGE."""
    images = list(images)
    if not 1 <= len(images) <= MAX_VIEWS:
        raise ValueError(f"a query holds 1 to {MAX_VIEWS} photos, got {len(images)}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not (
            TOP_K_RANGE[0] <= top_k <= TOP_K_RANGE[1]):
        raise ValueError(f"top_k must be a whole number in [{TOP_K_RANGE[0]}, {TOP_K_RANGE[1]}], got {top_k!r}")
    fovs = list(fov_deg) if isinstance(fov_deg, (list, tuple)) else [fov_deg] * len(images)
    if len(fovs) != len(images):
        raise ValueError(f"got {len(fovs)} fields of view for {len(images)} photos; give one, or one per photo")
    projections = list(projection) if isinstance(projection, (list, tuple)) else [projection] * len(images)
    if len(projections) != len(images):
        raise ValueError(f"got {len(projections)} projections for {len(images)} photos; give one, or one per photo")
    return images, fovs, projections
