"""Feature Cropping and Alignment (FCA): circular window search, crop and pair distances (conventions §5, 6).

At stage b the ground map (width ``w_b``) is a window that slides circularly over the satellite polar map
(width ``W_b``; the panorama wraps): offset ``o`` covers satellite columns ``(o + k) mod W_b``. The offset
is chosen per (ground, satellite) pair and per stage by one of three scores:

- ``gate-corr`` (the demo's): the centred, channel-resolved correlation of the CA column gates ``a_w`` of the
  stage's last block, ``sum_{c,k} A_g(c, k) * A_s(c, (o + k) mod W_b) / (|A_g| |A_s window at o|)`` with
  ``A_g = a_w^g - mean_k a_w^g`` and ``A_s = a_w^s - mean_W a_w^s`` per channel: a cosine in [-1, 1] between the
  photo's column attention and the tile's, C x W values per stage (not C x H x W). A constant ground gives 0 at
  every offset (no direction, no preference), and unlike ``mask-*`` the score cannot ignore the photo.
- ``mask-corr``: ``sum_{h,k} M_g(h, k) * M_s(h, (o + k) mod W_b)`` (conventions §5's default; the mean over 64-512
  sigmoid products is nearly flat, so in practice it behaves like ``mask-sum``)
- ``mask-sum`` (the paper's literal wording): ``sum_{h,k} M_s(h, (o + k) mod W_b)`` (cannot depend on the photo)
- ``feature`` (DSM, the "no FCA" baseline): ``<G_b, S_b window at o>`` on raw features

(ties: lowest offset). With ``offset_stage`` (a model's ``shared_window``) only that stage scores the offsets, and
every other stage places its window at the same azimuth, ``o_b = round(o_a * W_b / W_a) mod W_b``: the deep
stages' own gates, coarse (22.5 deg a column at block 4) and the slowest to learn, then choose nothing, and the
search scores one stage instead of four. Training can replace the argmax by a softmax over the offsets
(``soft_window_distances``) so that the triplet loss reaches the scores; inference always takes the argmax. The
descriptor of a pair is the L2-normalised concatenation of the used stages (FMC, conventions §6), with the satellite
maps cropped at the chosen windows, so the pair distance is

    d = || g / |g| - s_crop / |s_crop| ||,  |g|^2 = sum_b |G_b|^2,  |s_crop|^2 = sum_b E_b(o_b)

where ``E_b(o)`` is the energy of the satellite window. With ``gate_weight`` λ > 0 (``gate-corr`` only) the pair's
similarity also counts how well the two branches' attention agrees at the chosen window:

    sim = (cos_FMC + λ * gate) / (1 + λ),  d = sqrt(2 - 2 sim)

where ``gate`` is the ``gate-corr`` cosine at the chosen offset (the peak the argmax found; the mean over the
choosing stages when each stage chooses its own). Dividing by ``1 + λ`` keeps ``sim`` in [-1, 1]; the windows, and so
the heading, do not change. Nothing here materialises the crops unless asked:
window scores are 1-D cross-correlations (``conv1d`` over the circularly extended satellite map), the window
energies come from per-column energies, and the dot products are either read off the feature correlation
(``feature`` mode, or when gradients flow) or gathered from the chosen window columns only (inference),
which reads ``w_b / W_b`` of each satellite map. Works on any device; references are processed in chunks.

The search (``geoapp.retrieval``) may pass its own ``window_dots`` for inference over a reference store
(fp16 products with an error bound, float64 accumulation: :mod:`geoapp.retrieval.window_dots`); the model itself
needs only the two paths here: training reads the dots off the feature correlation, inference gathers the chosen
windows in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..angles import heading_from_offset
from .align_modes import FEATURE, GATE_CORR, AlignMode, align_mode, gate_weight_problem
from .resnet import StageMaps


def _circular_extend(x: torch.Tensor, width: int) -> torch.Tensor:
    """Append the first ``width - 1`` columns of the last axis so every window is contiguous."""
    return torch.cat([x, x[..., : width - 1]], dim=-1) if width > 1 else x


def window_scores(
    mode: AlignMode | str,
    ground_feat: torch.Tensor,
    sat_feat: torch.Tensor,
    ground_att: torch.Tensor | None,
    sat_att: torch.Tensor | None,
    diagonal: bool = False,
    sat_gate_energy: torch.Tensor | None = None,
) -> torch.Tensor:
    """Score of every circular offset at one stage.

    ``ground_feat`` Q x C x H x w, ``sat_feat`` R x C x H x W; the attention ``ground_att`` / ``sat_att`` is what the
    mode reads: masks Q x H x w and R x H x W (``mask-*``), or column gates Q x C x w and R x C x W (``gate-corr``).
    Returns Q x R x W (all pairs) or N x W (``diagonal``: pair i with i, Q == R == N). ``sat_gate_energy``
    (``gate-corr``): the satellite's precomputed :func:`gate_energy`, R x W, when it has one.
    """
    mode = align_mode(mode)
    q, c, h, w = ground_feat.shape
    r, c2, h2, big_w = sat_feat.shape
    if (c, h) != (c2, h2):
        raise ValueError(
            f"ground map {tuple(ground_feat.shape)} and satellite map {tuple(sat_feat.shape)} differ in C/H"
        )
    if w > big_w:
        raise ValueError(f"ground window ({w} columns) is wider than the satellite map ({big_w} columns)")
    if diagonal and q != r:
        raise ValueError(f"diagonal pairing needs as many ground as satellite maps, got {q} and {r}")
    if not mode.is_fca:
        kernel = ground_feat.reshape(q, c * h, w)
        signal = sat_feat.reshape(r, c * h, big_w)
    else:
        if sat_att is None or (mode.reads_photo and ground_att is None):
            raise ValueError(f"alignment mode {mode.name!r} needs Coordinate Attention {mode.attention} (model built "
                             "without CA?)")
        if mode.attention == "gates":
            return gate_corr_scores(ground_att, sat_att, diagonal, sat_gate_energy)
        signal = sat_att
        kernel = ground_att if mode.reads_photo else torch.ones_like(sat_att[:1, :, :w]).expand(q, -1, -1)
    return _correlate(kernel, signal, diagonal, reads_photo=mode.reads_photo)


def gate_corr_scores(ground_gates: torch.Tensor, sat_gates: torch.Tensor, diagonal: bool = False,
                     sat_energy: torch.Tensor | None = None) -> torch.Tensor:
    """``gate-corr`` window scores from the column gates alone: ground Q x C x w, satellite R x C x W ->
    Q x R x W (or N x W when ``diagonal``), cosines in [-1, 1] (see the module docstring). ``sat_energy``: the
    satellite's precomputed :func:`gate_energy` (R x W), if any."""
    raw = _correlate(centred_gates(ground_gates), sat_gates, diagonal)
    norm = gate_window_norm(sat_gates, ground_gates.shape[-1], sat_energy)  # R x W
    return raw / (norm if diagonal else norm[None])


