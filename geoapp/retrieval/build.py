"""Building a reference database: the satellite branch run once over every reference tile, its maps stored.

Sources (anything with ``len()``, ``latlon``, ``paths``, ``identity()`` and ``load(i) -> (polar tensor,
thumbnail)``): a dataset split's satellite side (:class:`DatasetSource`), a folder of square tiles with a CSV of
their centres (:class:`TileFolderSource`, polar-transformed here, conventions §3), the first N of another source
(:class:`Limited`) or several sources one after another (:class:`ConcatSource`, e.g. a test split with the
training tiles as distractors). The storage layout is described in :mod:`geoapp.retrieval.database`.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.photo import ImageError, load_image
from ..data.polar import polar_transform
from ..data.selection import spread_rows
from ..data.transforms import resize_image, to_tensor
from ..files import atomic_path, sha256_file
from ..model import StageMaps
from ..model.checkpoint import LoadedCheckpoint
from .codes import DEFAULT_STORE, DeferredMaps, StoreKind
from .database import DEFAULT_CHUNK, THUMBNAIL_SIZE, DatabaseError, ReferenceDatabase, gate_stages
from .database_writer import DatabaseWriter, run_chunks
from .index import DEFAULT_DIMS, FirstStageIndex, compute_first_stage, num_orientations

FILE_COLUMNS = ("file", "path", "filename", "name", "tile")
LAT_COLUMNS = ("lat", "latitude")
LON_COLUMNS = ("lon", "lng", "longitude")


def thumbnail_of(tile: np.ndarray) -> np.ndarray:
    return np.array(resize_image(tile, (THUMBNAIL_SIZE, THUMBNAIL_SIZE)))  # a copy: resize may return its input


class TileFolderSource:
    """Square satellite tiles in a folder, listed with their centre's lat/lon in a CSV."""

    def __init__(self, tiles_dir: str | Path, locations_csv: str | Path, sat_size: tuple[int, int]):
        self.tiles_dir = Path(tiles_dir)
        self.locations_csv = Path(locations_csv)
        self.sat_size = sat_size
        if not self.tiles_dir.is_dir():
            raise DatabaseError(f"--tiles {self.tiles_dir} is not a directory")
        if not self.locations_csv.is_file():
            raise DatabaseError(f"--locations {self.locations_csv} does not exist")
        self.files, latlon = self._read_csv()
        self.latlon = np.array(latlon, dtype=np.float64).reshape(-1, 2)

    def _read_csv(self) -> tuple[list[Path], list[list[float]]]:
        with open(self.locations_csv, encoding="utf-8-sig", newline="") as fh:
            rows = [(i, r) for i, r in enumerate(csv.reader(fh), 1) if any(c.strip() for c in r)]
        if not rows:
            raise DatabaseError(f"{self.locations_csv} lists no tiles")
        cols = (0, 1, 2)
        header = [c.strip().lower() for c in rows[0][1]]
        if not is_number(header[1] if len(header) > 1 else ""):
            try:
                cols = tuple(next(header.index(n) for n in names if n in header)
                             for names in (FILE_COLUMNS, LAT_COLUMNS, LON_COLUMNS))
            except StopIteration:
                raise DatabaseError(
                    f"{self.locations_csv}:1: header {rows[0][1]} needs a file column ({'/'.join(FILE_COLUMNS)}), "
                    f"a latitude ({'/'.join(LAT_COLUMNS)}) and a longitude ({'/'.join(LON_COLUMNS)}) column"
                ) from None
            rows = rows[1:]
        files, latlon = [], []
        for line, row in rows:
            where = f"{self.locations_csv}:{line}"
            if len(row) <= max(cols):
                raise DatabaseError(f"{where}: expected columns file, lat, lon; got {row}")
            name, lat, lon = (row[c].strip() for c in cols)
            if not (is_number(lat) and is_number(lon) and -90 <= float(lat) <= 90 and -180 <= float(lon) <= 180):
                raise DatabaseError(f"{where}: lat/lon must be numbers in [-90, 90] / [-180, 180], got {lat!r}, "
                                    f"{lon!r}")
            path = Path(name) if Path(name).is_absolute() else self.tiles_dir / name
            if not path.is_file():
                raise DatabaseError(f"{where}: tile {path} does not exist")
            files.append(path)
            latlon.append([float(lat), float(lon)])
        return files, latlon

    def __len__(self) -> int:
        return len(self.files)

    @property
    def paths(self) -> list[str]:
        return [str(p) for p in self.files]

    def identity(self) -> dict:
        return {"kind": "tiles", "tiles_dir": str(self.tiles_dir.resolve()),
                "locations_csv": str(self.locations_csv.resolve()),
                "locations_sha256": sha256_file(self.locations_csv)}

    def load(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        path = self.files[index]
        try:
            tile = load_image(path)
        except ImageError as exc:
            raise DatabaseError(f"tile {index} ({path}): {exc}") from exc
        if tile.shape[0] != tile.shape[1]:
            raise DatabaseError(f"tile {path} is {tile.shape[1]} x {tile.shape[0]} px; satellite tiles must be square "
                                "(centred on the listed location)")
        return to_tensor(polar_transform(tile, *self.sat_size)), thumbnail_of(tile)


class DatasetSource:
    """The satellite side of a dataset split (``geoapp.data.datasets.build_dataset``)."""

    def __init__(self, name: str, root: str | Path, split: str, config):
        from ..data.datasets import build_dataset
        from ..data.records import read_rgb

        self._read_rgb = read_rgb
        self.name, self.split = name, split
        self.dataset = build_dataset(name, root, split, fov_deg=config.fov_deg, train=False,
                                     ground_size=(config.ground_height, None),
                                     sat_size=(config.sat_height, config.sat_width), satellite_only=True)
        self.latlon = np.asarray(self.dataset.satellite_locations, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def paths(self) -> list[str]:
        return [str(r.satellite_path) for r in self.dataset.records]

    def identity(self) -> dict:
        # the split file(s) named in the records' "file:line" / "file, entry n" sources
        files = sorted({re.sub(r"(:\d+|, entry \d+)$", "", r.source) for r in self.dataset.records})
        return {"kind": "dataset", "dataset": self.name, "split": self.split,
                "root": str(self.dataset.root.resolve()),
                "split_files": {f: sha256_file(f) for f in files if Path(f).is_file()}}

    def load(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        polar = self.dataset.load_polar(index)
        tile = self._read_rgb(self.dataset.records[index].satellite_path)
        thumb = thumbnail_of(tile) if tile is not None else np.zeros((THUMBNAIL_SIZE, THUMBNAIL_SIZE, 3), np.uint8)
        return to_tensor(polar), thumb


def is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


class _Loader(torch.utils.data.Dataset):
    def __init__(self, source):
        self.source = source

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        return self.source.load(i)


class Limited:
    """``limit`` references of a source: its first ones, or (``spread``) evenly spread over it."""

    def __init__(self, source, limit: int, spread: bool = False):
        self.source, self.limit, self.spread = source, min(limit, len(source)), spread
        self.rows = spread_rows(len(source), self.limit) if spread else np.arange(self.limit)
        self.latlon = np.asarray(source.latlon)[self.rows]

    def __len__(self):
        return len(self.rows)

    @property
    def paths(self):
        paths = self.source.paths
        return [paths[i] for i in self.rows]

    def identity(self):
        return {**self.source.identity(), "limit": self.limit, **({"spread": True} if self.spread else {})}

    def load(self, index):
        return self.source.load(int(self.rows[index]))


class ConcatSource:
    """Several sources one after another (indices of the first come first), e.g. a split and its distractors."""

    def __init__(self, sources):
        self.sources = list(sources)
        if not self.sources:
            raise ValueError("ConcatSource needs at least one source")
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])
        self.latlon = np.concatenate([np.asarray(s.latlon, dtype=np.float64) for s in self.sources])

    def __len__(self):
        return int(self.offsets[-1])

    @property
    def paths(self):
        return [p for s in self.sources for p in s.paths]

    def identity(self):
        return {"kind": "concat", "parts": [s.identity() for s in self.sources]}

    def load(self, index):
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.sources[part].load(index - int(self.offsets[part]))


class StoredReferences:
    """References of a built database standing in for the network's maps of a source's references: ``rows[i]`` is
    the database row of source reference i, -1 where it holds none. Only a database of float16 maps
    (:attr:`~geoapp.retrieval.codes.StoreKind.float16_maps`) of the same checkpoint and the same tiles holds what
    encoding them again would give (up to the network's last bits, which depend on the batch a tile ran in)."""

    def __init__(self, db: ReferenceDatabase, rows):
        self.db, self.rows = db, np.asarray(rows, dtype=np.int64)

    def load(self, start: int, stop: int) -> tuple[StageMaps, np.ndarray]:
        """The stored maps and thumbnails of source references ``start:stop`` (all held)."""
        rows = self.rows[start:stop]
        maps = self.db.gather(rows)
        features = [f.decoded() if isinstance(f, DeferredMaps) else f for f in maps.features]
        thumbs = np.stack([self.db.thumbnail(int(r)) for r in rows])
        return StageMaps(features, maps.masks, None, maps.gates, None), thumbs


def build_database(source, checkpoint: str | Path | LoadedCheckpoint, out: str | Path,
                   chunk_size: int = DEFAULT_CHUNK, batch_size: int = 32, device: str = "auto", workers: int = 0,
                   first_stage_dims: int = DEFAULT_DIMS, overwrite: bool = False, limit: int | None = None,
                   show_progress: bool = True, on_chunk_done=None, store: str | StoreKind = DEFAULT_STORE,
                   stored: StoredReferences | None = None) -> Path:
    """Encode every reference of ``source`` with the checkpoint's satellite branch and write the database
    (``store``: a :class:`StoreKind` or its name, :data:`~geoapp.retrieval.codes.STORES`). ``checkpoint``: its
    path (loaded here on ``device``) or a :class:`LoadedCheckpoint` (used as it is, on its own device). ``stored``:
    references another database holds, copied from it instead of encoded (``limit`` must then be None)."""
    loaded = LoadedCheckpoint.of(checkpoint, device)
    if limit is not None and stored is not None:
        raise ValueError("build_database: a limit and stored references together; the stored rows name the whole "
                         "source's references, so limit the source itself (Limited)")
    if limit is not None:
        source = Limited(source, limit)
    identity = source.identity()
    # everything that changes the stored bytes; a partial build is resumed only with the same plan
    plan = {"checkpoint_sha256": loaded.sha256, "source": identity, "batch_size": batch_size,
            "device": loaded.device.type, "first_stage_dims": first_stage_dims}
    writer = DatabaseWriter(out, loaded.config, plan, len(source), chunk_size, overwrite, store=store)
    writer.write_paths(source.paths)
    writer.write_extra("latlon", np.asarray(source.latlon, dtype=np.float64))
    done_before = len(source) - sum(len(range(*writer.chunk_range(c))) for c in writer.pending_chunks())
    with tqdm(total=len(source), initial=done_before, unit="tile", desc="satellite branch",
              disable=not show_progress) as bar:
        run_chunks(writer, satellite_encoder(source, loaded, batch_size, workers, stored), bar, on_chunk_done)
    first_stage = write_first_stage(writer, loaded, first_stage_dims, show_progress) if first_stage_dims > 0 else None
    config, path = loaded.config, loaded.path
    return writer.finish({
        "checkpoint": {"sha256": loaded.sha256, "path": str(path), "name": path.name,
                       "model_config": config.to_dict(), "created": loaded.meta.get("created")},
        "source": identity,
        "first_stage": first_stage,
        "build_device": loaded.device.type,
        "batch_size": batch_size,
    })


def satellite_encoder(source, loaded: LoadedCheckpoint, batch_size: int, workers: int,
                      stored: StoredReferences | None = None):
    """``encode(start, stop)`` for :func:`~geoapp.retrieval.database_writer.run_chunks`: the satellite branch's maps
    (float16, on the CPU) and the thumbnails of the references ``start:stop`` of ``source``; those ``stored`` holds
    are copied from there."""

    @torch.inference_mode()
    def network(start: int, stop: int) -> tuple[StageMaps, np.ndarray]:
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(_Loader(source), range(start, stop)),
                                             batch_size=batch_size, num_workers=workers)
        parts, thumbs = [], []
        for polar, thumb in loader:  # float16 at once: halves the memory early
            parts.append(loaded.model.encode_satellite(polar.to(loaded.device)).to("cpu", torch.float16))
            thumbs.append(np.asarray(thumb, dtype=np.uint8))
        return StageMaps.cat(parts), np.concatenate(thumbs)

    if stored is None:
        return network

    def encode(start: int, stop: int) -> tuple[StageMaps, np.ndarray]:
        held = stored.rows[start:stop] >= 0
        edges = [0, *(np.flatnonzero(np.diff(held)) + 1).tolist(), stop - start]
        parts, thumbs = [], []
        for a, b in zip(edges[:-1], edges[1:]):  # runs of references held and not held
            maps, thumb = (stored.load if held[a] else network)(start + a, start + b)
            parts.append(stored_part(maps, loaded.config))
            thumbs.append(thumb)
        return StageMaps.cat(parts), np.concatenate(thumbs)

    return encode


