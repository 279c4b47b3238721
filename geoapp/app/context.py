"""What the app loads once at start: the localizer, the bundled examples and the map's base layer."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoapp.data.photo import ImageError, load_image
from geoapp.data.records import read_manifest
from geoapp.files import home_dir
from geoapp.retrieval.engine import Localizer
from geoapp.retrieval.raster import raster_overview

from .examples import Example, ExampleSet, write_examples
from .mapview import AreaBox, Leaflet, WorldImage

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
EXAMPLE_COUNT = 6
EXAMPLE_FOV_DEG = 90.0
CACHE_ROOT = home_dir() / "data" / "app_cache"  # per database: the bundled examples and the map's base layer
WORLD_IMAGE_NAME = "world_mosaic.jpg"  # the map's base layer, written beside the examples
DEFAULT_CONE_M = 75.0  # half a CVUSA tile (about 150 m across at zoom 19) when the dataset does not say


@dataclass
class AppContext:
    """Everything the handlers need besides the request; built once, shared read-only by all requests."""

    localizer: Localizer
    top_k: int = DEFAULT_TOP_K
    examples: ExampleSet | None = None
    world: WorldImage | None = None
    cone_length_m: float = DEFAULT_CONE_M
    # when the app serves several areas: every area's coverage, which the maps draw (empty for a single area, whose
    # page stays as it always was)
    area_boxes: tuple[AreaBox, ...] = ()
    # where the maps load Leaflet from (the running app's file route); None: inlined into every map
    leaflet: Leaflet | None = None

    @property
    def name(self) -> str:
        """The area's name: its database's folder name."""
        return self.localizer.db.path.name

    @property
    def source(self) -> dict:
        """The database's source record (``kind`` "dataset" with dataset/split/root, or "tiles")."""
        return self.localizer.db.metadata.get("source", {})

    def example_label(self, example: Example) -> str:
        """A bundled example's name on the page, with the split the area's database (and so the example) is from."""
        return example.label(self.source.get("split") or "test")

    @classmethod
    def create(cls, localizer: Localizer, top_k: int = DEFAULT_TOP_K, cache_dir: str | Path | None = None,
               example_count: int = EXAMPLE_COUNT) -> AppContext:
        ctx = cls(localizer=localizer, top_k=int(top_k))
        source = ctx.source
        if source.get("kind") == "dataset" and Path(source.get("root", "")).is_dir():
            root = Path(source["root"])
            cache = Path(cache_dir) if cache_dir else CACHE_ROOT / localizer.db.path.name
            # examples and the mosaic are conveniences: the app works without them
            try:
                ctx.examples = write_examples(cache, source["dataset"], root, source["split"],
                                              EXAMPLE_FOV_DEG, example_count)
            except (ValueError, OSError) as exc:
                log.warning("no bundled examples: %s", exc)
            try:
                manifest = read_manifest(root) or {}
            except ValueError as exc:
                log.warning("%s", exc)
                manifest = {}
            ctx.world = load_world_image(root, manifest, cache / WORLD_IMAGE_NAME)
            ctx.set_tile_metres((manifest.get("geometry") or {}).get("tile_metres"))
        elif source.get("kind") == "raster" and Path(source.get("raster", "")).is_file():
            cache = Path(cache_dir) if cache_dir else CACHE_ROOT / localizer.db.path.name
            ctx.world = load_raster_image(Path(source["raster"]), cache / WORLD_IMAGE_NAME)
            ctx.set_tile_metres(source.get("tile_metres"))
        return ctx

    def set_tile_metres(self, tile_m) -> None:
        """The heading cone on the map reaches half a tile, when the source says how wide a tile is."""
        if isinstance(tile_m, (int, float)) and math.isfinite(tile_m) and tile_m > 0:
            self.cone_length_m = float(tile_m) / 2.0


def load_raster_image(raster: Path, file: Path | None = None) -> WorldImage | None:
    """The orthophoto a database was cut from, as the map's base layer (None, with a warning, when it cannot be
    read: the map then shows web tiles)."""
    try:
        rgb, edges = raster_overview(raster)
    except (ValueError, OSError) as exc:  # DatabaseError, rasterio's errors (RasterioIOError is an OSError)
        log.warning("the orthophoto %s cannot be shown on the map (%s)", raster, exc)
        return None
    try:
        return WorldImage.from_array(rgb, *edges, file=file)
    except OSError as exc:
        log.warning("cannot write %s (%s); the map inlines the orthophoto instead", file, exc)
        return WorldImage.from_array(rgb, *edges)


def load_world_image(root: Path, manifest: dict, file: Path | None = None) -> WorldImage | None:
    """The synthetic world's top-down mosaic and its lat/lon bounds, as the generator's manifest records them.

    The manifest entry (written by ``geoapp.synth``) is ``"mosaic": {"file": "map/mosaic.jpg", "bounds":
    {"south", "west", "north", "east"}, ...}``. Returns None when the dataset has none (real datasets use web
    map tiles). The downscaled copy the map shows is also written to ``file`` when given.
    """
    entry = manifest.get("mosaic")
    if not isinstance(entry, dict) or not entry.get("file") or not isinstance(entry.get("bounds"), dict):
        return None
    name, bounds = entry["file"], entry["bounds"]
    try:
        rgb = load_image(root / name, max_pixels=400_000_000)
        edges = [float(bounds[k]) for k in ("south", "west", "north", "east")]
    except (ImageError, KeyError, TypeError, ValueError) as exc:
        log.warning("the world mosaic %s cannot be used (%s); the map shows web tiles instead", root / name, exc)
        return None
    if not all(np.isfinite(edges)) or edges[0] >= edges[2] or edges[1] >= edges[3]:
        log.warning("the world mosaic bounds %s are not south < north, west < east; ignoring the mosaic", bounds)
        return None
    try:
        return WorldImage.from_array(rgb, *edges, file=file)
    except OSError as exc:  # e.g. a read-only cache: the map inlines the image instead
        log.warning("cannot write %s (%s); the map inlines the world image instead", file, exc)
        return WorldImage.from_array(rgb, *edges)
