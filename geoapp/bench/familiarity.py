"""Which photos the familiarity test flags, and what the others are told: in-world photos against photos from
outside the model's world.

    python -m geoapp.bench familiarity --panoramas CVUSA_PANOS/ --photos REAL_PHOTOS/ --out familiarity.json

Every photo goes through the app's own :class:`~geoapp.retrieval.engine.Localizer` (default: the demo's checkpoint
and database), so a flagged photo is exactly one the page answers with "not a place the demo knows". Rows:

- the database's own split (the served test split): ``--world-photos`` panoramas, each as a panorama crop and as a
  phone photo (a perspective view of the panorama), FoV drawn from 60-100 degrees;
- ``--panoramas``: real street-level panoramas (equirectangular, 360 degrees wide, e.g. CVUSA's 1232 x 224): four
  90 / 70 degree views each, as panorama crops, as the same crops stretched to 4:3 and sent as phone photos, and as
  perspective phone photos;
- ``--photos``: ordinary photographs, sent as phone photos at 70 and 90 degrees;
- non-photos made here: uniform colours, black, white, gradients, noise, a checkerboard, stripes, text, blurred
  blobs (three seeds).

Per row: photos, the share flagged unfamiliar, and the mean tile probability stated to the photos not flagged.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..data.datasets import build_dataset
from ..data.fov import crop_fov
from ..data.photo import IMAGE_SUFFIXES, load_image, panorama_to_pinhole
from ..files import atomic_write_json
from ..retrieval.engine import Localizer
from ..training.precision import cpu_description

PHONE_SIZE = (640, 480)  # the made photos' width and height


def non_photos(seed: int, size: tuple[int, int] = PHONE_SIZE) -> dict[str, np.ndarray]:
    """Images that are not photographs of anything, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    w, h = size
    ramp_x = np.linspace(0.0, 1.0, w)[None, :, None]
    ramp_y = np.linspace(0.0, 1.0, h)[:, None, None]
    yy, xx = np.mgrid[:h, :w]
    square = int(rng.integers(16, 64))
    text = np.full((h, w, 3), 255, np.uint8)
    for line in range(h // 40):
        cv2.putText(text, f"Lorem ipsum dolor sit amet {rng.integers(1000)}", (10, 35 + 38 * line),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 2)
    images = {
        "uniform colour": np.full((h, w, 3), rng.integers(0, 256, size=3), np.uint8),
        "grey": np.full((h, w, 3), int(rng.integers(60, 200)), np.uint8),
        "black": np.full((h, w, 3), int(rng.integers(0, 8)), np.uint8),
        "white": np.full((h, w, 3), 255 - int(rng.integers(0, 8)), np.uint8),
        "horizontal gradient": ramp_x * rng.uniform(0, 255, 3) + (1 - ramp_x) * rng.uniform(0, 255, 3),
        "vertical gradient": ramp_y * rng.uniform(0, 255, 3) + (1 - ramp_y) * rng.uniform(0, 255, 3),
        "uniform noise": rng.integers(0, 256, (h, w, 3)),
        "gaussian noise": rng.normal(128, 40, (h, w, 3)),
        "grey noise": np.repeat(rng.integers(0, 256, (h, w, 1)), 3, axis=2),
        "checkerboard": ((yy // square + xx // square) % 2)[..., None] * np.full(3, 255),
        "stripes": (np.sin(xx / rng.uniform(3, 20)) > 0)[..., None] * rng.integers(0, 256, 3),
        "text": text,
        "blurred blobs": cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (0, 0), 12),
    }
    return {name: np.ascontiguousarray(np.broadcast_to(np.clip(image, 0, 255), (h, w, 3)).astype(np.uint8))
            for name, image in images.items()}


def panorama_views(pano: np.ndarray) -> dict[str, list[tuple[np.ndarray, float, str]]]:
    """Four views of a real panorama (90 and 70 degrees in turn) as crops, stretched crops and perspective photos:
    (image, fov, projection) each."""
    width = pano.shape[1]
    views: dict[str, list] = {"crop": [], "stretched": [], "phone": []}
    for k, column in enumerate(np.linspace(0, width, 4, endpoint=False)):
        fov = 90.0 if k % 2 == 0 else 70.0
        crop = crop_fov(pano, fov, (width - int(column)) % width)
        views["crop"].append((crop, fov, "crop"))
        stretched = cv2.resize(crop, (crop.shape[1], crop.shape[1] * 3 // 4), interpolation=cv2.INTER_AREA)
        views["stretched"].append((stretched, fov, "pinhole"))
        phone = panorama_to_pinhole(pano, fov, column + crop.shape[1] / 2.0, PHONE_SIZE[0])
        views["phone"].append((phone, fov, "pinhole"))
    return views


def world_views(localizer: Localizer, count: int, seed: int) -> dict[str, list[tuple[np.ndarray, float, str]]]:
    """``count`` panoramas of the database's own split as crops and phone photos."""
    source = localizer.db.metadata["source"]
    part = source["parts"][0] if source.get("kind") == "concat" else source
    if part.get("kind") != "dataset":
        raise ValueError(f"{localizer.db.path} was not built from a dataset split: pass a database that was")
    data = build_dataset(part["dataset"], part["root"], part["split"], fov_deg=90.0, train=False,
                         ground_size=(128, None), sat_size=(128, 512))
    rng = np.random.default_rng(seed)
    views: dict[str, list] = {"crop": [], "phone": []}
    for index in np.linspace(0, len(data) - 1, min(count, len(data))).round().astype(int):
        pano = data.load_panorama(int(index))
        fov = float(rng.uniform(60.0, 100.0))
        views["crop"].append((crop_fov(pano, fov, int(rng.integers(0, pano.shape[1]))), fov, "crop"))
        phone = panorama_to_pinhole(pano, fov, float(rng.uniform(0, pano.shape[1])), PHONE_SIZE[0])
        views["phone"].append((phone, fov, "pinhole"))
    return views


def flag_row(localizer: Localizer, name: str, photos: list[tuple[np.ndarray, float, str]],
             progress: bool = True) -> dict:
    """The share of ``photos`` told "not a place the model knows" (the familiarity test), the share given no
    probability (that, or a best score below the calibration's floor), and the mean tile probability stated to the
    others."""
    unknown, flagged, stated, seconds = [], [], [], []
    for image, fov, projection in tqdm(photos, desc=name, unit="photo", disable=not progress):
        t = time.perf_counter()
        result = localizer.localize(image, fov_deg=fov, top_k=1, projection=projection)
        seconds.append(time.perf_counter() - t)
        conf = result.confidence
        unknown.append(conf is not None and conf.unknown_place)
        flagged.append(conf is not None and conf.unfamiliar)
        if conf is not None and not conf.unfamiliar:
            stated.append(conf.tile)
    return {"row": name, "photos": len(photos), "unknown_place_percent": float(np.mean(unknown) * 100),
            "no_probability_percent": float(np.mean(flagged) * 100),
            "stated_tile_probability": float(np.mean(stated)) if stated else None,
            "median_query_ms": float(np.median(seconds) * 1000)}


def image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise SystemExit(f"error: {folder} holds no image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m geoapp.bench familiarity", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="checkpoints/demo.safetensors")
    p.add_argument("--reference-db", default="reference_db/demo", help="a database with a calibration")
    p.add_argument("--panoramas", type=Path, help="a folder of real street-level panoramas (360 degrees wide)")
    p.add_argument("--photos", type=Path, help="a folder of ordinary photographs")
    p.add_argument("--world-photos", type=int, default=300, help="panoramas of the database's own split")
    p.add_argument("--non-photo-seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=2019)
    p.add_argument("--out", type=Path, help="write the rows as JSON")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    localizer = Localizer(args.checkpoint, args.reference_db, device="cpu")
    if localizer.familiarity is None:
        raise SystemExit(f"error: {args.reference_db} has no familiarity test; refit its calibration with "
                         "`build_db ... --calibrate val --calibrate-only`")
    groups: dict[str, list] = {f"in-world {kind}": views
                               for kind, views in world_views(localizer, args.world_photos, args.seed).items()}
    if args.panoramas:
        for path in image_files(args.panoramas):
            for kind, views in panorama_views(load_image(path)).items():
                groups.setdefault(f"real panorama, {kind}", []).extend(views)
    if args.photos:
        groups["real photos, as phone photos"] = [(load_image(path), fov, "pinhole")
                                                  for path in image_files(args.photos) for fov in (70.0, 90.0)]
    groups["non-photos"] = [(image, 90.0, "pinhole") for seed in range(args.non_photo_seeds)
                            for image in non_photos(seed).values()]
    rows = [flag_row(localizer, name, photos) for name, photos in groups.items()]
    cpu = cpu_description()
    print(f"# familiarity test of {localizer.db.path} ({localizer.familiarity.record.get('val_flagged_percent')} % "
          f"of its validation photos flagged); {cpu['model']}, {cpu['torch_capability']}, {cpu['threads']} threads; "
          f"{time.strftime('%Y-%m-%d')}")
    print("| photos | count | told 'not a place the model knows' | no probability (that, or below the score floor) "
          "| stated tile probability otherwise | median query |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        p = "-" if r["stated_tile_probability"] is None else f"{r['stated_tile_probability']:.2f}"
        print(f"| {r['row']} | {r['photos']} | {r['unknown_place_percent']:.1f} % "
              f"| {r['no_probability_percent']:.1f} % | {p} | {r['median_query_ms']:.0f} ms |")
    out = {"database": str(localizer.db.path), "familiarity": localizer.familiarity.record, "rows": rows,
           "cpu": cpu, "date": time.strftime("%Y-%m-%d")}
    if args.out:
        atomic_write_json(args.out, out)
    return out
