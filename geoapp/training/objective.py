"""What a training step computes: the paper's triplet loss and an optional window-alignment loss.

The paper trains with the batch-hard soft-margin triplet loss only (SPEC 6). The window offset (FCA) is an
argmax, so nothing in that loss asks the alignment scores to peak at the true heading; the masks learn it
only indirectly. ``align_loss > 0`` adds a training-only auxiliary term (not in the paper; the model and
inference are unchanged): for each positive pair and each used stage, the cross-entropy of the true window
offset ``o* = round((W - shift) / W * W_b) mod W_b`` (SPEC 5) among the circular offsets. The logits are the
window scores of the model's own align mode relative to their maximum over offsets, ``ALIGN_SCALE * s /
max(s)`` (the maximum is not differentiated; the scores of all three modes are positive: masks are sigmoid
products, features follow a ReLU), so they lie in [0, ALIGN_SCALE] and the loss is bounded by
``ALIGN_SCALE + log W_b``. (Standardising by the standard deviation blows the gradients up at initialisation,
when the masks are nearly flat; dividing by the mean lets feature scores reach huge logits and diverge.)
The shifts are known during training because the crops are made from north-aligned panoramas.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.fov import true_offset
from ..model import CrossViewModel, window_scores

ALIGN_SCALE = 10.0  # logits in [0, 10]: the best window can be e^10 times likelier than a zero-score one


class TrainForward(nn.Module):
    """Distances of all B x B pairs and, when ``with_scores``, the positives' window scores per stage.

    DistributedDataParallel wraps this module, so the whole step's computation is its forward.
    """

    def __init__(self, model: CrossViewModel, with_scores: bool = False):
        super().__init__()
        self.model = model
        self.with_scores = with_scores

    def forward(self, ground: torch.Tensor, satellite: torch.Tensor):
        g = self.model.encode_ground(ground)
        s = self.model.encode_satellite(satellite)
        result = self.model.match(g, s)
        if not self.with_scores:
            return result.distances, None
        cfg = self.model.config
        scores = []
        for b in cfg.stages:
            gm = g.masks[b - 1] if g.masks is not None else None
            sm = s.masks[b - 1] if s.masks is not None else None
            scores.append(window_scores(cfg.align_mode, g.features[b - 1], s.features[b - 1], gm, sm, diagonal=True))
        return result.distances, scores


def alignment_loss(scores: list[torch.Tensor], shifts: torch.Tensor, pano_width: int) -> torch.Tensor:
    """Mean over stages of the cross-entropy of the true window offset (see the module docstring)."""
    shifts = torch.as_tensor(shifts).cpu().numpy()
    losses = []
    for sc in scores:  # N x W_b
        sc = sc.float()
        width = sc.shape[-1]
        target = torch.as_tensor(true_offset(shifts, width, pano_width)).round().long().remainder(width)
        logits = ALIGN_SCALE * sc / sc.amax(-1, keepdim=True).detach().clamp_min(1e-12)
        losses.append(F.cross_entropy(logits, target.to(sc.device)))
    return torch.stack(losses).mean()
