"""Data for training and evaluation: whole panoramas + polar images as uint8, cropped per batch.

Splits (conventions §7): training fits on ``train_split``, chooses (validation during training, ``best.safetensors``)
on the model-selection split that :func:`select_split` resolves (the dataset's ``val`` split, or a subset
carved from the training split by :mod:`geoapp.data.selection`), and reports on ``test_split`` only.

A split is read through :func:`geoapp.data.datasets.build_dataset` (``load_panorama`` / ``load_polar``
give the resized uint8 images). :class:`PairImages` either keeps every image of the split in memory
(``cache``: the small synthetic world decodes once, then a batch is an index operation) or reads batches
with DataLoader workers. The limited-FoV crop (conventions §4) and the ImageNet normalisation are done per batch
with the same arithmetic as ``CrossViewDataset.ground_item`` / ``geoapp.data.transforms.to_tensor``, so a
batch is bit-identical to the dataset's own samples for the same shifts.

Determinism (exact resume): the order of epoch ``e`` is ``default_rng([seed, e]).permutation(N)`` and the
shift of sample ``i`` in epoch ``e`` is the dataset's ``default_rng([seed, e, i])`` draw (``shift_for``),
so any batch is a function of (seed, epoch, step) alone. With several processes, step ``t`` of an epoch
gives rank ``r`` the slice ``[(t * world + r) * B, ... + B)`` of that order (DistributedSampler-like,
incomplete last batches dropped).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..angles import fov_width
from ..data.datasets import CrossViewDataset, NoSelectionSplitError, build_dataset
from ..data.selection import carve_dataset
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD

CACHE_AUTO_LIMIT_BYTES = 6 << 30  # cache=auto keeps a split in memory when its uint8 images fit in this


def open_split(name: str, root: str, split: str, fov: float, height: int, width: int, train: bool, seed: int = 0):
    """The dataset of ``split`` at the model's resolution (ground ``height x fov_width``, polar ``height x width``)."""
    return build_dataset(name, root, split, fov, train, ground_size=(height, None), sat_size=(height, width), seed=seed)


AUTO_SELECTION = "auto"  # the dataset's val split if it has one, else a subset carved from the training split
CARVED_SELECTION = "carve"  # always carve from the training split


@dataclass
class Selection:
    """The training pairs and the model-selection pairs of a run, and what the run records about them."""

    train: CrossViewDataset  # the training split, less a carved subset and the pairs whose tiles overlap it
    val: CrossViewDataset  # model-selection pairs, opened for evaluation (conventions §4 fixed shifts)
    record: str | dict  # ``selection_split``: a split name, or the carve's record (geoapp.data.selection)
    message: str


def _loud(message: str) -> None:
    bar = "!" * 100
    print(f"{bar}\nWARNING: {message}\n{bar}", file=sys.stderr, flush=True)