def centred_gates(gates: torch.Tensor) -> torch.Tensor:
    """``gate-corr``'s ground kernel: each channel's gates minus their mean over the window, the whole Q x C x w
    kernel scaled to unit norm (a constant ground gives an all-zero kernel: every offset scores 0)."""
    g = gates.float()
    g = g - g.mean(dim=-1, keepdim=True)
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]


def gate_energy(gates: torch.Tensor) -> torch.Tensor:
    """R x W: per column, the sum over channels of the squared satellite gates R x C x W, centred per channel over
    the whole width (float32; a reference database precomputes it, so a search reads no gates twice)."""
    s = gates.float()
    return (s - s.mean(dim=-1, keepdim=True)).pow(2).sum(dim=1)


def gate_window_norm(gates: torch.Tensor, width: int, energy: torch.Tensor | None = None) -> torch.Tensor:
    """R x W: the norm of each circular window (``width`` columns) of the satellite gates R x C x W, centred per
    channel over the whole width (``energy``: their precomputed :func:`gate_energy`). Dividing by it makes a
    ``gate-corr`` score the cosine of the centred ground kernel and the centred window, in [-1, 1] (the centring of
    the window changes nothing in the numerator, because the kernel sums to zero over its columns in every
    channel)."""
    col = gate_energy(gates) if energy is None else energy.float()
    return circular_window_sums(col, width).clamp_min(1e-12).sqrt()


def circular_window_sums(columns: torch.Tensor, width: int) -> torch.Tensor:
    """R x W: for every offset o, the sum of ``columns`` (R x W, e.g. per-column energies) over the circular window
    of ``width`` columns starting at o."""
    return _window_sums(_circular_extend(columns, width), width)


def _window_sums(extended: torch.Tensor, width: int, diagonal: bool = False) -> torch.Tensor:
    """Sums of ``width`` consecutive entries of a circularly extended last axis, ``out[..., o] = sum_k x[..., o + k]``,
    or with ``diagonal`` down the last two axes (``width`` rows), ``out[..., o] = sum_k x[..., k, o + k]``. One sum
    over a strided view: ``width`` shifted adds, or a single-channel conv1d, ran several times slower on the
    search's small chunks."""
    *lead, n = extended.shape
    strides = list(extended.stride())
    k_stride = strides[-1]
    if diagonal:
        k_stride += strides[-2]
        lead, strides = lead[:-1], strides[:-2] + strides[-1:]
    view = extended.as_strided((*lead, n - width + 1, width), (*strides, k_stride))
    return view.sum(-1)


