"""The two-stage search's first stage in Milvus, for galleries whose first stage outgrows one machine's RAM.

The optional extra ``pip install 'geoapp[milvus]'`` brings ``pymilvus`` (the client) and ``milvus-lite`` (the engine
embedded in this process, for a local ``*.db`` file); the same client talks to a Milvus server at
``http(s)://host:port``. Nothing here imports them before it is used, so the package works without the extra.

Collection layout: one row per (reference, orientation), as the FAISS index of ``geoapp.retrieval.index`` holds
them: ``id`` (INT64 primary key, ``ref * O + orientation``: re-sending a chunk replaces its rows, so an upload can be
resumed), ``ref`` (INT64), ``orientation`` (INT32) and ``vector`` (FLOAT_VECTOR, ``n D`` dims, inner product): the
window vector ``FirstStageIndex.window_vectors`` makes for the checkpoint's query block count ``n``. The vectors
are exact float32 (a FLAT index by default) where the in-RAM index stores 8-bit codes, so the two rank references
alike up to that quantisation.

Ownership: the collection's property ``geoapp.first_stage`` holds a JSON record of the database it was made from
(its path, a fingerprint of its first stage, the checkpoint's sha256, the reference count, ``n``). Opening a
collection for a database whose record differs is refused with both named, so a Localizer never re-ranks the
candidates of another database.

Queries of another block count than the collection's (a photo of another FoV than the checkpoint's) are answered by
the database's own in-RAM first stage, which builds its FAISS index on first use (logged once per block count).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..model import StageMaps
from .index import FirstStageIndex

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'geoapp[milvus]'"
TOKEN_ENV = "GEOAPP_MILVUS_TOKEN"  # "user:password" or an API key, for a server with authentication
RECORD_KEY = "geoapp.first_stage"
RECORD_FORMAT = "geoapp-first-stage"
RECORD_VERSION = 1
# what must agree between a collection's record and the database it is opened for
OWNER_FIELDS = ("format", "version", "fingerprint", "checkpoint_sha256", "references")
MAX_TOPK = 16384  # Milvus's largest search limit ("topk")
REQUEST_BYTES = 32 << 20  # one upsert request: half of Milvus's 64 MB limit on an insert
# index build params and search params per index type: FLAT is exact; IVF_FLAT scans nprobe of nlist clusters
INDEX_TYPES = {"FLAT": ({}, {}), "IVF_FLAT": ({"nlist": 1024}, {"nprobe": 64})}
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")  # Milvus's rule for collection names
FAISS_INDEX_FILE = re.compile(r"first_stage_faiss_n(\d+)\.index")  # saved by build_database (geoapp.retrieval.build)
IDENTITY_FIELDS = ("checkpoint", "source", "num_references", "store", "first_stage")  # of metadata.json


class VectorEngineError(ValueError):
    """A vector engine or collection that cannot serve as asked, with the reason and what to do."""


@contextlib.contextmanager
def milvus_errors(what: str):
    """Turn the client's exceptions into a VectorEngineError that says what was being done."""
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except MilvusException as exc:
        raise VectorEngineError(f"{what}: {exc}") from exc


def is_lite(uri: str) -> bool:
    return "://" not in uri and uri.endswith(".db")


def connect(uri: str | os.PathLike, create: bool = False):
    """A ``pymilvus.MilvusClient`` for ``uri``: a Milvus Lite file (``*.db``, run inside this process; made when
    ``create``) or a server ``http(s)://host:port`` (token from GEOAPP_MILVUS_TOKEN when the server asks for one)."""
    uri = str(uri)
    if not (is_lite(uri) or re.fullmatch(r"https?://[^/\s]+/?", uri)):
        raise VectorEngineError(f"a vector engine is a Milvus Lite file ending in .db or a Milvus server "
                                f"http(s)://host:port, got {uri!r}")
    try:
        from pymilvus import MilvusClient

        if is_lite(uri):
            import milvus_lite  # noqa: F401  (pymilvus starts it for a .db path; a missing one is said here)
    except ImportError as exc:
        raise VectorEngineError(f"the Milvus vector engine needs the package {exc.name or 'pymilvus'}: "
                                f"{INSTALL_HINT}") from exc
    if is_lite(uri):
        if create:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        elif not Path(uri).exists():
            raise VectorEngineError(f"no Milvus Lite file {uri}: upload the database's first stage to it first "
                                    "(python -m geoapp.build_db ... --upload-only --vector-engine URI)")
    # Milvus Lite only logs why it could not open a file; the likely reason is its lock
    hint = " (a Milvus Lite file serves one process at a time: does another process use it?)" if is_lite(uri) else ""
    with milvus_errors(f"cannot connect to Milvus at {uri}{hint}"):
        return MilvusClient(uri=uri, token=os.environ.get(TOKEN_ENV, ""))


