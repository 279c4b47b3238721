"""``python -m geoapp.bench data``: speed of the data pipeline on this machine.

Prints the polar transform time per image (CVUSA 750 px and CVACT 1200 px tiles), the synthetic world's
locations per second (world build and rendering, ``--workers`` processes), and dataset samples per second
through a ``DataLoader`` with 2 workers on the world it just wrote (JPEG decode, resize, FoV crop, polar
image, normalisation).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_polar(repeats: int) -> dict:
    from ..data.polar import polar_transform

    rng = np.random.default_rng(0)
    out = {}
    for size in (750, 1200):
        tile = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        polar_transform(tile)  # builds and caches the sampling grid once, as a dataset does
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            polar_transform(tile)
            times.append(time.perf_counter() - t0)
        out[f"polar_ms_{size}"] = 1000 * statistics.median(times)
    return out


def bench_synth(root: Path, n_train: int, n_test: int, workers: int, n_val: int = 0) -> dict:
    from ..synth import WorldConfig, write_dataset

    t0 = time.perf_counter()
    config = WorldConfig(seed=0, n_train=n_train, n_val=n_val, n_test=n_test)
    manifest = write_dataset(root, config, workers=workers, progress=False, log=lambda msg: None)
    total = time.perf_counter() - t0
    timing = manifest.get("timing", {})
    n = n_train + n_val + n_test
    return {
        "locations": n,
        "world_s": timing.get("world_s"),
        "render_locations_per_s": timing.get("render_locations_per_s"),
        "overall_locations_per_s": n / total,
    }


def bench_loader(root: Path, batch_size: int, batches: int, workers: int) -> dict:
    import torch

    from ..data.datasets import build_dataset

    out = {}
    for label, train in (("train", True), ("eval", False)):
        ds = build_dataset("synth", root, "train" if train else "test", 90.0, train=train)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=train, num_workers=workers, persistent_workers=False
        )
        it = iter(loader)
        next(it)  # worker start-up is not throughput
        t0 = time.perf_counter()
        seen = 0
        for _ in range(batches):
            try:
                seen += len(next(it)["index"])
            except StopIteration:
                break
        out[f"{label}_samples_per_s"] = seen / (time.perf_counter() - t0)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m geoapp.bench data", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=50, help="timed polar transforms per tile size")
    p.add_argument("--train", type=int, default=800, help="training locations of the benchmark world")
    p.add_argument("--test", type=int, default=200, help="test locations of the benchmark world")
    p.add_argument("--workers", type=int, default=2, help="processes for rendering and DataLoader workers")
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--batches", type=int, default=20, help="timed DataLoader batches per split")
    p.add_argument("--keep", default=None, help="write the benchmark world here instead of a temporary folder")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    print("# geoapp data benchmark")
    result = bench_polar(args.repeats)
    print(f"polar transform, 750x750 tile -> 128x512:   {result['polar_ms_750']:7.2f} ms/image")
    print(f"polar transform, 1200x1200 tile -> 128x512: {result['polar_ms_1200']:7.2f} ms/image")
    with tempfile.TemporaryDirectory(prefix="geoapp-bench-data-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp) / "synth"
        synth = bench_synth(root, args.train, args.test, args.workers)
        result["synth"] = synth
        print(
            f"synthetic world, {synth['locations']} locations, {args.workers} workers: world build "
            f"{synth['world_s']:.1f} s, rendering {synth['render_locations_per_s']:.1f} locations/s, "
            f"overall {synth['overall_locations_per_s']:.1f} locations/s (target >= 50)"
        )
        loader = bench_loader(root, args.batch_size, args.batches, args.workers)
        result["loader"] = loader
        print(
            f"DataLoader, {args.workers} workers, batch {args.batch_size}, 90 deg: "
            f"train {loader['train_samples_per_s']:.0f} samples/s, eval {loader['eval_samples_per_s']:.0f} samples/s"
        )
    if args.json:
        from ..files import atomic_write_json

        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
