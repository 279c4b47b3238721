"""What a training step computes: the paper's triplet loss, the window choice it sees, and an optional alignment loss.

The paper trains with the batch-hard soft-margin triplet loss only (conventions §6). Its window offset (FCA) is an
argmax, so nothing in that loss reaches the scores that choose the window; the masks learn only as feature
gates, and in our CPU-budget runs they never learned where the photo sits (median heading error ~90 deg,
chance). Training-only additions (not in the paper; the model and inference are unchanged):

- ``window_choice`` ``soft`` / ``straight-through`` (``gate-corr`` models): the triplet loss sees distances formed
  with a softmax over the window offsets, or the argmax's distances with the softmax's gradient
  (:func:`geoapp.model.align.soft_window_distances`, temperatures learned), so it trains the gates.
- ``window_choice`` ``known-positive`` (any mode): the negatives' windows are the argmax, as at inference, but
  each positive pair is cropped at its known true window (rounded ``o*``, below, per stage), so the descriptor
  learns from aligned positives from the first step instead of from the windows an untrained score picks.
- ``window_choice`` ``hardest-negative``: the positives as in ``known-positive``, but every
  negative is cropped at the window where its descriptors match best (the feature correlation, each stage its own:
  :func:`hardest_window_distances`). The attention still chooses every window at inference; training only sees
  the hardest negatives a feature-correlation model trains on, so the descriptor learns to tell a wrong tile from
  the right one at any window, not only at the window the gates pick for it. It costs the feature correlation of
  all B x B pairs per step. For a ``feature`` model it is ``known-positive`` (its argmax windows are the hardest).
- ``window_choice`` ``hardest-margin``: the ``known-positive`` loss (the distances the search ranks by: argmax
  windows, the gate term) plus a second triplet loss on the descriptor alone, each positive at its known window and
  each negative at the window where its descriptors match best (as ``hardest-negative`` crops them, without the gate
  term). A descriptor whose positive beats every window of a wrong tile also beats the one window the gates pick for
  it, while the gates and the gate term keep learning from the windows they choose at inference. It costs the
  feature correlation of all B x B pairs per step.
- ``align_loss > 0``: for each positive pair and each used stage, the cross-entropy between the softmax of the
  window logits and a two-hot target on the offsets either side of the true offset
  ``o* = (W - shift) / W * W_b`` (conventions §5), averaged over the stages. The logits of ``gate-corr`` are its
  cosine scores times the learned temperature; for the other modes (kept for the ablation) the window scores
  relative to their maximum, ``ALIGN_SCALE * s / max(s)`` (their scores are positive: masks are sigmoid
  products, features follow a ReLU). The shifts are known because crops are made from north-aligned panoramas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..angles import true_offset
from ..model import CrossViewModel, StageMaps, soft_margin_triplet_loss, window_scores
from ..model.align import align_windows, attention, gate_score_at, gated_similarity, soft_window_distances
from ..model.align_modes import FEATURE
from .distributed import gather_across_ranks
from .window_choices import ARGMAX, WindowChoice
from .window_choices import window_choice as choice_named

ALIGN_SCALE = 10.0  # logits in [0, 10]: the best window can be e^10 times likelier than a zero-score one


class TrainForward(nn.Module):
    """Distances of all B x B pairs and, when ``with_logits``, the positives' window logits per stage.

    DistributedDataParallel wraps this module, so the whole step's computation is its forward. ``across_ranks``
    (torchrun): every process's stage maps are gathered (with their gradients, as Sample4Geo gathers its
    descriptors), and this batch's anchors mine their hardest negative among all of them.
    """

    def __init__(self, model: CrossViewModel, with_logits: bool = False,
                 window_choice: WindowChoice | str = ARGMAX, across_ranks: bool = False):
        super().__init__()
        choice = choice_named(window_choice)
        problem = choice.problem(model.config.alignment, model.config.gate_weight)
        if problem:
            raise ValueError(problem)
        self.model = model
        self.with_logits = with_logits
        self.window_choice = choice
        self.across_ranks = across_ranks  # under torchrun: mine the negatives among every process's batch
        if model.config.alignment.cosine_scores and not self.uses_window_temperature:
            # nothing in this objective reaches the temperature: frozen, so that DistributedDataParallel does not
            # wait for its gradient (it would fail at the second step); a single process leaves it unchanged anyway
            model.window_log_temperature.requires_grad_(False)

    @property
    def uses_window_temperature(self) -> bool:
        """Whether the loss reaches the gate-corr window temperature: soft window choices and the alignment loss."""
        return self.window_choice.reaches_temperature or self.with_logits

    def forward(self, ground: torch.Tensor, satellite: torch.Tensor, shifts=None, pano_width: int = 512):
        """``shifts`` (the crops' panorama shifts) and ``pano_width``: needed by the known-positive choices only.

        Returns the distances the triplet loss mines (B x B; with ``across_ranks`` a :class:`CrossRankDistances`)
        and, with ``with_logits``, the positives' window logits per choosing stage."""
        g = self.model.encode_ground(ground)
        s = self.model.encode_satellite(satellite)
        positives = self._known_positives(g, s, shifts, pano_width)
        distances, soft_logits = self._mined(g, s, positives, self._all_pairs)
        if self.window_choice.descriptor_margin:  # the descriptor alone, every negative at its hardest window
            margin, _ = self._mined(g, s, self._known_positives(g, s, shifts, pano_width, gate_weight=0.0),
                                    self._hardest_descriptor_pairs)
            distances = TripletTerms((distances, margin))
        if not self.with_logits:
            return distances, None
        return distances, soft_logits if soft_logits is not None else self._window_logits(g, s)

    def _mined(self, g: StageMaps, s: StageMaps, positives, all_pairs):
        """The distances the triplet loss mines, from ``all_pairs`` (g, s, first) -> (distances, soft logits), with
        ``positives`` (or None) placed on the pairs (i, i); across ranks a :class:`CrossRankDistances`."""
        if not self.across_ranks:
            distances, soft_logits = all_pairs(g, s)
            return _placed(distances, positives), soft_logits
        # this batch's anchors against every process's batch (the gathered maps carry gradients back)
        g_all, first = gather_across_ranks(g)
        s_all, _ = gather_across_ranks(s)
        rows, soft_logits = all_pairs(g, s_all, first)
        columns, _ = all_pairs(g_all, s)
        return CrossRankDistances(_placed(rows, positives, first), _placed(columns.T, positives, first).T,
                                  first), soft_logits

    def _hardest_descriptor_pairs(self, g: StageMaps, s: StageMaps, first: int = 0):
        """Q x R descriptor distances (no gate term), each pair at the window where its descriptors match best."""
        return hardest_window_distances(self.model.config, g, s, gate_weight=0.0), None

    def _all_pairs(self, g: StageMaps, s: StageMaps, first: int = 0):
        """Q x R distances by the window choice; soft choices also give the logits of the pairs (i, first + i)."""
        cfg = self.model.config
        if self.window_choice.soft:
            return soft_window_distances(g, s, cfg.alignment, cfg.stages, self.model.window_temperature(),
                                         straight_through=self.window_choice.straight_through,
                                         offset_stage=cfg.window_stage, first=first)
        if self.window_choice.hardest_negatives:
            return hardest_window_distances(cfg, g, s), None
        return self.model.match(g, s).distances, None

    def _known_positives(self, g: StageMaps, s: StageMaps, shifts, pano_width: int,
                         gate_weight: float | None = None) -> torch.Tensor | None:
        """The B positive pairs' distances cropped at their known window, for those choices (else None); with the
        model's gate term unless ``gate_weight`` is given."""
        if not self.window_choice.known_positives:
            return None
        if shifts is None:
            raise ValueError(f"window choice {self.window_choice.name!r} needs the crops' shifts")
        known = known_offsets(s, self.model.config.stages, shifts, pano_width)
        return self.model.match(g, s, diagonal=True, window_offsets=known, gate_weight=gate_weight).distances

    def _window_logits(self, g: StageMaps, s: StageMaps) -> list[torch.Tensor]:
        """The true pairs' window logits at each choosing stage (the alignment loss's input)."""
        cfg = self.model.config
        mode = cfg.alignment
        logits = []
        for b in cfg.stages if cfg.window_stage is None else (cfg.window_stage,):  # the stages that choose
            sc = window_scores(mode, g.features[b - 1], s.features[b - 1], attention(g, mode, b),
                               attention(s, mode, b), diagonal=True)
            if mode.cosine_scores:
                logits.append(self.model.window_temperature()[b - 1] * sc)
            else:
                logits.append(ALIGN_SCALE * sc / sc.amax(-1, keepdim=True).detach().clamp_min(1e-12))
        return logits


def _placed(distances: torch.Tensor, positives: torch.Tensor | None, first: int = 0) -> torch.Tensor:
    """``distances`` (B x N) with ``positives`` at (i, first + i); unchanged without positives."""
    if positives is None:
        return distances
    i = torch.arange(len(positives), device=distances.device)
    on_positives = torch.zeros_like(distances, dtype=torch.bool)
    on_positives[i, first + i] = True
    placed = torch.zeros_like(distances).index_put((i, first + i), positives.to(distances.dtype))
    return torch.where(on_positives, placed, distances)


@dataclass
class TripletTerms:
    """Several distance sets one step mines, each with its own batch-hard triplet loss; the step's triplet loss is
    their sum (``hardest-margin``: the distances the search ranks by, and the descriptor's at the hardest windows)."""

    terms: tuple

    def triplet_loss(self, alpha: float) -> torch.Tensor:
        return sum(triplet_loss(t, alpha) for t in self.terms)


def triplet_loss(distances, alpha: float) -> torch.Tensor:
    """The batch-hard soft-margin triplet loss of one step's distances: a B x B matrix, or a set that computes its
    own (:class:`CrossRankDistances`, :class:`TripletTerms`)."""
    if hasattr(distances, "triplet_loss"):
        return distances.triplet_loss(alpha)
    return soft_margin_triplet_loss(distances.float(), alpha)


@dataclass
class CrossRankDistances:
    """The distances of one process's step when negatives come from every process (module docstring of
    :mod:`geoapp.model.loss`): ``rows`` B x N, ``columns`` N x B, this batch's pairs at ``first`` .. ``first + B``."""

    rows: torch.Tensor
    columns: torch.Tensor
    first: int

    def triplet_loss(self, alpha: float) -> torch.Tensor:
        return soft_margin_triplet_loss(self.rows.float(), alpha, self.columns.float(), self.first)


def hardest_window_distances(config, ground, satellite, gate_weight: float | None = None) -> torch.Tensor:
    """B x B distances with every pair cropped where its descriptors match best (the feature correlation, each stage
    its own window); with a gate weight (``config``'s unless ``gate_weight`` is given), the gate term is read at the
    choosing stage's window (``config``'s rule)."""
    gate_weight = config.gate_weight if gate_weight is None else gate_weight
    feat = align_windows(ground, satellite, FEATURE, config.stages)
    if gate_weight == 0:
        return feat.distances
    choosing = config.stages if config.window_stage is None else (config.window_stage,)
    gates = [gate_score_at(ground, satellite, b, feat.offsets[..., config.stages.index(b)]) for b in choosing]
    similarity = gated_similarity(feat.similarity, torch.stack(gates).mean(0), gate_weight)
    return torch.sqrt(torch.clamp(2.0 - 2.0 * similarity, min=1e-12))


def known_offsets(satellite, stages, shifts, pano_width: int) -> dict[int, torch.Tensor]:
    """Stage -> the true window offset of each positive pair, ``round(o*) mod W_b`` (conventions §5)."""
    shifts = torch.as_tensor(shifts).detach().cpu().numpy()
    out = {}
    for b in stages:
        width = satellite.features[b - 1].shape[-1]
        o = np.rint(true_offset(shifts, width, pano_width)).astype(np.int64) % width
        out[b] = torch.as_tensor(o, device=satellite.features[b - 1].device)
    return out


def alignment_loss(logits: list[torch.Tensor], shifts, pano_width: int) -> torch.Tensor:
    """Mean over stages of the two-hot cross-entropy of the true window offset (see the module docstring)."""
    shifts = torch.as_tensor(shifts).detach().cpu().numpy()
    losses = []
    for lg in logits:  # N x W_b
        lg = lg.float()
        n, width = lg.shape
        o_true = torch.as_tensor(true_offset(shifts, width, pano_width), dtype=torch.float32).to(lg.device)
        lo = torch.floor(o_true)
        frac = o_true - lo
        lo = lo.long().remainder(width)
        target = torch.zeros_like(lg)
        rows = torch.arange(n, device=lg.device)
        target[rows, lo] += 1 - frac
        target[rows, (lo + 1) % width] += frac
        losses.append(-(target * F.log_softmax(lg, dim=-1)).sum(-1).mean())
    return torch.stack(losses).mean()
