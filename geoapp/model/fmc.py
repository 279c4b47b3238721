"""Multi-scale descriptor (FMC, conventions §6): flatten the stage maps, concatenate, L2-normalise the whole vector.

``align_windows`` computes pair distances without building these vectors; this explicit form is what the
paper describes and is used for the ground side, for display and to check the fast path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def multiscale_descriptor(maps: list[torch.Tensor]) -> torch.Tensor:
    """N x D unit vectors from a list of N x C_b x H_b x W_b maps (pass only ``[maps[3]]`` for block-4-only)."""
    if not maps:
        raise ValueError("multiscale_descriptor needs at least one stage map")
    flat = torch.cat([m.float().flatten(1) for m in maps], dim=1)
    return F.normalize(flat, p=2, dim=1)
