"""Write a synthetic world as a CVUSA-layout dataset, in parallel, resumably.

Layout under the output folder (ids start at 1, zero-padded to 7 digits like CVUSA, contiguous per split:
train ids first, then val, then test):

- ``bingmap/19/<id>.jpg``        satellite tile (tile_size^2, north up, camera at the centre)
- ``streetview/panos/<id>.jpg``  ground panorama (north-aligned, conventions §2 columns)
- ``polarmap/19/<id>.png``       conventions §3 polar transform of the tile (before JPEG compression)
- ``annotations/<id>.png``       only with ``--annotations``: the tile's surface kinds (palette.KIND_NAMES)
- ``splits/train-19zl.csv`` (train), ``splits/selection-19zl.csv`` (val: model selection; only when the world
  has val locations) and ``splits/val-19zl.csv`` (test: the reported split, CVUSA's name for it):
  ``satellite,ground,annotation`` paths, no header; the annotation path is always listed (as in CVUSA) even
  where the file is not written. The CVUSA reader maps them to the splits "train", "val" and "test".
- ``split_locations/all.csv``    ``sat_lat,sat_lon,ground_lat,ground_lon`` per id (row id-1), no header
- ``locations.csv``              per-id ground truth with a header (split train/val/test, area type, world
  position...)
- ``map/mosaic.jpg`` + ``map/mosaic.json``: the whole world's satellite view (downscaled), its bounds and the
  lat/lon boxes of the test and val blocks (``test_regions``, ``val_regions``)
- ``synth_config.json``          every setting that affects the outputs (checked on reruns)
- ``dataset.json``               the manifest, written last

Each image is written to a temporary name and renamed into place, so a file that exists is complete;
a rerun with the same settings renders only what is missing, a rerun with other settings is refused.

A run may render only some splits (``splits``; the manifest's ``rendered_splits``) and, of another split, only
``N`` locations spread evenly over it (``sampled``; the manifest's ``sampled``, split -> N;
:func:`geoapp.data.selection.spread_rows`): what the app's first start needs, whose calibration takes that many
training tiles as distractors and fits its familiarity test on their panoramas.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from geoapp.data.polar import polar_transform
from geoapp.data.selection import spread_rows
from geoapp.files import atomic_write_bytes
from geoapp.provenance import code_revision, command_line
from geoapp.synth import palette
from geoapp.synth.layout import TEST, TRAIN, VAL
from geoapp.synth.parallel import WORKER_STATE, fork_map
from geoapp.synth.rand import hash_u32
from geoapp.synth.views import RenderConfig, render_panorama, render_satellite
from geoapp.synth.world import GENERATOR_VERSION, World, WorldConfig, generate_world

CONFIG_FILE = "synth_config.json"
MANIFEST_FILE = "dataset.json"
# split CSV of each split (the CVUSA layout's names: geoapp.data.cvusa.SPLIT_FILES)
SPLIT_CSV = {TRAIN: "splits/train-19zl.csv", VAL: "splits/selection-19zl.csv", TEST: "splits/val-19zl.csv"}
SPLITS = (TRAIN, VAL, TEST)  # id order
ALL_KINDS = ("tile", "pano", "polar")  # the files of a rendered location (and "annotation" when asked for)
_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"


class SynthConfigError(ValueError):
    """The output folder holds a dataset made with other settings (or something else entirely)."""


@dataclass(frozen=True)
class ImageOptions:
    """What the writer produces: the rendering geometry (defaults: :class:`RenderConfig`'s; the tile's ground size
    is the world's ``tile_metres``), the polar size and the file options. Flat, so the recorded settings stay flat."""

    tile_size: int = RenderConfig.tile_size
    pano_height: int = RenderConfig.pano_height
    pano_width: int = RenderConfig.pano_width
    polar_height: int = 128
    polar_width: int = 512
    pano_vfov: float = RenderConfig.pano_vfov
    horizon: float = RenderConfig.horizon
    camera_height: float = RenderConfig.camera_height
    jpeg_quality: int = 92
    annotations: bool = False
    mosaic_size: int = 4096

    def render_config(self, tile_metres: float) -> RenderConfig:
        shared = {f.name: getattr(self, f.name) for f in fields(RenderConfig) if hasattr(self, f.name)}
        return RenderConfig(**shared, tile_metres=tile_metres)


def location_paths(i: int) -> dict[str, str]:
    sid = f"{i:07d}"
    return {"tile": f"bingmap/19/{sid}.jpg", "pano": f"streetview/panos/{sid}.jpg", "polar": f"polarmap/19/{sid}.png",
            "annotation": f"annotations/{sid}.png"}


def generator_code_hash() -> str:
    """SHA-256 over the generator's source (geoapp/synth/*.py and the polar transform it applies): outputs of
    different code are never mixed in one folder, even when the flags are the same."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for path in sorted(here.glob("*.py")) + [here.parent / "data" / "polar.py"]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def output_settings(config: WorldConfig, images: ImageOptions) -> dict:
    """Everything that changes the bytes written (not the number of workers, nor progress display)."""
    return {"generator": "geoapp.synth", "generator_version": GENERATOR_VERSION, "code": generator_code_hash(),
            "world": config.to_dict(), "images": asdict(images)}


# ---------------------------------------------------------------------------------------------- checks


def is_complete(path: Path) -> bool:
    """A finished image: non-empty and ending with the JPEG / PNG end marker."""
    try:
        size = path.stat().st_size
        if size < 16:
            return False
        with open(path, "rb") as fh:
            fh.seek(size - 8)
            tail = fh.read()
    except OSError:
        return False
    return tail.endswith(_JPEG_END) if path.suffix == ".jpg" else tail == _PNG_END


def check_output_folder(out: Path, settings: dict) -> bool:
    """Return True when ``out`` already belongs to these settings, False when it is new / empty; raise
    :class:`SynthConfigError` when it holds other outputs."""
    cfg_path = out / CONFIG_FILE
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old != settings:
            # the seed and the location counts first: the usual reasons for a mismatch
            diffs = sorted(_diff(old, settings), key=lambda d: (not d.startswith("world.seed:"),
                                                                not d.startswith("world.n_"), d.startswith("code:"), d))
            raise SynthConfigError(
                f"{out} already holds a synthetic dataset made with different settings or generator code "
                f"({'; '.join(diffs[:8])}{'; ...' if len(diffs) > 8 else ''}). Refusing to mix outputs: "
                f"use another --out folder, or delete {out} to regenerate."
            )
        return True
    if out.exists() and any(out.iterdir()):
        raise SynthConfigError(
            f"{out} is not empty and has no {CONFIG_FILE}: it was not written by geoapp.synth (or by an "
            f"interrupted run of another version). Refusing to write into it; choose an empty or new --out folder."
        )
    return False


def _diff(old, new, prefix="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k, "<missing>"), new.get(k, "<missing>"), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: was {old!r}, now {new!r}"]


# ---------------------------------------------------------------------------------------------- rendering

def _write_atomic(path: Path, data: bytes) -> None:
    """temp file + rename (no fsync: a crash can lose the last images, never leave a truncated one in place)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_file(path: Path, data: bytes) -> None:
    """Atomic, fsynced write (geoapp.files) with the usual permissions (mkstemp's temporary files are 0600)."""
    atomic_write_bytes(path, data)
    os.chmod(path, 0o666 & ~_umask())


def _write_json(path: Path, obj) -> None:
    _write_file(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _encode(ext: str, rgb: np.ndarray, quality: int) -> bytes:
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    # PNG: fast Huffman-only deflate (lossless like any PNG; faster than level 1 and smaller on these images)
    params = ([cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else
              [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY])
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise RuntimeError(f"could not encode {ext} image")
    return buf.tobytes()


def location_kinds(images: ImageOptions) -> tuple[str, ...]:
    """The files a rendered location has with these options."""
    return ALL_KINDS + (("annotation",) if images.annotations else ())


def render_location(world: World, i: int, images: ImageOptions, out: Path, only_missing: bool = True,
                    kinds: tuple[str, ...] | None = None) -> int:
    """Render and write the files of location id ``i`` (1-based), all of them or those of ``kinds`` (e.g.
    ``("tile", "polar")``); returns how many files were written."""
    cfg = images.render_config(world.config.tile_metres)
    x, y = world.locations.x[i - 1], world.locations.y[i - 1]
    seed = int(hash_u32(world.config.seed, i))
    wanted = location_kinds(images) if kinds is None else tuple(kinds)
    paths = {k: out / v for k, v in location_paths(i).items() if k in wanted}
    todo = {k for k, p in paths.items() if not (only_missing and is_complete(p))}
    written = 0
    if todo & {"tile", "polar"}:
        tile = render_satellite(world, x, y, cfg, seed)
        if "tile" in todo:
            _write_atomic(paths["tile"], _encode(".jpg", tile, images.jpeg_quality))
            written += 1
        if "polar" in todo:
            polar = polar_transform(tile, images.polar_height, images.polar_width)
            _write_atomic(paths["polar"], _encode(".png", polar, images.jpeg_quality))
            written += 1
    if "pano" in todo:
        pano = render_panorama(world, x, y, cfg, seed)
        _write_atomic(paths["pano"], _encode(".jpg", pano, images.jpeg_quality))
        written += 1
    if "annotation" in todo:
        _write_atomic(paths["annotation"], _encode(".png", render_annotation(world, x, y, cfg), 0))
        written += 1
    return written


def render_annotation(world: World, x: float, y: float, cfg: RenderConfig) -> np.ndarray:
    """Surface kind (palette.KIND_NAMES index) of every tile pixel, nearest-neighbour, uint8."""
    span = cfg.tile_metres / world.mpp
    scale = span / cfg.tile_size
    m = np.array([[scale, 0.0, x - span / 2 + 0.5 * scale - 0.5], [0.0, scale, y - span / 2 + 0.5 * scale - 0.5]])
    return cv2.warpAffine(world.kind, m, (cfg.tile_size, cfg.tile_size),
                          flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def _render_chunk(items: list[tuple[int, tuple[str, ...]]]) -> tuple[int, int]:
    world, images, out = WORKER_STATE["world"], WORKER_STATE["images"], WORKER_STATE["out"]
    return len(items), sum(render_location(world, i, images, out, kinds=kinds) for i, kinds in items)


# ---------------------------------------------------------------------------------------------- tables


def _csv_bytes(rows, header=None) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def write_tables(world: World, out: Path) -> dict:
    """Split CSVs, all.csv, locations.csv and the mosaic; returns the per-split area-type counts."""
    loc = world.locations
    ids = np.arange(1, len(loc) + 1)
    rows = {split: [] for split in SPLITS}
    for i, split in zip(ids, loc.split):
        p = location_paths(int(i))
        rows[str(split)].append((p["tile"], p["pano"], p["annotation"]))
    for split in SPLITS:
        if split != VAL or rows[VAL]:  # no val locations: no selection file (training then carves one)
            _write_file(out / SPLIT_CSV[split], _csv_bytes(rows[split]))
    lat, lon = world.latlon(loc.x, loc.y)
    _write_file(out / "split_locations/all.csv",
                       _csv_bytes([(f"{a:.8f}", f"{b:.8f}", f"{a:.8f}", f"{b:.8f}") for a, b in zip(lat, lon)]))
    east, north = world.geo.east_north(loc.x, loc.y)
    ix, iy = loc.x.astype(np.int64), loc.y.astype(np.int64)
    ground = np.where(np.isin(world.kind[iy, ix], palette.RAISED_KINDS), world.terrain[iy, ix], world.height[iy, ix])
    meta = [(int(i), str(s), palette.AREA_NAMES[a], f"{x:.2f}", f"{y:.2f}", f"{e:.2f}", f"{n:.2f}", f"{la:.8f}",
             f"{lo:.8f}", f"{g:.2f}", int(r))
            for i, s, a, x, y, e, n, la, lo, g, r in zip(ids, loc.split, loc.area, loc.x, loc.y, east, north, lat, lon,
                                                         ground, loc.on_road)]
    _write_file(out / "locations.csv", _csv_bytes(meta, ["id", "split", "area", "x_px", "y_px", "east_m",
                                                                "north_m", "lat", "lon", "ground_z_m", "on_road"]))
    counts = {}
    for split in SPLITS:
        sel = loc.split == split
        counts[split] = {name: int(np.sum(loc.area[sel] == k)) for k, name in enumerate(palette.AREA_NAMES)}
    return counts


def write_mosaic(world: World, out: Path, max_side: int, quality: int) -> dict:
    mosaic = world.mosaic(max_side)
    _write_file(out / "map/mosaic.jpg", _encode(".jpg", mosaic, quality))
    bounds = world.geo.bounds()

    def regions(blocks) -> list[dict]:
        out = []
        for b in blocks:
            lats, lons = world.latlon(np.array([b.x0, b.x1]) / world.mpp, np.array([b.y1, b.y0]) / world.mpp)
            out.append({"south": float(lats[0]), "north": float(lats[1]), "west": float(lons[0]),
                        "east": float(lons[1])})
        return out

    plan = world.plan
    info = {"file": "map/mosaic.jpg", "bounds": bounds, "size_px": [int(mosaic.shape[1]), int(mosaic.shape[0])],
            "metres_per_pixel": world.mpp * world.shape[1] / mosaic.shape[1],
            "world_size_px": [int(world.shape[1]), int(world.shape[0])],
            "test_regions": regions(plan.test_blocks if plan else []),
            "val_regions": regions(plan.val_blocks if plan else [])}
    _write_json(out / "map/mosaic.json", info)
    return info


# ---------------------------------------------------------------------------------------------- driver


def split_ids(config: WorldConfig, splits=SPLITS) -> list[int]:
    """The location ids of ``splits`` (ids run train, then val, then test: see the manifest's ``files``)."""
    counts = {TRAIN: config.n_train, VAL: config.n_val, TEST: config.n_test}
    ids, start = [], 1
    for split in SPLITS:
        if split in splits:
            ids.extend(range(start, start + counts[split]))
        start += counts[split]
    return ids


def sampled_ids(config: WorldConfig, split: str, count: int) -> list[int]:
    """The ids of the ``count`` locations of ``split`` spread evenly over it that ``sampled`` renders."""
    ids = split_ids(config, (split,))
    return [ids[int(r)] for r in spread_rows(len(ids), count)]


def _check_sampled(sampled: dict, splits) -> dict[str, int]:
    out = {}
    for split, count in (sampled or {}).items():
        if split not in SPLITS:
            raise ValueError(f"sampled: unknown split {split!r}; expected one of {SPLITS}")
        if split in splits:
            raise ValueError(f"sampled: the split {split!r} is rendered whole already (splits {list(splits)}); "
                             "ask for a sample of it or for the whole split, not both")
        if int(count) < 1:
            raise ValueError(f"sampled: {split}:{count} asks for no location; give a count of at least 1")
        out[split] = int(count)
    return out


def write_dataset(out_dir, config: WorldConfig | None = None, images: ImageOptions = ImageOptions(),
                  workers: int = 2, progress: bool = True, log=None, world: World | None = None,
                  flags: dict | None = None, splits=SPLITS, sampled: dict[str, int] | None = None) -> dict:
    """Generate (or complete) the dataset of ``config`` / ``images`` in ``out_dir``; returns the manifest.

    ``splits``: the splits whose locations are rendered (the world, its tables and mosaic are always whole, so a
    later run with more splits completes the same world); the manifest's ``rendered_splits`` lists them.
    ``sampled``: split -> N, of another split only N locations spread evenly over it (:func:`sampled_ids`; the
    manifest's ``sampled``, until a run renders that split whole).
    ``world`` may be a world already generated from ``config`` (tests, notebooks); ``flags`` (the CLI's
    parsed arguments) are recorded in the manifest. Raises
    :class:`SynthConfigError` when ``out_dir`` holds outputs of other settings.
    """
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or not splits:
        raise ValueError(f"splits must be a non-empty choice of {SPLITS}, got {list(splits)}")
    sampled = _check_sampled(sampled, splits)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    config = config or WorldConfig()
    t0 = time.perf_counter()
    out = Path(out_dir)
    settings = output_settings(config, images)
    resuming = check_output_folder(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    if not resuming:
        _write_json(out / CONFIG_FILE, settings)
    _remove_stale_temps(out)
    previous = json.loads(manifest_path.read_text()) if (manifest_path := out / MANIFEST_FILE).is_file() else {}
    run = _plan_run(out, config, images, splits, sampled, previous)
    if run.up_to_date:
        log(f"{out}: all {run.total} locations of {run.what} are complete, nothing to do")
        manifest = dict(previous)
        manifest["up_to_date"] = True  # not stored: tells the caller that this run wrote nothing
        return manifest
    log(f"{out}: {run.total - len(run.missing)} of {run.total} locations ({run.what}) already complete, "
        f"{len(run.missing)} to render")
    manifest = _render_run(out, config, images, world, run, workers, progress, log, flags, t0)
    _write_json(manifest_path, manifest)
    return manifest


class RunPlan(NamedTuple):
    """What one write_dataset run has to do in its folder."""

    rendered: list[str]  # the splits whose images are on disk once the run is done
    samples: dict[str, int]  # split -> N of the splits of which only N spread locations are on disk then
    missing: list[tuple[int, tuple[str, ...]]]  # the locations to render, each with the images it lacks
    total: int  # the locations the run asks for
    what: str  # the run's request, in words
    up_to_date: bool  # every location and table is there already: nothing to write


def _plan_run(out: Path, config: WorldConfig, images: ImageOptions, splits, sampled: dict[str, int],
              previous: dict) -> RunPlan:
    """Compare what the run asks for (``splits`` whole, ``sampled``) with what ``out`` holds (the ``previous``
    manifest, the files)."""
    rendered = sorted(set(previous.get("rendered_splits", SPLITS if previous else ())) | set(splits),
                      key=SPLITS.index)
    samples = {split: count for split, count in {**previous.get("sampled", {}), **sampled}.items()
               if split not in rendered}
    wanted = [(i, location_kinds(images)) for i in split_ids(config, splits)]
    wanted += [(i, location_kinds(images)) for split, count in sampled.items() if split not in rendered
               for i in sampled_ids(config, split, count)]
    missing = [(i, kinds) for i, kinds in wanted if not all(is_complete(out / location_paths(i)[k]) for k in kinds)]
    split_tables = tuple(SPLIT_CSV[s] for s in SPLITS if s != VAL or config.n_val > 0)
    tables = (*split_tables, "split_locations/all.csv", "locations.csv", "map/mosaic.jpg", "map/mosaic.json",
              MANIFEST_FILE)
    what = ", ".join([*splits, *(f"{count} {split} locations" for split, count in sampled.items())])
    unchanged = rendered == previous.get("rendered_splits", list(SPLITS)) and samples == previous.get("sampled", {})
    up_to_date = not missing and all((out / t).exists() for t in tables) and unchanged
    return RunPlan(rendered, samples, missing, len(wanted), what, up_to_date)


def _render_run(out: Path, config: WorldConfig, images: ImageOptions, world: World | None, run: RunPlan,
                workers: int, progress: bool, log, flags: dict | None, t0: float) -> dict:
    """Build the world (unless given), write its tables and mosaic, render the missing locations; returns the
    manifest, with the run's timings from ``t0`` on."""
    missing, total = run.missing, run.total
    t_world = time.perf_counter()
    if world is None:
        world = generate_world(config, log=log, workers=workers)
    elif world.config != config:
        raise ValueError("the world passed to write_dataset was generated from another WorldConfig")
    world_s = time.perf_counter() - t_world
    area_counts = write_tables(world, out)
    mosaic = write_mosaic(world, out, images.mosaic_size, images.jpeg_quality)

    t_render = time.perf_counter()
    files_written = _render_all(world, images, out, missing, workers, progress)
    render_s = time.perf_counter() - t_render
    total_s = time.perf_counter() - t0
    rate = len(missing) / render_s if missing and render_s > 0 else 0.0
    log(f"rendered {len(missing)} locations ({files_written} files) in {render_s:.1f} s with {workers} worker(s): "
        f"{rate:.1f} locations/s; world {world_s:.1f} s; total {total_s:.1f} s "
        f"({len(missing) / total_s:.1f} locations/s overall)")
    return _manifest(config, images, world, area_counts, mosaic, flags, run.rendered, run.samples, {
        "world_s": round(world_s, 3), "world_steps_s": {k: round(v, 3) for k, v in world.timings.items()},
        "render_s": round(render_s, 3), "total_s": round(total_s, 3), "workers": workers,
        "locations_rendered": len(missing), "locations_skipped": total - len(missing),
        "files_written": files_written,
        "render_locations_per_s": round(rate, 2), "overall_locations_per_s": round(len(missing) / total_s, 2),
    })


def _remove_stale_temps(out: Path) -> None:
    for sub in ("bingmap/19", "streetview/panos", "polarmap/19", "annotations"):
        d = out / sub
        if d.is_dir():
            for entry in os.scandir(d):
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    os.unlink(entry.path)


def _render_all(world: World, images: ImageOptions, out: Path, items: list[tuple[int, tuple[str, ...]]], workers: int,
                progress: bool) -> int:
    from tqdm import tqdm

    for sub in ("bingmap/19", "streetview/panos", "polarmap/19") + (("annotations",) if images.annotations else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if not items:
        return 0
    bar = tqdm(total=len(items), unit="loc", desc="rendering", disable=not progress, smoothing=0.05)
    written = 0
    try:
        chunk = 8
        chunks = [items[k:k + chunk] for k in range(0, len(items), chunk)]
        for n_loc, n_files in fork_map(_render_chunk, chunks, workers, dict(world=world, images=images, out=out)):
            written += n_files
            bar.update(n_loc)
        return written
    finally:
        bar.close()


def _manifest(config: WorldConfig, images: ImageOptions, world: World, area_counts: dict, mosaic: dict,
              flags: dict | None, rendered_splits: list[str], sampled: dict[str, int], timing: dict) -> dict:
    cfg = images.render_config(config.tile_metres)
    plan = world.plan
    return {
        "generator": "geoapp.synth",
        "generator_version": GENERATOR_VERSION,
        "seed": config.seed,
        "settings": output_settings(config, images),
        "flags": flags if flags is not None else {"workers": timing["workers"]},
        "command": command_line(),
        "code_revision": code_revision(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "counts": {"train": config.n_train, "val": config.n_val, "test": config.n_test,
                   "total": config.n_train + config.n_val + config.n_test},
        "rendered_splits": list(rendered_splits),  # the splits whose images are on disk
        # split -> N: of that split, only N locations spread over it (sampled_ids)
        "sampled": dict(sampled),
        "area_types": area_counts,
        "image_sizes": {"tile": [images.tile_size, images.tile_size], "pano": [images.pano_height, images.pano_width],
                        "polar": [images.polar_height, images.polar_width]},
        # the same sizes under the keys geoapp.data.base reads to check the files
        "panorama_size": [images.pano_height, images.pano_width],
        "satellite_size": images.tile_size,
        "polar_size": [images.polar_height, images.polar_width],
        "geometry": {
            "tile_metres": config.tile_metres,
            "tile_metres_per_pixel": config.tile_metres / images.tile_size,
            "pano_vfov_deg": images.pano_vfov,
            "pano_horizon_row": images.horizon * images.pano_height - 0.5,
            "camera_height_m": images.camera_height,
            "pano_view_distance_m": cfg.view_distance,
            "pano_columns": "column c looks toward azimuth c / W * 360 - 180 (conventions §2): 0 = S, W/4 = W, "
                            "W/2 = N, 3W/4 = E",
            "polar": "conventions §3 polar transform of the rendered tile (before JPEG), row 0 = far ring, last row = "
                     "camera",
        },
        "origin": {"lat": config.origin[0], "lon": config.origin[1], "at": "world centre"},
        "metres_per_pixel": config.metres_per_pixel,
        "world": {"width_m": plan.width_m, "height_m": plan.height_m, "size_px": [int(world.shape[1]),
                                                                               int(world.shape[0])],
                  "block_metres": plan.block_m, "blocks": len(plan.blocks), "val_blocks": len(plan.val_blocks),
                  "test_blocks": len(plan.test_blocks)},
        "mosaic": mosaic,
        "files": {
            "satellite": "bingmap/19/<id>.jpg", "ground": "streetview/panos/<id>.jpg", "polar": "polarmap/19/<id>.png",
            "annotations": ("annotations/<id>.png (surface kinds: " + ", ".join(
                f"{k}={n}" for k, n in enumerate(palette.KIND_NAMES)) + ")") if images.annotations else
            "not written (pass --annotations); the split CSVs list annotations/<id>.png as CVUSA does",
            "train_split": SPLIT_CSV[TRAIN], "test_split": SPLIT_CSV[TEST],
            "val_split": SPLIT_CSV[VAL] if config.n_val > 0 else "none (no val locations)",
            "splits": "dataset split names (geoapp.data.cvusa): train = splits/train-19zl.csv, val (model "
                      "selection) = splits/selection-19zl.csv, test (reported) = splits/val-19zl.csv",
            "all_locations": "split_locations/all.csv (sat_lat, sat_lon, ground_lat, ground_lon; row id-1)",
            "locations": "locations.csv (header; per-id split, area type, world position, lat/lon, ground height)",
            "ids": "1-based, zero-padded to 7 digits; train ids first, then val, then test",
        },
        "timing": timing,
    }
