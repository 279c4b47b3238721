"""The options of a search, one copy for the engine, the command line and the app: the search modes and the size
from which ``auto`` takes the two-stage search, the projections and photos of a query, the references aligned per
chunk, and the flags that choose them. Plain Python (no torch), so ``--help`` answers at once."""

from __future__ import annotations

import argparse

SEARCH_MODES = ("auto", "exhaustive", "two-stage")
# From this many references ``auto`` takes the two-stage search: it is measured faster from a few thousand references
# on and lost no answer at the benchmark's largest real gallery (docs/results.md, "Search benchmarks"); below it the
# exhaustive search is as fast and exact by construction.
TWO_STAGE_FROM = 5000
PROJECTIONS = ("auto", "pinhole", "crop")
MAX_VIEWS = 6  # photos in one multi-photo query
TOP_K_RANGE = (1, 50)  # candidates a query may ask for
# distinct places (geoapp.retrieval.places): the distances in metres a request may give (0: off, every tile)
DISTINCT_RANGE_M = (0.0, 10_000.0)
# References aligned per chunk by a one-photo search. The attention modes pay each chunk's per-operation costs once per
# 2,048 references: the chunk sweep found larger chunks faster up to about this size and little gained beyond it,
# while the scratch memory grows with the chunk. The feature mode correlates every offset over a float32 copy of the
# chunk's maps (1 MB per full-size reference), and larger chunks were slower for it, so it keeps 512
# (docs/results.md, "python -m geoapp.bench search: latency").
SEARCH_CHUNKS = {"attention": 2048, "features": 512}


def search_chunk(mode) -> int:
    """References per alignment chunk of a one-photo search with a model of alignment ``mode`` (its
    :class:`~geoapp.model.AlignMode`, asked here and not imported, so that this module stays free of torch)."""
    return SEARCH_CHUNKS["attention" if mode.is_fca else "features"]


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """How a photo is matched against the database (``geoapp.localize`` and the app take the same flags)."""
    p.add_argument("--search", choices=SEARCH_MODES, default="auto",
                   help="exhaustive (every reference aligned exactly), two-stage (a FAISS first stage, then the exact "
                   f"alignment of --rerank candidates) or auto: two-stage from {TWO_STAGE_FROM:,} references on, where "
                   "it is faster and lost no answer in our measurements (default %(default)s)")
    p.add_argument("--rerank", type=int, default=500, metavar="M",
                   help="two-stage: candidates the first stage passes on (default %(default)s)")
    # -- the first stage in Milvus (geoapp.retrieval.vector_engine; docs/vector-engine.md)
    p.add_argument("--vector-engine", metavar="URI",
                   help="two-stage with the first stage in Milvus: a Milvus Lite file (.db) or http(s)://host:port, "
                        "uploaded with build_db --vector-engine (needs pip install 'geoapp[milvus]')")
    p.add_argument("--collection", metavar="NAME",
                   help="--vector-engine: the database's collection (default: geoapp_<database folder name>)")