def check_collection_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise VectorEngineError(f"collection name {name!r}: Milvus allows letters, digits and _ (not first a digit), "
                                "at most 255 characters")
    return name


def default_collection(database_path: str | os.PathLike) -> str:
    """``geoapp_<database folder name>``, with every character Milvus does not allow in a name replaced by ``_``."""
    return "geoapp_" + re.sub(r"[^A-Za-z0-9_]", "_", Path(database_path).resolve().name)[:240]


def checkpoint_blocks(db) -> int:
    """The query block count ``n`` of the checkpoint's FoV: the one whose FAISS index the build saved (it encoded a
    query of that FoV to find it)."""
    counts = sorted({int(m.group(1)) for name in db.metadata["files"] if (m := FAISS_INDEX_FILE.fullmatch(name))})
    if len(counts) != 1:
        raise VectorEngineError(f"database {db.path} records {len(counts)} first-stage FAISS indexes "
                                f"({counts}), so the checkpoint's query block count is unknown; pass n_blocks")
    return counts[0]


def database_record(db, n_blocks: int | None = None) -> dict:
    """What ties a collection to ``db``: its path, reference count, checkpoint and a fingerprint of its first stage.

    The fingerprint hashes the database's identity in its metadata (checkpoint, source, size, store, first-stage
    settings) and the bytes of its PCA projection and block energies (64 bytes per reference, read from the memory
    map): a rebuild from other tiles or another checkpoint changes it, a bit-identical rebuild does not.
    """
    digest = hashlib.sha256(json.dumps({k: db.metadata.get(k) for k in IDENTITY_FIELDS}, sort_keys=True).encode())
    for name in ("first_stage_projection", "first_stage_energy"):
        digest.update(np.ascontiguousarray(db.array(name)).data)
    record = {"format": RECORD_FORMAT, "version": RECORD_VERSION, "database": str(Path(db.path).resolve()),
              "fingerprint": digest.hexdigest(),
              "checkpoint_sha256": db.checkpoint_sha, "references": len(db)}
    return record if n_blocks is None else {**record, "n_blocks": int(n_blocks)}


def describe_record(record: dict | None) -> str:
    if record is None:
        return "no geoapp first stage (no geoapp.first_stage record)"
    return (f"database {record.get('database')} (fingerprint {str(record.get('fingerprint'))[:12]}, checkpoint "
            f"{str(record.get('checkpoint_sha256'))[:12]}, {record.get('references')} references)")


def held_record(client, collection: str) -> dict | None:
    """The record stored with ``collection``, None when it has none (not made by geoapp)."""
    properties = client.describe_collection(collection).get("properties") or {}
    text = properties.get(RECORD_KEY)
    return json.loads(text) if text else None


def differences(held: dict | None, wanted: dict, fields) -> list[str]:
    return [k for k in fields if held is None or held.get(k) != wanted.get(k)]


def row_count(client, collection: str) -> int:
    return int(client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"])


# ------------------------------------------------------------------------------------------------- upload


def create_collection(client, collection: str, record: dict) -> None:
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                        description=f"geoapp first stage of {record['database']}")
    schema.add_field("id", DataType.INT64, is_primary=True)  # ref * orientations + orientation
    schema.add_field("ref", DataType.INT64)
    schema.add_field("orientation", DataType.INT32)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=record["dims"])
    index = MilvusClient.prepare_index_params()
    index.add_index(field_name="vector", index_type=record["index_type"], metric_type="IP",
                    params=INDEX_TYPES[record["index_type"]][0])
    client.create_collection(collection, schema=schema, properties={RECORD_KEY: json.dumps(record, sort_keys=True)})
    # an index on an empty collection is built at once: not waiting for it spares the client's polling (0.5 s
    # sleeps; Milvus Lite also lacks the timestamp call it starts with)
    client.create_index(collection, index, sync=False)
    client.load_collection(collection)


def prepare_collection(client, collection: str, record: dict, replace: bool) -> None:
    """Make ``collection`` for ``record``, or keep the one there when it holds (part of) the same upload, so an
    interrupted upload resumes; one of another database (or other settings) is dropped only when ``replace``."""
    if client.has_collection(collection):
        held = held_record(client, collection)
        differ = differences(held, record, (*OWNER_FIELDS, "n_blocks", "dims", "index_type"))
        if not differ and not replace:
            client.load_collection(collection)
            return
        if not replace:
            raise VectorEngineError(f"collection {collection!r} holds {describe_record(held)}, not the first stage of "
                                    f"{describe_record(record)} (differing: {', '.join(differ)}); replace it "
                                    "(build_db --overwrite) or choose another --collection")
        client.drop_collection(collection)
    create_collection(client, collection, record)


