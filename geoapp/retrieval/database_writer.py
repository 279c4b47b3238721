"""Writing a reference database (its layout is :mod:`geoapp.retrieval.database`): chunk by chunk into
``<out>.partial/``, resumable, renamed into place when complete.

A build records its finished chunks in ``build_state.json``; a rerun with the same inputs continues where it stopped
(and produces the same bytes as an uninterrupted build). The directory is renamed to ``<out>`` only when
everything, ``metadata.json`` last, is written.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_path, atomic_write_bytes, atomic_write_json, fsync_dir
from ..model import ModelConfig, StageMaps
from ..model.align import column_energy, gate_energy
from ..provenance import code_revision, command_line
from .codes import FP16, StoreKind, encode_thumbnail, store_kind
from .database import (
    DEFAULT_CHUNK,
    FORMAT,
    FORMAT_VERSION,
    METADATA_NAME,
    PATHS_NAME,
    STATE_NAME,
    THUMBNAIL_JPEG_NAME,
    THUMBNAIL_OFFSETS,
    THUMBNAIL_SIZE,
    DatabaseError,
    array_layout,
    gate_stages,
    stage_maps_of,
)


class DatabaseWriter:
    """Writes a database into ``<out>.partial/`` chunk by chunk; :meth:`finish` renames it to ``<out>``.

    ``plan`` identifies the build (checkpoint, source, size, layout): a partial directory is only resumed by a
    build with the same plan. ``store``: a :class:`~geoapp.retrieval.codes.StoreKind` or its name (``fp16``,
    ``int8``, ``int4``, ``compact``; :data:`~geoapp.retrieval.codes.STORES`).
    """

    def __init__(self, out: str | os.PathLike, config: ModelConfig, plan: dict, num_references: int,
                 chunk_size: int = DEFAULT_CHUNK, overwrite: bool = False, store: str | StoreKind = FP16):
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.config = config
        self.n = int(num_references)
        self.chunk_size = int(chunk_size)
        self.store = store_kind(store)
        self.layout = array_layout(config, self.store)
        if self.n < 1:
            raise DatabaseError("the source lists no references; nothing to build")
        if self.out.exists() and not overwrite:
            raise DatabaseError(f"{self.out} already exists; pass --overwrite to replace it or choose another --out")
        self.plan = {**plan, "store": self.store.name, "num_references": self.n, "chunk_size": self.chunk_size,
                     "layout": {k: [list(s), d] for k, (s, d) in self.layout.items()}}
        self.state = self._open_state()
        self._create_arrays()
        self._clock = time.perf_counter()

    @property
    def num_chunks(self) -> int:
        return -(-self.n // self.chunk_size)

    def chunk_range(self, chunk: int) -> tuple[int, int]:
        return chunk * self.chunk_size, min(self.n, (chunk + 1) * self.chunk_size)

    def _open_state(self) -> dict:
        state_path = self.partial / STATE_NAME
        if state_path.is_file():
            state = json.loads(state_path.read_text(encoding="utf-8"))
            if state["plan"] != self.plan:
                differing = sorted(k for k in set(state["plan"]) | set(self.plan)
                                   if state["plan"].get(k) != self.plan.get(k))
                raise DatabaseError(
                    f"{self.partial} holds an unfinished build of different inputs (differs in {differing}); "
                    "delete it, or rerun the command that started it"
                )
            state["sessions"] += 1
            return state
        if self.partial.exists():
            shutil.rmtree(self.partial)  # no state record: nothing in it can be trusted
        self.partial.mkdir(parents=True)
        state = {"plan": self.plan, "done_chunks": [], "stages_done": [], "build_seconds": 0.0, "sessions": 1}
        atomic_write_json(state_path, state)
        return state

    def _create_arrays(self) -> None:
        for name, (shape, dtype) in self.layout.items():
            file = self.partial / f"{name}.npy"
            if not file.is_file():  # a resumed build keeps the chunks it has
                np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=(self.n, *shape))

    def _map_arrays(self, mode: str) -> dict[str, np.ndarray]:
        """The stored arrays mapped for one call: their pages leave the process with the maps. Maps held for the
        whole build kept every page written or read resident: the build's RSS grew with the database in file pages,
        while its anonymous memory stayed flat."""
        # copy-on-write ("c") maps are writable, so torch.from_numpy takes them without a copy or a warning
        return {name: np.lib.format.open_memmap(self.partial / f"{name}.npy", mode=mode) for name in self.layout}

    def save_state(self) -> None:
        now = time.perf_counter()
        self.state["build_seconds"] += now - self._clock  # summed over sessions when a build is resumed
        self._clock = now
        atomic_write_json(self.partial / STATE_NAME, self.state)

    def pending_chunks(self) -> list[int]:
        done = set(self.state["done_chunks"])
        return [c for c in range(self.num_chunks) if c not in done]

    def write_chunk(self, chunk: int, maps: StageMaps, thumbnails: np.ndarray) -> None:
        """Store a chunk's network outputs, flush them to disk, then record the chunk as done (in this order, so
        a crash at any point leaves either a recorded complete chunk or one that is simply redone)."""
        start, stop = self.chunk_range(chunk)
        if len(maps) != stop - start or len(thumbnails) != stop - start:
            raise ValueError(f"chunk {chunk} needs {stop - start} references, got {len(maps)} maps")
        arrays = self._map_arrays("r+")
        for name, values in stored_arrays(self.config, maps, store=self.store).items():
            arrays[name][start:stop] = values
        if "thumbnails" in arrays:
            arrays["thumbnails"][start:stop] = thumbnails
        else:  # JPEGs of this chunk, joined into one file by finish()
            jpegs = [encode_thumbnail(t) for t in thumbnails]
            self._thumbnail_chunks.mkdir(exist_ok=True)
            atomic_write_bytes(self._thumbnail_chunks / f"{chunk}.bin", b"".join(jpegs))
            with atomic_path(self._thumbnail_chunks / f"{chunk}.lengths.npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, np.array([len(j) for j in jpegs], dtype=np.int64), allow_pickle=False)
        for a in arrays.values():
            a.flush()
        del arrays
        self.state["done_chunks"] = sorted(set(self.state["done_chunks"]) | {chunk})
        self.save_state()

    def read_maps(self, start: int, stop: int) -> StageMaps:
        """Written references as float16 ``StageMaps`` (decoded; for the first-stage pass)."""
        return stage_maps_of(self._map_arrays("c"), slice(start, stop), store=self.store)

    @property
    def _thumbnail_chunks(self) -> Path:
        return self.partial / "thumbnail_chunks"

    def _join_thumbnails(self) -> None:
        """The chunks' JPEGs into ``thumbnails.jpg.bin`` with their offsets (a crash after the join, before the
        metadata, leaves the joined files; a rerun keeps them)."""
        if not self._thumbnail_chunks.is_dir():
            return
        lengths = [np.load(self._thumbnail_chunks / f"{c}.lengths.npy") for c in range(self.num_chunks)]
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
        with atomic_path(self.partial / THUMBNAIL_JPEG_NAME) as tmp:
            with open(tmp, "wb") as fh:
                for c in range(self.num_chunks):
                    fh.write((self._thumbnail_chunks / f"{c}.bin").read_bytes())
        self.write_extra(THUMBNAIL_OFFSETS, offsets)
        shutil.rmtree(self._thumbnail_chunks)

    def write_extra(self, name: str, array: np.ndarray) -> None:
        """A whole array computed after the chunks (latlon, first-stage descriptors), written atomically."""
        with atomic_path(self.partial / f"{name}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(array), allow_pickle=False)

    def write_paths(self, paths: Iterable[str]) -> None:
        paths = [str(p) for p in paths]
        bad = [p for p in paths if "\n" in p or "\r" in p]
        if bad:
            raise DatabaseError(f"tile paths may not contain line breaks: {bad[0]!r}")
        atomic_write_bytes(self.partial / PATHS_NAME, "\n".join(paths).encode("utf-8"))

    def mark_stage_done(self, stage: str) -> None:
        self.state["stages_done"] = sorted(set(self.state["stages_done"]) | {stage})
        self.save_state()

    def finish(self, metadata: dict) -> Path:
        """Write ``metadata.json`` (``metadata`` with the format, the layout and every file's size) and move the
        directory to ``<out>``."""
        self._join_thumbnails()
        files = self._seal_files()
        build_seconds = self.state["build_seconds"] + time.perf_counter() - self._clock
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "store": self.store.name,
            **metadata,
            "num_references": self.n,
            "layout": {
                **self.store.describe(self.config.use_ca),
                "stages": list(self.config.stages),
                "sat_size": [self.config.sat_height, self.config.sat_width],
                "thumbnail_size": THUMBNAIL_SIZE,
                "chunk_size": self.chunk_size,
                "bytes_per_reference": sum(i["bytes"] for i in files.values()) / self.n,
            },
            "files": files,
            "command": command_line(),
            "code_revision": code_revision(),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(build_seconds, 3),
            "build_sessions": self.state["sessions"],
        }
        atomic_write_json(self.partial / METADATA_NAME, meta)
        os.chmod(self.partial / METADATA_NAME, 0o644)
        fsync_dir(self.partial)
        self._move_into_place()
        return self.out

    def _seal_files(self) -> dict[str, dict]:
        """Every written file flushed to disk and made world-readable; its size (and an array's dtype and shape) by
        name, as the metadata records them."""
        files = {}
        for file in sorted(self.partial.iterdir()):
            if file.name in (STATE_NAME, METADATA_NAME):
                continue
            info = {"bytes": file.stat().st_size}
            if file.suffix == ".npy":
                arr = np.load(file, mmap_mode="r")
                info.update(dtype=str(arr.dtype), shape=list(arr.shape))
                del arr
            with open(file, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(file, 0o644)  # atomic writes create 0600 files; a database is meant to be shared read-only
            files[file.name] = info
        return files

    def _move_into_place(self) -> None:
        """Rename the finished ``<out>.partial`` to ``<out>`` (replacing an old database only once the new one is
        complete), then drop its build state."""
        if self.out.exists():  # --overwrite: move the old one aside first so a crash never leaves neither
            old = self.out.with_name(self.out.name + f".old-{os.getpid()}")
            os.replace(self.out, old)
            os.replace(self.partial, self.out)
            shutil.rmtree(old)
        else:
            os.replace(self.partial, self.out)
        fsync_dir(self.out.parent)
        # only now: a crash before the rename leaves a resumable partial build, never an unrecorded one
        (self.out / STATE_NAME).unlink()


def stored_arrays(config: ModelConfig, maps: StageMaps, attention_dtype=torch.float16,
                  store: str | StoreKind = FP16) -> dict[str, np.ndarray]:
    """What a database stores of ``maps`` (every array of :func:`~geoapp.retrieval.database.array_layout` but the
    thumbnails), on the CPU, as ``store`` keeps them (:mod:`geoapp.retrieval.codes`): float16 column-major features
    or their codes and scales, masks and gates in ``attention_dtype`` or their codes, and float32 energies computed
    from the stored (decoded) values with the alignment's own functions, so that they equal what it would compute
    itself."""
    store = store_kind(store)
    out = {}
    for s in config.stages:
        cols = maps.features[s - 1].permute(0, 3, 1, 2).to("cpu", torch.float16).contiguous()  # N x W x C x H
        if torch.isinf(cols).any():  # a map fp16 cannot hold would rank as NaN distances, silently
            raise DatabaseError(f"stage {s} features exceed the float16 range (|x| > 65504); they cannot be stored")
        try:
            arrays, cols = store.encode_stage(cols, s)
        except ValueError as exc:
            raise DatabaseError(f"stage {s}: {exc}") from exc
        out.update(arrays)
        out[f"col_energy_{s}"] = column_energy(cols.permute(0, 2, 3, 1)).numpy()
    if config.use_ca:
        for s in (1, 2, 3, 4):
            out[f"masks_{s}"] = store.encode_masks(maps.masks[s - 1].to("cpu"), attention_dtype)
        for s in gate_stages(config):
            arrays, stored = store.encode_gates(maps.gates[s - 1].to("cpu"), s, attention_dtype)
            out.update(arrays)
            out[f"gate_energy_{s}"] = gate_energy(stored).numpy()
    return out


def run_chunks(
    writer: DatabaseWriter,
    encode: Callable[[int, int], tuple[StageMaps, np.ndarray]],
    progress=None,
    on_chunk_done: Callable[[int], None] | None = None,
) -> None:
    """Encode and store every chunk not yet done. ``encode(start, stop)`` returns the chunk's maps and
    thumbnails; ``on_chunk_done(chunk)`` runs after each recorded chunk (tests interrupt builds with it)."""
    for chunk in writer.pending_chunks():
        start, stop = writer.chunk_range(chunk)
        maps, thumbs = encode(start, stop)
        writer.write_chunk(chunk, maps, thumbs)
        if progress is not None:
            progress.update(stop - start)
        if on_chunk_done is not None:
            on_chunk_done(chunk)
