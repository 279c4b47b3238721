"""Bundled examples: ground crops from the reference database's own test split, with known truth.

Each example is a limited-FoV crop of a test panorama made with conventions §4's fixed evaluation shift, so its
true location, heading and true reference tile are known and shown after the run. The crops are written
once as PNG files (with an ``examples.json`` record) and found again by the SHA-256 of their bytes, so a
result knows its truth however the file reached the app (example click, upload, API client).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from geoapp.angles import heading_from_shift
from geoapp.data.datasets import build_dataset
from geoapp.data.fov import crop_fov
from geoapp.files import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file

RECORD_NAME = "examples.json"
RECORD_VERSION = 1


@dataclass(frozen=True)
class Example:
    """One bundled example and what is true about it (heading in [0, 360), compass bearing)."""

    file: str
    sha256: str
    fov_deg: float
    lat: float
    lon: float
    heading_deg: float
    reference_index: int
    pair_id: str

    def label(self, split: str = "test") -> str:
        """How the page names it: its split (the database's) and pair id."""
        return f"{split} pair {self.pair_id}"


class ExampleSet:
    """The examples of one folder, looked up by the content of an uploaded file."""

    def __init__(self, folder: Path, examples: list[Example]):
        self.folder = Path(folder)
        self.examples = list(examples)
        self._by_hash = {e.sha256: e for e in self.examples}

    def __len__(self) -> int:
        return len(self.examples)

    def path(self, example: Example) -> Path:
        return self.folder / example.file

    def lookup(self, source: str | os.PathLike | BinaryIO | None) -> Example | None:
        """The example whose bytes equal the file at ``source`` (a path, or a binary file open at its start, read
        to its end), or None."""
        if source is None or not self._by_hash:
            return None
        if not isinstance(source, (str, os.PathLike)):
            return self._by_hash.get(hashlib.file_digest(source, "sha256").hexdigest())
        return self._by_hash.get(sha256_file(source)) if os.path.isfile(source) else None

    @classmethod
    def load(cls, folder: str | os.PathLike, source: dict) -> ExampleSet | None:
        """The examples recorded in ``folder`` for ``source``, or None when absent, stale or incomplete."""
        folder = Path(folder)
        try:
            record = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if record.get("version") != RECORD_VERSION or record.get("source") != source:
            return None
        examples = [Example(**e) for e in record["examples"]]
        if not all((folder / e.file).is_file() and sha256_file(folder / e.file) == e.sha256 for e in examples):
            return None
        return cls(folder, examples)


def example_source(dataset: str, data_root: str | os.PathLike, split: str, fov_deg: float, count: int) -> dict:
    return {"dataset": dataset, "data_root": str(Path(data_root).resolve()), "split": split,
            "fov_deg": float(fov_deg), "count": int(count)}


def write_examples(
    folder: str | os.PathLike, dataset: str, data_root: str | os.PathLike, split: str,
    fov_deg: float = 90.0, count: int = 6,
) -> ExampleSet:
    """Write ``count`` crops spread over the split (or reuse them when already written for the same source).

    The crops have the full conventions §1 resolution (128 px tall, ``fov_width(fov)`` wide); the localizer resizes
    them to its model's input. ``reference_index`` is the pair's position in the split, which is the true
    tile's index in a database built from the same split.
    """
    folder = Path(folder)
    source = example_source(dataset, data_root, split, fov_deg, count)
    existing = ExampleSet.load(folder, source)
    if existing is not None:
        return existing
    data = build_dataset(dataset, data_root, split, fov_deg, train=False)
    indices = np.unique(np.linspace(0, len(data) - 1, min(count, len(data))).round().astype(int))
    examples = []
    for index in indices:
        index = int(index)
        record = data.records[index]
        shift = data.shift_for(index)
        crop = crop_fov(data.load_panorama(index), fov_deg, shift)
        ok, png = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"could not encode example {index} as PNG")
        name = f"example_{index:05d}_{record.id}.png"
        atomic_write_bytes(folder / name, png.tobytes())
        heading = float(heading_from_shift(shift, fov_deg, data.pano_width)) % 360.0
        examples.append(Example(
            file=name, sha256=sha256_bytes(png.tobytes()), fov_deg=float(fov_deg),
            lat=float(record.ground_lat), lon=float(record.ground_lon), heading_deg=heading,
            reference_index=index, pair_id=record.id,
        ))
    atomic_write_json(folder / RECORD_NAME, {"version": RECORD_VERSION, "source": source,
                                              "examples": [asdict(e) for e in examples]})
    return ExampleSet(folder, examples)
