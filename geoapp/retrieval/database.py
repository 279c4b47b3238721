"""The reference database: the satellite branch's stage maps of every reference tile, memory-mapped.

Layout of a database directory (all arrays are ``.npy`` files, so any NumPy can read them)::

    metadata.json                 provenance, the checkpoint it belongs to, and every file's dtype/shape/bytes
    features_<b>.npy              float16, R x W_b x C_b x H_b  (b = the model's used stages)
    col_energy_<b>.npy            float32, R x W_b: per column, the sum of the squared stored features (the window
                                  alignment's normaliser; precomputed so a search never reads whole maps)
    masks_<b>.npy                 float16, R x H_b x W_b        (b = 1..4; only for models with attention masks)
    gates_<b>.npy                 float16, R x C_b x W_b        (b = the stages that choose windows, gate_stages: the
                                  window stage of a shared-window model; the CA column gates that the
                                  ``gate-corr`` alignment correlates; only for models with attention)
    gate_energy_<b>.npy           float32, R x W_b: per column, the channel sum of the squared, centred stored gates
                                  (``gate-corr``'s window normaliser, precomputed like the column energies)
    latlon.npy                    float64, R x 2 (tile centre; nan when unknown)
    thumbnails.npy                uint8,   R x 96 x 96 x 3 (RGB, the square tile resized)
    paths.txt                     one tile path per line
    first_stage_*.npy             the two-stage search's compact descriptors (see geoapp.retrieval.index)

Why column-major features (R x W x C x H): the window alignment only reads the ``w_b`` window columns of each
reference; with the column axis outermost a window is one contiguous run of ``w_b * C_b * H_b`` values.
:meth:`ReferenceDatabase.slice` returns the ``StageMaps`` view (N x C x H x W) as ``permute(0, 2, 3, 1)`` of the
memory map, which costs nothing, and ``geoapp.model.align`` undoes the permutation for free.

Store kinds (``metadata.json`` ``store``; ``build_db --store``): ``fp16`` is the layout above; ``int8``, ``int4``
and ``compact`` (:mod:`geoapp.retrieval.codes`) hold the features as 8-bit, 4-bit or (``compact``) 2-bit codes for
blocks 1-3 and 4-bit codes for block 4 (uint8, R x W_b x C_b*H_b*bits/8: each column's codes packed) with
``feature_scale_<b>.npy`` (float16, R x C_b: one step per reference and channel), the masks as uint8 codes, the gates
as uint8 codes with ``gate_scale_<b>.npy`` (float16, R x C_b x 2: low, step), and the thumbnails as JPEGs
(``thumbnails.jpg.bin``, one after another, and ``thumbnail_offsets.npy``, int64 R + 1). The reader decodes a chunk
when the search reads it; the energies are those of the decoded values, so the search is exact with respect to the
decoded store.

Writing one is :mod:`geoapp.retrieval.database_writer` (resumable, renamed into place when complete); this module
holds the layout, the reader and the checks that a database fits a checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..model import ModelConfig, StageMaps
from ..model.resnet import stage_channels
from .codes import (
    FP16,
    STORE_KINDS,
    STORES,
    THUMBNAIL_JPEG_NAME,
    THUMBNAIL_OFFSETS,
    CodedStage,
    GatheredStage,
    StoreKind,
    decode_thumbnail,
    packed_size,
    store_kind,
)

FORMAT = "geoapp-reference-db"
FORMAT_VERSION = 2  # 2: the store kind (fp16, int8, int4) in metadata.json
METADATA_NAME = "metadata.json"
STATE_NAME = "build_state.json"
PATHS_NAME = "paths.txt"
THUMBNAIL_SIZE = 96
DEFAULT_CHUNK = 512
STAGE_STRIDES = (4, 8, 16, 32)  # ResNet18 stage outputs are the input size divided by these

# model-config fields that decide what the satellite branch stores; fov_deg, align_mode and heading_stage only
# matter on the ground side / at matching time, so a database serves any FoV
STORAGE_CONFIG_FIELDS = ("use_ca", "ca_reduction", "stages", "sat_height", "sat_width", "base_channels",
                         "wrap_satellite", "arch", "version")


# what a search reads (a GPU preloads them)
SEARCHED_ARRAYS = ("features_", "masks_", "gates_", "gate_energy_", "col_energy_", "feature_scale_", "gate_scale_")


class DatabaseError(ValueError):
    """A reference database that cannot be used as asked, with the reason and what to do."""


def stage_shape(config: ModelConfig, stage: int) -> tuple[int, int, int]:
    """(C, H, W) of the satellite map of ``stage`` (1-based) for this model's polar size (conventions §1)."""
    stride = STAGE_STRIDES[stage - 1]
    return stage_channels(config.base_channels)[stage - 1], config.sat_height // stride, config.sat_width // stride