def _correlate(kernel: torch.Tensor, signal: torch.Tensor, diagonal: bool, reads_photo: bool = True) -> torch.Tensor:
    """``sum_{d,k} K[q, d, k] S[r, d, (o + k) mod W]`` for every offset: Q x R x W, or N x W when ``diagonal``.
    ``reads_photo`` False: every query's kernel is the same, so one score row per reference serves them all."""
    q, _, w = kernel.shape
    r, _, big_w = signal.shape
    if reads_photo and not diagonal and q <= GEMM_MAX_QUERIES and not (
            torch.is_grad_enabled() and (kernel.requires_grad or signal.requires_grad)):
        return _scores_by_matmul(kernel, signal)
    signal = _circular_extend(signal.float(), w)
    kernel = kernel.float()
    if diagonal:
        # one group per pair: input 1 x (N*D) x (W+w-1), weight N x D x w  ->  1 x N x W
        out = F.conv1d(signal.reshape(1, -1, signal.shape[-1]), kernel, groups=q)
        return out[0]
    if not reads_photo:
        return F.conv1d(signal, kernel[:1]).permute(1, 0, 2).expand(q, r, big_w)
    return F.conv1d(signal, kernel).permute(1, 0, 2)  # R x Q x W -> Q x R x W


# Up to this many queries, mask-corr and feature scores of all pairs come from one matrix product
# (``_scores_by_matmul``); beyond, its R x Q*w x W intermediate outgrows conv1d's Q x R x W output.
GEMM_MAX_QUERIES = 8


