"""Recall by rank (conventions §7): ties count in the query's favour; R@1% uses k = max(1, floor(N / 100))."""

from __future__ import annotations

import numpy as np
import torch


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
