"""Evaluate a checkpoint on a dataset split: recall (conventions §7) and heading error of the true pair.

    python -m geoapp.evaluate --checkpoint runs/demo/best.safetensors --fov 70 90
    python -m geoapp.evaluate --checkpoint ckpt.safetensors --dataset cvusa --data-root data/cvusa \\
        --split test --fov 70 90 --shift-seeds 2019 2020 2021 --out eval.json

The satellite gallery is encoded once (in memory, on the compute device); queries are encoded block by block
and ranked with :func:`geoapp.retrieval.search.true_match_ranks`, the matching engine's own distance code.
For each FoV the model is rebuilt with ``config.with_fov(fov)``; each query gets conventions §4's fixed shift drawn
from each of ``--shift-seeds`` (default :data:`REPORT_SHIFT_SEEDS`: 2019 first, then 2020 and 2021; the report
keeps every seed's figures and their mean +- std). The heading error is the circular difference between the
heading predicted from the TRUE pair's window offset (at the config's heading stage) and the true heading of
the crop. Recall by place (conventions §7; ``--places``, by default at half the split's tile footprint when the split
records its tiles' positions) counts a query as found at k when its true tile, or a tile within that distance of
it, is among its first k distinct places.

Splits (conventions §7): the default ``--split`` is ``test``, the split results are reported on. The command refuses to
report on the split that chose the checkpoint (``selection_split`` in its metadata, written by
``python -m geoapp.train``) unless ``--allow-selection-split`` is given, and warns for a checkpoint that does
not record one.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from .data.datasets import DATASETS
from .files import atomic_write_json
from .model import CheckpointError, load_model
from .retrieval.places import default_place_distance
from .runtime import resolve_device
from .training.data import PairImages, open_split
from .training.distributed import resolve_precision
from .training.evaluation import REPORT_SHIFT_SEEDS, evaluate_model, format_table, subset_indices


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m geoapp.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors written by geoapp)")
    g = p.add_argument_group("data (defaults: the dataset the checkpoint was trained on)")
    g.add_argument("--dataset", choices=list(DATASETS), help="dataset layout")
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
                   help="seeds of the fixed per-query shifts (conventions §4's is 2019); several give mean ± std "
                        "(default: %(default)s; pass one, e.g. 2019, for a single evaluation)")
    e.add_argument("--places", default="auto", metavar="METRES|auto|off",
                   help="recall by place at this distance (conventions §7); auto (default): half the split's tile "
                        "footprint, when the split records its tiles' positions; off: none")
    e.add_argument("--gate-weight", type=float,
                   help="match with this gate weight instead of the checkpoint's (gate-corr models; an analysis of "
                   "the similarity, the weights stay the checkpoint's)")
    c = p.add_argument_group("compute")
    c.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    c.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="fp32",
                   help="autocast for encoding (auto: bf16/fp16 on GPU, fp32 on CPU)")
    c.add_argument("--batch-size", type=int, default=64, help="images per encoding batch / queries per block")
    c.add_argument("--chunk-size", type=int, default=512, help="references per distance chunk")
    p.add_argument("--out", help="write the report as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.places.strip().lower() in ("auto", "off"):
        args.places = args.places.strip().lower()
    else:
        try:
            args.places = float(args.places)
        except ValueError:
            p.error(f"--places must be a distance in metres, 'auto' or 'off', got {args.places!r}")
        if not 0 < args.places <= 10_000:  # also refuses nan
            p.error(f"--places must be a distance in metres in (0, 10000], got {args.places:g}")
    return args


def place_distance(places, ds) -> tuple[float | None, str | None]:
    """The recall-by-place distance for ``--places`` on the split ``ds`` and, where none applies to ``auto``, why."""
    if places == "off":
        return None, None
    if places != "auto":
        return float(places), None
    if not np.isfinite(np.asarray(ds.satellite_locations, dtype=np.float64)).all(1).any():
        return None, f"the {ds.split!r} split records no tile positions"
    distance = default_place_distance(ds.tile_metres)
    return distance, None if distance else "the split's tile footprint is unknown"


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
    device = resolve_device(args.device)
    try:  # once: the checks below read its metadata, the evaluation its weights
        model, meta = load_model(args.checkpoint, map_location=device)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trained = meta.get("train_config", {})
    dataset = args.dataset or trained.get("dataset")
    root = args.data_root or trained.get("data_root")
    split = args.split
    if not dataset or not root:
        print("error: the checkpoint does not name its dataset; pass --dataset and --data-root", file=sys.stderr)
        return 2
    if "selection_split" not in meta:
        print(f"warning: {args.checkpoint} does not record which split chose it (selection_split, which "
              "python -m geoapp.train writes); if it was chosen on "
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
    precision = resolve_precision(args.precision, device)
    if args.gate_weight is not None:
        try:
            model.config = dataclasses.replace(model.config, gate_weight=args.gate_weight)
        except ValueError as exc:
            print(f"error: --gate-weight {args.gate_weight}: {exc}", file=sys.stderr)
            return 2
    cfg = model.config
    ds = open_split(dataset, root, split, cfg.fov_deg, cfg.ground_height, cfg.sat_width, train=False)
    images = PairImages(ds, cache=args.cache, workers=args.workers, progress=not args.no_progress)
    indices = subset_indices(len(ds), args.size)
    place_m, why = place_distance(args.places, ds)
    if why:
        print(f"note: no recall by place: {why}", file=sys.stderr)
    try:
        report = evaluate_model(model, images, args.fov, args.shift_seeds, indices, device, precision,
                                args.batch_size, args.chunk_size, progress=not args.no_progress, place_m=place_m)
    except ValueError as exc:  # --places METRES on a split without positions
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