def stored_part(maps: StageMaps, config) -> StageMaps:
    """The maps a database stores of ``maps`` (the used stages' features, the window stages' gates, the masks),
    the others empty: what a database's rows and the network's output have in common."""
    n = len(maps)
    features = [f if s in config.stages else torch.empty((n, 0, 0, 0), dtype=f.dtype)
                for s, f in enumerate(maps.features, 1)]
    gates = None if maps.gates is None else [g if s in gate_stages(config) else torch.empty((n, 0, 0), dtype=g.dtype)
                                             for s, g in enumerate(maps.gates, 1)]
    return StageMaps(features, maps.masks, None, gates, None)


def write_first_stage(writer: DatabaseWriter, loaded: LoadedCheckpoint, dims: int, show_progress: bool) -> dict:
    """The two-stage search's first stage of the written maps (unless a resumed build has it) and the FAISS index
    for the checkpoint's FoV, so a two-stage app starts without building it; returns its metadata record."""
    config = loaded.config
    if "first_stage" not in writer.state["stages_done"]:
        with tqdm(total=writer.n, unit="tile", desc="first-stage descriptors", disable=not show_progress) as bar:
            arrays = compute_first_stage(writer.read_maps, writer.n, config, dims, progress=bar)
        for name, array in arrays.items():
            writer.write_extra(name, array)
        first = FirstStageIndex(config, *(arrays[f"first_stage_{k}"] for k in ("projection", "blocks", "energy")))
        with torch.inference_mode():
            dummy = loaded.model.encode_ground(torch.zeros(1, 3, config.ground_height, config.ground_width,
                                                           device=loaded.device))
        n_blocks = first.query_vector(dummy.to("cpu"))[1]
        with atomic_path(writer.partial / f"first_stage_faiss_n{n_blocks}.index") as tmp:
            first.save_faiss_index(n_blocks, tmp)
        writer.mark_stage_done("first_stage")
    return {"dims_per_block": dims, "orientations": num_orientations(config),
            "description": "PCA block projections; see geoapp.retrieval.index"}
