"""Several photos from one spot, one answer: each photo aligned with every reference as a single photo is, a
reference ranked by the mean of the photos' similarities, and each candidate carrying every photo's heading."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..model import StageMaps
from .results import Candidate, display_score
from .search import IndexedGallery, TopK, align_at, gallery_chunks


def search_together(localizer, grounds, k: int, subset) -> tuple[list[TopK], torch.Tensor]:
    """Per photo, the similarity to every searched reference; their mean ranks the references."""
    gallery = localizer.db if subset is None else IndexedGallery(localizer.db, subset)
    total = None
    for ground in grounds:
        sims = torch.cat([res.similarity[0].double()
                          for _, res in gallery_chunks(localizer.config, ground, gallery, localizer.chunk_size)])
        total = sims if total is None else total + sims
    mean = total / len(grounds)
    order = torch.sort(-mean, stable=True).indices[:k].cpu().numpy()  # ties: lower index first
    per_view = [align_at(localizer.config, ground, gallery, order) for ground in grounds]
    if subset is not None:
        for top in per_view:
            top.indices = torch.as_tensor(subset, device=top.indices.device)[top.indices]
    return per_view, mean[torch.as_tensor(order, device=mean.device)].float()


def combine_views(localizer, candidates: list[Candidate], per_view: list[TopK], combined: torch.Tensor,
                  grounds: list[StageMaps]) -> list[Candidate]:
    """The candidates ranked by the photos' mean similarity, each with every photo's heading and score there (a
    photo's heading at a tile is the one a single-photo query of it gets there, refined likewise)."""
    headings = [localizer.headings(top, ground, len(candidates))[0] for top, ground in zip(per_view, grounds)]
    out = []
    for i, c in enumerate(candidates):
        sim = float(combined[i])
        view_scores = tuple(display_score(float(t.similarity[0, i])) for t in per_view)
        out.append(replace(c, score=display_score(sim),
                           distance=math.sqrt(max(0.0, 2.0 - 2.0 * sim)),
                           view_headings=tuple(float(h[i]) for h in headings), view_scores=view_scores))
    return out
