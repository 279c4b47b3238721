"""Build a reference database: run the satellite branch once over every reference tile and store its maps.

    python -m geoapp.build_db --checkpoint checkpoints/demo.safetensors \\
        --dataset synth --data-root data/synth --split test --out reference_db/synth-test
    python -m geoapp.build_db --checkpoint CKPT --tiles my_tiles/ --locations my_tiles/tiles.csv --out reference_db/mine
    python -m geoapp.build_db --checkpoint CKPT --raster ortho.tif --spacing 16 --out reference_db/my-town
    python -m geoapp.build_db --checkpoint checkpoints/demo.safetensors --dataset synth --data-root data/synth \
        --out reference_db/demo --calibrate val --calibrate-only      # (re)fit the confidence of a built database
    python -m geoapp.build_db --checkpoint CKPT --out reference_db/mine --vector-engine milvus/geoapp.db \
        --upload-only                                                  # its first stage into Milvus

Sources: a dataset split (its satellite side, polar images as the dataset makes them), a folder of square
tiles with a CSV ``file,lat,lon`` (header optional; file names relative to the folder), or a georeferenced
orthophoto (GeoTIFF / COG in a projected CRS) cut into north-up tiles of the checkpoint's footprint on a grid
(``--spacing``) or at a CSV's ``lat,lon`` positions (``--locations``; see ``geoapp.retrieval.raster``); tiles
are polar-transformed here (conventions §3) at the checkpoint's satellite size. The storage layout is described in
``geoapp.retrieval.database``; ``--store`` picks fp16 maps (the default: the fastest search) or the codes of
``geoapp.retrieval.codes`` (``compact``: 2-bit codes for blocks 1-3, 4-bit for block 4, JPEG thumbnails).
An interrupted build is continued by running the same command again.

``--calibrate SPLIT`` then fits the database's confidence calibration on that split of ``--dataset`` (never the
split the database serves; see ``geoapp.retrieval.calibrate``) and stores it in the database's metadata.

``--vector-engine URI`` then uploads the two-stage search's first stage to Milvus (a Milvus Lite ``.db`` file or
``http(s)://host:port``; ``geoapp.retrieval.vector_engine``, docs/vector-engine.md); an interrupted upload resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .data.datasets import DATASETS
from .files import sha256_file
from .model.checkpoint import LoadedCheckpoint
from .retrieval.build import ConcatSource, DatasetSource, TileFolderSource, build_database
from .retrieval.calibrate import fit_calibration, unfittable_record, write_calibration
from .retrieval.codes import DEFAULT_STORE, STORES
from .retrieval.confidence import UnfittableCalibration
from .retrieval.database import DEFAULT_CHUNK, ReferenceDatabase, read_database_metadata
from .retrieval.index import DEFAULT_DIMS
from .retrieval.raster import RasterSource, read_locations, training_footprint
from .retrieval.vector_engine import INDEX_TYPES, upload_database


def build_parser() -> argparse.ArgumentParser:
    """build_db's options, by topic: the source, the build, the calibration, the upload to a vector engine."""
    p = argparse.ArgumentParser(prog="python -m geoapp.build_db", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors) whose satellite branch to run")
    p.add_argument("--out", required=True, help="database directory to create")
    src = p.add_argument_group("source: a dataset split, a folder of tiles with a CSV, or an orthophoto")
    src.add_argument("--dataset", choices=list(DATASETS))
    src.add_argument("--data-root", help="dataset root directory")
    src.add_argument("--split", default="test",
                     help="dataset split (default: test); several, comma-separated, are stored one after another "
                          "(e.g. test,train: the test tiles first, then the training tiles as distractors)")
    src.add_argument("--tiles", help="folder of square satellite tiles")
    src.add_argument("--locations", help="CSV with columns file,lat,lon (header optional); with --raster: lat,lon")
    src.add_argument("--raster", help="georeferenced orthophoto (GeoTIFF / COG, projected CRS) to cut into tiles")
    src.add_argument("--spacing", type=float, metavar="M", help="--raster: metres between tile centres on a grid")
    src.add_argument("--tile-metres", type=float, metavar="M",
                     help="--raster: ground footprint of a tile (default: the checkpoint's training data's)")
    p.add_argument("--limit", type=int, help="only the first N references (quick trials)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="references per written (resumable) chunk")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="image-loading worker processes")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--first-stage-dims", type=int, default=DEFAULT_DIMS,
                   help=f"PCA dims per orientation block for the two-stage search (default {DEFAULT_DIMS}; 0: none)")
    p.add_argument("--store", choices=list(STORES), default=DEFAULT_STORE.name,
                   help="how the maps are stored (default: %(default)s): "
                        + "; ".join(f"{kind.name}, {kind.summary}" for kind in STORES.values())
                        + " (see geoapp.retrieval.codes)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing database at --out (with --vector-engine: also a collection that holds "
                        "another database's first stage)")
    cal = p.add_argument_group("confidence calibration (needs --dataset: queries with known answers)")
    cal.add_argument("--calibrate", metavar="SPLIT",
                     help="fit the confidence calibration on this split's ground photos (e.g. val), with training "
                          "tiles as distractors up to the database's size")
    cal.add_argument("--calibration-distractors", default="train", metavar="SPLIT",
                     help="split whose tiles fill the calibration gallery (default: %(default)s)")
    cal.add_argument("--calibrate-only", action="store_true",
                     help="only (re)fit the calibration of the existing database at --out")
    vec = p.add_argument_group("the first stage in Milvus (pip install 'geoapp[milvus]'; docs/vector-engine.md)")
    vec.add_argument("--vector-engine", metavar="URI",
                     help="upload the two-stage search's first stage to this Milvus after the build: a Milvus Lite "
                          "file (.db) or http(s)://host:port")
    vec.add_argument("--collection", metavar="NAME",
                     help="the collection to upload to (default: geoapp_<--out folder name>)")
    vec.add_argument("--upload-only", action="store_true",
                     help="only upload the first stage of the existing database at --out")
    vec.add_argument("--vector-index", choices=list(INDEX_TYPES), default="FLAT",
                     help="the collection's index: FLAT (exact; default) or IVF_FLAT (1,024 clusters, 64 searched)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    problem = argument_problem(args)
    if problem:
        p.error(problem)
    return args


def argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of options (each valid alone), or None."""
    if (args.upload_only or args.collection) and not args.vector_engine:
        return "--upload-only and --collection need --vector-engine URI"
    if args.upload_only and args.calibrate_only:
        return "--upload-only and --calibrate-only: one of them at a time"
    if args.vector_engine and args.first_stage_dims == 0 and not args.upload_only:
        return "--vector-engine uploads the first stage, and --first-stage-dims 0 builds none"
    if (args.calibrate or args.calibrate_only) and not args.dataset:
        return ("--calibrate needs --dataset and --data-root (a split with known locations and headings); a tile "
                "folder has no ground photos to calibrate on")
    if args.calibrate_only and not args.calibrate:
        return "--calibrate-only needs --calibrate SPLIT"
    if args.calibrate and args.calibrate in args.split.split(","):
        return (f"--calibrate {args.calibrate}: the database serves that split, so its confidence would be fitted on "
                "the very answers it is then judged by; calibrate on another split (e.g. val)")
    if not args.upload_only and sum(bool(x) for x in (args.dataset, args.tiles, args.raster)) != 1:
        return ("give one source: --dataset (with --data-root), --tiles (with --locations) or --raster (with "
                "--spacing or --locations)")
    if args.raster and bool(args.spacing) == bool(args.locations):
        return "--raster needs --spacing M (a grid) or --locations CSV (lat,lon positions), one of them"
    if args.dataset and not args.data_root:
        return "--dataset needs --data-root"
    if args.tiles and not args.locations:
        return "--tiles needs --locations (a CSV of file,lat,lon)"
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.upload_only:  # the upload needs the checkpoint's hash alone, not its weights
        return upload(args)
    try:  # once for the whole command: the build, the calibration and the upload share it
        loaded = LoadedCheckpoint.load(args.checkpoint, args.device)
    except (ValueError, OSError) as exc:  # CheckpointError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = 0 if args.calibrate_only else build(args, loaded)
    if status == 0 and args.calibrate:
        status = calibrate(args, loaded)
    return upload(args, loaded) if args.vector_engine and status == 0 and not args.calibrate_only else status


def build(args: argparse.Namespace, loaded: LoadedCheckpoint) -> int:
    """Build the database at --out from the source the arguments name."""
    config = loaded.config
    try:
        if args.dataset:
            parts = [DatasetSource(args.dataset, args.data_root, split, config) for split in args.split.split(",")]
            source = parts[0] if len(parts) == 1 else ConcatSource(parts)
        elif args.tiles:
            source = TileFolderSource(args.tiles, args.locations, (config.sat_height, config.sat_width))
        else:
            source = raster_source(args, loaded)
        t0 = time.perf_counter()
        out = build_database(source, loaded, args.out, args.chunk_size, args.batch_size, workers=args.workers,
                             first_stage_dims=args.first_stage_dims, overwrite=args.overwrite, limit=args.limit,
                             store=args.store)
    except (ValueError, OSError) as exc:  # DatabaseError, DatasetError, ImageError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = len(source) if args.limit is None else min(args.limit, len(source))
    dt = time.perf_counter() - t0
    print(f"wrote {out}: {n} references in {dt:.1f} s ({dt / n * 1000:.1f} ms per tile)")
    return 0


def raster_source(args: argparse.Namespace, loaded: LoadedCheckpoint) -> RasterSource:
    config = loaded.config
    tile_metres, how = ((args.tile_metres, "--tile-metres") if args.tile_metres
                        else training_footprint(loaded.meta))
    locations = read_locations(args.locations) if args.locations else None
    source = RasterSource(args.raster, (config.sat_height, config.sat_width), tile_metres, args.spacing,
                          locations=locations)
    where = f"a {args.spacing:g} m grid" if args.spacing else f"{len(source)} listed locations"
    print(f"{args.raster}: {source.crs}, {source.pixel_m:.2f} m pixels; {len(source)} north-up {tile_metres:g} m "
          f"tiles ({how}) on {where}; {source.skipped} of {source.candidates} skipped as mostly nodata")
    return source


def upload(args: argparse.Namespace, loaded: LoadedCheckpoint | None = None) -> int:
    """Upload the first stage of the database at --out to --vector-engine (geoapp.retrieval.vector_engine);
    ``loaded``: the command's checkpoint when it loaded one (else the file is only hashed)."""
    try:
        db = ReferenceDatabase.open(args.out, loaded.sha256 if loaded else sha256_file(args.checkpoint))
        t0 = time.perf_counter()
        name, rows = upload_database(db, args.vector_engine, args.collection, replace=args.overwrite,
                                     index_type=args.vector_index)
    except (ValueError, OSError) as exc:  # VectorEngineError, DatabaseError
        print(f"error: vector engine: {exc}", file=sys.stderr)
        return 2
    sent = f"{rows:,} rows sent" if rows else "already complete, nothing sent"
    print(f"first stage of {args.out} ({len(db):,} references) in collection {name!r} at {args.vector_engine}: "
          f"{sent} in {time.perf_counter() - t0:.1f} s")
    return 0


def calibrate(args: argparse.Namespace, loaded: LoadedCheckpoint) -> int:
    """Fit the confidence calibration of the database at --out and store it there."""
    try:
        size = read_database_metadata(Path(args.out))["num_references"]
        t0 = time.perf_counter()
        calibration = fit_calibration(loaded, args.dataset, args.data_root, size, split=args.calibrate,
                                      distractor_split=args.calibration_distractors, database=args.out)
        write_calibration(args.out, calibration)
    except UnfittableCalibration as exc:  # a model near chance: the database serves, its answers carry no probability
        write_calibration(args.out, unfittable_record(loaded, args.calibrate, exc))
        print(f"warning: calibration: {exc}; {args.out} answers without a probability of being right",
              file=sys.stderr)
        return 0
    except (ValueError, OSError) as exc:
        print(f"error: calibration: {exc}", file=sys.stderr)
        return 2
    fit = calibration.record["accuracy_at_fit"]
    print(f"calibrated {args.out} on {calibration.record['queries']} {args.calibrate!r} queries x "
          f"{len(calibration.record['fovs'])} FoVs against {calibration.record['gallery_size']} references in "
          f"{time.perf_counter() - t0:.0f} s (R@1 there {fit['tile_R@1']:.1f} %, heading within 22.5° "
          f"{fit['heading_within_22.5deg']:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
