"""Localize photos from the command line: each photo's top-k reference tiles, with lat/lon, heading and score.

    python -m geoapp.localize IMG_0001.HEIC IMG_0002.jpg
    python -m geoapp.localize photos/ --recursive --out results.csv      # or results.json / results.geojson
    python -m geoapp.localize north.jpg east.jpg --together              # two photos from one spot, one answer
    python -m geoapp.localize photos/ --prior 40.01,-75.02 --radius 2000 # only tiles within 2 km of a point
    python -m geoapp.localize photos/ --prior exif --radius 500          # ... of each photo's own EXIF GPS
    python -m geoapp.localize photos/ --distinct auto                    # distinct places: no two within half a tile

Photos are files or folders (their image files; subfolders with --recursive). Without --out a table is printed;
with it the format follows the suffix: CSV and JSON have one row per photo and rank (file, rank, lat, lon,
heading_deg, score, distance_to_exif_gps_m, confidence, heading_confidence, familiar (false: the photo looks
unlike every photo the model was trained on, and its confidences are empty), references_searched, photo_headings_deg,
error), GeoJSON one Point feature per photo and rank and the failed
photos in its top-level "errors". A photo that cannot be used gets an error row (and a line in the summary on
stderr); the others go on. Exit status: 0 when every photo was localized, 1 when any failed, 2 for bad arguments
or artifacts that cannot be loaded. The checkpoint and database default to the demo's (`python app.py` builds it
on its first start). The batch itself is geoapp.retrieval.export.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .search_options import DISTINCT_RANGE_M, MAX_VIEWS, PROJECTIONS, TOP_K_RANGE, add_search_arguments

DEFAULT_TOP_K = 5
FOV_RANGE = (10.0, 170.0)  # geoapp.data.photo.PLAUSIBLE_HFOV_DEG: a pinhole camera's plausible horizontal FoV
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m geoapp.localize", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", nargs="+", metavar="PHOTO_OR_FOLDER", help="photo files and/or folders of photos")
    p.add_argument("--out", metavar="FILE",
                   help="write the results to this .csv, .json or .geojson file (default: print a table)")
    p.add_argument("--checkpoint", default=os.environ.get("GEOAPP_CHECKPOINT"),
                   help="model checkpoint (env GEOAPP_CHECKPOINT; default: the demo's)")
    p.add_argument("--reference-db", default=os.environ.get("GEOAPP_REFERENCE_DB"),
                   help="reference database folder built with that checkpoint (env GEOAPP_REFERENCE_DB; default: the "
                        "demo's)")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="candidates per photo (default %(default)s)")
    p.add_argument("--fov", type=float, default=None, metavar="DEGREES",
                   help=f"horizontal field of view of photos without an EXIF focal length ({FOV_RANGE[0]:g}-"
                        f"{FOV_RANGE[1]:g}); photos with one use their own")
    p.add_argument("--projection", choices=PROJECTIONS, default="auto",
                   help="pinhole: a camera photo (reprojected); crop: already a crop of an equirectangular panorama; "
                        "auto (default): pinhole when the FoV is known, crop for an image of the model's height")
    p.add_argument("--recursive", action="store_true", help="also walk the subfolders of the folders given")
    a = p.add_argument_group("answers (see the README's 'Answers you can act on')")
    a.add_argument("--prior", metavar="LAT,LON|exif",
                   help="search only the reference tiles within --radius of this point, or of each photo's own EXIF "
                        "GPS (photos without one search everything)")
    a.add_argument("--radius", type=float, metavar="METRES", help="the prior's radius (100 to 50,000 m)")
    a.add_argument("--together", action="store_true",
                   help=f"the photos (2 to {MAX_VIEWS}) were taken at one spot: one combined answer, with every "
                        "photo's heading")
    a.add_argument("--distinct", metavar="METRES|auto",
                   help="distinct places: leave out a candidate closer than this to a better one (the top-1 and the "
                        "confidence stay the same); auto: half the database's tile footprint (64 m for the demo). "
                        "Default: every tile, neighbours of a better one included")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1 ...")
    add_search_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if not TOP_K_RANGE[0] <= args.top_k <= TOP_K_RANGE[1]:
        p.error(f"--top-k must be between {TOP_K_RANGE[0]} and {TOP_K_RANGE[1]}, got {args.top_k}")
    if args.fov is not None and not FOV_RANGE[0] <= args.fov <= FOV_RANGE[1]:
        p.error(f"--fov must be between {FOV_RANGE[0]:g} and {FOV_RANGE[1]:g} degrees, got {args.fov:g}")
    if args.distinct is not None and args.distinct.strip().lower() != "auto":
        low, high = DISTINCT_RANGE_M
        try:
            args.distinct = float(args.distinct)
        except ValueError:
            p.error(f"--distinct must be a distance in metres or 'auto', got {args.distinct!r}")
        if not low <= args.distinct <= high:  # also refuses nan
            p.error(f"--distinct must be between {low:g} and {high:g} metres (0: off), got {args.distinct:g}")
    elif args.distinct is not None:
        args.distinct = "auto"
    if (args.prior is None) != (args.radius is None):
        p.error("--prior and --radius go together (a centre, or 'exif', and a radius in metres)")
    if args.prior is not None:
        from geoapp.retrieval.prior import LocationPrior, PriorError

        try:
            if args.prior.strip().lower() == "exif":
                LocationPrior(0.0, 0.0, args.radius)  # checks the radius
                args.prior = args.radius
            else:
                lat, lon = (float(v) for v in args.prior.split(","))
                args.prior = LocationPrior(lat, lon, args.radius)
        except PriorError as exc:
            p.error(f"--prior/--radius: {exc}")
        except ValueError:
            p.error(f"--prior must be LAT,LON in degrees (e.g. 40.01,-75.02) or 'exif', got {args.prior!r}")
    if args.out is not None:
        from geoapp.retrieval.export import output_format

        try:
            output_format(args.out)
        except ValueError as exc:
            p.error(f"--out: {exc}")
        if Path(args.out).is_dir():
            p.error(f"--out {args.out} is a folder; give a file name ending in .csv, .json or .geojson")
    return args


def resolve_artifacts(args: argparse.Namespace) -> tuple[Path, Path, dict | None]:
    """The checkpoint and database to load and the accuracy to show (None: the checkpoint's); SystemExit with how
    to get them when they are missing. Without either flag: the demo the app prepared (nothing is built here)."""
    from geoapp.app.bootstrap import BootstrapError, DemoPaths, ensure_demo

    if not args.checkpoint and not args.reference_db:
        try:
            state = ensure_demo(DemoPaths(), log=lambda message: None, allow_build=False)
        except BootstrapError as exc:
            raise SystemExit(f"error: {exc}\nStart the app once (`python app.py` prepares the demo in a few minutes), "
                             "or point --checkpoint and --reference-db at other artifacts.") from exc
        return state.checkpoint, state.database, state.accuracy
    if not (args.checkpoint and args.reference_db):
        raise SystemExit("error: give both --checkpoint and --reference-db (or GEOAPP_CHECKPOINT and "
                         "GEOAPP_REFERENCE_DB), or neither for the demo")
    checkpoint, database = Path(args.checkpoint), Path(args.reference_db)
    missing = [p for p in (checkpoint, database) if not p.exists()]
    if missing:
        raise SystemExit(f"error: {' and '.join(map(str, missing))} not found (set with --checkpoint / --reference-db "
                         "or GEOAPP_CHECKPOINT / GEOAPP_REFERENCE_DB)")
    return checkpoint, database, None


def main(argv=None) -> int:
    args = parse_args(argv)
    from geoapp.retrieval.export import collect_photos, format_table, localize_files, summary, write_results

    files, empty = collect_photos(args.photos, recursive=args.recursive)
    for folder in empty:
        print(f"warning: no photos in {folder}", file=sys.stderr)
    if not files:
        print("error: no photos to localize", file=sys.stderr)
        return 2
    if args.together and not 2 <= len(files) <= MAX_VIEWS:
        print(f"error: --together takes 2 to {MAX_VIEWS} photos of one spot, got {len(files)}", file=sys.stderr)
        return 2
    try:
        checkpoint, database, accuracy = resolve_artifacts(args)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    from geoapp.retrieval.engine import Localizer

    try:
        localizer = Localizer(checkpoint, database, device=args.device, accuracy=accuracy, search=args.search,
                              rerank=args.rerank, vector_engine=args.vector_engine, collection=args.collection)
    except (ValueError, OSError, RuntimeError) as exc:  # CheckpointError, DatabaseError, a device torch lacks
        print(f"error: {exc}", file=sys.stderr)
        return 2
    distinct = args.distinct
    if distinct == "auto":
        distinct = localizer.place_distance_m
        if distinct is None:
            print(f"error: --distinct auto: no default distance for this database ({localizer.place_distance_note}); "
                  "give one in metres", file=sys.stderr)
            return 2
    batch = localize_files(localizer, files, fov_deg=args.fov, top_k=args.top_k, projection=args.projection,
                           progress=not args.no_progress, prior=args.prior, together=args.together,
                           distinct_m=distinct)
    if args.out is None:
        print(format_table(batch.rows))
    else:
        try:
            write_results(batch.rows, args.out)
        except OSError as exc:
            print(f"error: cannot write {args.out}: {exc}", file=sys.stderr)
            return 2
    print(summary(batch, args.top_k, args.out, distinct), file=sys.stderr)
    print(f"search: {localizer.search_text()} over {len(localizer.db):,} references", file=sys.stderr)
    return 0 if batch.ok else 1


if __name__ == "__main__":
    sys.exit(main())