def select_split(cfg, train_ds: CrossViewDataset, test_ds: CrossViewDataset | None = None) -> Selection:
    """Resolve ``cfg.val_split`` (a :class:`~geoapp.training.config.TrainConfig`) for the opened training split.

    ``"auto"``: the dataset's ``val`` split when it has one, else a subset carved from ``train_ds``
    (:func:`geoapp.data.selection.carve_dataset` with ``cfg.val_size`` and ``cfg.seed``); ``"carve"``: always
    carve; any other name: that split, except the test split (``cfg.test_split``) unless
    ``cfg.allow_test_selection``, which warns loudly. ``test_ds`` (the opened test split) is checked to share
    no pair id with a named selection split.
    """
    name = cfg.val_split

    def open_eval(split: str) -> CrossViewDataset:
        return open_split(cfg.dataset, cfg.data_root, split, cfg.fov, cfg.height, cfg.sat_width, train=False)

    def named(split: str, val: CrossViewDataset) -> Selection:
        if test_ds is not None and split != cfg.test_split and not cfg.allow_test_selection:
            shared = {r.id for r in val.records} & {r.id for r in test_ds.records}
            if shared:
                raise ValueError(f"the selection split {split!r} shares {len(shared)} pairs with the test split "
                                 f"{cfg.test_split!r} (e.g. {sorted(shared)[0]}); pass --allow-test-selection to "
                                 "use it anyway")
        return Selection(train_ds, val, split, f"model selection on the {split!r} split ({len(val)} pairs); "
                                               f"training on {len(train_ds)} {cfg.train_split!r} pairs")

    if name == AUTO_SELECTION:
        try:
            val = open_eval("val")
        except NoSelectionSplitError:
            val = None
        if val is not None:
            return named("val", val)
    if name in (AUTO_SELECTION, CARVED_SELECTION):
        carve = carve_dataset(train_ds, cfg.val_size, cfg.seed)
        ids = [r.id for r in train_ds.records]
        train = train_ds.subset(carve.train, split=cfg.train_split)
        val = train_ds.subset(carve.selection, split=f"{cfg.train_split}[selection]", train=False)
        return Selection(train, val, carve.record(ids, cfg.train_split), carve.describe(cfg.train_split))

    if name == cfg.test_split:
        if not cfg.allow_test_selection:
            raise ValueError(f"--val-split {name!r} is the test split (--test-split {cfg.test_split!r}): choosing "
                             "the checkpoint on the split the results are reported on makes them optimistic. Use "
                             "'auto' (the dataset's val split, or a subset carved from train), another split, or "
                             "--allow-test-selection to do it anyway")
        _loud(f"model selection on the TEST split {name!r} (--allow-test-selection): best.safetensors is chosen on "
              "the split its final evaluation reports, so those figures are NOT held-out figures")
    elif name == cfg.train_split:
        _loud(f"model selection on the training split {name!r} itself: the best checkpoint is the one that fits "
              "the training data best, not the one that generalises best")
    return named(name, open_eval(name))


class _Raw(torch.utils.data.Dataset):
    def __init__(self, dataset: CrossViewDataset, panos: bool = True, polars: bool = True):
        self.dataset, self.panos, self.polars = dataset, panos, polars

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return (self.dataset.load_panorama(index) if self.panos else None,
                self.dataset.load_polar(index) if self.polars else None)


def _stack(items):
    panos, polars = zip(*items)
    return tuple(None if parts[0] is None else torch.from_numpy(np.stack(parts)) for parts in (panos, polars))


class PairImages:
    """uint8 panoramas (N x H x W x 3) and polar images of one split, from memory or read by workers."""

    def __init__(self, dataset: CrossViewDataset, cache: str = "auto", workers: int = 0, progress: bool = False):
        self.dataset = dataset
        self.width = dataset.pano_width
        self.workers = int(workers)
        h_g, h_s = dataset.ground_size[0], dataset.sat_size[0]
        nbytes = len(dataset) * 3 * self.width * (h_g + h_s)
        self.cached = cache == "yes" or (cache == "auto" and nbytes <= CACHE_AUTO_LIMIT_BYTES)
        self.panos = self.polars = None
        if self.cached:
            self.panos = torch.empty((len(dataset), h_g, self.width, 3), dtype=torch.uint8)
            self.polars = torch.empty((len(dataset), h_s, self.width, 3), dtype=torch.uint8)
            chunks = [list(range(i, min(len(dataset), i + 64))) for i in range(0, len(dataset), 64)]
            it = self._read(chunks)
            if progress:
                from tqdm import tqdm

                it = tqdm(it, total=len(chunks), desc=f"caching {dataset.split} ({nbytes / 2**20:.0f} MiB)")
            for idx, (panos, polars) in zip(chunks, it):
                self.panos[idx[0] : idx[-1] + 1] = panos
                self.polars[idx[0] : idx[-1] + 1] = polars

    def __len__(self) -> int:
        return len(self.dataset)

    def _read(self, index_lists, panos: bool = True, polars: bool = True):
        return iter(
            DataLoader(
                _Raw(self.dataset, panos, polars),
                batch_sampler=index_lists,
                num_workers=self.workers,
                collate_fn=_stack,
                persistent_workers=False,
            )
        )

    def batches(self, index_lists, panos: bool = True, polars: bool = True):
        """Yield ``(panos, polars)`` uint8 tensors for each list of indices (None for a side not asked for)."""
        if not self.cached:
            yield from self._read([list(map(int, idx)) for idx in index_lists], panos, polars)
            return
        for idx in index_lists:
            idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
            yield self.panos[idx] if panos else None, self.polars[idx] if polars else None


