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
synthetic world (e.g. 82% vs 73% at M = 100 of 1,000 with a briefly trained model), at twice the FAISS scan.
"""

from __future__ import annotations

import math
import re

import faiss
import numpy as np
import torch

from ..model import ModelConfig, StageMaps
from .search import TopK, topk_matches, topk_per_subset

DEFAULT_DIMS = 32  # per block; 4 blocks at 90 deg -> 128-dim FAISS vectors
FIT_VECTORS = 1024  # block vectors sampled to fit the PCA basis (evenly spaced references); the Gram matrix costs
# FIT_VECTORS^2 x 30,720 multiply-adds (2 s on a 2-core CPU), and 32 components need no more samples
SQ_TRAIN_VECTORS = 65536


FIRST_STAGE_ORIENTATIONS = 16  # 22.5 deg steps (see num_orientations)


def num_orientations(config: ModelConfig) -> int:
    """First-stage orientations: 16 (22.5 deg steps) when the stage widths allow it, else one per stage-4 column.

    One per stage-4 column was 45 deg steps for the 64 x 256 demo model, and the first stage then lost the true
    tile far too often (synthetic test set + 5,000 distractors, M = 500: 95.3 % kept, R@10 3.6 points below
    exhaustive); with 16 orientations (block 4 left out of the first stage) 99.6 % are kept and R@10 equals
    exhaustive. A 128 x 512 model has 16 stage-4 columns already.
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

    def __init__(self, config: ModelConfig, projection: np.ndarray, blocks: np.ndarray, energy: np.ndarray):
        self.config = config
        self.widths = block_widths(config, np.shape(blocks)[1])  # the orientations are the stored blocks'
        self.projection = torch.as_tensor(np.asarray(projection, dtype=np.float32))
        self.blocks = np.ascontiguousarray(blocks, dtype=np.float16)  # R x O x D, read into RAM
        self.energy = np.ascontiguousarray(energy, dtype=np.float32)
        self.num_refs, self.orientations, self.dims = self.blocks.shape
        self._indexes: dict[int, faiss.Index] = {}
        self._index_files: dict[int, object] = {}

    @classmethod
    def from_database(cls, db) -> FirstStageIndex:
        if not db.has("first_stage_blocks"):
            raise ValueError(f"database {db.path} has no first-stage descriptors (built with --first-stage-dims 0); "
                             "rebuild it to use the two-stage mode")
        index = cls(db.config, db.array("first_stage_projection"), db.array("first_stage_blocks"),
                    db.array("first_stage_energy"))
        # FAISS indexes the build saved (the checkpoint's FoV): loading one takes a second where building it
        # takes ~10 s per million references
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

    def faiss_index(self, n_blocks: int, chunk: int = 65536) -> faiss.Index:
        """The index for queries of ``n_blocks`` blocks (8-bit scalar quantiser, exhaustive inner product)."""
        if n_blocks not in self._indexes and n_blocks in self._index_files:
            self._indexes[n_blocks] = faiss.read_index(str(self._index_files[n_blocks]))
        if n_blocks not in self._indexes:
            index = faiss.IndexScalarQuantizer(n_blocks * self.dims, faiss.ScalarQuantizer.QT_8bit,
                                               faiss.METRIC_INNER_PRODUCT)
            n_train = min(self.num_refs, max(1, SQ_TRAIN_VECTORS // self.orientations))
            index.train(self.window_vectors(np.linspace(0, self.num_refs - 1, n_train).round().astype(int), n_blocks))
            for start in range(0, self.num_refs, chunk):
                index.add(self.window_vectors(slice(start, min(self.num_refs, start + chunk)), n_blocks))
            self._indexes[n_blocks] = index
        return self._indexes[n_blocks]

    def query_vector(self, ground: StageMaps) -> tuple[np.ndarray, int]:
        """Q x (n D) float32 query vectors and the block count ``n`` of the ground maps."""
        n = query_blocks_count(ground, self.widths)
        q = block_vectors(ground, self.widths, n) @ self.projection.T  # Q x n x D
        return q.reshape(q.shape[0], -1).numpy().astype(np.float32), n

    def search(self, ground: StageMaps, m: int) -> list[np.ndarray]:
        """Per query, the ``m`` references with the highest first-stage score (max over orientations)."""
        queries, n = self.query_vector(ground)
        index = self.faiss_index(n)
        total = self.num_refs * self.orientations
        m = min(m, self.num_refs)
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

    @property
    def ram_bytes(self) -> int:
        """Bytes held in RAM: stored blocks and energies plus every FAISS index built so far."""
        faiss_bytes = sum(i.ntotal * i.sa_code_size() for i in self._indexes.values())
        return self.blocks.nbytes + self.energy.nbytes + self.projection.numel() * 4 + faiss_bytes


def two_stage_topk(config: ModelConfig, ground: StageMaps, gallery, first_stage: FirstStageIndex, k: int = 10,
                   rerank: int = 500, chunk_size: int = 512) -> TopK:
    """Top-k per query: first-stage candidates (``rerank`` per query), re-ranked with the exact alignment.

    Candidates are re-ranked in ascending gallery order, so ties resolve to the lower gallery index as in the
    exhaustive search; with ``rerank >= len(gallery)`` the result equals ``topk_matches`` on the whole gallery.
    """
    candidates = [np.sort(cand) for cand in first_stage.search(ground, rerank)]
    return topk_per_subset(ground, gallery, candidates,
                           lambda g, sub: topk_matches(config, g, sub, k, chunk_size))