def window_rows(first: FirstStageIndex, n_blocks: int, start: int, stop: int) -> list[dict]:
    """The rows of references ``start:stop``: their window vectors for ``n_blocks`` query blocks."""
    o = first.orientations
    vectors = first.window_vectors(slice(start, stop), n_blocks)
    return [{"id": start * o + i, "ref": start + i // o, "orientation": i % o, "vector": v}
            for i, v in enumerate(vectors)]


def refs_per_request(first: FirstStageIndex, dims: int) -> int:
    row_bytes = dims * 4 + 8 + 8 + 4  # vector, id, ref, orientation
    return max(1, REQUEST_BYTES // (first.orientations * row_bytes))


def upload_first_stage(client, collection: str, first: FirstStageIndex, record: dict, replace: bool = False,
                       index_type: str = "FLAT", progress: bool = True) -> int:
    """Write ``first``'s window vectors for ``record["n_blocks"]`` query blocks into ``collection`` (made, resumed
    or, with ``replace``, remade: :func:`prepare_collection`); returns the rows sent, 0 when it was complete."""
    if index_type not in INDEX_TYPES:
        raise VectorEngineError(f"index type must be one of {list(INDEX_TYPES)}, got {index_type!r}")
    n, o = int(record["n_blocks"]), first.orientations
    record = {"format": RECORD_FORMAT, "version": RECORD_VERSION, **record, "orientations": o,
              "dims": n * first.dims, "index_type": index_type}
    sent, step = 0, refs_per_request(first, record["dims"])
    with milvus_errors(f"uploading the first stage to collection {collection!r}"):
        prepare_collection(client, collection, record, replace)
        with tqdm(total=first.num_refs, unit="ref", desc=f"upload to {collection}", disable=not progress) as bar:
            for start in range(0, first.num_refs, step):
                stop = min(first.num_refs, start + step)
                # a request is stored whole or not at all, so both end rows present = the chunk is there
                ends = [start * o, stop * o - 1]
                if len(client.query(collection, ids=ends, output_fields=["id"])) < 2:
                    client.upsert(collection, window_rows(first, n, start, stop))
                    sent += (stop - start) * o
                bar.update(stop - start)
        # seal what was written: a server then indexes it, and Milvus Lite searches sealed rows faster than its
        # memtable (docs/vector-engine.md)
        client.flush(collection)
        rows = row_count(client, collection)
    if rows != first.num_refs * o:
        raise VectorEngineError(f"collection {collection!r} holds {rows} rows after the upload, expected "
                                f"{first.num_refs} references x {o} orientations = {first.num_refs * o}; upload it "
                                "again with replace (build_db --overwrite)")
    return sent


def upload_database(db, uri: str, collection: str | None = None, replace: bool = False, index_type: str = "FLAT",
                    n_blocks: int | None = None, progress: bool = True) -> tuple[str, int]:
    """Upload ``db``'s first stage (for the checkpoint's query block count unless ``n_blocks``) to the Milvus at
    ``uri``; returns the collection's name (default: :func:`default_collection`) and the rows sent."""
    first = FirstStageIndex.from_database(db)  # memory-mapped: each chunk is read when it is sent
    name = check_collection_name(collection or default_collection(db.path))
    record = database_record(db, n_blocks or checkpoint_blocks(db))
    client = connect(uri, create=True)
    try:
        return name, upload_first_stage(client, name, first, record, replace, index_type, progress)
    finally:
        client.close()


# ------------------------------------------------------------------------------------------------- search


def distinct_in_order(refs: np.ndarray) -> np.ndarray:
    """The distinct values of ``refs`` in the order of their first occurrence (each reference's best hit)."""
    values, first = np.unique(refs, return_index=True)
    return values[np.argsort(first, kind="stable")]


class MilvusFirstStage:
    """The first stage served by a Milvus collection, with FirstStageIndex's ``search`` and ``ram_bytes`` (what
    ``two_stage_topk`` and the Localizer use). ``local`` is the database's own first stage: it makes the query
    vectors, and answers queries of a block count the collection does not hold."""

    def __init__(self, client, collection: str, local: FirstStageIndex, record: dict):
        self.client, self.collection, self.local, self.record = client, collection, local, record
        self.n_blocks = int(record["n_blocks"])
        self.num_refs, self.orientations = local.num_refs, local.orientations
        self.max_topk = MAX_TOPK
        self.search_params = {"metric_type": "IP", "params": INDEX_TYPES[record.get("index_type", "FLAT")][1]}
        self.local_block_counts: set[int] = set()  # query block counts answered by ``local``

    @classmethod
    def open(cls, db, uri: str, collection: str | None = None) -> MilvusFirstStage:
        """The collection ``collection`` (default: :func:`default_collection`) at ``uri``, checked to hold all of
        ``db``'s first stage."""
        local = FirstStageIndex.from_database(db)
        name = check_collection_name(collection or default_collection(db.path))
        client = connect(uri)
        wanted = database_record(db)
        with milvus_errors(f"opening collection {name!r} at {uri}"):
            if not client.has_collection(name):
                raise VectorEngineError(f"no collection {name!r} at {uri}: upload the first stage of {db.path} with "
                                        f"python -m geoapp.build_db ... --upload-only --vector-engine {uri} "
                                        f"--collection {name}")
            held = held_record(client, name)
            differ = differences(held, wanted, OWNER_FIELDS)
            if differ:
                raise VectorEngineError(f"collection {name!r} at {uri} holds {describe_record(held)}, not the first "
                                        f"stage of {describe_record(wanted)} (differing: {', '.join(differ)}); "
                                        "upload this database's first stage (build_db --upload-only "
                                        "--vector-engine) or name its collection with --collection")
            client.load_collection(name)
            rows, expected = row_count(client, name), held["references"] * held["orientations"]
        if rows != expected:
            raise VectorEngineError(f"collection {name!r} at {uri} holds {rows} of {expected} rows (an interrupted "
                                    "upload?): run the upload again, it resumes")
        log.info("first stage: Milvus collection %r at %s (%s references, %s-block queries)", name, uri,
                 held["references"], held["n_blocks"])
        return cls(client, name, local, held)

    def search(self, ground: StageMaps, m: int) -> list[np.ndarray]:
        """Per query, the ``m`` references with the highest first-stage score (max over orientations)."""
        queries, n = self.local.query_vector(ground)
        if n != self.n_blocks:
            if n not in self.local_block_counts:
                log.warning("a %d-block query (another FoV than the checkpoint's %d blocks): the Milvus collection "
                            "holds %d-block windows only, so the database's in-RAM first stage answers it",
                            n, self.n_blocks, self.n_blocks)
                self.local_block_counts.add(n)
            return self.local.search(ground, m)
        m = min(m, self.num_refs)
        if m > self.max_topk:
            raise VectorEngineError(f"Milvus returns at most {self.max_topk} candidates per query, asked for {m} "
                                    "(--rerank)")
        return [self.top_references(q, m) for q in queries]

    def top_references(self, query: np.ndarray, m: int) -> np.ndarray:
        """The ``m`` best distinct references: plain searches, widened until they hold ``m`` distinct references (a
        reference appears once per orientation that scores well), as FirstStageIndex.search does; where Milvus's
        topk limit comes first (``m`` over limit / orientations), one search grouped by reference."""
        total = self.num_refs * self.orientations
        k = min(total, 4 * m, self.max_topk)
        while True:
            refs = distinct_in_order(self.hit_ids(query, k) // self.orientations)
            if len(refs) >= m or k == total:
                return refs[:m]
            if k == self.max_topk:
                return self.hit_ids(query, m, group_by_field="ref") // self.orientations
            k = min(total, 4 * k, self.max_topk)

    def hit_ids(self, query: np.ndarray, limit: int, **options) -> np.ndarray:
        with milvus_errors(f"searching collection {self.collection!r}"):
            hits = self.client.search(self.collection, data=[query.tolist()], limit=limit, anns_field="vector",
                                      search_params=self.search_params, **options)[0]
        return np.asarray(hits.ids, dtype=np.int64)

    @property
    def ram_bytes(self) -> int:
        """Bytes this process holds: the PCA projection, plus the in-RAM first stage once another block count used
        it (the vectors themselves live in Milvus)."""
        if self.local_block_counts:
            return self.local.ram_bytes
        return self.local.projection.numel() * 4


def engine_search_mode(search: str, vector_engine: str | None, collection: str | None) -> str:
    """The search mode to ask ``choose_search`` for: a vector engine serves the two-stage search, so giving one takes
    that search whatever the database's size; it does not go with ``exhaustive``, and ``collection`` needs it."""
    if vector_engine is None:
        if collection is not None:
            raise VectorEngineError(f"--collection {collection} names a collection of a vector engine; give "
                                    "--vector-engine too")
        return search
    if search == "exhaustive":
        raise VectorEngineError("a vector engine serves the two-stage search's first stage; it does not go with "
                                "the exhaustive search (--search two-stage or auto)")
    return "two-stage"


def first_stage_for(db, vector_engine: str | None = None, collection: str | None = None):
    """The two-stage search's first stage for ``db``: the in-RAM FAISS one, or the Milvus collection at
    ``vector_engine``."""
    if vector_engine is None:
        return FirstStageIndex.from_database(db)
    return MilvusFirstStage.open(db, vector_engine, collection)
