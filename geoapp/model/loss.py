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


def orientation_loss(
    ground,
    satellite,
    shifts: torch.Tensor,
    mode: str = "mask-corr",
    stages: tuple[int, ...] = (1, 2, 3, 4),
    pano_width: int = 512,
    sharpness: float = 4.0,
) -> torch.Tensor:
    """Window-offset supervision for the true pairs (our extension; the paper has no such term).

    The paper's masks only receive gradient through the features they gate, so nothing teaches the
    window search where the true window is. Training knows it: a crop made with ``shift`` has its true
    offset at ``o* = (W - shift) / W * W_b`` (SPEC 5). This is the cross-entropy between the softmax of the
    standardised window scores of each true pair (the same scores ``align_windows`` maximises) and a
    two-hot target on the offsets either side of ``o*``, averaged over the stages. ``ground``/``satellite``
    are the encoded :class:`StageMaps` of a batch whose sample i is a true pair.
    """
    from ..data.fov import true_offset
    from .align import window_scores

    losses = []
    for s in stages:
        g, sat = ground.features[s - 1], satellite.features[s - 1]
        gm = ground.masks[s - 1] if ground.masks is not None else None
        sm = satellite.masks[s - 1] if satellite.masks is not None else None
        scores = window_scores(mode, g, sat, gm, sm, diagonal=True)  # N x W_b
        big_w = scores.shape[-1]
        logits = sharpness * (scores - scores.mean(-1, keepdim=True)) / (scores.std(-1, keepdim=True) + 1e-6)
        o_true = torch.as_tensor(true_offset(shifts.detach().cpu().numpy(), big_w, pano_width), dtype=torch.float32)
        lo = torch.floor(o_true).long() % big_w
        frac = (o_true - torch.floor(o_true)).to(scores.device)
        target = torch.zeros_like(scores)
        rows = torch.arange(scores.shape[0], device=scores.device)
        target[rows, lo.to(scores.device)] += 1 - frac
        target[rows, ((lo + 1) % big_w).to(scores.device)] += frac
        losses.append(-(target * F.log_softmax(logits, dim=-1)).sum(-1).mean())
    return torch.stack(losses).mean()
