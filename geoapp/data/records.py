"""What a dataset layout reader produces: pair records, the dataset errors, the manifest and the image sizes.

A reader (CVUSA, CVACT, VIGOR, the synthetic world's CVUSA-like folder) parses its split files into
:class:`PairRecord` s with :func:`relative_image_path` and :func:`split_error`; :func:`resolve_image_sizes` gives
the sizes its files must have (the real dataset's, or what a ``dataset.json`` manifest declares; see
:mod:`geoapp.data.base`). :class:`~geoapp.data.base.CrossViewDataset` turns the records into samples.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

MANIFEST_NAME = "dataset.json"
DEFAULT_SAT_SIZE = (128, 512)  # conventions §1
SELECTION_SPLIT = "val"  # the model-selection split's name in every layout (conventions §7)


class DatasetError(ValueError):
    """A dataset on disk that does not match its layout; the message names the file (and line)."""


class NoSelectionSplitError(DatasetError):
    """The ``val`` (model-selection) split was asked of a dataset that has none (real CVUSA, CVACT, VIGOR)."""


def no_selection_split(root: Path, layout: str, reported: str) -> NoSelectionSplitError:
    """The error a reader raises for split ``val`` when its dataset has no model-selection split."""
    return NoSelectionSplitError(
        f"{root}: this {layout} dataset has no model-selection split ('val'); its reported split is 'test' "
        f"({reported}), on which nothing may be tuned. python -m geoapp.train carves a model-selection subset "
        "from 'train' (--val-split auto, the default); geoapp.data.selection.carve_selection does it in code"
    )


@dataclass(frozen=True)
class ImageSizes:
    """Raw image sizes a dataset's files must have (height, width)."""

    panorama: tuple[int, int]
    satellite: tuple[int, int]
    polar: tuple[int, int] = DEFAULT_SAT_SIZE  # pre-made polar images, where a layout has them


@dataclass(frozen=True)
class PairRecord:
    """One ground/satellite pair as listed by a split file."""

    id: str
    ground_path: Path
    satellite_path: Path
    source: str  # "file:line" (or "file, entry n") listing the pair, quoted in error messages
    ground_lat: float = math.nan
    ground_lon: float = math.nan
    satellite_lat: float = math.nan
    satellite_lon: float = math.nan
    polar_path: Path | None = None  # pre-made polar image of the satellite tile, when the layout has one
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # layout-specific fields


def split_error(path: Path | str, line_number: int, problem: str) -> DatasetError:
    return DatasetError(f"{path}:{line_number}: {problem}")


def read_manifest(root: Path) -> dict | None:
    """The ``dataset.json`` manifest at ``root``, or None when there is none."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable JSON manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: the manifest must be a JSON object, got {type(manifest).__name__}")
    return manifest


def _size_pair(value, what: str, where: str, square: bool = False) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool) and square:
        value = [value, value]
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        hint = "an int or [height, width]" if square else "[height, width]"
        raise DatasetError(f"{where}: {what} must be {hint} of positive integers, got {value!r}")
    if square and value[0] != value[1]:
        raise DatasetError(f"{where}: {what} must be square, got {value!r}")
    return int(value[0]), int(value[1])


def resolve_image_sizes(defaults: ImageSizes, manifest: dict | None, override: dict | None, root: Path) -> ImageSizes:
    """Real-dataset sizes, replaced by what the manifest declares, replaced by an explicit ``override``."""
    sizes = defaults
    for declared, where in ((manifest, str(root / MANIFEST_NAME)), (override, "image_sizes argument")):
        if not declared:
            continue
        changes = {}
        if "panorama_size" in declared:
            changes["panorama"] = _size_pair(declared["panorama_size"], "panorama_size", where)
        if "satellite_size" in declared:
            changes["satellite"] = _size_pair(declared["satellite_size"], "satellite_size", where, square=True)
        if "polar_size" in declared:
            changes["polar"] = _size_pair(declared["polar_size"], "polar_size", where)
        sizes = ImageSizes(**{**sizes.__dict__, **changes})
    return sizes


def relative_image_path(root: Path, name: str, where: str, line_number: int, kind: str) -> Path:
    """``root / name`` for a split-file entry, refusing names that are not image paths inside ``root``."""
    relative = Path(name)
    if (
        not name
        or relative.is_absolute()
        or ".." in relative.parts
        or relative.suffix.lower() not in {".jpg", ".jpeg", ".png"}
    ):
        raise split_error(where, line_number, f"bad {kind} name {name!r}: expected a .jpg/.png path relative to {root}")
    return root / relative


def read_rgb(path: Path) -> np.ndarray | None:
    """Decode an image file to uint8 RGB as stored (no EXIF rotation); None when it cannot be decoded."""
    data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode also handles non-ASCII paths
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if image is None:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
