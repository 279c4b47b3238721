"""Chunked search of ground queries over a satellite gallery with the model's own alignment (conventions §5-7).

One code path for the app, the evaluation and the benchmarks, so their numbers cannot disagree: every
distance comes from :func:`geoapp.model.align_windows`, over the gallery ``chunk_size`` references at a
time, so memory stays bounded (no full Q x R matrix is kept; only running top-k lists or rank counts).

A *gallery* is anything with ``len()`` and ``slice(start, stop) -> StageMaps`` (all four stages, on the
compute device): an in-memory :class:`~geoapp.model.StageMaps` is one, a memory-mapped database another, the
evaluation's float16 store on disk (:class:`geoapp.training.evaluation.SpooledGallery`) a third.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..model import AlignResult, ModelConfig, StageMaps, StageOffsets, match_maps
from ..model.align import WindowDots
from ..search_options import search_chunk
from .window_dots import float64_window_dots, fp16_window_dots


class Gallery(Protocol):
    def __len__(self) -> int: ...

    def slice(self, start: int, stop: int) -> StageMaps: ...


def gallery_chunks(config: ModelConfig, ground: StageMaps, gallery: Gallery, chunk_size: int | None = None,
                   progress=None, window_dots: WindowDots | None = None):
    """Yield ``(start, AlignResult)`` for consecutive chunks of the gallery (Q x chunk pairs each; ``chunk_size``
    references, by default :func:`~geoapp.search_options.search_chunk`'s for the model); ``window_dots``: see
    :func:`geoapp.model.align_windows` and :mod:`geoapp.retrieval.window_dots`."""
    n = len(gallery)
    chunk_size = chunk_size or search_chunk(config.alignment)
    for start in range(0, n, chunk_size):
        maps = gallery.slice(start, min(n, start + chunk_size))
        res = match_maps(config, ground, maps, chunk_size=None, window_dots=window_dots)
        del maps  # freed before the next chunk is read: a device or host holds one chunk at a time
        yield start, res
        if progress is not None:
            progress.update(min(chunk_size, n - start))


@dataclass
class TopK(StageOffsets):
    """The k closest references per query: Q x k distances, gallery indices and per-stage offsets (headings:
    :class:`~geoapp.model.align.StageOffsets`)."""

    distances: torch.Tensor
    indices: torch.Tensor
    offsets: torch.Tensor
    similarity: torch.Tensor
    stages: tuple[int, ...]
    window_widths: tuple[int, ...]
    map_widths: tuple[int, ...]

    def take(self, positions) -> TopK:
        """The entries at ``positions`` (of the k, in that order) of every query, e.g. the distinct places of a
        ranked list (:func:`geoapp.retrieval.places.distinct_places`)."""
        pos = torch.as_tensor(np.asarray(positions, dtype=np.int64))
        return TopK(*(t[:, pos.to(t.device)] for t in (self.distances, self.indices, self.offsets, self.similarity)),
                    self.stages, self.window_widths, self.map_widths)


@torch.no_grad()
def topk_matches(
    config: ModelConfig, ground: StageMaps, gallery: Gallery, k: int = 10, chunk_size: int | None = None,
    progress=None, fast: bool = True,
) -> TopK:
    """Running top-k over gallery chunks (ties: lower gallery index first).

    ``fast`` (an fp16 gallery in a mask alignment mode, e.g. a reference database): one pass with fp16 dot products
    (:func:`~geoapp.retrieval.window_dots.fp16_window_dots`) keeps, per query, every reference whose similarity
    bound reaches the k-th best lower bound, and only those are aligned again exactly (float64 dot products, so a
    distance does not depend on k); the answer is the fp32 path's: the same references in the same order, distances
    equal to float32 rounding. Elsewhere it is the fp32 path itself.
    """
    k = min(k, len(gallery))
    if k < 1:
        raise ValueError("the gallery is empty")
    if not fast:
        return _exact_topk(config, gallery_chunks(config, ground, gallery, chunk_size, progress), k)
    chunks = gallery_chunks(config, ground, gallery, chunk_size, progress, window_dots=fp16_window_dots)
    first = next(chunks)
    if first[1].similarity_error is None:  # not an fp16 gallery, or the feature mode: these are exact already
        return _exact_topk(config, itertools.chain([first], chunks), k)
    pools = _candidate_pools(itertools.chain([first], chunks), k)
    return _exact_topk_of_pools(config, ground, gallery, pools, k, chunk_size)


def _candidate_pools(chunks, k: int) -> list[torch.Tensor]:
    """Per query, the gallery indices (ascending) that can be in the exact top-k, from fp16 chunk results."""
    pools = lows = highs = None
    for start, res in chunks:
        if pools is None:
            q = res.similarity.shape[0]
            empty = torch.empty(0, device=res.similarity.device)
            pools, lows, highs = [empty.long()] * q, [empty] * q, [empty] * q
        n = res.similarity.shape[1]
        idx = torch.arange(start, start + n, device=res.similarity.device)
        lo_all = res.similarity - res.similarity_error
        hi_all = res.similarity + res.similarity_error
        for qi in range(len(pools)):
            c_idx = torch.cat([pools[qi], idx])
            c_lo = torch.cat([lows[qi], lo_all[qi]])
            c_hi = torch.cat([highs[qi], hi_all[qi]])
            # the exact k-th best similarity is at least the k-th best lower bound: whatever cannot reach it goes
            floor = torch.topk(c_lo, min(k, len(c_lo))).values[-1]
            keep = c_hi >= floor
            pools[qi], lows[qi], highs[qi] = c_idx[keep], c_lo[keep], c_hi[keep]
    return pools


def _exact_topk_of_pools(config, ground, gallery, pools, k, chunk_size) -> TopK:
    # float64 dots: a candidate's distance does not depend on which others made the pool (i.e. on k)
    return topk_per_subset(ground, gallery, [pool.cpu().numpy() for pool in pools], lambda g, sub: _exact_topk(
        config, gallery_chunks(config, g, sub, chunk_size, window_dots=float64_window_dots), k))


def topk_per_subset(ground: StageMaps, gallery, subsets, topk_fn) -> TopK:
    """Query ``qi``'s top-k among the references ``subsets[qi]`` (ascending gallery indices), for every query:
    ``topk_fn(ground of one query, IndexedGallery of its subset)``, with the indices mapped back to the gallery.
    Ascending subsets keep ties on the lower gallery index, as in the search over the whole gallery."""
    parts = []
    for qi, subset in enumerate(subsets):
        top = topk_fn(ground.slice(qi, qi + 1), IndexedGallery(gallery, subset))
        top.indices = torch.as_tensor(subset, device=top.indices.device)[top.indices]
        parts.append(top)
    first = parts[0]
    return TopK(*(torch.cat([getattr(p, f) for p in parts]) for f in ("distances", "indices", "offsets",
                                                                       "similarity")),
                first.stages, first.window_widths, first.map_widths)


class GalleryHead:
    """The first ``n`` references of a gallery as a gallery of their own (views, no copies)."""

    def __init__(self, gallery, n: int):
        self.gallery, self.n = gallery, min(int(n), len(gallery))

    def __len__(self) -> int:
        return self.n

    def slice(self, start: int, stop: int) -> StageMaps:
        return self.gallery.slice(start, min(stop, self.n))


class IndexedGallery:
    """The references ``indices`` (ascending) of a gallery as a gallery of their own, for re-ranking."""

    def __init__(self, gallery, indices):
        self.gallery = gallery
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def slice(self, start: int, stop: int) -> StageMaps:
        return gather_maps(self.gallery, self.indices[start:stop])

    def gather(self, indices) -> StageMaps:
        return gather_maps(self.gallery, self.indices[np.asarray(indices, dtype=np.int64)])


@torch.no_grad()
def align_at(config: ModelConfig, ground: StageMaps, gallery: Gallery, indices) -> TopK:
    """One query's alignment with the references ``indices`` of a gallery, as a TopK in that order (e.g. the
    ranking of a combined score, read back per photo)."""
    if len(ground) != 1:
        raise ValueError(f"align_at takes one query, got {len(ground)}")
    res = match_maps(config, ground, gather_maps(gallery, indices))
    index = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=res.distances.device)[None]
    return TopK(res.distances, index, res.offsets, res.similarity, res.stages, res.window_widths, res.map_widths)


def gather_maps(gallery, indices) -> StageMaps:
    """The references at ``indices`` of any gallery, as one StageMaps (a copy)."""
    indices = np.asarray(indices, dtype=np.int64)
    if hasattr(gallery, "gather"):
        return gallery.gather(indices)
    if isinstance(gallery, StageMaps):
        return gallery._map(lambda m: m[torch.as_tensor(indices, device=m.device)])
    return StageMaps.cat([gallery.slice(int(i), int(i) + 1) for i in indices])


def _exact_topk(config, chunks, k) -> TopK:
    best_d = best_i = best_o = best_s = None
    meta = None
    for start, res in chunks:
        idx = torch.arange(start, start + res.distances.shape[1], device=res.distances.device)
        idx = idx.expand_as(res.distances)
        if best_d is None:
            cand_d, cand_i, cand_o, cand_s = res.distances, idx, res.offsets, res.similarity
            meta = (res.stages, res.window_widths, res.map_widths)
        else:
            cand_d = torch.cat([best_d, res.distances], 1)
            cand_i = torch.cat([best_i, idx], 1)
            cand_o = torch.cat([best_o, res.offsets], 1)
            cand_s = torch.cat([best_s, res.similarity], 1)
        # stable sort keeps earlier (lower-index) candidates first among equal distances
        order = torch.sort(cand_d, dim=1, stable=True).indices[:, :k]
        best_d = cand_d.gather(1, order)
        best_i = cand_i.gather(1, order)
        best_s = cand_s.gather(1, order)
        best_o = cand_o.gather(1, order[..., None].expand(-1, -1, cand_o.shape[-1]))
    return TopK(best_d, best_i, best_o, best_s, *meta)


@dataclass
class TrueMatch:
    """Rank of each query's true reference (references strictly closer, conventions §7) and the true pair's
    distance and window offsets (for the heading of the true pair); with ``keep``, each query's ranking's first
    ``keep`` gallery indices (Q x keep, best first, ties lower index first; e.g. for its distinct places)."""

    ranks: np.ndarray
    distances: torch.Tensor
    offsets: torch.Tensor
    result: AlignResult
    top_indices: np.ndarray | None = None


@torch.no_grad()
def true_match_ranks(
    config: ModelConfig, ground: StageMaps, gallery: Gallery, true_index, chunk_size: int = 1024, progress=None,
    keep: int = 0,
) -> TrueMatch:
    """Block-wise ranks: the true pair is aligned on its own, then every chunk only adds a count (and, with
    ``keep``, updates a running top-``keep`` of the chunk distances, as :func:`topk_matches` does)."""
    true_index = torch.as_tensor(np.asarray(true_index), dtype=torch.long)
    q = len(ground)
    if true_index.shape != (q,):
        raise ValueError(f"need one true reference index per query ({q}), got shape {tuple(true_index.shape)}")
    if (true_index < 0).any() or (true_index >= len(gallery)).any():
        raise ValueError(f"true reference indices must be in [0, {len(gallery)})")
    # the true satellite maps, gathered in gallery order chunks (works for any Gallery)
    true_maps = gather_maps(gallery, true_index.tolist())
    true_res = match_maps(config, ground, true_maps, diagonal=True)
    true_d = true_res.distances
    counts = torch.zeros(q, dtype=torch.long, device=true_d.device)
    rows = torch.arange(q, device=true_d.device)
    best_d = best_i = None
    keep = min(int(keep), len(gallery))
    for start, res in gallery_chunks(config, ground, gallery, chunk_size, progress):
        closer = res.distances < true_d[:, None]
        local = true_index.to(true_d.device) - start
        inside = (local >= 0) & (local < res.distances.shape[1])
        # the true reference never counts against itself (its chunk value may differ in the last bit)
        closer[rows[inside], local[inside]] = False
        counts += closer.sum(1)
        if keep > 0:
            idx = torch.arange(start, start + res.distances.shape[1], device=res.distances.device)
            cand_d = res.distances if best_d is None else torch.cat([best_d, res.distances], 1)
            cand_i = idx.expand_as(res.distances) if best_i is None else torch.cat([best_i, idx.expand_as(
                res.distances)], 1)
            order = torch.sort(cand_d, dim=1, stable=True).indices[:, :keep]  # stable: lower index first among ties
            best_d, best_i = cand_d.gather(1, order), cand_i.gather(1, order)
    top = None if best_i is None else best_i.cpu().numpy()
    return TrueMatch(counts.cpu().numpy(), true_d, true_res.offsets, true_res, top)
