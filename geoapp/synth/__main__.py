"""Command line: ``python -m geoapp.synth`` writes a synthetic CVUSA-like dataset;
``python -m geoapp.synth figure`` draws one location (tile, polar transform, panorama) as a PNG;
``python -m geoapp.synth geotiff`` writes a dataset's world as a georeferenced orthophoto."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geoapp.allocator import keep_freed_buffers
from geoapp.synth.geo import DEFAULT_ORIGIN
from geoapp.synth.views import CVUSA_VFOV
from geoapp.synth.world import WorldConfig
from geoapp.synth.writer import SPLITS, ImageOptions, SynthConfigError, write_dataset

_W = WorldConfig()
_I = ImageOptions()

EPILOG = """\
subcommand:
  figure      python -m geoapp.synth figure --data-root DIR --out PNG [--id N]
              draws one satellite tile, its polar transform and its panorama with S/W/N/E ticks
              (see: python -m geoapp.synth figure --help)
  geotiff     python -m geoapp.synth geotiff --data-root DIR --out ORTHO.tif [--crs EPSG:32615]
              the dataset's world (rebuilt from its recorded settings) as a GeoTIFF in a projected CRS

The same seed and flags give byte-identical images and tables (dataset.json also records timings).
Rerunning into the same --out folder renders only missing images; other flags (or other generator
code) are refused with an error, so one folder never mixes outputs.
Defaults: 5000 train + 500 val + 1000 test locations in disjoint blocks (splits/train-19zl.csv,
splits/selection-19zl.csv, splits/val-19zl.csv: the dataset splits "train", "val" for model selection and
"test" for reported figures), 750 px tiles covering 128 m (like CVUSA's zoom-19 tiles),
128 x 512 panoramas with CVUSA's 65.45 degree vertical field of view (the model's input size; ask for
CVUSA's own size with --pano-size 224 1232).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m geoapp.synth",
        description="Generate a procedural world and write it as a CVUSA-layout cross-view dataset with exact "
                    "ground truth: satellite tiles, north-aligned ground panoramas, polar transforms, splits, "
                    "locations, a map mosaic and a manifest.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_flags(p.add_argument_group("output"))
    add_world_flags(p.add_argument_group("world"))
    add_image_flags(p.add_argument_group("images"))
    return p


def add_output_flags(out) -> None:
    """Where the dataset goes and what of it is written (none of these changes the world)."""
    out.add_argument("--out", type=Path, default=Path("data/synth"), help="dataset folder (default: data/synth)")
    out.add_argument("--workers", type=int, default=2,
                     help="processes painting the world and rendering locations (default: 2)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS),
                     help="render only these splits' locations (the world is the same; a later run renders the rest; "
                          "default: all)")
    out.add_argument("--sample", nargs="+", type=sample_arg, default=[], metavar="SPLIT:N",
                     help="of a split not in --splits, render only N locations spread evenly over it: what the app's "
                          "first start needs, e.g. train:500 for the calibration's distractors and the familiarity "
                          "test's training photos")
    out.add_argument("--annotations", action="store_true",
                     help="also write annotations/<id>.png: the tile's surface kind per pixel (default: not written; "
                          "the split CSVs list the path anyway, as CVUSA does)")
    out.add_argument("--jpeg-quality", type=int, default=_I.jpeg_quality, help="JPEG quality (default: %(default)s)")
    out.add_argument("--mosaic-size", type=int, default=_I.mosaic_size,
                     help="long side of the world mosaic map/mosaic.jpg in pixels (default: %(default)s)")


def add_world_flags(world) -> None:
    """The world's settings (WorldConfig): the same values give the same world."""
    world.add_argument("--seed", type=int, default=_W.seed, help="world seed (default: %(default)s)")
    world.add_argument("--train", type=int, default=_W.n_train, help="training locations (default: %(default)s)")
    world.add_argument("--val", type=int, default=_W.n_val,
                       help="validation (model-selection) locations, in blocks of their own; 0 = none, training "
                            "then carves a selection subset from train (default: %(default)s)")
    world.add_argument("--test", type=int, default=_W.n_test,
                       help="test locations: the reported split (default: %(default)s)")
    world.add_argument("--metres-per-pixel", type=float, default=_W.metres_per_pixel,
                       help="world raster resolution in metres (default: %(default)s)")
    world.add_argument("--tile-metres", type=float, default=_W.tile_metres,
                       help="ground extent of a satellite tile; the panorama's haze ends at about half of it "
                            "(default: %(default)s)")
    world.add_argument("--block-metres", type=float, default=_W.block_metres,
                       help="side of the square blocks the world is split into; each block is train, val or "
                            "test (default: %(default)s)")
    world.add_argument("--train-spacing", type=float, default=_W.train_spacing,
                       help="grid spacing of the training cameras in metres (jittered grid, snapped to roads; "
                            "cameras stay at least half of it apart; default: %(default)s)")
    world.add_argument("--test-spacing", type=float, default=_W.test_spacing,
                       help="the same for the val and test cameras (default: %(default)s)")
    world.add_argument("--district-metres", type=float, default=_W.district_metres,
                       help="typical size of a district (one area type, one street grid; default: %(default)s)")
    world.add_argument("--area-mix", type=float, nargs=4, metavar=("URBAN", "SUBURBAN", "RURAL", "FOREST"),
                       default=list(_W.area_mix), help="share of districts of each area type (default: %(default)s)")
    world.add_argument("--lakes", type=float, default=_W.lakes, help="share of the world under lakes "
                                                                    "(default: %(default)s)")
    world.add_argument("--rivers", type=int, default=_W.rivers, help="number of rivers (default: %(default)s)")
    world.add_argument("--origin", type=float, nargs=2, metavar=("LAT", "LON"), default=list(DEFAULT_ORIGIN),
                       help="latitude / longitude of the world centre (default: %(default)s, Des Moines, Iowa)")
    world.add_argument("--sun-azimuth", type=float, default=_W.sun_azimuth,
                       help="sun azimuth of the satellite view in degrees; the ground view's sun is 14 degrees "
                            "further clockwise and 5 lower (default: %(default)s)")
    world.add_argument("--sun-elevation", type=float, default=_W.sun_elevation,
                       help="sun elevation of the satellite view in degrees (default: %(default)s)")


def add_image_flags(img) -> None:
    """How each location is rendered (ImageOptions)."""
    img.add_argument("--tile-size", type=int, default=_I.tile_size,
                     help="satellite tile size in pixels, square (default: %(default)s, like CVUSA)")
    img.add_argument("--pano-size", type=int, nargs=2, metavar=("H", "W"), default=[_I.pano_height, _I.pano_width],
                     help="panorama height and width; always 360 degrees wide (default: %(default)s; "
                          "CVUSA: 224 1232)")
    img.add_argument("--polar-size", type=int, nargs=2, metavar=("H", "W"), default=[_I.polar_height, _I.polar_width],
                     help="size of the stored polar transforms (default: %(default)s, conventions §1)")
    img.add_argument("--pano-vfov", type=float, default=_I.pano_vfov,
                     help=f"vertical field of view of the panorama in degrees (default: {CVUSA_VFOV:.2f}, CVUSA's)")
    img.add_argument("--horizon", type=float, default=_I.horizon,
                     help="horizon position as a fraction of the panorama height from the top (default: %(default)s)")
    img.add_argument("--camera-height", type=float, default=_I.camera_height,
                     help="camera height above the ground in metres (default: %(default)s)")


def sample_arg(text: str) -> tuple[str, int]:
    split, sep, count = text.partition(":")
    if not sep or split not in SPLITS or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected SPLIT:N with SPLIT one of {', '.join(SPLITS)} and N >= 1, got "
                                         f"{text!r}")
    return split, int(count)