_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 B x H x W x 3 -> float32 B x 3 x H x W, the arithmetic of ``transforms.to_tensor``."""
    return images.permute(0, 3, 1, 2).float().div_(255.0).sub_(_MEAN).div_(_STD)


def crop_batch(panos: torch.Tensor, shifts, crop_width: int) -> torch.Tensor:
    """uint8 B x H x W x 3 panoramas -> B x H x w x 3 crops: crop column k = panorama column (k - shift) mod W."""
    b, _, width, _ = panos.shape
    shifts = torch.as_tensor(np.asarray(shifts), dtype=torch.long).view(b, 1)
    cols = (torch.arange(crop_width)[None, :] - shifts) % width  # B x w
    return panos[torch.arange(b)[:, None], :, cols].permute(0, 2, 1, 3)  # (B x w x H x 3) -> B x H x w x 3


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def steps_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    return n // (batch_size * world)


def batch_fov(fov_range: tuple[float, float], seed: int, epoch: int, step_in_epoch: int) -> float:
    """The field of view of one training batch, uniform in ``fov_range`` and a function of (seed, epoch, step)
    alone (every process of a step draws the same, so their batches stack and a resumed run draws the same)."""
    lo, hi = fov_range
    return float(np.random.default_rng([int(seed), int(epoch), int(step_in_epoch), 1]).uniform(lo, hi))


class TrainBatches:
    """Training batches as a function of (seed, epoch, step): ``epoch(e, start)`` yields
    ``(step_in_epoch, ground, satellite, indices, shifts)`` from ``start`` to the end of epoch ``e``.

    ``fov_range`` (lo, hi): each batch's ground crops are as wide as a field of view drawn uniformly from it
    (:func:`batch_fov`), so one model serves every phone's FoV; empty: the dataset's own FoV for every batch."""

    def __init__(self, images: PairImages, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 fov_range: tuple[float, ...] = ()):
        if not images.dataset.train:
            raise ValueError("training batches need a dataset opened with train=True (per-epoch random shifts)")
        self.images, self.batch_size, self.seed, self.rank, self.world = images, batch_size, seed, rank, world
        self.fov_range = tuple(float(f) for f in fov_range)
        self.steps_per_epoch = steps_per_epoch(len(images), batch_size, world)
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the training split has {len(images)} pairs, fewer than one batch of {batch_size} x {world} processes"
            )

    def indices(self, epoch: int, step_in_epoch: int, order: np.ndarray | None = None) -> np.ndarray:
        order = epoch_order(self.seed, epoch, len(self.images)) if order is None else order
        start = (step_in_epoch * self.world + self.rank) * self.batch_size
        return order[start : start + self.batch_size]

    def crop_width(self, epoch: int, step_in_epoch: int) -> int:
        if not self.fov_range:
            return self.images.dataset.crop_width
        return fov_width(batch_fov(self.fov_range, self.seed, epoch, step_in_epoch), self.images.width)

    def epoch(self, epoch: int, start: int = 0):
        ds = self.images.dataset
        ds.set_epoch(epoch)
        order = epoch_order(self.seed, epoch, len(self.images))
        index_lists = [self.indices(epoch, t, order) for t in range(start, self.steps_per_epoch)]
        for t, idx, (panos, polars) in zip(range(start, self.steps_per_epoch), index_lists,
                                           self.images.batches(index_lists)):
            shifts = np.array([ds.shift_for(int(i)) for i in idx], dtype=np.int64)
            ground = normalize(crop_batch(panos, shifts, self.crop_width(epoch, t)))
            yield t, ground, normalize(polars), idx, shifts