def _scores_by_matmul(kernel: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """Circular window scores of all pairs (Q x R x W) as a matrix product plus shifted sums, for a few queries.

    ``kernel`` Q x D x w (ground masks, or features with D = C*H), ``signal`` R x D x W (satellite): first
    ``P[r, q, k, j] = sum_d K[q, d, k] S[r, d, j]`` (one batched matmul over the references; a column-major
    database map is a transposed matrix, read without a copy), then the score of offset ``o`` is
    ``sum_k P[r, q, k, (o + k) mod W]``: w shifted adds. The same products as the conv1d in another order
    (exact for integer values, so ties stay ties; real-valued scores may differ from conv1d's in the last bit,
    which can flip an offset only on a near-exact tie). conv1d with a single output channel runs far below the
    machine's matrix-product speed, so for a few queries one matrix product is faster than the correlation.
    """
    q, d, w = kernel.shape
    r, _, big_w = signal.shape
    a = kernel.float().permute(0, 2, 1).reshape(q * w, d)  # rows (q, k)
    p = torch.matmul(a, signal.float()).view(r, q, w, big_w)  # R x Q x w x W
    # the window at o puts satellite column (o + k) mod W at its position k: sum the circular diagonals
    return _window_sums(_circular_extend(p, w), w, diagonal=True).permute(1, 0, 2)


def attention(maps: StageMaps, mode: AlignMode | str, stage: int) -> torch.Tensor | None:
    """What ``mode`` reads to choose the window at ``stage`` (:meth:`AlignMode.attention_of`)."""
    return align_mode(mode).attention_of(maps, stage)


def best_offsets(scores: torch.Tensor) -> torch.Tensor:
    """Highest-scoring offset along the last axis; ``torch.argmax`` returns the first maximum, i.e. the
    lowest offset on ties (conventions §5)."""
    return scores.argmax(dim=-1)


def peak_fraction(scores: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Sub-column position of each score peak: the vertex of the parabola through the scores at ``offsets`` and at
    its two circular neighbours, in [-0.5, 0.5] columns (0 where the three are not a peak, e.g. flat).

    ``scores`` N x W (diagonal window scores), ``offsets`` N (the argmax, or any chosen offset) -> N float64.
    """
    scores = scores.double()
    width = scores.shape[-1]
    rows = torch.arange(len(offsets), device=scores.device)
    off = offsets.to(scores.device).long()
    left, mid, right = (scores[rows, (off + d) % width] for d in (-1, 0, 1))
    curvature = left - 2.0 * mid + right
    peak = curvature < 0
    fraction = torch.where(peak, 0.5 * (left - right) / torch.where(peak, curvature, -1.0), 0.0)
    return fraction.clamp(-0.5, 0.5)


def headings_from_scores(scores: torch.Tensor, offsets: torch.Tensor, window_width: int, map_width: int) -> np.ndarray:
    """Headings of N chosen ``offsets`` refined by :func:`peak_fraction` of their window ``scores`` (N x W_b)."""
    fine = offsets.to(scores.device).double() + peak_fraction(scores, offsets)
    return heading_from_offset(fine.cpu().numpy(), window_width, map_width)


def refined_headings(mode: AlignMode | str, stage: int, ground: StageMaps, satellite: StageMaps, offsets: torch.Tensor,
                     window_width: int, map_width: int) -> np.ndarray:
    """Headings of N pairs (ground i with satellite i, window at ``offsets`` N on ``stage``) below the column grid:
    the offset moves by :func:`peak_fraction` of that stage's window scores, the argmax's window stays as it is.
    With ``gate-corr`` the refined offset is where the photo's column attention matches the tile's best."""
    gate_e = satellite.gate_energy[stage - 1] if satellite.gate_energy is not None else None
    scores = window_scores(mode, ground.features[stage - 1], satellite.features[stage - 1],
                           attention(ground, mode, stage), attention(satellite, mode, stage), diagonal=True,
                           sat_gate_energy=gate_e)
    return headings_from_scores(scores, offsets, window_width, map_width)


def scale_offsets(offsets: torch.Tensor, from_width: int, to_width: int) -> torch.Tensor:
    """The offset on a ``to_width``-column map at the azimuth of ``offsets`` on a ``from_width``-column map
    (nearest column, circular)."""
    if from_width == to_width:
        return offsets
    return torch.floor(offsets.double() * to_width / from_width + 0.5).long().remainder(to_width)


def offset_pooling(from_width: int, to_width: int, device=None) -> torch.Tensor:
    """``from_width`` x ``to_width`` 0/1 matrix: row o has its 1 at :func:`scale_offsets` of o, so a distribution
    over the window offsets of one stage times it is the induced distribution over another stage's offsets."""
    cols = scale_offsets(torch.arange(from_width, device=device), from_width, to_width)
    return F.one_hot(cols, to_width).float()


def _check_offset_stage(offset_stage: int | None, stages) -> None:
    if offset_stage is not None and offset_stage not in stages:
        raise ValueError(f"offset_stage {offset_stage} is not one of the used stages {tuple(stages)}")


def _window_index(offsets: torch.Tensor, width: int, map_width: int) -> torch.Tensor:
    return (offsets.unsqueeze(-1) + torch.arange(width, device=offsets.device)) % map_width


def crop_windows(sat_feat: torch.Tensor, offsets: torch.Tensor, width: int) -> torch.Tensor:
    """Crop the window of ``width`` columns at ``offsets`` (circularly) from each satellite map.

    ``sat_feat`` N x C x H x W with ``offsets`` N  ->  N x C x H x width.
    """
    idx = _window_index(offsets.to(sat_feat.device), width, sat_feat.shape[-1])  # N x width
    idx = idx[:, None, None, :].expand(-1, sat_feat.shape[1], sat_feat.shape[2], -1)
    return torch.gather(sat_feat, 3, idx)


# ``window_dots(ground_feat Q x C x H x w, sat_feat R x C x H x W, offsets Q x R, window_energy Q x R)`` ->
# ``(dots Q x R, error bound Q x R or None)``: the search's own arithmetic for a stage's window dot products
WindowDots = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                      tuple[torch.Tensor, torch.Tensor | None]]


class StageOffsets:
    """Headings from per-stage window offsets: the part an alignment result and a search's top-k share.

    Needs ``offsets`` (``[..., i]`` is the window offset at ``stages[i]``), ``stages``, and ``window_widths`` /
    ``map_widths`` (``w_b`` / ``W_b`` per stage, so headings can be read: conventions §5).
    """

    offsets: torch.Tensor
    stages: tuple[int, ...]
    window_widths: tuple[int, ...]
    map_widths: tuple[int, ...]

    def headings(self, stage: int | None = None) -> np.ndarray:
        """Predicted heading in degrees, [-180, 180), from the offsets at ``stage`` (default: finest used)."""
        stage = min(self.stages) if stage is None else stage
        i = self.stages.index(stage)
        return heading_from_offset(
            self.offsets[..., i].detach().cpu().numpy(), self.window_widths[i], self.map_widths[i]
        )


@dataclass
class AlignResult(StageOffsets):
    """Chosen offsets and pair distances for ``Q x R`` pairs (or ``N`` pairs when diagonal).

    ``offsets``, ``stages``, ``window_widths``, ``map_widths``: see :class:`StageOffsets`. ``crops`` (diagonal
    only, when asked) holds the cropped satellite maps per stage.
    """

    offsets: torch.Tensor
    distances: torch.Tensor
    similarity: torch.Tensor
    stages: tuple[int, ...]
    window_widths: tuple[int, ...]
    map_widths: tuple[int, ...]
    crops: list[torch.Tensor] | None = None
    similarity_error: torch.Tensor | None = None  # bound on |similarity - exact| per pair (``window_dots``)


def _columns(sat_feat: torch.Tensor) -> torch.Tensor:
    """R x W x (C*H) view of R x C x H x W maps: free for a column-major store (a database), else one copy."""
    r, c, h, big_w = sat_feat.shape
    return sat_feat.permute(0, 3, 1, 2).reshape(r, big_w, c * h)


def column_energy(sat_feat: torch.Tensor) -> torch.Tensor:
    """R x W: sum over channels and rows of the squared satellite features, per column (float32)."""
    if sat_feat.requires_grad or not sat_feat.permute(0, 3, 1, 2).is_contiguous():
        return sat_feat.float().pow(2).sum(dim=(1, 2))
    return _columns(sat_feat).float().pow(2).sum(-1)


def window_row_blocks(offsets: torch.Tensor, width: int, n_ref: int, map_width: int, diagonal: bool, block: int):
    """Yield ``(a, b, i, rows)``: for references ``a:b`` and query ``i`` (``None`` when diagonal: reference j's own
    offset), the rows of the (R*W) x CH column view that hold their windows at ``offsets``, in window order."""
    idx = _window_index(offsets, width, map_width)  # Q x R x w (or N x w)
    base = (torch.arange(n_ref, device=idx.device) * map_width)[:, None]
    for a in range(0, n_ref, block):
        b = min(n_ref, a + block)
        for i in [None] if diagonal else range(idx.shape[0]):
            yield a, b, i, (base[a:b] + (idx[a:b] if i is None else idx[i, a:b])).reshape(-1)


def gathered_windows(sat_feat: torch.Tensor, offsets: torch.Tensor, width: int, diagonal: bool, block: int):
    """Yield ``(a, b, i, windows)``: the windows at ``offsets`` of references ``a:b`` for query ``i`` (``None`` when
    diagonal: reference j's own offset), as a (b - a) x (width*C*H) matrix in column order, in the store's dtype.

    The windows are copied out with one ``index_select`` over the (R*W) x CH row view (contiguous rows of C*H
    values for a column-major store), ``block`` references at a time; only w/W of each map is read.
    """
    n_ref, c, h, big_w = sat_feat.shape
    s_rows = _columns(sat_feat).reshape(n_ref * big_w, c * h)
    for a, b, i, rows in window_row_blocks(offsets, width, n_ref, big_w, diagonal, block):
        yield a, b, i, torch.index_select(s_rows, 0, rows).reshape(b - a, width * c * h)


def gathered_dots(
    ground_feat: torch.Tensor, sat_feat: torch.Tensor, offsets: torch.Tensor, diagonal: bool, block: int = 256,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``<G_q, S_r window at o_qr>`` (Q x R, or N when diagonal) from the gathered window columns of each reference,
    reduced with a mat-vec in ``dtype`` (float64: the float32 result no longer depends on how the BLAS splits the
    block)."""
    q, c, h, w = ground_feat.shape
    g_vec = ground_feat.to(dtype).permute(0, 3, 1, 2).reshape(q, w * c * h)  # Q x (w*CH), column order
    out = torch.empty(offsets.shape, dtype=torch.float32, device=offsets.device)
    for a, b, i, win in gathered_windows(sat_feat, offsets, w, diagonal, block):
        if i is None:
            out[a:b] = (win.to(dtype) * g_vec[a:b]).sum(-1)
        else:
            out[i, a:b] = win.to(dtype) @ g_vec[i]
    return out


def _window_energy(col_energy: torch.Tensor, offsets: torch.Tensor, width: int, diagonal: bool) -> torch.Tensor:
    """Sum of squared satellite features inside the chosen window, from per-column energies (R x W)."""
    idx = _window_index(offsets, width, col_energy.shape[-1])
    if diagonal:
        return torch.gather(col_energy, 1, idx).sum(-1)
    r = col_energy.shape[0]
    return col_energy[torch.arange(r, device=idx.device)[None, :, None], idx].sum(-1)  # Q x R


def gated_similarity(similarity: torch.Tensor, gate: torch.Tensor, gate_weight: float) -> torch.Tensor:
    """The pair similarity with the gate term (module docstring): ``(cos_FMC + λ gate) / (1 + λ)``, in [-1, 1]."""
    return (similarity + gate_weight * gate) / (1.0 + gate_weight)


def align_windows(
    ground: StageMaps,
    satellite: StageMaps,
    mode: AlignMode | str = GATE_CORR,
    stages: tuple[int, ...] = (1, 2, 3, 4),
    diagonal: bool = False,
    chunk_size: int | None = 2048,
    return_crops: bool = False,
    offset_stage: int | None = None,
    window_dots: WindowDots | None = None,
    window_offsets: dict[int, torch.Tensor] | None = None,
    gate_weight: float = 0.0,
) -> AlignResult:
    """Align every ground map with every satellite map (or pair i with i) at each stage and return the offsets
    and the FMC pair distances (conventions §5, 6). ``ground``/``satellite`` hold all four stages (as the backbone
    returns them); ``stages`` picks the ones used. References are processed ``chunk_size`` at a time.
    ``offset_stage``: the one stage whose scores choose the window of every stage (see the module docstring); None:
    each its own. ``window_dots`` (inference in an attention mode): computes a stage's window dot products from
    ``(ground, satellite, offsets, window energies)`` and returns them with a bound on their error (None: exact);
    the default gathers the windows in float32. ``similarity_error`` sums the stages' bounds (None when all exact).
    ``window_offsets`` (diagonal pairs only): stage -> N given window offsets, used instead of choosing them (training
    crops positives at their known window this way; the gate term then reads the scores at the given offsets).
    ``gate_weight``: λ of the gate term in the pair similarity (module docstring; 0: FMC cosine only).
    """
    mode = align_mode(mode)
    _check_alignment(ground, satellite, mode, diagonal, return_crops, offset_stage, window_offsets, gate_weight,
                     stages)
    n_ref = len(satellite)
    chunk = n_ref if (chunk_size is None or diagonal) else max(1, chunk_size)
    if chunk < n_ref:
        parts = [align_windows(ground, satellite.slice(i, i + chunk), mode, stages, False, None,
                               offset_stage=offset_stage, window_dots=window_dots, gate_weight=gate_weight)
                 for i in range(0, n_ref, chunk)]
        return _joined(parts)
    windows = choose_windows(ground, satellite, mode, stages, diagonal, offset_stage, window_offsets, gate_weight)
    return _score_windows(ground, satellite, stages, diagonal, windows, gate_weight, window_dots, return_crops)


def _check_alignment(ground, satellite, mode, diagonal, return_crops, offset_stage, window_offsets, gate_weight,
                     stages) -> None:
    _check_offset_stage(offset_stage, stages)
    if window_offsets is not None and (not diagonal or set(window_offsets) != set(stages)):
        raise ValueError(f"given offsets need diagonal pairs and one tensor per used stage {tuple(stages)}, got "
                         f"stages {sorted(window_offsets)} with diagonal={diagonal}")
    if offset_stage is not None and not mode.is_fca:
        raise ValueError(f"offset_stage needs an attention mode: {mode.name!r} reads its dot products off its own "
                         "scores")
    gate_problem = gate_weight_problem(gate_weight, mode)
    if gate_problem:
        raise ValueError(gate_problem)
    if return_crops and not diagonal:
        raise ValueError("return_crops is only available for diagonal pairs (one crop per pair)")
    if diagonal and len(ground) != len(satellite):
        raise ValueError(f"diagonal pairing needs equal counts, got {len(ground)} ground and {len(satellite)} "
                         "satellite")


def _joined(parts: list[AlignResult]) -> AlignResult:
    """The results of consecutive reference chunks as one (Q x R)."""
    errors = [p.similarity_error for p in parts]
    return AlignResult(
        offsets=torch.cat([p.offsets for p in parts], dim=1),
        distances=torch.cat([p.distances for p in parts], dim=1),
        similarity=torch.cat([p.similarity for p in parts], dim=1),
        stages=parts[0].stages,
        window_widths=parts[0].window_widths,
        map_widths=parts[0].map_widths,
        similarity_error=None if errors[0] is None else torch.cat(errors, dim=1),
    )


@dataclass
class Windows:
    """The chosen window of every used stage: ``offsets[s]`` (Q x R, or N), how they were chosen (``given``: the
    caller's; ``feature_scores[s]``: feature mode, whose score at the offset is the dot product itself), and the gate
    score at each choosing stage's window (``gate_terms``, when the similarity has a gate term)."""

    offsets: dict[int, torch.Tensor]
    given: bool = False
    feature_scores: dict[int, torch.Tensor] = field(default_factory=dict)
    gate_terms: list[torch.Tensor] = field(default_factory=list)


def gate_score_at(ground: StageMaps, satellite: StageMaps, stage: int, offsets: torch.Tensor,
                  diagonal: bool = False) -> torch.Tensor:
    """The ``gate-corr`` score of every pair at its window ``offsets`` (Q x R, or N when diagonal) at ``stage``: the
    gate term's value for windows chosen in any way."""
    return _score_at(_stage_scores(ground, satellite, GATE_CORR, stage, diagonal), offsets)


def _stage_scores(ground: StageMaps, satellite: StageMaps, mode: AlignMode, s: int, diagonal: bool) -> torch.Tensor:
    gate_e = satellite.gate_energy[s - 1] if satellite.gate_energy is not None else None
    return window_scores(mode, ground.features[s - 1], satellite.features[s - 1], attention(ground, mode, s),
                         attention(satellite, mode, s), diagonal=diagonal, sat_gate_energy=gate_e)


def _score_at(scores: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    return scores.gather(-1, offsets.unsqueeze(-1)).squeeze(-1).float()


def choose_windows(ground: StageMaps, satellite: StageMaps, mode: AlignMode | str, stages: tuple[int, ...],
                   diagonal: bool, offset_stage: int | None = None,
                   window_offsets: dict[int, torch.Tensor] | None = None, gate_weight: float = 0.0) -> Windows:
    """Each used stage's window: the argmax of its own scores, of ``offset_stage``'s scaled to its width, or the
    given ``window_offsets``; with a gate weight, also the gate score at each choosing stage's window."""
    mode = align_mode(mode)
    choosing = stages if offset_stage is None else (offset_stage,)
    windows = Windows({}, given=window_offsets is not None)
    # the attention scores are needed to choose a window, or to read the gate term at a given one
    scored = mode.is_fca and (window_offsets is None or gate_weight > 0)
    for s in choosing if scored else ():
        scores = _stage_scores(ground, satellite, mode, s, diagonal)
        off = best_offsets(scores) if window_offsets is None else window_offsets[s].to(scores.device, torch.long)
        windows.offsets[s] = off
        if gate_weight > 0:
            windows.gate_terms.append(_score_at(scores, off))
    for s in stages:
        sat = satellite.features[s - 1]
        if window_offsets is not None:
            windows.offsets[s] = window_offsets[s].to(device=sat.device, dtype=torch.long)
        elif not mode.is_fca:
            scores = window_scores(mode, ground.features[s - 1], sat, None, None, diagonal=diagonal)
            windows.feature_scores[s] = scores
            windows.offsets[s] = best_offsets(scores)
        elif offset_stage is not None and s != offset_stage:
            windows.offsets[s] = scale_offsets(windows.offsets[offset_stage],
                                               satellite.features[offset_stage - 1].shape[-1], sat.shape[-1])
    return windows


def _stage_dots(g: torch.Tensor, sat: torch.Tensor, s: int, off: torch.Tensor, win_e: torch.Tensor,
                windows: Windows, diagonal: bool, window_dots: WindowDots | None):
    """The window dot products of stage ``s`` and a bound on their error (None: exact), by the cheapest exact path:
    the given windows cropped (diagonal), feature mode's own scores, the full feature correlation when gradients
    must flow (no gathered copies to keep for backward), the search's ``window_dots``, or the gathered windows."""
    if windows.given:
        return (crop_windows(sat, off, g.shape[-1]).float() * g.float()).sum(dim=(1, 2, 3)), None
    if s in windows.feature_scores:
        return _score_at(windows.feature_scores[s], off), None
    if torch.is_grad_enabled() and (g.requires_grad or sat.requires_grad):
        return _score_at(window_scores(FEATURE, g, sat, None, None, diagonal=diagonal), off), None
    if window_dots is not None and not diagonal:
        return window_dots(g, sat, off, win_e)
    return gathered_dots(g, sat, off, diagonal), None


def _score_windows(ground: StageMaps, satellite: StageMaps, stages: tuple[int, ...], diagonal: bool,
                   windows: Windows, gate_weight: float, window_dots: WindowDots | None,
                   return_crops: bool) -> AlignResult:
    """The FMC similarity of the chosen windows (with the gate term) and the pair distances (conventions §6)."""
    dot_total = g_energy = s_energy = 0.0
    dot_error = None
    offsets, widths, map_widths, crops = [], [], [], []
    for s in stages:
        g, sat, off = ground.features[s - 1], satellite.features[s - 1], windows.offsets[s]
        w = g.shape[-1]
        col_e = satellite.col_energy[s - 1] if satellite.col_energy is not None else column_energy(sat)
        win_e = _window_energy(col_e.float(), off, w, diagonal)
        dots, err = _stage_dots(g, sat, s, off, win_e, windows, diagonal, window_dots)
        if err is not None:
            dot_error = err if dot_error is None else dot_error + err
        dot_total = dot_total + dots
        g_norm2 = g.float().pow(2).sum(dim=(1, 2, 3))
        g_energy = g_energy + (g_norm2 if diagonal else g_norm2[:, None])
        s_energy = s_energy + win_e
        offsets.append(off)
        widths.append(w)
        map_widths.append(sat.shape[-1])
        if return_crops:
            crops.append(crop_windows(sat, off, w))
    eps = 1e-12
    norm = torch.sqrt(g_energy * s_energy) + eps
    similarity = dot_total / norm
    if windows.gate_terms:
        similarity = gated_similarity(similarity, torch.stack(windows.gate_terms).mean(0), gate_weight)
        norm = norm * (1.0 + gate_weight)  # the dots' share of the similarity, so their error bound, is 1 / (1 + λ)
    distances = torch.sqrt(torch.clamp(2.0 - 2.0 * similarity, min=eps))
    return AlignResult(
        offsets=torch.stack(offsets, dim=-1),
        distances=distances,
        similarity=similarity,
        stages=tuple(stages),
        window_widths=tuple(widths),
        map_widths=tuple(map_widths),
        crops=crops if return_crops else None,
        similarity_error=None if dot_error is None else dot_error / norm,
    )


def soft_window_distances(
    ground: StageMaps, satellite: StageMaps, mode: AlignMode | str, stages: tuple[int, ...], temperature: torch.Tensor,
    straight_through: bool = False, offset_stage: int | None = None, first: int = 0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Training form of :func:`align_windows` (all B x B pairs) with a soft window choice, so the triplet loss
    reaches the scores that choose the window (the argmax of inference has no gradient).

    At stage b the window weights are ``p(o) = softmax_o(T_b * score(o))``; the pair's stage dot product and
    window energy are their ``p``-weighted means over the offsets, and the FMC similarity is formed from them as
    in :func:`align_windows`, which it equals when ``p`` is one-hot (``T_b`` -> infinity). Returns the B x B
    distances and, per used stage, the true pairs' window logits ``T_b * score`` (B x W_b) for the alignment loss.
    ``straight_through``: the forward pass uses the argmax window (the inference distances), the backward pass
    the softmax's gradient. ``offset_stage``: only that stage's scores choose, every other stage's window weights
    are its weights pooled onto their offsets (:func:`offset_pooling`), and only its logits are returned.
    Q x R pairs work the same way; the true pairs are then (i, ``first`` + i) (the logits returned are theirs).
    """
    _check_offset_stage(offset_stage, stages)
    mode = align_mode(mode)

    def window_weights(s: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores = window_scores(mode, ground.features[s - 1], satellite.features[s - 1], attention(ground, mode, s),
                               attention(satellite, mode, s))  # B x B x W_s
        logits = temperature[s - 1] * scores
        p = torch.softmax(logits, dim=-1)
        if straight_through:
            hard = F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(p.dtype)
            p = hard + p - p.detach()
        return p, logits

    shared = None if offset_stage is None else window_weights(offset_stage)
    dot_total = 0.0
    s_energy = 0.0
    g_energy = 0.0
    logits_diag = []
    for s in stages:
        g, sat = ground.features[s - 1], satellite.features[s - 1]
        w = g.shape[-1]
        if shared is None:
            p, logits = window_weights(s)
        else:
            p, logits = shared
            p = p @ offset_pooling(p.shape[-1], sat.shape[-1], p.device).to(p.dtype)
        corr = window_scores(FEATURE, g, sat, None, None)  # B x B x W: the dot product at every offset
        win_e = circular_window_sums(column_energy(sat.float()), w)  # B x W
        dot_total = dot_total + (p * corr).sum(-1)
        s_energy = s_energy + (p * win_e[None]).sum(-1)
        g_energy = g_energy + g.float().pow(2).sum(dim=(1, 2, 3))[:, None]
        if shared is None or s == offset_stage:
            logits_diag.append(logits[:, first:first + len(logits)].diagonal(dim1=0, dim2=1).transpose(0, 1))
    similarity = dot_total / (torch.sqrt(g_energy * s_energy) + 1e-12)
    return torch.sqrt(torch.clamp(2.0 - 2.0 * similarity, min=1e-12)), logits_diag

