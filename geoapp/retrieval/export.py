"""Many photos in, one table out: the batch behind ``python -m geoapp.localize``.

- :func:`collect_photos`: the files named, and the image files of the folders named (by suffix, hidden files
  skipped; recursive on request), in a stable order.
- :func:`localize_files`: every photo through a :class:`~geoapp.retrieval.engine.Localizer`, one at a time, with
  a progress bar. A photo that fails (not an image, corrupt, unreadable, field of view unknown) becomes an error
  row with the reason; the others go on.
- :func:`photo_rows`: the rows of one photo, one per rank, with the columns of :data:`COLUMNS` (a failed photo:
  one row with only ``file`` and ``error``). Adding a column is one entry there; every writer follows.
- :func:`write_results` (CSV, JSON or GeoJSON from the file's suffix, written atomically) and
  :func:`format_table` (the readable table printed without ``--out``).

GeoJSON: a ``FeatureCollection`` of ``Point`` features (coordinates in ``[lon, lat]`` order, RFC 7946), one per
photo and rank, the other columns as properties; failed photos are listed in the collection's top-level
``errors`` member (``[{"file", "error"}]``) rather than as features without a geometry. A reference whose position
the database does not know (a dataset split without locations) has a null ``lat`` / ``lon`` and geometry.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..data.geo import haversine_m
from ..data.photo import IMAGE_SUFFIXES, PLAUSIBLE_HFOV_DEG, ImageError, decode_photo
from ..files import atomic_write_bytes
from .prior import LocationPrior, PriorError
from .query import FieldOfViewUnknown, choose_prior
from .results import Candidate, LocalizationResult

FORMATS = {".csv": "csv", ".json": "json", ".geojson": "geojson"}
FOV_UNKNOWN = "field of view unknown: no EXIF focal length; pass --fov"


@dataclass
class LocalizedPhoto:
    """One photo of a batch: its result (with the EXIF GPS position, when the photo has one) or why it failed."""

    file: str
    result: LocalizationResult | None = None
    gps: tuple[float, float] | None = None  # (lat, lon) from the photo's EXIF
    error: str | None = None


def _degrees(value: float) -> float | None:
    """A reference's coordinate to 1e-7 degrees (1 cm); None where the database does not know it (a dataset split
    without positions stores nan)."""
    return round(value, 7) if math.isfinite(value) else None


def _distance_to_gps(photo: LocalizedPhoto, c: Candidate) -> float | None:
    if photo.gps is None or not (math.isfinite(c.lat) and math.isfinite(c.lon)):
        return None
    return round(haversine_m(photo.gps[0], photo.gps[1], c.lat, c.lon), 1)


# Every output column, in order, with how a successful photo's row fills it from the photo and one candidate.
COLUMNS: dict[str, Callable[[LocalizedPhoto, Candidate], object]] = {
    "file": lambda photo, c: photo.file,
    "rank": lambda photo, c: c.rank,
    "lat": lambda photo, c: _degrees(c.lat),
    "lon": lambda photo, c: _degrees(c.lon),
    "heading_deg": lambda photo, c: round(c.heading_deg, 2),  # compass bearing in [0, 360)
    "score": lambda photo, c: round(c.score, 5),  # (1 + cos) / 2, in [0, 1]
    "distance_to_exif_gps_m": _distance_to_gps,  # None when the photo has no EXIF GPS position
    # the calibrated probabilities of the photo's answer (the top-1), the same on each of its rows; None when the
    # database has no calibration
    "confidence": lambda photo, c: _confidence(photo, "tile"),
    "heading_confidence": lambda photo, c: _confidence(photo, "heading"),
    # False for a photo unlike every photo the model was trained on (its confidences are then None); None when the
    # database has no familiarity test
    "familiar": lambda photo, c: _familiar(photo),
    "references_searched": lambda photo, c: photo.result.searched,  # fewer than the database with a prior
    # --together: every photo's heading at this tile, in the order of ``file`` ("a.jpg+b.jpg")
    "photo_headings_deg": lambda photo, c: " ".join(f"{h:.2f}" for h in c.view_headings) or None,
    "error": lambda photo, c: None,
}


def _confidence(photo: LocalizedPhoto, which: str) -> float | None:
    conf = photo.result.confidence  # None for an unfamiliar photo too (Confidence.stated)
    value = None if conf is None else conf.stated()[("tile", "heading").index(which)]
    return None if value is None else round(value, 4)


def _familiar(photo: LocalizedPhoto) -> bool | None:
    conf = photo.result.confidence
    if conf is None or (conf.familiarity is None and not conf.below_floor):
        return None
    return not conf.unfamiliar


def photo_rows(photo: LocalizedPhoto) -> list[dict]:
    """One row per candidate of a localized photo; a single row with ``file`` and ``error`` for a failed one."""
    if photo.result is None:
        return [{**dict.fromkeys(COLUMNS), "file": photo.file, "error": photo.error or "failed"}]
    return [{name: get(photo, c) for name, get in COLUMNS.items()} for c in photo.result.candidates]


# ------------------------------------------------------------------------------------------------ input


def collect_photos(paths: Iterable[str | os.PathLike], recursive: bool = False) -> tuple[list[str], list[str]]:
    """The photos to localize and the folders that held none.

    A file named on the command line is taken whatever its suffix (it fails on its own row if it is not an
    image); a folder gives its files with an image suffix (:data:`~geoapp.data.photo.IMAGE_SUFFIXES`, any case),
    sorted by name, hidden files (``.name``, e.g. macOS ``._IMG_0001.HEIC``) skipped, subfolders only with
    ``recursive``. A path that does not exist is kept: its row says so. Repeats are dropped.
    """
    files: list[str] = []
    empty: list[str] = []
    for path in map(os.fspath, paths):
        if not os.path.isdir(path):
            files.append(path)
            continue
        found = []
        for folder, subfolders, names in os.walk(path):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if recursive else []
            found += [os.path.join(folder, n) for n in sorted(names)
                      if not n.startswith(".") and os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
        if not found:
            empty.append(path)
        files += found
    return list(dict.fromkeys(files)), empty


# ------------------------------------------------------------------------------------------------ batch


def _fov_error(exc: FieldOfViewUnknown) -> str:
    """The row's words for a photo whose field of view the query policy could not find."""
    if exc.exif_fov_deg is None:
        return FOV_UNKNOWN
    return (f"field of view unknown: the EXIF focal length gives an implausible {exc.exif_fov_deg:.1f} deg (outside "
            f"{PLAUSIBLE_HFOV_DEG[0]:g}-{PLAUSIBLE_HFOV_DEG[1]:g}); pass --fov")


