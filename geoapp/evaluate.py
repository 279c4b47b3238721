"""Evaluate a checkpoint on a dataset split: recall (SPEC 7) and heading error of the true pair.

    python -m geoapp.evaluate --checkpoint runs/demo/best.safetensors --fov 70 90
    python -m geoapp.evaluate --checkpoint ckpt.safetensors --dataset cvusa --data-root data/cvusa \\
        --split test --fov 70 90 --shift-seeds 2019 2020 2021 --out eval.json

The satellite gallery is encoded once (in memory, on the compute device); queries are encoded block by block
and ranked with :func:`geoapp.retrieval.search.true_match_ranks`, the matching engine's own distance code.
For each FoV the model is rebuilt with ``config.with_fov(fov)``; each query gets SPEC 4's fixed shift drawn
from each of ``--shift-seeds`` (default :data:`REPORT_SHIFT_SEEDS`: 2019 first, then 2020 and 2021; the report
keeps every seed's figures and their mean +- std). The heading error is the circular difference between the
heading predicted from the TRUE pair's window offset (at the config's heading stage) and the true heading of
the crop.

Splits (SPEC 7): the default ``--split`` is ``test``, the split results are reported on. The command refuses to
report on the split that chose the checkpoint (``selection_split`` in its metadata, written by
``python -m geoapp.train``) unless ``--allow-selection-split`` is given, and warns for a checkpoint that does
not record one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .data.fov import EVAL_SHIFT_SEED, angular_error, eval_shifts, fov_width, heading_from_shift
from .model import CrossViewModel, StageMaps, build_model, load_model, read_metadata
from .retrieval.metrics import recall_from_ranks
from .retrieval.search import true_match_ranks
from .training.data import PairImages, crop_batch, normalize, open_split
from .training.distributed import autocast, resolve_precision
from .utils import atomic_write_json, resolve_device

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
            ranks, errors = [], {s: [] for s in config.stages}
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
                if bar is not None:
                    bar.update(len(block))
            errors = {s: np.concatenate(e) for s, e in errors.items()}
            row = {"fov": fov, "shift_seed": int(seed), "heading_stage": stage}
            row.update(recall_from_ranks(np.concatenate(ranks), n_refs=len(indices)))
            row.update(heading_stats(errors[stage]))
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m geoapp.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors written by geoapp)")
    g = p.add_argument_group("data (defaults: the dataset the checkpoint was trained on)")
    g.add_argument("--dataset", choices=["cvusa", "cvact", "vigor", "synth"], help="dataset layout")
    g.add_argument("--data-root", help="dataset folder")
    g.add_argument("--split", default="test", help="split to evaluate (default: test, the reported split)")
    g.add_argument("--allow-selection-split", action="store_true",
                   help="report on the split that chose the checkpoint anyway (warns loudly: those figures are not "
                        "held out)")
    g.add_argument("--size", type=int, default=0, help="evaluate on this many evenly spread pairs (0: all)")
    g.add_argument("--cache", choices=["auto", "yes", "no"], default="auto", help="keep decoded images in memory")
    g.add_argument("--workers", type=int, default=2, help="DataLoader workers for image decoding")
    e = p.add_argument_group("protocol")
    e.add_argument("--fov", type=float, nargs="+", help="field(s) of view in degrees (default: the model's)")
    e.add_argument("--shift-seeds", type=int, nargs="+", default=list(REPORT_SHIFT_SEEDS),
                   help="seeds of the fixed per-query shifts (SPEC 4's is 2019); several give mean ± std "
                        "(default: %(default)s; pass one, e.g. 2019, for a single evaluation)")
    c = p.add_argument_group("compute")
    c.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    c.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="fp32",
                   help="autocast for encoding (auto: bf16/fp16 on GPU, fp32 on CPU)")
    c.add_argument("--batch-size", type=int, default=64, help="images per encoding batch / queries per block")
    c.add_argument("--chunk-size", type=int, default=512, help="references per distance chunk")
    p.add_argument("--out", help="write the report as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _same_root(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, TypeError):
        return str(a) == str(b)


def selection_conflict(meta: dict, dataset: str, root, split: str) -> str | None:
    """Why evaluating ``split`` of ``dataset`` at ``root`` would report on the pairs that chose the checkpoint
    (its ``selection_split`` metadata), or None. A checkpoint without the record gives None (see ``main``)."""
    record = meta.get("selection_split")
    trained = meta.get("train_config") or {}
    if record is None or trained.get("dataset") != dataset or not _same_root(trained.get("data_root", ""), root):
        return None
    if isinstance(record, dict):
        source = record.get("carved_from")
        if source == split:
            return (f"the checkpoint was chosen on {record.get('n')} pairs carved from the {split!r} split "
                    f"({record.get('method')}), so {split!r} contains its selection pairs")
        return None
    if record == split:
        return f"the checkpoint was chosen on the {split!r} split"
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    meta = read_metadata(args.checkpoint)
    trained = meta.get("train_config", {})
    dataset = args.dataset or trained.get("dataset")
    root = args.data_root or trained.get("data_root")
    split = args.split
    if not dataset or not root:
        print("error: the checkpoint does not name its dataset; pass --dataset and --data-root", file=sys.stderr)
        return 2
    if "selection_split" not in meta:
        print(f"warning: {args.checkpoint} does not record which split chose it (selection_split; written by "
              "python -m geoapp.train since issue 10); if it was chosen on "
              f"{split!r}, these figures are not held-out figures", file=sys.stderr)
    conflict = selection_conflict(meta, dataset, root, split)
    if conflict and not args.allow_selection_split:
        print(f"error: {conflict}: reporting on it would give optimistic figures. Evaluate the test split "
              "(--split test), or pass --allow-selection-split to do it anyway", file=sys.stderr)
        return 2
    if conflict:
        bar = "!" * 100
        print(f"{bar}\nWARNING: {conflict} (--allow-selection-split): these figures are NOT held-out figures\n{bar}",
              file=sys.stderr)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    model, meta = load_model(args.checkpoint, map_location=device)
    cfg = model.config
    ds = open_split(dataset, root, split, cfg.fov_deg, cfg.ground_height, cfg.sat_width, train=False)
    images = PairImages(ds, cache=args.cache, workers=args.workers, progress=not args.no_progress)
    indices = subset_indices(len(ds), args.size)
    report = evaluate_model(model, images, args.fov, args.shift_seeds, indices, device, precision,
                            args.batch_size, args.chunk_size, progress=not args.no_progress)
    report.update(checkpoint=str(args.checkpoint), dataset=dataset, data_root=str(root), split=split,
                  selection_split=meta.get("selection_split"), selection_split_evaluated=bool(conflict),
                  model_config=cfg.to_dict(), precision=precision)
    print(format_table(report))
    if args.out:
        atomic_write_json(args.out, report)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
