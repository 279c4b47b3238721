"""Evaluation of a checkpoint on a split: recall (SPEC 7) and heading error of the true pair.

The satellite gallery is encoded once (in memory, on the compute device); queries are encoded block by block
and ranked with :func:`geoapp.retrieval.search.true_match_ranks`, the matching engine's own distance code.
For each FoV the model is rebuilt with ``config.with_fov(fov)``; each query gets SPEC 4's fixed shift drawn
from each of the shift seeds (reported figures: :data:`REPORT_SHIFT_SEEDS`, 2019 first, then 2020 and 2021, with
every seed's figures and their mean +- std). The heading error is the circular difference between the heading
predicted from the TRUE pair's window offset (at the config's heading stage) and the true heading of the crop.
Used by training's final evaluation and by ``python -m geoapp.evaluate``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..angles import angular_error, fov_width, heading_from_shift
from ..data.fov import EVAL_SHIFT_SEED, eval_shifts
from ..model import CrossViewModel, StageMaps, build_model, pair_headings
from ..retrieval.metrics import recall_from_ranks
from ..retrieval.search import gather_maps, true_match_ranks
from .data import PairImages, crop_batch, normalize
from .distributed import autocast

REPORT_SHIFT_SEEDS = (EVAL_SHIFT_SEED, 2020, 2021)  # reported figures: mean +- std over these (2019 first, SPEC 4)
METRICS = ("R@1", "R@5", "R@10", "R@1%", "heading_median_deg", "heading_within_10deg", "heading_within_22.5deg")




def _blocks(indices: np.ndarray, size: int) -> list[np.ndarray]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


@torch.no_grad()
def encode_gallery(model: CrossViewModel, images: PairImages, indices: np.ndarray, device, precision: str = "fp32",
                   batch_size: int = 64, progress=None) -> StageMaps:
    """Satellite stage maps of ``indices`` (in that order), kept on ``device`` in float32."""
    parts = []
    for _, polars in images.batches(_blocks(indices, batch_size), panos=False):
        with autocast(device, precision):
            maps = model.encode_satellite(normalize(polars).to(device, non_blocking=True))
        parts.append(maps.to(dtype=torch.float32))  # matching runs in fp32 (bf16 maps only slow it down)
        if progress is not None:
            progress.update(len(polars))
    return StageMaps.cat(parts)


@torch.no_grad()
def evaluate_model(
    model: CrossViewModel,
    images: PairImages,
    fovs=None,
    shift_seeds=(EVAL_SHIFT_SEED,),
    indices=None,
    device="cpu",
    precision: str = "fp32",
    batch_size: int = 64,
    chunk_size: int = 512,
    progress: bool = False,
) -> dict:
    """Recall and heading metrics of ``model`` on the pairs ``indices`` of ``images`` (default: all).

    Query ``i`` is matched against the satellites of the same ``indices`` (its own is the true one). Shifts
    are ``eval_shifts(N, seed)`` of the whole split, indexed by the pair's position in the split, so a
    subset sees the same crops as the full evaluation.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    n_split = len(images)
    indices = np.arange(n_split) if indices is None else np.asarray(indices, dtype=np.int64)
    width = images.width
    fovs = [model.config.fov_deg] if not fovs else [float(f) for f in fovs]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(indices) * (1 + len(fovs) * len(shift_seeds)), desc="evaluating", unit="img")
    t0 = time.perf_counter()
    gallery = encode_gallery(model, images, indices, device, precision, batch_size, bar)
    results = []
    for fov in fovs:
        config = model.config.with_fov(fov)
        fov_model = build_model(config).to(device)
        fov_model.load_state_dict(model.state_dict())
        fov_model.eval()
        crop_width = fov_width(fov, width)
        stage = config.heading_stage_resolved
        for seed in shift_seeds:
            shifts = eval_shifts(n_split, int(seed), width)[indices]
            ranks, errors, fine_errors = [], {s: [] for s in config.stages}, []
            positions = np.arange(len(indices))
            for block, (panos, _) in zip(_blocks(positions, batch_size),
                                         images.batches(_blocks(indices, batch_size), polars=False)):
                ground = normalize(crop_batch(panos, shifts[block], crop_width)).to(device, non_blocking=True)
                with autocast(device, precision):
                    maps = fov_model.encode_ground(ground).to(dtype=torch.float32)
                match = true_match_ranks(config, maps, gallery, block, chunk_size=chunk_size)
                ranks.append(match.ranks)
                truth = heading_from_shift(shifts[block], fov, width)
                for s in config.stages:
                    errors[s].append(angular_error(match.result.headings(s), truth))
                fine = pair_headings(config, maps, gather_maps(gallery, block.tolist()), match.result)
                fine_errors.append(angular_error(fine, truth))
                if bar is not None:
                    bar.update(len(block))
            errors = {s: np.concatenate(e) for s, e in errors.items()}
            row = {"fov": fov, "shift_seed": int(seed), "heading_stage": stage}
            row.update(recall_from_ranks(np.concatenate(ranks), n_refs=len(indices)))
            row.update(heading_stats(np.concatenate(fine_errors)))  # the heading the app shows: refined
            # diagnostics: the heading each stage's window offset gives (its window step is 360 / W_b degrees)
            row["heading_median_deg_by_stage"] = {str(s): float(np.median(e)) for s, e in errors.items()}
            results.append(row)
    if bar is not None:
        bar.close()
    if was_training:
        model.train()
    return {
        "n_queries": len(indices),
        "n_references": len(indices),
        "shift_seeds": [int(s) for s in shift_seeds],
        "results": results,
        "by_fov": summarize(results),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def heading_stats(errors: np.ndarray) -> dict:
    """Median circular heading error (deg) and the shares (%) within 10 and 22.5 degrees."""
    return {
        "heading_median_deg": float(np.median(errors)),
        "heading_within_10deg": float(np.mean(errors <= 10.0) * 100.0),
        "heading_within_22.5deg": float(np.mean(errors <= 22.5) * 100.0),
    }


def summarize(results: list[dict]) -> dict:
    """Per FoV: the mean (and, over several shift seeds, the std) of every metric."""
    out = {}
    for fov in dict.fromkeys(r["fov"] for r in results):
        rows = [r for r in results if r["fov"] == fov]
        entry = {}
        for m in METRICS:
            values = np.array([r[m] for r in rows])
            entry[m] = float(values.mean())
            if len(rows) > 1:
                entry[m + "_std"] = float(values.std(ddof=1))
        out[f"{fov:g}"] = entry
    return out


def format_table(report: dict) -> str:
    head = ["FoV", "R@1", "R@5", "R@10", "R@1%", "head.med", "<=10deg", "<=22.5deg"]
    split = f"split {report['split']!r}: " if report.get("split") else ""
    lines = [
        f"{split}{report['n_queries']} queries x {report['n_references']} references, shift seeds "
        f"{report['shift_seeds']}",
        "  ".join(f"{h:>14}" for h in head),
    ]
    for fov, m in report["by_fov"].items():
        cells = [f"{fov} deg"]
        for key in METRICS:
            text = f"{m[key]:.2f}"
            if key + "_std" in m:
                text += f" ± {m[key + '_std']:.2f}"
            cells.append(text)
        lines.append("  ".join(f"{c:>14}" for c in cells))
    spread = ", mean ± std over the shift seeds" if len(report.get("shift_seeds", ())) > 1 else ""
    lines.append(f"(recall and heading shares in %, heading median in degrees; heading of the true pair{spread})")
    return "\n".join(lines)


def subset_indices(n: int, size: int) -> np.ndarray:
    """``size`` evenly spread pair positions of an ``n``-pair split (all when size is 0 or >= n)."""
    if size <= 0 or size >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, size).round().astype(np.int64))