def localize_one(localizer, file: str, fov_deg: float | None = None, top_k: int = 5,
                 projection: str = "auto", prior: LocationPrior | float | None = None,
                 distinct_m: float | None = None) -> LocalizedPhoto:
    """One photo of a batch; what makes it unusable is caught and returned as its error. ``prior``: a fixed
    ``LocationPrior``, or a radius in metres around each photo's own EXIF GPS (a photo without one searches the
    whole database), or None (:func:`~geoapp.retrieval.query.choose_prior`); ``fov_deg``: the field of view of
    photos without a plausible EXIF one (:func:`~geoapp.retrieval.query.choose_placement`); ``distinct_m``:
    distinct places (``Localizer.localize_together``; None: off)."""
    return localize_together(localizer, [file], fov_deg, top_k, projection, prior, distinct_m)


def localize_together(localizer, files: list[str], fov_deg: float | None = None, top_k: int = 5,
                      projection: str = "auto", prior: LocationPrior | float | None = None,
                      distinct_m: float | None = None) -> LocalizedPhoto:
    """Photos taken at one spot as one query (``Localizer.localize_together``), named ``a.jpg+b.jpg``; the
    prior and EXIF GPS are the first photo's. Each file is opened once."""
    file = "+".join(files)
    given, exif_radius_m = (None, float(prior)) if isinstance(prior, (int, float)) else (prior, None)
    try:
        photos = [decode_photo(f) for f in files]
        result = localizer.localize_together(photos, fov_deg=fov_deg, top_k=top_k, projection=projection,
                                             prior=choose_prior(photos[0], given, exif_radius_m), distinct_m=distinct_m)
    except PriorError as exc:
        return LocalizedPhoto(file, error=f"location prior: {exc}")
    except ImageError as exc:  # the row names the file: "the file is not a recognised image file; accepted: ..."
        return LocalizedPhoto(file, error=str(exc).strip().replace(f"'{file}'", "the file", 1))
    except FieldOfViewUnknown as exc:
        return LocalizedPhoto(file, error=_fov_error(exc))
    except ValueError as exc:  # choose_placement: a crop of the wrong size
        return LocalizedPhoto(file, error=str(exc).strip())
    except OSError as exc:  # read errors the image decoder did not turn into an ImageError
        return LocalizedPhoto(file, error=f"'{file}' could not be read: {exc}")
    return LocalizedPhoto(file, result=result, gps=photos[0].exif_gps)