def array_layout(config: ModelConfig, store: str | StoreKind = FP16) -> dict[str, tuple[tuple[int, ...], str]]:
    """Per-reference shape and dtype of every array written chunk by chunk (the first axis, R, is added by the
    writer); a store of JPEG thumbnails writes them separately (see the module docstring)."""
    store = store_kind(store)
    attention = store.attention_dtype
    layout: dict[str, tuple[tuple[int, ...], str]] = {}
    for s in config.stages:
        c, h, w = stage_shape(config, s)
        bits = store.bits(s)
        if bits is None:
            layout[f"features_{s}"] = ((w, c, h), "float16")
        else:
            layout[f"features_{s}"] = ((w, packed_size(c * h, bits)), "uint8")  # a column's C x H codes
            layout[f"feature_scale_{s}"] = ((c,), "float16")
        layout[f"col_energy_{s}"] = ((w,), "float32")
    if config.use_ca:
        for s in (1, 2, 3, 4):  # all four: the masks are small and the app displays one of them
            _, h, w = stage_shape(config, s)
            layout[f"masks_{s}"] = ((h, w), attention)
        for s in gate_stages(config):
            c, _, w = stage_shape(config, s)
            layout[f"gates_{s}"] = ((c, w), attention)
            if store.coded_attention:
                layout[f"gate_scale_{s}"] = ((c, 2), "float16")
            layout[f"gate_energy_{s}"] = ((w,), "float32")
    if not store.jpeg_thumbnails:
        layout["thumbnails"] = ((THUMBNAIL_SIZE, THUMBNAIL_SIZE, 3), "uint8")
    return layout


def gate_stages(config: ModelConfig) -> tuple[int, ...]:
    """The stages whose CA column gates a search reads: the window stage of a shared-window model (the others'
    gates choose nothing), else every used stage; none without attention."""
    if not config.use_ca:
        return ()
    return config.stages if config.window_stage is None else (config.window_stage,)


def storage_config(config: ModelConfig | dict) -> dict:
    d = config.to_dict() if isinstance(config, ModelConfig) else dict(config)
    defaults = ModelConfig().to_dict()  # fields added later keep their default meaning in older records
    return {k: d.get(k, defaults[k]) for k in STORAGE_CONFIG_FIELDS}


def _short(sha: str | None) -> str:
    return (sha or "unknown")[:12]


# ------------------------------------------------------------------------------------------------- reading


