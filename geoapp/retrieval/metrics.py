"""Recall by rank (conventions §7): ties count in the query's favour; R@1% uses k = max(1, floor(N / 100)); and
recall counted by place (:func:`place_recall`)."""

from __future__ import annotations

import numpy as np
import torch

from .places import distinct_places, found_by_place, neighbourhood_size, pool_size


def top_percent_k(n_refs: int, top_percent: float = 1.0) -> int:
    return max(1, int(np.floor(n_refs * top_percent / 100.0)))


def recall_from_ranks(ranks, n_refs: int, ks=(1, 5, 10), top_percent: float | None = 1.0) -> dict[str, float]:
    """Percent of queries whose true reference has ``rank < k``; ``rank`` = references strictly closer."""
    ranks = np.asarray(ranks.cpu() if isinstance(ranks, torch.Tensor) else ranks)
    if ranks.size == 0:
        raise ValueError("no queries to evaluate")
    out = {f"R@{k}": float(np.mean(ranks < k) * 100.0) for k in ks}
    if top_percent is not None:
        label = f"R@{top_percent:g}%"
        out[label] = float(np.mean(ranks < top_percent_k(n_refs, top_percent)) * 100.0)
    return out


def ranks_from_distances(distances, true_index=None) -> np.ndarray:
    """Rank of each query's true reference in a Q x R distance matrix (default: the diagonal is true)."""
    d = torch.as_tensor(distances)
    q = d.shape[0]
    true_index = torch.arange(q) if true_index is None else torch.as_tensor(true_index, dtype=torch.long)
    if d.ndim != 2 or (true_index >= d.shape[1]).any():
        raise ValueError(f"need a Q x R distance matrix with the true index < R, got shape {tuple(d.shape)}")
    true_d = d[torch.arange(q), true_index]
    closer = d < true_d[:, None]
    closer[torch.arange(q), true_index] = False
    return closer.sum(dim=1).numpy()


def recall_at_k(distances, ks=(1, 5, 10), top_percent: float | None = 1.0, true_index=None) -> dict[str, float]:
    """Recall in percent (0-100), keyed "R@1", "R@5", "R@10", "R@1%", from a Q x R distance matrix whose
    true match is the diagonal unless ``true_index`` says otherwise."""
    d = torch.as_tensor(distances)
    return recall_from_ranks(ranks_from_distances(d, true_index), d.shape[1], ks, top_percent)


def place_pool(latlon, min_distance_m: float, k_max: int = 10) -> int:
    """How much of each query's ranking :func:`place_recall` needs for its first ``k_max`` distinct places
    (:func:`~geoapp.retrieval.places.pool_size`)."""
    latlon = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    return pool_size(k_max, neighbourhood_size(latlon, min_distance_m), len(latlon))


def place_recall(latlon, rankings, true_index, min_distance_m: float, ks=(1, 5, 10)) -> dict[str, float]:
    """Recall counted by place, in percent, keyed "R@1 place", "R@5 place", ... (conventions §7): a query is found at
    k when one of the first k distinct places of its ranking (no reference closer than ``min_distance_m`` to a
    better one) is its true reference or lies closer than ``min_distance_m`` to the true reference's position.

    ``latlon``: R x 2 degrees of the gallery (NaN when unknown); ``rankings``: Q x M gallery indices, best first, the
    first :func:`place_pool` of each query's ranking at least; ``true_index``: each query's true reference."""
    rankings = np.asarray(rankings, dtype=np.int64)
    true_index = np.asarray(true_index, dtype=np.int64).ravel()
    if rankings.ndim != 2 or len(rankings) != len(true_index) or not len(rankings):
        raise ValueError(f"need Q x M rankings and Q true indices (Q >= 1), got {rankings.shape} and "
                         f"{true_index.shape}")
    if not min_distance_m or min_distance_m <= 0:
        raise ValueError(f"recall by place needs a distance > 0 metres, got {min_distance_m!r}")
    latlon = np.asarray(latlon, dtype=np.float64)
    k_max = max(ks)
    found = np.zeros((len(rankings), k_max), dtype=bool)
    for q, (ranking, truth) in enumerate(zip(rankings, true_index)):
        kept = ranking[distinct_places(latlon, ranking, min_distance_m, k_max)]
        hits = found_by_place(latlon, kept, truth, latlon[truth], min_distance_m)
        found[q, : len(hits)] = hits
        if 0 < len(hits) < k_max:  # the gallery holds fewer places: found at k stays found at every larger k
            found[q, len(hits):] = hits[-1]
    return {f"R@{k} place": float(found[:, k - 1].mean() * 100.0) for k in ks}
