"""A model-selection subset carved out of a training split, for datasets without a ``val`` split (conventions §7).

CVUSA's ``val-19zl.csv``, CVACT_val and VIGOR's same-area test are the splits results are reported on, so
nothing may be chosen on them (best checkpoint, recipe, ablation settings, calibration). Where a dataset has
no model-selection split of its own, :func:`carve_selection` takes one out of the training split,
deterministically from a seed:

- ``spatial`` (every pair has a finite position): the positions are grouped into grid cells of
  ``cell_tiles`` x the tile footprint (rows of ``cell_m`` metres of latitude, each row cut into cells of
  ``cell_m`` metres of longitude at its centre latitude). Cells are drawn in a seeded random order until they
  hold at least ``size`` pairs; every pair of the drawn cells is a selection pair. Then every remaining
  training pair whose tile overlaps a selection tile (both north-aligned squares of ``tile_m``: the centres are
  less than ``tile_m`` apart east-west AND north-south) is dropped from training, so no training tile overlaps
  a selection tile and the selection figures are not inflated by neighbouring, overlapping training tiles.
- ``random`` (some position unknown): ``size`` pairs drawn at random; nothing is dropped.

:meth:`geoapp.data.base.CrossViewDataset.subset` turns the positions into datasets; :meth:`Carve.record` is
what run folders and checkpoints record as their ``selection_split``. :func:`spread_rows` is the evenly spread subset
of a split that other steps take (a calibration's distractors).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

EARTH_RADIUS_M = 6_371_008.8
CARVE_TAG = 0x5E1EC7  # mixed into the seed: the carve draws from its own stream
DEFAULT_SHARE = 0.05  # carve about 5 % of the training split when no size is asked for ...
DEFAULT_MIN = 500  # ... but at least this many pairs where the split allows it
MAX_SHARE = 0.2  # never more than a fifth of the training split


@dataclass(frozen=True)
class Carve:
    """Positions (in the source split, ascending) of the selection pairs, the training pairs kept and those
    dropped because their tiles overlap a selection tile."""

    selection: np.ndarray
    train: np.ndarray
    dropped: np.ndarray
    method: str  # "spatial" | "random"
    seed: int
    cell_m: float | None = None
    tile_m: float | None = None

    def record(self, ids: Sequence[str], carved_from: str = "train") -> dict:
        """The provenance record of the carve: what it was carved from, how, how many, and the sha256 of the
        selection pairs' ids (one per line, in split order)."""
        chosen = [str(ids[int(i)]) for i in self.selection]
        out = {"carved_from": carved_from, "method": self.method, "n": len(self.selection),
               "n_train": len(self.train), "n_dropped": len(self.dropped), "seed": self.seed,
               "ids_sha256": ids_sha256(chosen)}
        if self.method == "spatial":
            out.update(cell_m=round(float(self.cell_m), 3), tile_m=round(float(self.tile_m), 3))
        return out

    def describe(self, carved_from: str = "train") -> str:
        total = len(self.selection) + len(self.train) + len(self.dropped)
        if self.method == "spatial":
            how = (f"spatial: seeded {self.cell_m:.0f} m grid cells, {len(self.dropped)} training pairs whose "
                   f"{self.tile_m:.0f} m tiles overlap a selection tile dropped")
        else:
            how = "random: seeded random pairs (positions unknown, so no spatial separation)"
        return (f"model selection on {len(self.selection)} pairs carved from the {total} of {carved_from!r} "
                f"({how}); training on the other {len(self.train)}")


def spread_rows(n: int, count: int) -> np.ndarray:
    """``count`` positions spread evenly over ``range(n)``, ascending, the first and the last included (all of them
    when ``count`` >= ``n``): the calibration's distractors (:class:`geoapp.retrieval.build.Limited`), whose tiles a
    first start renders alone (``python -m geoapp.synth --sample train:COUNT``)."""
    if n <= 0 or count <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, min(int(count), int(n))).round().astype(np.int64))


def ids_sha256(ids: Sequence[str]) -> str:
    return hashlib.sha256("".join(f"{i}\n" for i in ids).encode("utf-8")).hexdigest()


def carve_size(n: int, requested: int = 0) -> int:
    """How many pairs to carve from an ``n``-pair training split: ``requested`` (> 0), else about 5 % and at
    least 500; never more than a fifth of the split, never fewer than one."""
    want = int(requested) if requested > 0 else max(math.ceil(DEFAULT_SHARE * n), DEFAULT_MIN)
    return max(1, min(want, int(MAX_SHARE * n)))


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), CARVE_TAG])