class ReferenceDatabase:
    """A built database opened read-only through memory maps; a *gallery* for ``geoapp.retrieval.search``.

    Opening reads only ``metadata.json`` and maps the files, so it takes well under a second whatever the size;
    pages are read when a search touches them.
    """

    def __init__(self, path: Path, metadata: dict, arrays: dict[str, np.ndarray], device: torch.device):
        self.path = path
        self.metadata = metadata
        self._arrays = arrays
        self.device = device
        self.config = ModelConfig.from_dict(metadata["checkpoint"]["model_config"])
        self.store = store_kind(metadata.get("store", FP16.name))
        self.latlon = arrays["latlon"]
        self._paths: list[str] | None = None
        self._search_arrays = arrays

    # ---------------------------------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        checkpoint_sha: str | None = None,
        model_config: ModelConfig | dict | None = None,
        device: str | torch.device = "cpu",
        preload: bool | None = None,
    ) -> ReferenceDatabase:
        """Open the database at ``path``; with ``checkpoint_sha``/``model_config`` also check that it was built
        with that checkpoint (a database only makes sense with the satellite branch that produced it).
        ``preload``: hold the searched arrays on the device (default: on a GPU when they take at most half of its
        free memory; on the CPU the memory maps are used directly)."""
        path = Path(path)
        metadata = read_database_metadata(path)
        check_database_matches(path, metadata, checkpoint_sha, model_config)
        arrays = {}
        for name, info in metadata["files"].items():
            if name == THUMBNAIL_JPEG_NAME:  # the JPEG thumbnails, one after another
                arrays[THUMBNAIL_JPEG_NAME] = np.memmap(path / name, dtype=np.uint8, mode="r")
            if not name.endswith(".npy"):
                continue
            # mode "c" (copy-on-write) gives writable arrays, so torch.from_numpy neither copies nor warns;
            # nothing here ever writes to them, so no page is ever copied
            array = np.load(path / name, mmap_mode="c", allow_pickle=False)
            if array.shape != tuple(info["shape"]):
                raise DatabaseError(f"{path / name} holds shape {array.shape}, {METADATA_NAME} says "
                                    f"{tuple(info['shape'])}; the database is inconsistent, rebuild it")
            arrays[name.removesuffix(".npy")] = array
        db = cls(path, metadata, arrays, torch.device(device))
        if preload is None and db.device.type == "cuda":
            preload = db.search_bytes() <= torch.cuda.mem_get_info(db.device)[0] // 2
        if preload:
            db.preload()
        return db

    # ----------------------------------------------------------------------------------- the gallery API
    def __len__(self) -> int:
        return int(self.metadata["num_references"])

    def _stage_maps(self, select) -> StageMaps:
        return stage_maps_of(self._search_arrays, select, self.device, self.store)

    def preload(self) -> None:
        """Copy what the search reads (features, masks, column energies) onto the device once, so a GPU search
        does not copy the whole gallery host-to-device on every query."""
        self._search_arrays = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) if (
            k.startswith(SEARCHED_ARRAYS)) else v for k, v in self._arrays.items()}

    def search_bytes(self) -> int:
        return sum(v.nbytes for k, v in self._arrays.items() if k.startswith(SEARCHED_ARRAYS))

    def slice(self, start: int, stop: int) -> StageMaps:
        """References ``start:stop`` as float16 ``StageMaps`` on the database's device (no copy on the CPU for an
        fp16 store; a quantized store's features are decoded where the search reads them)."""
        return self._stage_maps(slice(start, stop))

    def gather(self, indices) -> StageMaps:
        """The references at ``indices`` (copied; read in ascending order is fastest)."""
        return self._stage_maps(np.asarray(indices, dtype=np.int64))

    # ------------------------------------------------------------------------------------- per reference
    @property
    def paths(self) -> list[str]:
        if self._paths is None:
            self._paths = (self.path / PATHS_NAME).read_text(encoding="utf-8").split("\n")[: len(self)]
        return self._paths

    def thumbnail(self, index: int) -> np.ndarray:
        """The tile as a 96 x 96 x 3 uint8 RGB image."""
        if THUMBNAIL_JPEG_NAME in self._arrays:
            offsets = self._arrays[THUMBNAIL_OFFSETS]
            return decode_thumbnail(self._arrays[THUMBNAIL_JPEG_NAME][int(offsets[index]): int(offsets[index + 1])])
        return np.array(self._arrays["thumbnails"][index])

    def mask(self, index: int, stage: int) -> np.ndarray | None:
        """The attention mask of ``stage`` (H_b x W_b float32, polar layout), None for models without masks."""
        key = f"masks_{stage}"
        return np.asarray(self.array(key)[index], dtype=np.float32) if key in self._arrays else None

    def mask_array(self, stage: int) -> np.ndarray:
        """All references' masks of ``stage`` (R x H_b x W_b float16: the memory map of an fp16 store, decoded
        into memory from a quantized one)."""
        masks = self.array(f"masks_{stage}")
        return masks if isinstance(masks, np.ndarray) else np.asarray(masks)

    def array(self, name: str) -> np.ndarray:
        """A stored array by name (e.g. ``first_stage_blocks``); KeyError when the database has none. The gates and
        masks of a quantized store read as their decoded float16 values (decoding only the rows indexed)."""
        if name.startswith(("gates_", "masks_")):
            return self.store.decoded_rows(name, self._arrays)
        return self._arrays[name]

    def has(self, name: str) -> bool:
        return name in self._arrays

    @property
    def checkpoint_sha(self) -> str:
        return self.metadata["checkpoint"]["sha256"]

    def describe(self) -> str:
        src = self.metadata["source"]
        if src.get("kind") == "dataset":
            what = f"{src.get('dataset')}/{src.get('split')}"
        else:
            what = f"{src.get('kind')} {src.get('tiles_dir', '')}".strip()
        return f"{what}, {len(self):,} references"


