"""The query policy, one for the app, the command line and the Python API: how a photo, decoded once
(:func:`~geoapp.data.photo.decode_photo`: pixels and EXIF fields), is placed on the panorama grid the model was
trained on (its projection and field of view: :func:`choose_placement`), which location prior its query searches
(:func:`choose_prior`), and the checks of a query's arguments. The app and the command line word the outcome for
their users; the rules are these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..angles import fov_width
from ..data.photo import PLAUSIBLE_HFOV_DEG, DecodedPhoto, decode_photo, photo_to_cylindrical
from ..data.transforms import resize_image
from ..model import ModelConfig
from ..search_options import MAX_VIEWS, PROJECTIONS, TOP_K_RANGE
from .familiarity import on_grid
from .prior import LocationPrior


class FieldOfViewUnknown(ValueError):
    """A camera photo whose field of view is neither given nor read from a plausible EXIF focal length."""

    def __init__(self, message: str, exif_fov_deg: float | None = None):
        super().__init__(message)
        self.exif_fov_deg = exif_fov_deg  # the implausible EXIF value; None when the photo has none


@dataclass(frozen=True)
class Placement:
    """How a photo goes onto the panorama grid: its projection and its horizontal field of view."""

    projection: str  # "pinhole": a camera photo, reprojected; "crop": already a crop of the panorama grid
    fov_deg: float
    fov_source: str  # "exif", "given" or "crop width"
    exif_fov_ignored: float | None = None  # an implausible EXIF field of view that the given one replaced


def camera_placement(photo: DecodedPhoto, fov_deg: float | None = None) -> Placement:
    """A camera photo's field of view: its EXIF one when plausible (a pinhole camera's, PLAUSIBLE_HFOV_DEG), else
    ``fov_deg``; FieldOfViewUnknown when neither (naming an implausible EXIF value)."""
    exif = photo.exif_fov_deg
    if exif is not None and PLAUSIBLE_HFOV_DEG[0] <= exif <= PLAUSIBLE_HFOV_DEG[1]:
        return Placement("pinhole", float(exif), "exif")
    if fov_deg is not None:
        return Placement("pinhole", float(fov_deg), "given", exif_fov_ignored=exif)
    if exif is not None:
        raise FieldOfViewUnknown(
            f"the photo's EXIF focal length gives an implausible horizontal field of view of {exif:.1f} deg (a "
            f"camera's is {PLAUSIBLE_HFOV_DEG[0]:g}-{PLAUSIBLE_HFOV_DEG[1]:g}); pass fov_deg, the horizontal field "
            "of view in degrees", exif)
    raise FieldOfViewUnknown("the photo's field of view is unknown (no EXIF focal length); pass fov_deg, the "
                             "horizontal field of view in degrees")


def choose_placement(photo: DecodedPhoto, config: ModelConfig, fov_deg: float | None = None,
                     projection: str = "auto") -> Placement:
    """The projection and field of view of a photo for a model of ``config``:

    - ``pinhole``: a perspective photo (phone camera), reprojected with ``photo_to_cylindrical``; its horizontal
      FoV is the EXIF one when plausible, else ``fov_deg`` (:func:`camera_placement`).
    - ``crop``: already a crop of an equirectangular panorama (e.g. the synthetic examples), at ``fov_deg``;
      without it the crop must be the model's ground height high and at most its panorama wide, and its width
      gives the FoV.
    - ``auto``: ``crop`` for an image of exactly the model's ground height with neither an EXIF FoV nor
      ``fov_deg``, else ``pinhole``.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    h, w_pano = config.ground_height, config.sat_width
    rows, columns = photo.rgb.shape[:2]
    looks_like_crop = rows == h and columns <= w_pano
    if projection == "auto":
        fov_known = fov_deg is not None or photo.exif_fov_deg is not None
        projection = "crop" if looks_like_crop and not fov_known else "pinhole"
    if projection == "pinhole":
        return camera_placement(photo, fov_deg)
    if fov_deg is not None:
        return Placement("crop", float(fov_deg), "given")
    if not looks_like_crop:
        raise ValueError(f"a panorama-grid crop without fov_deg must be {h} px high and at most {w_pano} px wide "
                         f"(the model's grid), got {rows} x {columns}; pass fov_deg")
    return Placement("crop", columns * 360.0 / w_pano, "crop width")


def place_photo(rgb: np.ndarray, placement: Placement, config: ModelConfig) -> np.ndarray:
    """The photo on the model's panorama grid: uint8 ground height x fov_width(fov) x 3 (a crop whose width gave
    its FoV is already there)."""
    h, w_pano = config.ground_height, config.sat_width
    if placement.projection == "pinhole":
        return photo_to_cylindrical(rgb, placement.fov_deg, out_height=h, pano_width=w_pano)
    if placement.fov_source == "crop width":
        return rgb
    return resize_image(rgb, (h, fov_width(placement.fov_deg, w_pano)))


def prepare_query(image, config: ModelConfig, fov_deg: float | None = None,
                  projection: str = "auto") -> tuple[np.ndarray, float, str, str]:
    """A photo (a path, bytes, a PIL image, a uint8 array or a :class:`~geoapp.data.photo.DecodedPhoto`; opened
    once) on the model's panorama grid, placed by :func:`choose_placement`: (uint8 H x w_fov x 3, fov, fov source,
    projection)."""
    return prepare_views(image, config, fov_deg, projection)[0]


def prepare_views(image, config: ModelConfig, fov_deg: float | None = None,
                  projection: str = "auto") -> tuple[tuple[np.ndarray, float, str, str], np.ndarray]:
    """:func:`prepare_query`, and the photo on the familiarity test's full-size grid
    (:func:`geoapp.retrieval.familiarity.on_grid`), from one decoding."""
    photo = decode_photo(image)
    placement = choose_placement(photo, config, fov_deg, projection)
    model_input = place_photo(photo.rgb, placement, config)
    prepared = (model_input, placement.fov_deg, placement.fov_source, placement.projection)
    return prepared, on_grid(photo.rgb, placement.fov_deg, placement.projection)


def choose_prior(photo: DecodedPhoto, given: LocationPrior | None = None,
                 exif_radius_m: float | None = None) -> LocationPrior | None:
    """The location prior of a query whose first photo is ``photo``: the ``given`` one; else, with
    ``exif_radius_m``, the circle of that radius around the photo's EXIF GPS position; else None (every
    reference)."""
    if given is not None:
        return given
    if exif_radius_m is None or photo.exif_gps is None:
        return None
    return LocationPrior(photo.exif_gps[0], photo.exif_gps[1], float(exif_radius_m), source="exif")


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
