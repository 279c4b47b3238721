"""What every cross-view dataset reader shares: records, size checks, the polar cache, FoV crops and shifts.

A reader (CVUSA, CVACT, VIGOR) only parses its layout into a list of :class:`PairRecord`; the
:class:`CrossViewDataset` base class turns a record into a training/evaluation sample:

- ground: panorama -> optional row cut (CVACT) -> resized to ``H_g x W`` (``W`` = satellite polar
  width) -> ``crop_fov(pano, fov, shift)`` -> ImageNet-normalised tensor ``3 x H_g x fov_width(fov, W)``;
- satellite: pre-made polar image when its size is the requested one, otherwise the conventions §3 polar
  transform of the tile at ``sat_size``, cached on disk -> normalised tensor ``3 x H_s x W``.

Shifts are always in pixels of the resized panorama, whose width is the satellite polar width
(512 by default). Training draws a new shift per sample and epoch from a generator seeded by
``(seed, epoch, index)``; evaluation uses the fixed ``eval_shifts`` of conventions §4.

Image sizes are checked exactly against the real dataset's sizes, unless a ``dataset.json`` manifest at
the dataset root (written by the synthetic world generator, or by hand for a re-sized copy) or the
``image_sizes`` argument declares others. Manifest keys read here (others are kept in ``.manifest``)::

    {"panorama_size": [224, 1232], "satellite_size": 750, "polar_size": [128, 512],
     "origin": {"lat": 40.0, "lon": -75.0}}

``satellite_size`` may be an int or ``[S, S]``; every key is optional.

Split names mean one thing in every layout (conventions §7): ``train`` is fitted on, ``val`` is the model-selection
split (best checkpoint, recipe and ablation choices, calibration) and ``test`` is only reported on. A layout
without a model-selection split raises :class:`NoSelectionSplitError` for ``val``; training then carves one
from ``train`` (:mod:`geoapp.data.selection`, :meth:`CrossViewDataset.subset`).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from geoapp.angles import fov_width, heading_from_shift
from geoapp.data.fov import crop_fov, eval_shifts
from geoapp.data.polar import polar_transform
from geoapp.data.records import (
    DEFAULT_SAT_SIZE,
    MANIFEST_NAME,
    SELECTION_SPLIT,
    DatasetError,
    ImageSizes,
    PairRecord,
    no_selection_split,
    read_manifest,
    read_rgb,
    resolve_image_sizes,
)
from geoapp.data.transforms import resize_image, to_tensor
from geoapp.files import atomic_write_bytes

DEFAULT_GROUND_SIZE = (128, None)  # (height, crop width); None: fov_width(fov, satellite polar width)
POLAR_CACHE_DIRNAME = "polar_cache"
_LAYOUT_DEFAULT = object()  # "use the layout's own rule" for keyword arguments where None means something


class CrossViewDataset(torch.utils.data.Dataset):
    """Ground/satellite pairs with limited-FoV ground crops (see the module docstring).

    Samples are dicts: ``ground`` (float tensor 3 x H_g x w_fov), ``satellite`` (float tensor 3 x H_s x W),
    ``shift`` (int, pixels of the W-wide resized panorama), ``heading`` (deg in [-180, 180),
    ``heading_from_shift``), ``lat``/``lon`` (the ground camera's position, nan when unknown), ``index``
    and ``id`` (the dataset's own name of the pair). :meth:`ground_item` and :meth:`satellite_item` give
    one side only (the satellite side's ``lat``/``lon`` are the tile centre's).
    """

    # What the dataset registry (geoapp.data.datasets) asks of a member; each layout sets its own.
    name = "base"  # the registry key: --dataset, config files and run metadata name the layout by it
    layout = "no layout"  # what a folder of the dataset holds, in a few words
    # The split names (conventions §7) the layout can list, in the order train, val, test. A layout without "val"
    # has no model-selection split; asking for it raises NoSelectionSplitError.
    splits: tuple[str, ...] = ()
    test_source = "no file"  # where the layout lists its reported ("test") split, quoted when "val" is missing
    synthetic = False  # rendered by geoapp.synth rather than photographed: says nothing of real places
    default_sizes = ImageSizes(panorama=(1, 1), satellite=(1, 1))
    # Ground extent of a satellite tile in metres (approximate), unless the manifest's geometry.tile_metres
    # says; the carved model-selection subset keeps training tiles this far away (geoapp.data.selection).
    default_tile_metres = 150.0
    # Rows of the raw panorama kept before resizing, as fractions of its height (None: all rows).
    default_ground_rows: tuple[float, float] | None = None

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        fov_deg: float,
        train: bool,
        ground_size: Sequence[int | None] = DEFAULT_GROUND_SIZE,
        sat_size: Sequence[int] = DEFAULT_SAT_SIZE,
        seed: int = 0,
        shifts: Sequence[int] | np.ndarray | None = None,
        *,
        image_sizes: dict | None = None,
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        check_files: bool = True,
        skip_missing: bool = False,
        satellite_only: bool = False,
        ground_rows: tuple[float, float] | None | object = _LAYOUT_DEFAULT,
    ) -> None:
        """Parse the layout at ``root`` (see the subclass) and prepare sampling.

        ``image_sizes``: raw sizes to expect instead of the real dataset's (keys as in the manifest).
        ``cache_dir``: where computed polar images are cached (default ``<root>/polar_cache``; the cache is
        keyed by the polar size and refreshed when the tile is newer); ``use_cache=False`` disables it.
        ``check_files``: check at construction that every listed image exists. ``skip_missing``: drop pairs
        with a missing image instead of raising. ``satellite_only``: only the satellite side will be read (a
        reference database, a calibration's distractors): the ground images are neither checked nor read here, and a
        split rendered without its panoramas opens. ``ground_rows``: (top, bottom) fractions of the raw
        panorama's height kept before resizing, None for all rows (default: the layout's rule).
        """
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset root does not exist or is not a directory")
        self.split = self._check_split(split)
        self.train = bool(train)
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.epoch = 0

        self._set_sizes(fov_deg, ground_size, sat_size)
        self.manifest = read_manifest(self.root)
        self.image_sizes = resolve_image_sizes(self.default_sizes, self.manifest, image_sizes, self.root)
        layout_rows = ground_rows is _LAYOUT_DEFAULT
        self.ground_rows = self._check_ground_rows(self.default_ground_rows if layout_rows else ground_rows)
        self.cache_root = Path(cache_dir) if cache_dir is not None else self.root / POLAR_CACHE_DIRNAME
        self.use_cache = bool(use_cache)
        self.satellite_only = bool(satellite_only)

        self.records: list[PairRecord] = self._read_pairs(check_files, skip_missing)
        self.locations = np.array([[r.ground_lat, r.ground_lon] for r in self.records], dtype=np.float64)
        self.satellite_locations = np.array([[r.satellite_lat, r.satellite_lon] for r in self.records],
                                            dtype=np.float64)
        self.fixed_shifts = self._resolve_shifts(shifts)
        self._shifts_given = shifts is not None
        self.subset_of: str | None = None  # the split this dataset is a subset of (see subset())
        self._check_first_pair()

    # ----------------------------------------------------------------------------------- subclass API
    def read_records(self) -> list[PairRecord]:
        """Parse the split of the layout at ``self.root`` into records (in split order)."""
        raise NotImplementedError

    # --------------------------------------------------------------------------------------- subsets
    @property
    def tile_metres(self) -> float:
        """Ground extent of one satellite tile in metres: the manifest's ``geometry.tile_metres`` (the
        synthetic world records it), else the layout's approximate :attr:`default_tile_metres`."""
        geometry = (self.manifest or {}).get("geometry") or {}
        value = geometry.get("tile_metres") if isinstance(geometry, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
        return float(self.default_tile_metres)

    def subset(self, indices, split: str | None = None, train: bool | None = None) -> CrossViewDataset:
        """The pairs ``indices`` (positions in this dataset, in that order) as a dataset of their own.

        ``split`` names it (default ``"<split>[subset]"``; ``subset_of`` keeps this dataset's split name);
        ``train`` switches between per-epoch random shifts and conventions §4's fixed shifts, which are then drawn for
        the subset's own length and order (explicitly given shifts are kept per pair).
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) == 0:
            raise ValueError("a dataset subset needs at least one pair")
        if indices.min() < 0 or indices.max() >= len(self.records):
            raise IndexError(f"subset indices must be in [0, {len(self.records)}), got "
                             f"[{indices.min()}, {indices.max()}]")
        out = copy.copy(self)
        out.records = [self.records[int(i)] for i in indices]
        out.locations = self.locations[indices].copy()
        out.satellite_locations = self.satellite_locations[indices].copy()
        out.train = self.train if train is None else bool(train)
        out.subset_of = self.subset_of or self.split
        out.split = split or f"{self.split}[subset]"
        if self._shifts_given:
            out.fixed_shifts = self.fixed_shifts[indices].copy()
        else:
            out.fixed_shifts = None if out.train else eval_shifts(len(out.records), width=out.pano_width)
        out.epoch = 0
        return out

    # --------------------------------------------------------------------------------- configuration
    def _check_split(self, split: str) -> str:
        if split in self.splits:
            return split
        if split == SELECTION_SPLIT:
            raise no_selection_split(self.root, self.name, self.test_source)
        raise ValueError(f"unknown {self.name} split {split!r}; expected one of {', '.join(self.splits)}")

    def _set_sizes(self, fov_deg: float, ground_size: Sequence[int | None], sat_size: Sequence[int]) -> None:
        """The polar size, the panorama width it sets, and the ground crop's size at ``fov_deg``."""
        self.sat_size = self._check_sat_size(sat_size)
        self.pano_width = self.sat_size[1]  # the resized panorama is as wide as the satellite polar image
        self.fov_deg = float(fov_deg)
        self.crop_width = fov_width(self.fov_deg, self.pano_width)
        self.ground_size = self._check_ground_size(ground_size)

    def _check_first_pair(self) -> None:
        """Fail at construction, not mid-epoch, when the first pair does not have the expected sizes."""
        if not self.satellite_only:
            self.load_panorama(0)
        self.load_polar(0)

    def _read_pairs(self, check_files: bool, skip_missing: bool) -> list[PairRecord]:
        """The split's records, their images checked (or the pairs missing one dropped) as asked; never none."""
        records = self.read_records()
        if check_files or skip_missing:
            records = self._check_files_exist(records, skip_missing)
        if not records:
            raise DatasetError(f"{self.root}: split {self.split!r} lists no pairs")
        return records

    @staticmethod
    def _check_ground_rows(ground_rows) -> tuple[float, float] | None:
        if ground_rows is None:
            return None
        top, bottom = (float(v) for v in ground_rows)
        if not 0.0 <= top < bottom <= 1.0:
            raise ValueError(f"ground_rows must be fractions 0 <= top < bottom <= 1, got {ground_rows!r}")
        return top, bottom

    @staticmethod
    def _check_sat_size(sat_size) -> tuple[int, int]:
        try:
            height, width = (int(v) for v in sat_size)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"sat_size must be (height, width), got {sat_size!r}") from exc
        if height <= 0 or width <= 0:
            raise ValueError(f"sat_size must be positive, got {sat_size!r}")
        return height, width

    def _check_ground_size(self, ground_size) -> tuple[int, int]:
        try:
            height, width = ground_size
            height = int(height)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ground_size must be (height, width or None), got {ground_size!r}") from exc
        if height <= 0:
            raise ValueError(f"ground height must be positive, got {height}")
        if width is not None and int(width) != self.crop_width:
            # The crop must keep the satellite's angular scale (the FCA window slides over the satellite
            # map with the ground map's width), so its width follows from the FoV and cannot be chosen.
            raise ValueError(
                f"ground width {width} does not match the {self.fov_deg:g} deg crop of a {self.pano_width}-wide "
                f"panorama ({self.crop_width} px); pass None"
            )
        return height, self.crop_width

    def _resolve_shifts(self, shifts) -> np.ndarray | None:
        """Fixed shifts: the given ones, else conventions §4's seed-2019 shifts for evaluation; None when training."""
        if shifts is None:
            return None if self.train else eval_shifts(len(self.records), width=self.pano_width)
        shifts = np.asarray(shifts)
        if shifts.shape != (len(self.records),) or not np.issubdtype(shifts.dtype, np.integer):
            raise ValueError(f"shifts must be {len(self.records)} integers (one per pair), got {shifts.dtype} "
                             f"with shape {shifts.shape}")
        if shifts.min() < 0 or shifts.max() >= self.pano_width:
            raise ValueError(
                f"shifts must be in [0, {self.pano_width}), got values in [{shifts.min()}, {shifts.max()}]"
            )
        return shifts.astype(np.int64)

    def _check_files_exist(self, records: list[PairRecord], skip_missing: bool) -> list[PairRecord]:
        kept = []
        for record in records:
            sides = (record.satellite_path,) if self.satellite_only else (record.ground_path, record.satellite_path)
            missing = [p for p in sides if not p.is_file()]
            if not missing:
                kept.append(record)
            elif not skip_missing:
                raise DatasetError(f"{record.source}: image {missing[0]} does not exist")
        return kept

    # ------------------------------------------------------------------------------------- sampling
    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the training shifts of ``epoch``. With DataLoader workers, call it before each epoch's
        iterator is created (non-persistent workers copy the dataset when the iterator starts)."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = int(epoch)

    def shift_for(self, index: int) -> int:
        """The crop shift of pair ``index`` (in [0, W)) for the current epoch."""
        if self.fixed_shifts is not None:
            return int(self.fixed_shifts[index])
        generator = np.random.default_rng([self.seed, self.epoch, int(index)])
        return int(generator.integers(0, self.pano_width))

    def _check_index(self, index: int) -> int:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        return index % len(self)

    def ground_item(self, index: int) -> dict:
        """The ground side of pair ``index``: ground crop tensor, shift, heading, ground lat/lon."""
        index = self._check_index(index)
        record = self.records[index]
        shift = self.shift_for(index)
        crop = crop_fov(self.load_panorama(index), self.fov_deg, shift)
        return {
            "ground": to_tensor(crop),
            "shift": shift,
            "heading": float(heading_from_shift(shift, self.fov_deg, self.pano_width)),
            "lat": float(record.ground_lat),
            "lon": float(record.ground_lon),
            "index": index,
            "id": record.id,
        }

    def satellite_item(self, index: int) -> dict:
        """The satellite side of pair ``index``: polar tensor and the tile centre's lat/lon."""
        index = self._check_index(index)
        record = self.records[index]
        return {
            "satellite": to_tensor(self.load_polar(index)),
            "lat": float(record.satellite_lat),
            "lon": float(record.satellite_lon),
            "index": index,
            "id": record.id,
        }

    def __getitem__(self, index: int) -> dict:
        item = self.ground_item(index)
        item["satellite"] = self.satellite_item(index)["satellite"]
        return item

    def ground_view(self) -> GroundView:
        return GroundView(self)

    def satellite_view(self) -> SatelliteView:
        return SatelliteView(self)

    # --------------------------------------------------------------------------------------- images
    def _read_checked(self, path: Path, expected: tuple[int, int], kind: str, record: PairRecord) -> np.ndarray:
        if not path.is_file():
            raise DatasetError(f"{path}: {kind} does not exist (listed at {record.source})")
        try:
            image = read_rgb(path)
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read {kind} ({exc}) (listed at {record.source})") from exc
        if image is None:
            raise DatasetError(f"{path}: {kind} cannot be decoded as an image (listed at {record.source})")
        if image.shape[:2] != tuple(expected):
            raise DatasetError(
                f"{path}: expected a {expected[0]}x{expected[1]} {kind}, got {image.shape[0]}x{image.shape[1]} "
                f"(listed at {record.source}; declare other sizes in {MANIFEST_NAME} for a re-sized copy)"
            )
        return image

    def load_panorama(self, index: int) -> np.ndarray:
        """The whole ground panorama of pair ``index``, uint8 RGB, cut and resized to ``H_g x W``."""
        record = self.records[index]
        pano = self._read_checked(record.ground_path, self.image_sizes.panorama, "ground panorama", record)
        if self.ground_rows is not None:
            height = pano.shape[0]
            top, bottom = (int(round(fraction * height)) for fraction in self.ground_rows)
            pano = pano[top:bottom]
        return resize_image(pano, (self.ground_size[0], self.pano_width))

    def load_polar(self, index: int) -> np.ndarray:
        """The polar satellite image of pair ``index``, uint8 RGB ``H_s x W`` (conventions §3)."""
        record = self.records[index]
        if record.polar_path is not None and record.polar_path.is_file() and self.sat_size == self.image_sizes.polar:
            return self._read_checked(record.polar_path, self.image_sizes.polar, "pre-made polar image", record)
        cache_path = self._cache_path(record)
        if cache_path is not None:
            cached = self._read_cache(cache_path, record)
            if cached is not None:
                return cached
        tile = self._read_checked(record.satellite_path, self.image_sizes.satellite, "satellite tile", record)
        polar = polar_transform(tile, *self.sat_size)
        if cache_path is not None:
            self._write_cache(cache_path, polar)
        return polar

    def _cache_path(self, record: PairRecord) -> Path | None:
        if not self.use_cache:
            return None
        try:
            relative = record.satellite_path.relative_to(self.root)
        except ValueError:
            relative = Path(record.satellite_path.name)
        height, width = self.sat_size
        return self.cache_root / f"polar_{height}x{width}" / relative.with_suffix(".png")

    def _read_cache(self, cache_path: Path, record: PairRecord) -> np.ndarray | None:
        """A cached polar image, or None when absent, older than its tile (regenerated data) or unreadable."""
        try:
            if cache_path.stat().st_mtime < record.satellite_path.stat().st_mtime:
                return None
        except OSError:
            return None
        polar = read_rgb(cache_path)
        if polar is None or polar.shape[:2] != self.sat_size:
            return None
        return polar

    def _write_cache(self, cache_path: Path, polar: np.ndarray) -> None:
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(polar, cv2.COLOR_RGB2BGR))
        try:
            if not ok:
                raise OSError("PNG encoding failed")
            atomic_write_bytes(cache_path, encoded.tobytes())
        except OSError as exc:  # e.g. a read-only dataset: keep going, computing polar images on the fly
            warnings.warn(f"polar cache disabled, cannot write {cache_path}: {exc}", stacklevel=3)
            self.use_cache = False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, pairs={len(self)}, "
            f"fov={self.fov_deg:g}, ground={self.ground_size}, sat={self.sat_size}, train={self.train})"
        )


class GroundView(torch.utils.data.Dataset):
    """Only the ground side of a :class:`CrossViewDataset` (queries)."""

    def __init__(self, dataset: CrossViewDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.dataset.ground_item(index)


class SatelliteView(torch.utils.data.Dataset):
    """Only the satellite side of a :class:`CrossViewDataset` (the reference database)."""

    def __init__(self, dataset: CrossViewDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.dataset.satellite_item(index)