def grid_cells(latlon: np.ndarray, cell_m: float) -> np.ndarray:
    """(row, column) of each position's ``cell_m`` grid cell (N x 2 int64)."""
    lat = np.radians(latlon[:, 0])
    lon = np.radians(latlon[:, 1])
    row = np.floor(EARTH_RADIUS_M * lat / cell_m)
    row_lat = (row + 0.5) * cell_m / EARTH_RADIUS_M
    col = np.floor(EARTH_RADIUS_M * np.cos(row_lat) * lon / cell_m)
    return np.stack([row, col], axis=1).astype(np.int64)


def overlapping(latlon: np.ndarray, centres: np.ndarray, others: np.ndarray, tile_m: float) -> np.ndarray:
    """The positions in ``others`` whose north-aligned ``tile_m`` square overlaps that of a position in
    ``centres`` (both index arrays into ``latlon``): less than ``tile_m`` apart both north-south and east-west
    in the local frame of the centre."""
    if len(centres) == 0 or len(others) == 0:
        return np.zeros(0, dtype=np.int64)
    lat = np.radians(latlon[:, 0])
    lon = np.radians(latlon[:, 1])
    xyz = EARTH_RADIUS_M * np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    tree = cKDTree(xyz[others])
    # candidates by chord length: overlapping squares have centres less than sqrt(2) tile_m apart
    candidates = tree.query_ball_point(xyz[centres], r=tile_m * math.sqrt(2.0) * 1.001)
    pairs = [(c, j) for c, found in zip(centres, candidates) for j in found]
    if not pairs:
        return np.zeros(0, dtype=np.int64)
    c, j = (np.array(v, dtype=np.int64) for v in zip(*pairs))
    o = others[j]
    north = EARTH_RADIUS_M * (lat[o] - lat[c])
    east = EARTH_RADIUS_M * np.cos(lat[c]) * ((lon[o] - lon[c] + math.pi) % (2 * math.pi) - math.pi)
    hit = (np.abs(north) < tile_m) & (np.abs(east) < tile_m)
    return np.unique(o[hit])


def carve_selection(latlon: np.ndarray, size: int, seed: int = 0, tile_m: float = 150.0,
                    cell_tiles: float = 2.0) -> Carve:
    """Carve about ``size`` selection pairs out of a training split whose pairs sit at ``latlon`` (N x 2
    degrees, nan where unknown); see the module docstring. The same inputs give the same carve."""
    latlon = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    n = len(latlon)
    if n < 2:
        raise ValueError(f"cannot carve a model-selection subset out of {n} training pair(s)")
    size = int(size)
    if not 1 <= size < n:
        raise ValueError(f"the selection subset must have 1..{n - 1} pairs, got {size}")
    rng = _rng(seed)
    everything = np.arange(n)
    if not np.isfinite(latlon).all():
        selection = np.sort(rng.choice(n, size=size, replace=False))
        return Carve(selection, np.setdiff1d(everything, selection), np.zeros(0, dtype=np.int64), "random", int(seed))

    cell_m = float(cell_tiles) * float(tile_m)
    _, cell_of = np.unique(grid_cells(latlon, cell_m), axis=0, return_inverse=True)
    cell_of = cell_of.reshape(-1)
    counts = np.bincount(cell_of)
    order = rng.permutation(len(counts))
    taken = np.cumsum(counts[order])
    chosen = order[: int(np.searchsorted(taken, size)) + 1]
    selected = np.isin(cell_of, chosen)
    if selected.all():
        raise ValueError(f"cannot carve {size} of {n} pairs in {cell_m:g} m cells: one cell holds them all")
    selection = everything[selected]
    rest = everything[~selected]
    dropped = overlapping(latlon, selection, rest, float(tile_m))
    train = np.setdiff1d(rest, dropped)
    if len(train) == 0:
        raise ValueError(f"carving {len(selection)} selection pairs leaves no training pair whose tile does not "
                         "overlap a selection tile")
    return Carve(selection, train, dropped, "spatial", int(seed), cell_m, float(tile_m))


def carve_dataset(dataset, size: int = 0, seed: int = 0, cell_tiles: float = 2.0) -> Carve:
    """:func:`carve_selection` of a :class:`~geoapp.data.base.CrossViewDataset`: its satellite tile centres
    where all are known (else its ground positions), its tile footprint, ``carve_size(len(dataset), size)``."""
    positions = dataset.satellite_locations
    if not np.isfinite(positions).all():
        positions = dataset.locations
    return carve_selection(positions, carve_size(len(dataset), size), seed, dataset.tile_metres, cell_tiles)
