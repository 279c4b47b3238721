"""Two-stage search for large galleries: a compact first stage in RAM (FAISS), then exact re-ranking.

Exhaustive alignment reads the window columns of every reference (about 250 kB of the ~1 MB stored per
reference), which does not scale to millions of tiles. The first stage approximates the alignment score with a
few hundred bytes per reference; the exact mask-based alignment (``geoapp.retrieval.search.topk_matches``, the
same code as the exhaustive search) then re-ranks the first stage's top ``M`` read from the memory-mapped store.

First-stage descriptor ("block projections")
---------------------------------------------
The satellite polar map is cut into ``O = 16`` vertical *blocks* (22.5 deg each; one per stage-4 column for a
512-wide polar image, two for the 256-wide demo model, whose block 4 then stays out of the first stage; see
``num_orientations``): block ``j`` holds columns ``[j m_b, (j+1) m_b)`` of every used stage ``b``, with
``m_b = W_b / O`` (8, 4, 2, 1 at full size). A block vector (all channels and rows of those columns, 30,720 values
is projected by a PCA basis ``P`` (``D`` x 30,720, uncentred, so inner products are preserved as well as ``D``
dimensions allow) fitted on the database's own blocks. Per reference we keep the ``O x D`` block projections
(float16) and the ``O`` exact block energies ``|x_j|^2``.

A ground query of ``n`` blocks (``n = ceil(w_b / m_b)``, 4 at 90 deg; its last block zero-padded) projects the same
way to ``q_0..q_{n-1}``. The window of the reference at orientation ``j`` (stage-4 offset ``j``, i.e. offsets
``j m_b`` at every stage) then scores::

    s_j = sum_k <q_k, B_{(j+k) mod O}> / sqrt(sum_k e_{(j+k) mod O})  ~  cos(ground, window at j) * |ground|

which is linear in the stored blocks, so for a given ``n`` every (reference, orientation) becomes one FAISS vector
``concat_k B_{(j+k) mod O} / sqrt(E_j)`` of ``n D`` dims (128 for 90 deg with ``D = 32``) and the query is
``concat_k q_k``: an inner-product search over ``R x O`` vectors gives ``max_j s_j`` per reference after grouping
the hits by reference. The blocks do not depend on the FoV; the FAISS index for a block count ``n`` is built
when a query first needs it (8-bit scalar quantiser: ``n D`` bytes per orientation, 2 kB per reference at 90 deg
with 16 orientations). ``D = 32`` kept clearly more true tiles than ``D = 16`` in the first stage's top M on the
synthetic world, at twice the FAISS scan.

Large galleries (above ``COMPRESSED_ABOVE`` references) use a compressed, partitioned FAISS index instead
(``IVF<lists>,SQ4``: 4-bit scalar quantiser, inverted lists of which ``nprobe`` are scanned, see
``compressed_lists``); its ``REFINE_FACTOR x M`` best window hits give candidate references whose first-stage score
is then recomputed exactly (float32) from the stored blocks, so the ``M`` kept are ordered as the flat index would
order them. The stored blocks are used as given: a database's memory map stays a memory map.
"""

from __future__ import annotations

import math
import mmap
import re

import faiss
import numpy as np
import torch

from ..model import ModelConfig, StageMaps
from .search import TopK, topk_matches, topk_per_subset

