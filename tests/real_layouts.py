"""Tiny CVUSA and CVACT folders in the real datasets' layouts, for end-to-end tests of the command-line tools.

Unlike :mod:`tiny_world` (the synthetic world's CVUSA-like folder with a ``dataset.json`` manifest and a
selection split), these folders are what a researcher downloads: the real file names, JPEG images at the real
sizes, the real index files, no manifest and no model-selection split (training carves one from ``train``):

- CVUSA: ``bingmap/19/<id>.jpg`` (750 x 750), ``streetview/panos/<id>.jpg`` (224 x 1232), ``splits/train-19zl.csv``
  and ``splits/val-19zl.csv`` (no header: satellite, ground and annotation paths), ``split_locations/all.csv``
  (row ``id - 1``: sat_lat, sat_lon, ground_lat, ground_lon). Ids are 7-digit numbers, interleaved between the
  splits as in the real files. The optional ``polarmap/19`` is not written: it is only read at 128 x 512.
- CVACT: ``streetview/<id>_grdView.jpg`` (832 x 1664, full sphere), ``satview_polish/<id>_satView_polish.jpg``
  (1200 x 1200), ``ACT_data.mat`` as MATLAB writes it (``panoIds`` a char matrix of 22-character ids, ``utm``
  N x 2 easting/northing in zone 55 south, ``trainSet.trainInd`` and ``valSet.valInd`` 1-based N x 1 doubles
  inside 1 x 1 structs).

The images are made so that the task is learnable: each pair has a blocky random colour grid (``ROWS`` x ``COLS``
blocks); the panorama shows it (CVACT: in the middle half of its rows, the band the reader keeps) and the
satellite tile is its inverse conventions §3 polar transform with a little noise per block, so the polar image of the
tile (what the readers compute at the model's size) is the panorama's band, column for column.

The training pairs sit on a square grid ``spacing_m`` apart (wider than the 150 m tile, so the carved selection
cells drop no neighbour), the test pairs on a second grid 5 km east, like a held-out neighbourhood.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from geoapp.data.cvact import utm_to_latlon

ROWS, COLS = 4, 16  # colour blocks per panorama band: coarse enough to survive JPEG and resizing
BLOCK_NOISE = 12  # +- per channel and block between a panorama and its satellite tile
CVUSA_PANO, CVUSA_SAT = (224, 1232), 750  # geoapp.data.cvusa.CVUSADataset.default_sizes
CVACT_PANO, CVACT_SAT = (832, 1664), 1200  # geoapp.data.cvact.CVACTDataset.default_sizes
CVACT_BAND = (0.25, 0.75)  # the rows of a CVACT panorama the reader keeps (conventions §2)
CANBERRA_UTM = (692_000.0, 6_092_000.0)  # easting, northing (zone 55 south) of the first training pair
METRES_PER_DEG_LAT = 111_195.0
TEST_OFFSET_M = 5_000.0  # the test grid lies this far east of the training grid


@dataclass(frozen=True)
class TinyLayout:
    """What a writer put on disk: the root, and per split the pair ids and positions in split order."""

    root: Path
    ids: dict[str, list[str]]  # split ("train", "test") -> ids as the reader names pairs
    latlon: dict[str, np.ndarray]  # split -> N x 2 (lat, lon) of the pairs, as the reader must return them


# ------------------------------------------------------------------------------------------------ images


def colour_grid(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(ROWS, COLS, 3), dtype=np.uint8)


def panorama(grid: np.ndarray, height: int, width: int, band=(0.0, 1.0)) -> np.ndarray:
    """A ``height x width`` panorama showing ``grid`` in the rows ``band`` (fractions); a fixed sky above and
    ground below, the same for every pair so they carry no identity."""
    v = (np.arange(height) + 0.5) / height
    out = np.empty((height, width, 3), np.uint8)
    out[v < band[0]] = (150, 190, 230)
    out[v >= band[1]] = (90, 80, 70)
    inside = (v >= band[0]) & (v < band[1])
    band_rows = int(inside.sum())
    out[inside] = cv2.resize(grid, (width, band_rows), interpolation=cv2.INTER_NEAREST)
    return out


@lru_cache(maxsize=4)
def _tile_blocks(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid row and column shown by each pixel of an S x S tile: the pixel at radius r and azimuth theta shows
    row fraction 1 - 2 r / S and column fraction theta / 2 pi, where y = S/2 + r cos(theta) and
    x = S/2 - r sin(theta) (the conventions §3 polar transform, geoapp.data.polar, inverted)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = y - size / 2.0, size / 2.0 - x
    radius = np.hypot(dy, dx)
    theta = np.arctan2(dx, dy) % (2.0 * np.pi)
    row = np.clip(np.floor((1.0 - 2.0 * radius / size) * ROWS), 0, ROWS - 1).astype(np.int64)
    col = np.clip(np.floor(theta / (2.0 * np.pi) * COLS), 0, COLS - 1).astype(np.int64)
    return row, col


def satellite_tile(grid: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The square tile whose conventions §3 polar image is ``grid`` plus a little noise per block."""
    noisy = np.clip(grid.astype(np.int64) + rng.integers(-BLOCK_NOISE, BLOCK_NOISE + 1, grid.shape), 0, 255)
    row, col = _tile_blocks(size)
    return noisy.astype(np.uint8)[row, col]


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok, path
    path.write_bytes(data.tobytes())


# --------------------------------------------------------------------------------------------- positions