def build_figure_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m geoapp.synth figure",
        description="Draw one location of a synthetic dataset: its satellite tile, the tile's polar transform and "
                    "the ground panorama, with the azimuth ticks S / W / N / E / S of conventions §2 under both "
                    "strips.")
    p.add_argument("--data-root", type=Path, default=Path("data/synth"), help="dataset folder (default: data/synth)")
    p.add_argument("--out", type=Path, default=Path("docs/synth_example.png"),
                   help="PNG to write (default: docs/synth_example.png)")
    p.add_argument("--id", type=int, default=None,
                   help="location id (default: the first suburban test location listed in locations.csv)")
    return p


def build_geotiff_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m geoapp.synth geotiff",
        description="Write a synthetic dataset's world (rebuilt from the settings its dataset.json records) as a "
                    "georeferenced GeoTIFF orthophoto in a projected CRS, for python -m geoapp.build_db --raster.")
    p.add_argument("--data-root", type=Path, default=Path("data/synth"), help="dataset folder (default: data/synth)")
    p.add_argument("--out", type=Path, required=True, help="GeoTIFF to write")
    p.add_argument("--crs", default=None, help="projected CRS (default: the UTM zone of the world's centre)")
    p.add_argument("--pixel-metres", type=float, default=None, help="ground sampling (default: the world's own)")
    p.add_argument("--workers", type=int, default=2, help="processes painting the world (default: 2)")
    return p