DEFAULT_DIMS = 32  # per block; 4 blocks at 90 deg -> 128-dim FAISS vectors
FIT_VECTORS = 1024  # block vectors sampled to fit the PCA basis (evenly spaced references); the Gram matrix costs
# FIT_VECTORS^2 x 30,720 multiply-adds, and 32 components need no more samples
SQ_TRAIN_VECTORS = 65536
# Above this many references the first stage switches from the exact flat 8-bit index (2 kB per reference, every
# query scans all of it) to the compressed inverted-file index (1 kB + 128 B of ids per reference, a query scans a
# share of its lists): the flat index's time and memory grow with the gallery (2 GB of codes at 1,000,000, over the
# 4 GB process budget once the rest is counted); below this size it is fast enough and exact (docs/results.md,
# "A million references on one machine").
COMPRESSED_ABOVE = 200_000
COMPRESSED_CODE = "SQ4"  # 4-bit scalar quantiser: kept as many true tiles as 8 bits once re-scored exactly
COMPRESSED_MAX_LISTS = 1024  # inverted lists; more would make the build's list assignment slower
COMPRESSED_PROBE_SHARE = 1 / 16  # share of the lists a query scans (64 of 1024)
REFINE_FACTOR = 16  # window hits fetched per kept reference, then re-scored exactly from the stored blocks
COMPRESSED_TRAIN_VECTORS = 262144  # window vectors sampled (evenly spaced references) to train the quantisers
ADD_CHUNK = 8192  # references expanded to float32 window vectors at a time while building (64 MB at 90 deg)


def use_compressed(num_refs: int) -> bool:
    """Whether a first stage of ``num_refs`` references uses the compressed index (see ``COMPRESSED_ABOVE``)."""
    return num_refs > COMPRESSED_ABOVE


def compressed_lists(num_vectors: int) -> tuple[int, int]:
    """Inverted lists and lists probed per query for ``num_vectors`` window vectors: about sqrt(vectors) lists (a
    power of two, 16 to ``COMPRESSED_MAX_LISTS``), of which ``COMPRESSED_PROBE_SHARE`` are scanned."""
    lists = 2 ** round(math.log2(max(1.0, math.sqrt(num_vectors))))
    lists = int(min(COMPRESSED_MAX_LISTS, max(16, lists)))
    return lists, max(1, round(lists * COMPRESSED_PROBE_SHARE))


def is_memory_mapped(array) -> bool:
    """Whether ``array`` is (a view of) a memory map: its pages belong to the OS page cache, not to the process."""
    while array is not None:
        if isinstance(array, (np.memmap, mmap.mmap)):
            return True
        array = getattr(array, "base", None)
    return False


FIRST_STAGE_ORIENTATIONS = 16  # 22.5 deg steps (see num_orientations)


def num_orientations(config: ModelConfig) -> int:
    """First-stage orientations: 16 (22.5 deg steps) when the stage widths allow it, else one per stage-4 column.

    One per stage-4 column was 45 deg steps for the 64 x 256 demo model, and the first stage then lost the true
    tile far too often; with 16 orientations (block 4 left out of the first stage) the two-stage search's R@10
    equals the exhaustive one's (docs/results.md, "two-stage recall"). A 128 x 512 model has 16 stage-4 columns
    already.
    """
    w4, o = config.sat_width // 32, FIRST_STAGE_ORIENTATIONS
    if w4 < o and o % w4 == 0 and any(config.sat_width >> (s + 1) >= o for s in config.stages):
        return o
    return w4  # e.g. a block-4-only model: its only stage has W_4 columns


