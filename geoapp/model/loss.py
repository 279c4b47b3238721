"""Weighted soft-margin triplet loss with batch-hard negatives, both directions (conventions §6, Hermans et al. 2017).

``log(1 + exp(alpha * (d_ap - d_an)))`` with ``d_an`` the hardest (closest) negative of each anchor in the
batch; ground->satellite anchors are the rows of the distance matrix, satellite->ground anchors its columns.

Under torchrun the negatives may come from every process's batch (``geoapp.training.objective``): this process's
B anchors are then the rows of a B x N matrix (its grounds against all N satellites) and the columns of an N x B
one (all N grounds against its satellites), with its positives at ``first + i``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _without_positives(distances: torch.Tensor, first: int, rows: bool) -> torch.Tensor:
    """``distances`` with this batch's positives (row i, column first + i; transposed when not ``rows``) at inf."""
    b = distances.shape[0] if rows else distances.shape[1]
    positives = torch.zeros_like(distances, dtype=torch.bool)
    i = torch.arange(b, device=distances.device)
    if rows:
        positives[i, first + i] = True
    else:
        positives[first + i, i] = True
    return distances.masked_fill(positives, float("inf"))


def hardest_negatives(distances: torch.Tensor, columns: torch.Tensor | None = None,
                      first: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The hardest negative distance of each ground anchor (a row of ``distances``) and of each satellite anchor (a
    column of ``columns``). Without ``columns``, ``distances`` is the square B x B matrix of one batch (positives on
    the diagonal) read both ways; with it, ``distances`` is B x N and ``columns`` N x B (module docstring)."""
    b = distances.shape[0]
    n = distances.shape[1]
    cols = distances if columns is None else columns
    if b < 2 or (columns is None and n != b) or cols.shape != (n, b) or not 0 <= first <= n - b:
        raise ValueError(f"batch-hard mining needs a B x N distance matrix (B >= 2; square without the columns "
                         f"matrix) and an N x B columns matrix, got {tuple(distances.shape)} and "
                         f"{tuple(cols.shape)} with first {first}")
    neg_rows = _without_positives(distances, first, rows=True).min(dim=1).values
    neg_cols = _without_positives(cols, first, rows=False).min(dim=0).values
    return neg_rows, neg_cols


def soft_margin_triplet_loss(distances: torch.Tensor, alpha: float = 10.0, columns: torch.Tensor | None = None,
                             first: int = 0) -> torch.Tensor:
    """Mean of the ground->satellite and satellite->ground batch-hard soft-margin triplet losses (the matrices as in
    :func:`hardest_negatives`; the positives are read from ``distances``)."""
    b = distances.shape[0]
    positives = distances[torch.arange(b, device=distances.device), first + torch.arange(b, device=distances.device)]
    neg_rows, neg_cols = hardest_negatives(distances, columns, first)
    loss_g2s = F.softplus(alpha * (positives - neg_rows)).mean()
    loss_s2g = F.softplus(alpha * (positives - neg_cols)).mean()
    return 0.5 * (loss_g2s + loss_s2g)
