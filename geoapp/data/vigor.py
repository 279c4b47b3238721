"""VIGOR reader (same-area split; retrieval against the positive tile only).

Layout under the root::

    <city>/panorama/<id>,<lat>,<lon>,.jpg            north-aligned panoramas, 1024 x 2048 (full sphere)
    <city>/satellite/satellite_<lat>_<lon>.png       satellite tiles, 640 x 640
    splits/<city>/satellite_list.txt                 the city's tile names (checked when present)
    splits/<city>/same_area_balanced_train.txt       label lines: panorama name, then 4 x (satellite
    splits/<city>/same_area_balanced_test.txt        name, dy, dx); the first satellite is the positive
    dataset.json                                     optional manifest declaring other image sizes

Splits (conventions §7): "train" -> same_area_balanced_train.txt; "test" (the reported split) ->
same_area_balanced_test.txt. VIGOR has no model-selection split: "val" raises
:class:`~geoapp.data.base.NoSelectionSplitError` (training carves a selection subset from "train").
Cities: default every city under ``splits/`` with the split's label file, in VIGOR's order (NewYork,
Seattle, SanFrancisco, Chicago, then others alphabetically); the order fixes the evaluation shifts.

Choices made here (VIGOR is one-to-many, our evaluation is one-to-one):

- Each panorama is paired with its POSITIVE tile only; semi-positives are parsed (validated) and dropped.
- The reference gallery (``satellite_view()``) is the positives of the split, one entry per panorama, so
  a tile that is the positive of several panoramas appears several times; equal distances count in the
  query's favour (conventions §7), so the duplicates do not change recall.
- The polar transform is centred on the tile centre (conventions §3), not on the panorama's position inside
  the tile: the reference must not depend on the query. The positive's pixel offset (dy, dx) is kept in
  ``record.extra["positive_offset_px"]``.
- Panoramas are cut to their middle half of rows (+-45 deg around the horizon), the CVACT rule of conventions §2
  for full-sphere street-view panoramas; pass ``ground_rows=None`` to keep all rows.
- ``lat``/``lon`` of a sample are the panorama's (from its name); the tile centre's are in
  ``satellite_locations`` and in ``satellite_item``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from geoapp.data.base import CrossViewDataset
from geoapp.data.records import DatasetError, ImageSizes, PairRecord, split_error

VIGOR_CITIES = ("NewYork", "Seattle", "SanFrancisco", "Chicago")
LABEL_FILES = {
    "train": "same_area_balanced_train.txt",
    "test": "same_area_balanced_test.txt",
}
SATELLITE_LIST = "satellite_list.txt"
FIELDS_PER_LINE = 13  # panorama + 4 x (satellite, dy, dx)


def _latlon(lat_text: str, lon_text: str) -> tuple[float, float]:
    lat, lon = float(lat_text), float(lon_text)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"latitude/longitude out of range: {lat}, {lon}")
    return lat, lon


def parse_panorama_name(name: str) -> tuple[str, float, float]:
    """``<id>,<lat>,<lon>,.jpg`` -> (id, lat, lon); ValueError when the name does not have that form."""
    parts = name.split(",")
    if len(parts) != 4 or parts[3] != ".jpg" or not parts[0]:
        raise ValueError("expected <id>,<lat>,<lon>,.jpg")
    lat, lon = _latlon(parts[1], parts[2])
    return parts[0], lat, lon


def parse_satellite_name(name: str) -> tuple[float, float]:
    """``satellite_<lat>_<lon>.png`` -> (lat, lon); ValueError when the name does not have that form."""
    if not (name.startswith("satellite_") and name.endswith(".png")):
        raise ValueError("expected satellite_<lat>_<lon>.png")
    parts = name[len("satellite_"):-len(".png")].split("_")
    if len(parts) != 2:
        raise ValueError("expected satellite_<lat>_<lon>.png")
    return _latlon(*parts)


class VIGORDataset(CrossViewDataset):
    """VIGOR same-area pairs (layout and choices in the module docstring). Besides the
    :class:`CrossViewDataset` arguments: ``cities`` (names, default all present)."""

    name = "vigor"
    layout = "VIGOR, same-area split, each panorama with its positive tile"
    splits = tuple(LABEL_FILES)
    test_source = f"splits/<city>/{LABEL_FILES['test']}"
    default_sizes = ImageSizes(panorama=(1024, 2048), satellite=(640, 640))
    default_ground_rows = (0.25, 0.75)
    default_tile_metres = 73.0  # 640 px at about 0.114 m per pixel

    def __init__(self, *args, cities: Sequence[str] | None = None, **kwargs):
        if isinstance(cities, str):
            cities = [cities]
        self.cities = list(cities) if cities is not None else None
        super().__init__(*args, **kwargs)

    def _present_cities(self, label_name: str) -> list[str]:
        splits_dir = self.root / "splits"
        if not splits_dir.is_dir():
            raise DatasetError(f"{splits_dir}: VIGOR split directory does not exist")
        present = {p.name for p in splits_dir.iterdir() if (p / label_name).is_file()}
        if not present:
            raise DatasetError(f"{splits_dir}: no city has a {label_name} label file")
        known = [c for c in VIGOR_CITIES if c in present]
        return known + sorted(present - set(known))

    def read_records(self) -> list[PairRecord]:
        label_name = LABEL_FILES[self.split]
        if self.cities is None:
            self.cities = self._present_cities(label_name)
        records = []
        for city in self.cities:
            records.extend(self._read_city(city, label_name))
        return records

    def _read_city(self, city: str, label_name: str) -> list[PairRecord]:
        if not city or "/" in city or "\\" in city or city.startswith("."):
            raise ValueError(f"bad VIGOR city name {city!r}")
        label_path = self.root / "splits" / city / label_name
        if not label_path.is_file():
            raise DatasetError(f"{label_path}: split file does not exist")
        list_path = self.root / "splits" / city / SATELLITE_LIST
        known_tiles = set(list_path.read_text(encoding="utf-8").split()) if list_path.is_file() else None

        records = []
        with open(label_path, encoding="utf-8") as fh:
            for line_number, line in enumerate(fh, 1):
                fields = line.split()
                if not fields:
                    continue
                records.append(self._parse_label(city, fields, label_path, line_number, known_tiles, list_path))
        return records

    def _parse_label(self, city: str, fields: list[str], label_path: Path, line_number: int,
                     known_tiles: set[str] | None, list_path: Path) -> PairRecord:
        if len(fields) != FIELDS_PER_LINE:
            raise split_error(label_path, line_number, f"expected {FIELDS_PER_LINE} whitespace-separated fields "
                                                       f"(panorama, then 4 x satellite dy dx), got {len(fields)}")
        pano_name = fields[0]
        try:
            pano_id, pano_lat, pano_lon = parse_panorama_name(pano_name)
        except ValueError as exc:
            raise split_error(label_path, line_number, f"bad panorama name {pano_name!r}: {exc}") from exc
        satellites = fields[1::3]
        for tile in satellites:
            try:
                parse_satellite_name(tile)
            except ValueError as exc:
                raise split_error(label_path, line_number, f"bad satellite name {tile!r}: {exc}") from exc
            if known_tiles is not None and tile not in known_tiles:
                raise split_error(label_path, line_number, f"satellite {tile!r} is not listed in {list_path}")
        offsets = []
        for dy_text, dx_text in zip(fields[2::3], fields[3::3]):
            try:
                dy, dx = float(dy_text), float(dx_text)
            except ValueError as exc:
                raise split_error(label_path, line_number, f"bad pixel offset {dy_text!r} {dx_text!r}") from exc
            if not (math.isfinite(dy) and math.isfinite(dx)):
                raise split_error(label_path, line_number, f"non-finite pixel offset {dy_text!r} {dx_text!r}")
            offsets.append((dy, dx))
        positive = satellites[0]
        sat_lat, sat_lon = parse_satellite_name(positive)
        return PairRecord(
            id=f"{city}/{pano_id}",
            ground_path=self.root / city / "panorama" / pano_name,
            satellite_path=self.root / city / "satellite" / positive,
            source=f"{label_path}:{line_number}",
            ground_lat=pano_lat,
            ground_lon=pano_lon,
            satellite_lat=sat_lat,
            satellite_lon=sat_lon,
            extra={"city": city, "positive_offset_px": offsets[0]},
        )