def grid_offsets_m(n: int, spacing_m: float, east_m: float = 0.0) -> np.ndarray:
    """N x 2 (east, north) metres of ``n`` points on a square grid ``spacing_m`` apart, shifted ``east_m``."""
    side = int(np.ceil(np.sqrt(n)))
    k = np.arange(n)
    return np.stack([east_m + (k % side) * spacing_m, (k // side) * spacing_m], axis=1).astype(np.float64)


def split_positions(n_train: int, n_test: int, spacing_m: float) -> dict[str, np.ndarray]:
    return {"train": grid_offsets_m(n_train, spacing_m), "test": grid_offsets_m(n_test, spacing_m, TEST_OFFSET_M)}


# ----------------------------------------------------------------------------------------------- CVUSA


def write_tiny_cvusa_layout(root, n_train: int = 16, n_test: int = 8, seed: int = 0,
                            spacing_m: float = 200.0, locations: bool = True) -> TinyLayout:
    """CVUSA as CVM-Net / SAFA / DSM use it (geoapp.data.cvusa), ``n_train`` + ``n_test`` pairs (module docstring).

    Image ids 1..N are dealt to the splits in a seeded random order (the real split files interleave them), and
    each split file lists its ids in that order. ``locations=False``: no split_locations/all.csv (copies of the
    CVUSA subset often lack it); the layout's ``latlon`` are then nan, as the reader returns them."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    order = rng.permutation(np.arange(1, n + 1))
    split_ids = {"train": order[:n_train], "test": order[n_train:]}
    origin_lat, origin_lon = 40.0, -75.0
    rows = np.zeros((n, 4))
    layout = TinyLayout(root, {}, {})
    for split, offsets in split_positions(n_train, n_test, spacing_m).items():
        lat = origin_lat + offsets[:, 1] / METRES_PER_DEG_LAT
        lon = origin_lon + offsets[:, 0] / (METRES_PER_DEG_LAT * np.cos(np.radians(origin_lat)))
        ids = split_ids[split]
        rows[ids - 1] = np.stack([lat, lon, lat, lon], axis=1)  # the camera stands at the tile centre
        layout.ids[split] = [f"{i:07d}" for i in ids]
        layout.latlon[split] = np.stack([lat, lon], axis=1)
    for image_id in range(1, n + 1):
        grid = colour_grid(rng)
        name = f"{image_id:07d}.jpg"
        write_jpeg(root / "streetview/panos" / name, panorama(grid, *CVUSA_PANO))
        write_jpeg(root / "bingmap/19" / name, satellite_tile(grid, CVUSA_SAT, rng))
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for split, file_name in (("train", "train-19zl.csv"), ("test", "val-19zl.csv")):  # val-19zl.csv: reported
        lines = [f"bingmap/19/{i}.jpg,streetview/panos/{i}.jpg,annotations/{i}.png\n" for i in layout.ids[split]]
        (root / "splits" / file_name).write_text("".join(lines))
    if not locations:
        return TinyLayout(root, layout.ids, {k: np.full_like(v, np.nan) for k, v in layout.latlon.items()})
    (root / "split_locations").mkdir(exist_ok=True)
    (root / "split_locations/all.csv").write_text("".join(",".join(f"{v:.9f}" for v in r) + "\n" for r in rows))
    return layout


# ----------------------------------------------------------------------------------------------- CVACT

PANO_ID_ALPHABET = np.array(list(string.ascii_letters + string.digits + "_-"))


def pano_ids(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct 22-character ids like CVACT's Street View panorama ids (e.g. ``__-DFIFxvZBCn1873qkqXA``)."""
    ids: list[str] = []
    while len(ids) < n:
        candidate = "".join(rng.choice(PANO_ID_ALPHABET, 22))
        if candidate not in ids:
            ids.append(candidate)
    return ids


def write_tiny_cvact_layout(root, n_train: int = 16, n_test: int = 8, seed: int = 0,
                            spacing_m: float = 200.0) -> TinyLayout:
    """CVACT's ANU_data_small with CVACT_val (geoapp.data.cvact), ``n_train`` + ``n_test`` pairs (module docstring).

    ``panoIds`` rows are shuffled against the splits: trainInd and valInd are seeded random 1-based rows."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    ids = pano_ids(n, rng)
    order = rng.permutation(n)  # 0-based rows of panoIds; the first n_train train, the rest test
    rows = {"train": order[:n_train], "test": order[n_train:]}
    utm = np.zeros((n, 2))
    layout = TinyLayout(root, {}, {})
    for split, offsets in split_positions(n_train, n_test, spacing_m).items():
        utm[rows[split]] = np.asarray(CANBERRA_UTM) + offsets  # columns: easting, northing
        lat, lon = utm_to_latlon(utm[rows[split], 0], utm[rows[split], 1], zone=55, south=True)
        layout.ids[split] = [ids[r] for r in rows[split]]
        layout.latlon[split] = np.stack([lat, lon], axis=1)
    for pano_id in ids:
        grid = colour_grid(rng)
        write_jpeg(root / "streetview" / f"{pano_id}_grdView.jpg", panorama(grid, *CVACT_PANO, band=CVACT_BAND))
        write_jpeg(root / "satview_polish" / f"{pano_id}_satView_polish.jpg", satellite_tile(grid, CVACT_SAT, rng))
    # MATLAB's layout as scipy reads it back: a char matrix, doubles, and 1 x 1 structs of N x 1 index columns
    scipy.io.savemat(root / "ACT_data.mat", {
        "panoIds": np.array(ids),
        "utm": utm,
        "trainSet": {"trainInd": (rows["train"] + 1).astype(np.float64).reshape(-1, 1)},
        "valSet": {"valInd": (rows["test"] + 1).astype(np.float64).reshape(-1, 1)},
    })
    return layout