def block_widths(config: ModelConfig, orientations: int | None = None) -> dict[int, int]:
    """Columns per block at each used stage: ``m_b = W_b / O``. A stage with fewer columns than orientations
    (block 4 when ``O = 2 W_4``) has no place in a block and is left out of the first stage (the exact re-rank
    uses every stage)."""
    o = orientations or num_orientations(config)
    stage_widths = {s: config.sat_width >> (s + 1) for s in config.stages}
    widths = {s: w // o for s, w in stage_widths.items() if w >= o and w % o == 0}
    if not widths:
        raise ValueError(f"{o} first-stage orientations leave no stage of {config.stages} with whole columns per "
                         f"block (stage widths {stage_widths})")
    return widths


def block_vectors(maps: StageMaps, widths: dict[int, int], n_blocks: int) -> torch.Tensor:
    """N x n_blocks x D_x float32 block vectors of ``maps`` (N x C x H x W per stage); maps narrower than
    ``n_blocks * m_b`` columns (ground queries) are zero-padded on the right."""
    parts = []
    for s, m in widths.items():
        f = maps.features[s - 1].float()
        n, c, h, w = f.shape
        if w < n_blocks * m:
            f = torch.nn.functional.pad(f, (0, n_blocks * m - w))
        f = f[..., : n_blocks * m].reshape(n, c, h, n_blocks, m).permute(0, 3, 1, 2, 4)
        parts.append(f.reshape(n, n_blocks, c * h * m))
    return torch.cat(parts, dim=2)


def query_blocks_count(ground: StageMaps, widths: dict[int, int]) -> int:
    return max(math.ceil(ground.features[s - 1].shape[-1] / m) for s, m in widths.items())


def fit_projection(samples: torch.Tensor, dims: int) -> torch.Tensor:
    """Uncentred PCA basis (``dims`` x D_x float32) of ``samples`` (S x D_x), via the S x S Gram matrix (S is about
    a thousand while D_x is ~30,000), solved in float64. Each component's largest entry is made positive so the
    basis does not depend on the eigen-solver's sign choice."""
    x = samples.float()
    values, vectors = torch.linalg.eigh((x @ x.T).double())
    keep = values > values.max() * 1e-10
    values, vectors = values[keep].flip(0)[:dims], vectors[:, keep].flip(1)[:, :dims]
    basis = (x.double().T @ vectors) / values.sqrt()  # D_x x dims, orthonormal columns
    signs = torch.sign(basis.gather(0, basis.abs().argmax(0, keepdim=True)))
    return (basis * signs).T.contiguous().float()


def compute_first_stage(read_maps, n_refs: int, config: ModelConfig, dims: int = DEFAULT_DIMS, chunk: int = 64,
                        progress=None, orientations: int | None = None) -> dict[str, np.ndarray]:
    """The first-stage arrays of a database: ``first_stage_projection`` (D x D_x float32), ``first_stage_blocks``
    (R x O x D float16) and ``first_stage_energy`` (R x O float32). ``read_maps(start, stop)`` returns stored
    references as StageMaps."""
    o = orientations or num_orientations(config)
    widths = block_widths(config, o)
    picks = np.unique(np.linspace(0, n_refs - 1, num=min(n_refs, max(1, FIT_VECTORS // o))).round().astype(int))
    samples = torch.cat([block_vectors(read_maps(int(i), int(i) + 1), widths, o)[0] for i in picks])
    projection = fit_projection(samples, dims)
    blocks = np.zeros((n_refs, o, projection.shape[0]), dtype=np.float16)
    energy = np.zeros((n_refs, o), dtype=np.float32)
    for start in range(0, n_refs, chunk):
        stop = min(n_refs, start + chunk)
        x = block_vectors(read_maps(start, stop), widths, o)
        blocks[start:stop] = (x @ projection.T).to(torch.float16).numpy()
        energy[start:stop] = x.pow(2).sum(-1).numpy()
        if progress is not None:
            progress.update(stop - start)
    return {"first_stage_projection": projection.numpy(), "first_stage_blocks": blocks,
            "first_stage_energy": energy}


class FirstStageIndex:
    """The in-RAM first stage: block projections and energies of every reference, and one FAISS index per query
    block count (built on first use). ``search`` returns candidate reference indices, best first."""

    def __init__(self, config: ModelConfig, projection: np.ndarray, blocks: np.ndarray, energy: np.ndarray,
                 compressed: bool | None = None):
        """``compressed``: use the compressed index (None: when ``use_compressed`` says so for this many
        references). ``blocks`` and ``energy`` are kept as given when they already are contiguous float16 / float32
        (a database's memory maps stay memory maps; nothing is read into RAM until a query or a build touches it)."""
        self.config = config
        self.widths = block_widths(config, np.shape(blocks)[1])  # the orientations are the stored blocks'
        self.projection = torch.as_tensor(np.asarray(projection, dtype=np.float32))
        self.blocks = np.ascontiguousarray(blocks, dtype=np.float16)  # R x O x D; no copy of a float16 memory map
        self.energy = np.ascontiguousarray(energy, dtype=np.float32)
        self.num_refs, self.orientations, self.dims = self.blocks.shape
        self.compressed = use_compressed(self.num_refs) if compressed is None else compressed
        self._indexes: dict[int, faiss.Index] = {}
        self._index_files: dict[int, object] = {}

    @classmethod
    def from_database(cls, db) -> FirstStageIndex:
        if not db.has("first_stage_blocks"):
            raise ValueError(f"database {db.path} has no first-stage descriptors (built with --first-stage-dims 0); "
                             "rebuild it to use the two-stage mode")
        index = cls(db.config, db.array("first_stage_projection"), db.array("first_stage_blocks"),
                    db.array("first_stage_energy"))
        # FAISS indexes the build saved (the checkpoint's FoV): loading one is far quicker than building it
        for name in db.metadata["files"]:
            match = re.fullmatch(r"first_stage_faiss_n(\d+)\.index", name)
            if match:
                index._index_files[int(match.group(1))] = db.path / name
        return index

    def save_faiss_index(self, n_blocks: int, path) -> None:
        faiss.write_index(self.faiss_index(n_blocks), str(path))

    def window_vectors(self, refs, n_blocks: int) -> np.ndarray:
        """FAISS vectors of the references ``refs`` (a slice or index array): (len(refs) * O) x (n_blocks * D)
        float32, row ``r * O + j`` being orientation ``j`` of the r-th reference."""
        o = self.orientations
        cols = (np.arange(o)[:, None] + np.arange(n_blocks)[None, :]) % o  # O x n
        b = self.blocks[refs].astype(np.float32)[:, cols, :]  # r x O x n x D
        e = self.energy[refs][:, cols].sum(-1)  # r x O
        b /= np.sqrt(np.maximum(e, 1e-12))[:, :, None, None]
        return b.reshape(-1, n_blocks * self.dims)

    def faiss_index(self, n_blocks: int, chunk: int = ADD_CHUNK) -> faiss.Index:
        """The index for queries of ``n_blocks`` blocks: exhaustive 8-bit scalar quantiser, or (``compressed``) the
        inverted-file 4-bit one; built ``chunk`` references at a time, its quantisers trained on evenly spaced
        references (deterministic: FAISS seeds its k-means)."""
        if n_blocks not in self._indexes and n_blocks in self._index_files:
            self._indexes[n_blocks] = faiss.read_index(str(self._index_files[n_blocks]))
        if n_blocks not in self._indexes:
            dim = n_blocks * self.dims
            if self.compressed:
                lists = compressed_lists(self.num_refs * self.orientations)[0]
                index = faiss.index_factory(dim, f"IVF{lists},{COMPRESSED_CODE}", faiss.METRIC_INNER_PRODUCT)
                train = COMPRESSED_TRAIN_VECTORS
            else:
                index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
                train = SQ_TRAIN_VECTORS
            n_train = min(self.num_refs, max(1, train // self.orientations))
            index.train(self.window_vectors(np.linspace(0, self.num_refs - 1, n_train).round().astype(int), n_blocks))
            for start in range(0, self.num_refs, chunk):
                index.add(self.window_vectors(slice(start, min(self.num_refs, start + chunk)), n_blocks))
            self._indexes[n_blocks] = index
        return self._indexes[n_blocks]

    def exact_scores(self, refs: np.ndarray, query: np.ndarray) -> np.ndarray:
        """The first-stage score ``max_j s_j`` of the references ``refs`` for one query vector (n D float32),
        computed in float32 from the stored blocks (what the flat index approximates with 8-bit codes)."""
        o, d = self.orientations, self.dims
        q = query.reshape(-1, d)  # n x D
        n = q.shape[0]
        cols = (np.arange(o)[:, None] + np.arange(n)[None, :]) % o  # O x n
        dots = (self.blocks[refs].astype(np.float32).reshape(-1, d) @ q.T).reshape(len(refs), o, n)
        s = dots[:, cols, np.arange(n)[None, :]].sum(-1)  # r x O
        e = self.energy[refs][:, cols].sum(-1)
        return (s / np.sqrt(np.maximum(e, 1e-12))).max(1)

    def query_vector(self, ground: StageMaps) -> tuple[np.ndarray, int]:
        """Q x (n D) float32 query vectors and the block count ``n`` of the ground maps."""
        n = query_blocks_count(ground, self.widths)
        q = block_vectors(ground, self.widths, n) @ self.projection.T  # Q x n x D
        return q.reshape(q.shape[0], -1).numpy().astype(np.float32), n

    def search(self, ground: StageMaps, m: int) -> list[np.ndarray]:
        """Per query, the ``m`` references with the highest first-stage score (max over orientations)."""
        queries, n = self.query_vector(ground)
        return self.search_vectors(queries, n, m)

    def search_vectors(self, queries: np.ndarray, n: int, m: int) -> list[np.ndarray]:
        """``search`` for query vectors of ``n`` blocks already projected (Q x n D float32, see ``query_vector``)."""
        index = self.faiss_index(n)
        total = self.num_refs * self.orientations
        m = min(m, self.num_refs)
        if isinstance(index, faiss.IndexIVF):
            return [self._search_compressed(index, q, m) for q in queries]
        out = []
        for q in queries:
            k = min(total, 4 * m)
            while True:
                _, ids = index.search(q[None], k)
                ids = ids[0][ids[0] >= 0] // self.orientations
                refs, first = np.unique(ids, return_index=True)
                refs = refs[np.argsort(first, kind="stable")]  # keep the order of each reference's best hit
                # a reference appears once per orientation that scores well; widen until m distinct ones
                if len(refs) >= m or k >= total:
                    break
                k = min(total, 4 * k)
            out.append(refs[:m])
        return out

    def _search_compressed(self, index: faiss.IndexIVF, q: np.ndarray, m: int) -> np.ndarray:
        """The ``m`` best references among those of the index's ``REFINE_FACTOR x m`` best window hits, by their
        exact first-stage score (ties: the lower reference first)."""
        index.nprobe = max(1, round(index.nlist * COMPRESSED_PROBE_SHARE))  # also for an index loaded from disk
        _, ids = index.search(q[None], min(index.ntotal, REFINE_FACTOR * m))
        refs = np.unique(ids[0][ids[0] >= 0] // self.orientations)
        scores = self.exact_scores(refs, q)
        return refs[np.argsort(-scores, kind="stable")[:m]]

    @property
    def ram_bytes(self) -> int:
        """Bytes the process holds for the first stage: the blocks and energies unless they are memory-mapped
        (a database's: only the pages a query reads come into the page cache), plus every FAISS index built or
        loaded so far (codes, ids of inverted lists, coarse centroids)."""
        own = sum(a.nbytes for a in (self.blocks, self.energy) if not is_memory_mapped(a))
        return own + self.projection.numel() * 4 + sum(faiss_bytes(i) for i in self._indexes.values())

    @property
    def mapped_bytes(self) -> int:
        """Bytes of the blocks and energies read through memory maps (not counted in ``ram_bytes``)."""
        return sum(a.nbytes for a in (self.blocks, self.energy) if is_memory_mapped(a))


def faiss_bytes(index: faiss.Index) -> int:
    """Bytes a FAISS index holds: codes, plus for an inverted file its ids (8 B per vector) and coarse centroids."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return index.ntotal * index.sa_code_size()
    return ivf.ntotal * (ivf.code_size + 8) + ivf.nlist * ivf.d * 4


def two_stage_topk(config: ModelConfig, ground: StageMaps, gallery, first_stage: FirstStageIndex, k: int = 10,
                   rerank: int = 500, chunk_size: int | None = None) -> TopK:
    """Top-k per query: first-stage candidates (``rerank`` per query), re-ranked with the exact alignment.

    Candidates are re-ranked in ascending gallery order, so ties resolve to the lower gallery index as in the
    exhaustive search; with ``rerank >= len(gallery)`` the result equals ``topk_matches`` on the whole gallery.
    """
    candidates = [np.sort(cand) for cand in first_stage.search(ground, rerank)]
    return topk_per_subset(ground, gallery, candidates,
                           lambda g, sub: topk_matches(config, g, sub, k, chunk_size))