def localize_photos(localizer, files: list[str], fov_deg: float | None = None, top_k: int = 5,
                    projection: str = "auto", progress: bool = True, prior: LocationPrior | float | None = None,
                    distinct_m: float | None = None) -> Iterator[LocalizedPhoto]:
    """:func:`localize_one` over ``files`` with a progress bar (stderr)."""
    failed = 0
    with tqdm(files, unit="photo", desc="localizing", disable=not progress, dynamic_ncols=True) as bar:
        for file in bar:
            photo = localize_one(localizer, file, fov_deg, top_k, projection, prior, distinct_m)
            if photo.error is not None:
                failed += 1
                bar.set_postfix(failed=failed)
            yield photo


@dataclass
class Batch:
    rows: list[dict] = field(default_factory=list)
    photos: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, error)

    @property
    def ok(self) -> bool:
        return not self.failed


def localize_files(localizer, files: list[str], fov_deg: float | None = None, top_k: int = 5,
                   projection: str = "auto", progress: bool = True, prior: LocationPrior | float | None = None,
                   together: bool = False, distinct_m: float | None = None) -> Batch:
    """Every photo's rows (results are turned into rows as they come: a batch of thousands of photos keeps no
    images or masks in memory); ``together``: all photos are one query from one spot; ``distinct_m``: the ranks are
    distinct places, no two within that many metres (None: every tile)."""
    batch = Batch()
    photos = ([localize_together(localizer, files, fov_deg, top_k, projection, prior, distinct_m)] if together else
              localize_photos(localizer, files, fov_deg, top_k, projection, progress, prior, distinct_m))
    for photo in photos:
        batch.photos += 1
        batch.rows += photo_rows(photo)
        if photo.error is not None:
            batch.failed.append((photo.file, photo.error))
    return batch


def summary(batch: Batch, top_k: int, out: str | os.PathLike | None = None, distinct_m: float | None = None) -> str:
    done = batch.photos - len(batch.failed)
    where = f" -> {os.fspath(out)}" if out is not None else ""
    places = f" distinct places, no two within {distinct_m:g} m" if distinct_m else ""
    lines = [f"localized {done} of {batch.photos} photo{'s' if batch.photos != 1 else ''} (top {top_k}{places} each): "
             f"{len(batch.rows)} rows{where}"]
    if batch.failed:
        lines.append(f"{len(batch.failed)} failed:")
        lines += [f"  {file}: {error}" for file, error in batch.failed]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ output


def output_format(path: str | os.PathLike) -> str:
    """``csv``, ``json`` or ``geojson`` from the file's suffix (any case); ValueError for another."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"the output's suffix must be one of {', '.join(FORMATS)} (it chooses the format), got "
                         f"{os.fspath(path)!r}")
    return FORMATS[suffix]


def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")  # None is written as ""
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def geojson_collection(rows: list[dict]) -> dict:
    features, errors = [], []
    for row in rows:
        if row["error"] is not None:
            errors.append({"file": row["file"], "error": row["error"]})
            continue
        properties = {k: v for k, v in row.items() if k not in ("lat", "lon", "error")}
        point = None if row["lat"] is None else {"type": "Point", "coordinates": [row["lon"], row["lat"]]}
        features.append({"type": "Feature", "geometry": point, "properties": properties})  # RFC 7946 3.2: may be null
    return {"type": "FeatureCollection", "features": features, "errors": errors}


def write_results(rows: list[dict], path: str | os.PathLike) -> str:
    """Write ``rows`` to ``path`` in the format its suffix names, atomically (a crash leaves no half file);
    returns the format."""
    fmt = output_format(path)
    if fmt == "csv":
        data = csv_text(rows)
    else:  # column order kept (not sorted) so the JSON reads like the CSV
        obj = rows if fmt == "json" else geojson_collection(rows)
        data = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_bytes(path, data.encode("utf-8"))
    return fmt


def _cell(value) -> str:
    return "" if value is None else str(value)


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned plain-text table (the error column last and unpadded: messages are long)."""
    names = list(COLUMNS)
    cells = [[_cell(row[n]) for n in names] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    lines = []
    for values in [names, *cells]:
        padded = [v.ljust(w) for v, w in zip(values[:-1], widths)] + [values[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)