def _tensor(array, select, device) -> torch.Tensor:
    if isinstance(array, torch.Tensor):  # preloaded onto the device
        return array[torch.as_tensor(select, device=array.device) if isinstance(select, np.ndarray) else select]
    return torch.from_numpy(array[select]).to(device)


def stage_maps_of(arrays: dict, select, device: torch.device | str = "cpu", store: str | StoreKind = FP16
                  ) -> StageMaps:
    """StageMaps (N x C x H x W views of the column-major store) of the references ``select`` (a slice: views
    without copying; an index array: a copy). ``arrays`` hold memory maps or tensors preloaded on ``device``. A
    store of coded features (:mod:`geoapp.retrieval.codes`) gives :class:`~geoapp.retrieval.codes.CodedStage`
    features, decoded where they are read; coded masks and gates are decoded."""
    store = store_kind(store)
    feats, energy, masks = [], [], None
    for s in (1, 2, 3, 4):
        a, e = arrays.get(f"features_{s}"), arrays.get(f"col_energy_{s}")
        scale = arrays.get(f"feature_scale_{s}")
        if (a is not None and isinstance(select, np.ndarray) and not isinstance(a, torch.Tensor)
                and torch.device(device).type == "cpu"):
            # gathered references (a re-rank's candidates): read from the mapped store where the search reads them
            whole = (torch.from_numpy(a) if store.bits(s) is None else
                     CodedStage(torch.from_numpy(a), torch.from_numpy(scale), store.bits(s)))
            feats.append(GatheredStage(whole, torch.as_tensor(select, dtype=torch.long)))
        elif a is not None:
            feats.append(store.stage_features(_tensor(a, select, device),
                                              None if scale is None else _tensor(scale, select, device), s))
        else:
            feats.append(None)
        energy.append(None if e is None else _tensor(e, select, device))
    n = next(f.shape[0] for f in feats if f is not None)
    # stages the model does not use are not stored; empty placeholders keep len() and indexing valid
    feats = [torch.empty((n, 0, 0, 0), dtype=torch.float16, device=device) if f is None else f for f in feats]
    energy = [torch.empty((n, 0), device=device) if e is None else e for e in energy]
    if "masks_1" in arrays:
        masks = [store.read_masks(_tensor(arrays[f"masks_{s}"], select, device)) for s in (1, 2, 3, 4)]

    def gates_of(s):
        scale = arrays.get(f"gate_scale_{s}")
        return store.read_gates(_tensor(arrays[f"gates_{s}"], select, device),
                                None if scale is None else _tensor(scale, select, device))

    gates = gate_e = None
    if any(f"gates_{s}" in arrays for s in (1, 2, 3, 4)):
        gates = [gates_of(s) if f"gates_{s}" in arrays else
                 torch.empty((n, 0, 0), dtype=torch.float16, device=device) for s in (1, 2, 3, 4)]
    if any(f"gate_energy_{s}" in arrays for s in (1, 2, 3, 4)):
        gate_e = [_tensor(arrays[f"gate_energy_{s}"], select, device) if f"gate_energy_{s}" in arrays else
                  torch.empty((n, 0), device=device) for s in (1, 2, 3, 4)]
    return StageMaps(feats, masks, energy, gates, gate_e)


