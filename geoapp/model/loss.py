"""Weighted soft-margin triplet loss with batch-hard negatives, both directions (SPEC 6, Hermans et al. 2017).

``log(1 + exp(alpha * (d_ap - d_an)))`` with ``d_an`` the hardest (closest) negative of each anchor in the
batch; ground->satellite anchors are the rows of the distance matrix, satellite->ground anchors its columns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hardest_negatives(distances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a B x B matrix (ground i vs satellite j, positives on the diagonal) return the hardest negative
    distance per row (ground anchors) and per column (satellite anchors)."""
    b = distances.shape[0]
    if distances.shape != (b, b) or b < 2:
        raise ValueError(
            f"batch-hard mining needs a square B x B distance matrix with B >= 2, got {tuple(distances.shape)}"
        )
    masked = distances.masked_fill(torch.eye(b, dtype=torch.bool, device=distances.device), float("inf"))
    return masked.min(dim=1).values, masked.min(dim=0).values


def soft_margin_triplet_loss(distances: torch.Tensor, alpha: float = 10.0) -> torch.Tensor:
    """Mean of the ground->satellite and satellite->ground batch-hard soft-margin triplet losses."""
    positives = distances.diagonal()
    neg_rows, neg_cols = hardest_negatives(distances)
    loss_g2s = F.softplus(alpha * (positives - neg_rows)).mean()
    loss_s2g = F.softplus(alpha * (positives - neg_cols)).mean()
    return 0.5 * (loss_g2s + loss_s2g)
