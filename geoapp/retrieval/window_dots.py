"""The search's arithmetic for window dot products over a reference store (``align_windows(window_dots=)``).

The model computes a window's dot product in float32 (:func:`geoapp.model.align.gathered_dots`). A search over an
fp16 store can do better in two ways, both here because they serve the search, not the model:

- :func:`fp16_window_dots` (the exhaustive search's first pass): the gathered windows are multiplied with the
  ground in fp16 with fp32 accumulation, skipping the fp32 copy of every window (on a CPU the upcast cost more
  than the rest of the search). The result is rounded once to fp16, so each pair also gets a bound on its
  similarity error; :func:`geoapp.retrieval.search.topk_matches` re-ranks everything inside that bound exactly, so
  its answers equal the fp32 path's.
- :func:`float64_window_dots` (that exact re-rank): float64 accumulation, so a pair's distance is the same whatever
  other references share its chunk.
"""

from __future__ import annotations

import math

import torch

from ..model.align import gathered_dots, gathered_windows, window_row_blocks
from .codes import WindowRows

# Relative error of one fp16 dot product <x, g> with respect to |x| |g|: rounding the ground to fp16 (2^-11),
# rounding the fp32-accumulated result to fp16 (2^-11), and the fp32 accumulation itself (1e-4: ~6x the random-walk
# estimate sqrt(K) 2^-24 for K = 65,536 terms). The stored satellite values are fp16 already: no error.
FP16_DOT_REL_ERROR = 2.0**-10 + 1e-4
FP16_TINY = 2.0**-24  # spacing of fp16 subnormals: the absolute rounding error below the normal range

# References per gathered block: about this many bytes of windows, so the copy is still in the CPU's caches when the
# product reads it (the copy and the product each read ~2.5 GB per query at 10,000 full-size references otherwise),
# in blocks large enough that each copy and product is worth its call: a block sweep of the exhaustive search found
# 4 MB fastest, smaller blocks paying per-call costs and larger ones leaving the caches (docs/results.md,
# "python -m geoapp.bench search: latency").
WINDOW_BLOCK_BYTES = 4 << 20


def fp16_window_dots(
    ground_feat: torch.Tensor, sat_feat: torch.Tensor, offsets: torch.Tensor, win_energy: torch.Tensor,
    block: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The window dot products (Q x R, fp32) of an fp16 store without upcasting the windows, and a bound on their
    absolute error (Q x R) from the window energies ``win_energy`` (Q x R). A store in another dtype gets the
    model's exact float32 products and no bound.

    Each query is scaled by a power of two (exact) so that |dot| <= |x| |g| stays far inside fp16's range.
    """
    if sat_feat.dtype != torch.float16:
        return gathered_dots(ground_feat, sat_feat, offsets, diagonal=False), None
    q, c, h, w = ground_feat.shape
    k = w * c * h
    g_vec = ground_feat.float().permute(0, 3, 1, 2).reshape(q, k)
    g_norm = g_vec.norm(dim=1)
    x_norm = win_energy.clamp_min(0).sqrt()  # |window| per pair
    biggest = (x_norm.amax(dim=1) * g_norm).clamp_min(1e-30)
    scale = torch.minimum(2.0**15 / biggest, 2.0**15 / g_vec.abs().amax(dim=1).clamp_min(1e-30))
    scale = torch.exp2(torch.floor(torch.log2(scale)))  # Q
    g16 = (g_vec * scale[:, None]).half()
    out = torch.empty(offsets.shape, dtype=torch.float32, device=offsets.device)
    if block is None:
        block = max(8, WINDOW_BLOCK_BYTES // (2 * k))
    for a, b, i, win in _windows(sat_feat, offsets, w, block):
        out[i, a:b] = (win @ g16[i]).float()
    out /= scale[:, None]
    # relative part, plus the subnormal floor: the ground's (sum |x| <= sqrt(K) |x|) and the result's
    err = FP16_DOT_REL_ERROR * x_norm * g_norm[:, None] + (math.sqrt(k) * x_norm + 1.0) * FP16_TINY / scale[:, None]
    return out, err


def _windows(sat_feat, offsets: torch.Tensor, width: int, block: int):
    """:func:`~geoapp.model.align.gathered_windows` (all pairs), reading only the windows of a quantized store or of
    references gathered from a store (:class:`~geoapp.retrieval.codes.WindowRows`)."""
    if not isinstance(sat_feat, WindowRows):
        yield from gathered_windows(sat_feat, offsets, width, False, block)
        return
    n_ref, big_w = sat_feat.shape[0], sat_feat.shape[3]
    for a, b, i, rows in window_row_blocks(offsets, width, n_ref, big_w, False, block):
        yield a, b, i, sat_feat.window_rows(rows).reshape(b - a, -1)


def float64_window_dots(
    ground_feat: torch.Tensor, sat_feat: torch.Tensor, offsets: torch.Tensor, win_energy: torch.Tensor,
) -> tuple[torch.Tensor, None]:
    """The window dot products accumulated in float64 and rounded to float32 (exact up to that rounding)."""
    return gathered_dots(ground_feat, sat_feat, offsets, diagonal=False, dtype=torch.float64).float(), None