def export_dataset_world(args: argparse.Namespace) -> dict:
    import json

    from geoapp.synth.geotiff import export_geotiff
    from geoapp.synth.world import generate_world

    manifest = json.loads((args.data_root / "dataset.json").read_text(encoding="utf-8"))
    settings = dict(manifest["settings"]["world"])
    settings.update(area_mix=tuple(settings["area_mix"]), origin=tuple(settings["origin"]))
    world = generate_world(WorldConfig(**settings), workers=args.workers)
    return export_geotiff(world, args.out, args.crs, args.pixel_metres)


def configs_from_args(args: argparse.Namespace) -> tuple[WorldConfig, ImageOptions]:
    world = WorldConfig(seed=args.seed, n_train=args.train, n_val=args.val, n_test=args.test,
                        metres_per_pixel=args.metres_per_pixel,
                        tile_metres=args.tile_metres, block_metres=args.block_metres,
                        train_spacing=args.train_spacing, test_spacing=args.test_spacing,
                        district_metres=args.district_metres, area_mix=tuple(args.area_mix), lakes=args.lakes,
                        rivers=args.rivers, origin=tuple(args.origin), sun_azimuth=args.sun_azimuth,
                        sun_elevation=args.sun_elevation)
    images = ImageOptions(tile_size=args.tile_size, pano_height=args.pano_size[0], pano_width=args.pano_size[1],
                          polar_height=args.polar_size[0], polar_width=args.polar_size[1], pano_vfov=args.pano_vfov,
                          horizon=args.horizon, camera_height=args.camera_height, jpeg_quality=args.jpeg_quality,
                          annotations=args.annotations, mosaic_size=args.mosaic_size)
    return world, images


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "figure":
        from geoapp.synth.figure import make_figure

        fargs = build_figure_parser().parse_args(argv[1:])
        path = make_figure(fargs.data_root, fargs.out, fargs.id)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
        return 0
    if argv and argv[0] == "geotiff":
        try:
            export_dataset_world(build_geotiff_parser().parse_args(argv[1:]))
        except (OSError, KeyError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if argv and argv[0] == "generate":
        argv = argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.train < 0 or args.val < 0 or args.test < 0 or args.train + args.val + args.test == 0:
        parser.error("--train, --val and --test must be >= 0 and not all 0")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    sampled = dict(args.sample)
    if len(sampled) < len(args.sample) or set(sampled) & set(args.splits):
        parser.error("--sample: one SPLIT:N per split, and only for splits that --splits does not render whole")
    world, images = configs_from_args(args)
    # building a world allocates and frees many arrays of a few MB: kept in the heap, they are not faulted in again
    # (by default glibc returns them, and the page faults cost as much as the arithmetic)
    keep_freed_buffers(mmap_threshold=32 << 20, trim_threshold=1 << 30)
    flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    try:
        manifest = write_dataset(args.out, world, images, workers=args.workers, progress=not args.no_progress,
                                 flags=flags, splits=tuple(args.splits), sampled=sampled)
    except (SynthConfigError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if manifest.get("up_to_date"):
        print(f"{args.out}: already complete ({manifest['counts']['total']} locations), nothing rendered")
        return 0
    t = manifest["timing"]
    c = manifest["counts"]
    samples = "".join(f", {n} {split} locations" for split, n in manifest.get("sampled", {}).items())
    print(f"{args.out}: {c['train']} train + {c.get('val', 0)} val + {c['test']} test locations "
          f"({', '.join(manifest['rendered_splits'])} rendered{samples}); "
          f"{t['locations_rendered']} rendered at {t['render_locations_per_s']} locations/s "
          f"({t['overall_locations_per_s']} locations/s including the world build, {t['total_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
