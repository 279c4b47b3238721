"""Chunked search of ground queries over a satellite gallery with the model's own alignment (SPEC 5-7).

One code path for the app, the evaluation and the benchmarks, so their numbers cannot disagree: every
distance comes from :func:`geoapp.model.align_windows`, over the gallery ``chunk_size`` references at a
time, so memory stays bounded (no full Q x R matrix is kept; only running top-k lists or rank counts).

A *gallery* is anything with ``len()`` and ``slice(start, stop) -> StageMaps`` (all four stages, on the
compute device): an in-memory :class:`~geoapp.model.StageMaps` is one, a memory-mapped database another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..model import AlignResult, ModelConfig, StageMaps, align_windows


class Gallery(Protocol):
    def __len__(self) -> int: ...

    def slice(self, start: int, stop: int) -> StageMaps: ...


def gallery_chunks(config: ModelConfig, ground: StageMaps, gallery: Gallery, chunk_size: int = 1024, progress=None):
    """Yield ``(start, AlignResult)`` for consecutive chunks of the gallery (Q x chunk pairs each)."""
    n = len(gallery)
    for start in range(0, n, chunk_size):
        maps = gallery.slice(start, min(n, start + chunk_size))
        yield start, align_windows(ground, maps, config.align_mode, config.stages, chunk_size=None)
        if progress is not None:
            progress.update(min(chunk_size, n - start))


@dataclass
class TopK:
    """The k closest references per query: Q x k distances, gallery indices and per-stage offsets."""

    distances: torch.Tensor
    indices: torch.Tensor
    offsets: torch.Tensor
    similarity: torch.Tensor
    stages: tuple[int, ...]
    window_widths: tuple[int, ...]
    map_widths: tuple[int, ...]

    def headings(self, stage: int | None = None) -> np.ndarray:
        view = AlignResult(
            self.offsets, self.distances, self.similarity, self.stages, self.window_widths, self.map_widths
        )
        return view.headings(stage)


@torch.no_grad()
def topk_matches(
    config: ModelConfig, ground: StageMaps, gallery: Gallery, k: int = 10, chunk_size: int = 1024, progress=None
) -> TopK:
    """Running top-k over gallery chunks (ties: lower gallery index first)."""
    k = min(k, len(gallery))
    if k < 1:
        raise ValueError("the gallery is empty")
    best_d = best_i = best_o = best_s = None
    meta = None
    for start, res in gallery_chunks(config, ground, gallery, chunk_size, progress):
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
    """Rank of each query's true reference (references strictly closer, SPEC 7) and the true pair's
    distance and window offsets (for the heading of the true pair)."""

    ranks: np.ndarray
    distances: torch.Tensor
    offsets: torch.Tensor
    result: AlignResult


@torch.no_grad()
def true_match_ranks(
    config: ModelConfig, ground: StageMaps, gallery: Gallery, true_index, chunk_size: int = 1024, progress=None
) -> TrueMatch:
    """Block-wise ranks: the true pair is aligned on its own, then every chunk only adds a count."""
    true_index = torch.as_tensor(np.asarray(true_index), dtype=torch.long)
    q = len(ground)
    if true_index.shape != (q,):
        raise ValueError(f"need one true reference index per query ({q}), got shape {tuple(true_index.shape)}")
    if (true_index < 0).any() or (true_index >= len(gallery)).any():
        raise ValueError(f"true reference indices must be in [0, {len(gallery)})")
    # the true satellite maps, gathered in gallery order chunks (works for any Gallery)
    true_maps = _gather(gallery, true_index.tolist())
    true_res = align_windows(ground, true_maps, config.align_mode, config.stages, diagonal=True)
    true_d = true_res.distances
    counts = torch.zeros(q, dtype=torch.long, device=true_d.device)
    rows = torch.arange(q, device=true_d.device)
    for start, res in gallery_chunks(config, ground, gallery, chunk_size, progress):
        closer = res.distances < true_d[:, None]
        local = true_index.to(true_d.device) - start
        inside = (local >= 0) & (local < res.distances.shape[1])
        # the true reference never counts against itself (its chunk value may differ in the last bit)
        closer[rows[inside], local[inside]] = False
        counts += closer.sum(1)
    return TrueMatch(counts.cpu().numpy(), true_d, true_res.offsets, true_res)


def _gather(gallery: Gallery, indices: list[int]) -> StageMaps:
    parts = [gallery.slice(i, i + 1) for i in indices]
    feats = [torch.cat([p.features[b] for p in parts]) for b in range(4)]
    masks = None if parts[0].masks is None else [torch.cat([p.masks[b] for p in parts]) for b in range(4)]
    return StageMaps(feats, masks)