def read_database_metadata(path: Path) -> dict:
    """``metadata.json`` of a database, after checking that every listed file is complete."""
    meta_path = path / METADATA_NAME
    if not path.is_dir():
        partial = path.with_name(path.name + ".partial")
        hint = f"; an unfinished build is at {partial}: rerun the same build_db command to finish it" if (
            partial.is_dir()) else "; build one with `python -m geoapp.build_db`"
        raise DatabaseError(f"no reference database at {path}{hint}")
    if not meta_path.is_file():
        raise DatabaseError(
            f"{path} has no {METADATA_NAME}: it is not a finished geoapp reference database (a build writes the "
            "metadata record last, so the build was interrupted or the directory is something else); rebuild it"
        )
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatabaseError(f"{meta_path} is not a readable JSON record ({exc}); rebuild the database") from exc
    if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
        raise DatabaseError(
            f"{path}: unsupported database format {metadata.get('format')!r} version "
            f"{metadata.get('format_version')} (this code reads {FORMAT!r} version {FORMAT_VERSION}); rebuild it "
            "with this version: `python -m geoapp.build_db --checkpoint CKPT ... --out PATH --overwrite`"
        )
    store = metadata.get("store")
    if store not in STORES:
        raise DatabaseError(f"{meta_path} records an unknown store kind {store!r} (this code reads {STORE_KINDS}); "
                            "rebuild the database with `python -m geoapp.build_db`")
    if not isinstance(metadata.get("files"), dict) or "checkpoint" not in metadata:
        raise DatabaseError(f"{meta_path} lacks the files/checkpoint records; rebuild the database")
    for name, info in metadata["files"].items():
        file = path / name
        if not file.is_file():
            raise DatabaseError(f"{file} is missing (listed in {METADATA_NAME}); the database is incomplete")
        size = file.stat().st_size
        if size != info["bytes"]:
            state = "truncated" if size < info["bytes"] else "larger than recorded"
            raise DatabaseError(
                f"{file} is {size:,} bytes but {METADATA_NAME} records {info['bytes']:,}: the file is {state} "
                "(an interrupted copy or a full disk?); copy it again or rebuild the database"
            )
    return metadata


def check_database_matches(
    path: Path, metadata: dict, checkpoint_sha: str | None, model_config: ModelConfig | dict | None
) -> None:
    """Refuse a database built with another checkpoint or a model that stores different maps."""
    built = metadata["checkpoint"]
    problems = []
    if checkpoint_sha is not None and checkpoint_sha != built["sha256"]:
        problems.append(f"the app loaded checkpoint {_short(checkpoint_sha)}")
    if model_config is not None:
        mine, theirs = storage_config(model_config), storage_config(built["model_config"])
        diff = [f"{k}: database {theirs[k]!r} vs app {mine[k]!r}"
                for k in STORAGE_CONFIG_FIELDS if mine[k] != theirs[k]]
        if diff:
            problems.append("model configs differ (" + "; ".join(diff) + ")")
        elif isinstance(model_config, ModelConfig):
            stored = sorted(int(n[len("gates_"):-len(".npy")]) for n in metadata.get("files", {})
                            if n.startswith("gates_") and n.endswith(".npy"))
            missing = sorted(set(gate_stages(model_config)) - set(stored))
            if missing:
                problems.append(f"the app's model chooses windows from the gates of stage(s) {missing}, which the "
                                f"database does not store (it has gates of stage(s) {stored}: it was built for a "
                                "shared-window model)")
    if problems:
        raise DatabaseError(
            f"database {path} was built with checkpoint {_short(built['sha256'])} ({built.get('name')}, config "
            f"{storage_config(built['model_config'])}), but " + " and ".join(problems)
            + ". Its features only fit the satellite branch that made them: rebuild the database with "
            "`python -m geoapp.build_db --checkpoint <the app's checkpoint> ...`"
        )


# ------------------------------------------------------------------------------------------------- writing
