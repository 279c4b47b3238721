"""CVUSA reader (the subset used by CVM-Net, SAFA and DSM); the synthetic world is written in this layout.

Layout under the root::

    bingmap/19/0000001.jpg          satellite tiles, 750 x 750
    streetview/panos/0000001.jpg    north-aligned ground panoramas, 224 x 1232 (360 deg wide)
    polarmap/19/0000001.png         optional pre-made conventions §3 polar images, 128 x 512
    splits/train-19zl.csv           no header: satellite path, ground path, annotation path (relative)
    splits/val-19zl.csv             CVUSA's reported split (named "test" here)
    splits/selection-19zl.csv       optional, same format: a model-selection split (the synthetic world
                                    writes it; real CVUSA has none)
    split_locations/all.csv         optional, no header: sat_lat, sat_lon, ground_lat, ground_lon, ...;
                                    row id - 1 belongs to image id (0000123.jpg -> row 122)
    dataset.json                    optional manifest declaring other image sizes (see geoapp.data.base)

Splits (conventions §7): "train" -> train-19zl.csv; "test" -> val-19zl.csv (the split CVUSA results are reported on,
by convention); "val" (model selection) -> selection-19zl.csv when the dataset has it, otherwise a
:class:`~geoapp.data.base.NoSelectionSplitError` (training carves a selection subset from "train").
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from geoapp.data.base import CrossViewDataset
from geoapp.data.records import (
    SELECTION_SPLIT,
    DatasetError,
    ImageSizes,
    PairRecord,
    no_selection_split,
    relative_image_path,
    split_error,
)
from geoapp.data.selection import spread_rows

SPLIT_FILES = {"train": "splits/train-19zl.csv", "val": "splits/selection-19zl.csv", "test": "splits/val-19zl.csv"}
LOCATIONS_FILE = "split_locations/all.csv"
POLAR_DIR = "polarmap/19"


def read_locations(path: Path) -> np.ndarray:
    """``all.csv`` as an M x 4 array (sat_lat, sat_lon, ground_lat, ground_lon); blank lines give nan rows
    so that row numbers stay line numbers - 1."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line_number, line in enumerate(fh, 1):
            if not line.strip():
                rows.append([math.nan] * 4)
                continue
            columns = line.split(",")
            if len(columns) < 4:
                raise split_error(path, line_number, f"expected at least 4 comma-separated columns "
                                                     f"(sat_lat, sat_lon, ground_lat, ground_lon), got {len(columns)}")
            try:
                values = [float(c) for c in columns[:4]]
            except ValueError as exc:
                raise split_error(path, line_number, f"latitude/longitude columns are not numbers ({exc})") from exc
            if not all(-90 <= values[i] <= 90 and -180 <= values[i + 1] <= 180 for i in (0, 2)):
                raise split_error(path, line_number, f"latitude/longitude out of range: {values}")
            rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


class CVUSADataset(CrossViewDataset):
    """CVUSA pairs (layout in the module docstring); arguments as in :class:`CrossViewDataset`."""

    name = "cvusa"
    layout = "the CVUSA subset of CVM-Net, SAFA and DSM"
    splits = tuple(SPLIT_FILES)  # "val" only where a copy adds selection-19zl.csv (real CVUSA has none)
    test_source = SPLIT_FILES["test"]
    default_sizes = ImageSizes(panorama=(224, 1232), satellite=(750, 750), polar=(128, 512))

    def read_records(self) -> list[PairRecord]:
        split_path = self.root / SPLIT_FILES[self.split]
        if self.split == SELECTION_SPLIT and not split_path.is_file():
            raise no_selection_split(self.root, self.name, self.test_source)
        if not split_path.is_file():
            raise DatasetError(f"{split_path}: split file does not exist")
        locations_path = self.root / LOCATIONS_FILE
        locations = read_locations(locations_path) if locations_path.is_file() else None

        records = []
        with open(split_path, encoding="utf-8") as fh:
            for line_number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                columns = [c.strip() for c in line.rstrip("\r\n").split(",")]
                if len(columns) != 3:
                    raise split_error(split_path, line_number, f"expected 3 comma-separated columns (satellite, "
                                                               f"ground, annotation path), got {len(columns)}")
                satellite_path = relative_image_path(self.root, columns[0], split_path, line_number, "satellite image")
                ground_path = relative_image_path(self.root, columns[1], split_path, line_number, "ground image")
                source = f"{split_path}:{line_number}"
                location = [math.nan] * 4
                if locations is not None:
                    location = self._location_of(ground_path.stem, locations, split_path, line_number)
                records.append(PairRecord(
                    id=ground_path.stem,
                    ground_path=ground_path,
                    satellite_path=satellite_path,
                    source=source,
                    satellite_lat=location[0],
                    satellite_lon=location[1],
                    ground_lat=location[2],
                    ground_lon=location[3],
                    polar_path=self.root / POLAR_DIR / f"{satellite_path.stem}.png",
                ))
        return records

    def _location_of(self, stem: str, locations: np.ndarray, split_path: Path, line_number: int) -> list[float]:
        if not stem.isdigit():
            raise split_error(split_path, line_number, f"bad ground image name {stem!r}: {LOCATIONS_FILE} is indexed "
                                                       "by the number in the file name (e.g. 0000123.jpg)")
        image_id = int(stem)
        if not 1 <= image_id <= len(locations):
            raise split_error(split_path, line_number, f"image id {image_id} has no row in "
                                                       f"{self.root / LOCATIONS_FILE} ({len(locations)} rows)")
        return [float(v) for v in locations[image_id - 1]]


class SynthDataset(CVUSADataset):
    """The synthetic world: the CVUSA layout, usually with a ``dataset.json`` manifest declaring its sizes, the
    splits whose images were rendered (``rendered_splits``; a world rendered in part lists all its splits in its
    split files) and the splits of which only N locations spread over them were rendered (``sampled``: split -> N).
    Such a split opens as those N pairs."""

    name = "synth"
    layout = "the synthetic world of geoapp.synth, written in the CVUSA layout"
    synthetic = True

    def read_records(self) -> list[PairRecord]:
        manifest = self.manifest or {}
        rendered = manifest.get("rendered_splits")
        if rendered is None or self.split in rendered:
            return super().read_records()
        sampled = (manifest.get("sampled") or {}).get(self.split)
        if sampled:
            records = super().read_records()
            return [records[int(r)] for r in spread_rows(len(records), int(sampled))]
        raise DatasetError(f"{self.root}: split {self.split!r} was not rendered (this world has "
                           f"{', '.join(rendered)}); render it with python -m geoapp.synth --out {self.root} --splits "
                           f"{' '.join([*rendered, self.split])} (the same world's other flags)")
