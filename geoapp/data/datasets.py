"""The dataset registry: each member is a :class:`~geoapp.data.base.CrossViewDataset` reader class, and it holds its
layout's rules, so the code asks the member, never the name.

A member answers: ``name`` (its key), ``layout`` (what a folder of it holds), ``splits`` (the split names it can
list; without ``val`` it has no model-selection split), ``test_source`` (where its reported split is listed),
``synthetic``, ``default_sizes`` (the raw image sizes of the real dataset), ``default_tile_metres`` and
``default_ground_rows``; constructing it opens a split. Names are looked up only at the edges (command-line
flags, config files, run and database metadata): :func:`dataset_kind` for a name that must be known,
:func:`recorded_dataset` for a recorded one that may come from another version.

Split names (conventions §7): ``train`` is fitted on, ``val`` selects (best checkpoint, recipe and ablation choices,
calibration), ``test`` is only reported on (CVUSA's ``val-19zl.csv``, CVACT_val, VIGOR's same-area test).
A dataset without ``val`` raises :class:`NoSelectionSplitError` for it; ``python -m geoapp.train`` then
carves a model-selection subset from ``train`` (:mod:`geoapp.data.selection`).

A new layout: a reader class setting the attributes above and ``read_records``, added to ``DATASETS``, and a planter
in ``tests/test_datasets.py`` (``PLANTERS``); the registry's contract tests then cover it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from geoapp.data.base import DEFAULT_GROUND_SIZE, CrossViewDataset, GroundView, SatelliteView
from geoapp.data.cvact import CVACTDataset
from geoapp.data.cvusa import CVUSADataset, SynthDataset
from geoapp.data.records import DEFAULT_SAT_SIZE, DatasetError, ImageSizes, NoSelectionSplitError, PairRecord
from geoapp.data.vigor import VIGORDataset

DATASETS: dict[str, type[CrossViewDataset]] = {
    kind.name: kind for kind in (CVUSADataset, CVACTDataset, VIGORDataset, SynthDataset)
}

__all__ = [
    "DATASETS",
    "CVACTDataset",
    "CVUSADataset",
    "CrossViewDataset",
    "DatasetError",
    "GroundView",
    "ImageSizes",
    "NoSelectionSplitError",
    "PairRecord",
    "SatelliteView",
    "SynthDataset",
    "VIGORDataset",
    "build_dataset",
    "dataset_kind",
    "recorded_dataset",
]


def dataset_kind(name: str) -> type[CrossViewDataset]:
    """The registry member called ``name`` (any case); a ValueError listing the known layouts for another name."""
    kind = DATASETS.get(str(name).lower())
    if kind is None:
        known = "; ".join(f"{key} ({member.layout})" for key, member in DATASETS.items())
        raise ValueError(f"unknown dataset {name!r}; expected one of: {known}")
    return kind


def recorded_dataset(name: str | None) -> type[CrossViewDataset] | None:
    """The registry member a checkpoint or database records by name (any case); None for no name or one this code
    does not know (a record written by another version)."""
    return DATASETS.get(name.lower()) if isinstance(name, str) else None


def build_dataset(
    name: str,
    root: str | os.PathLike,
    split: str,
    fov_deg: float,
    train: bool,
    ground_size: Sequence[int | None] = DEFAULT_GROUND_SIZE,
    sat_size: Sequence[int] = DEFAULT_SAT_SIZE,
    seed: int = 0,
    shifts: Sequence[int] | np.ndarray | None = None,
    **options,
) -> CrossViewDataset:
    """Open dataset ``name`` at ``root``.

    ``ground_size = (H_g, None)``: ground crops are ``H_g x fov_width(fov_deg, W)`` with ``W = sat_size[1]``;
    ``sat_size = (H_s, W)``: polar satellite images. ``train``: a new random shift per sample and epoch
    (``set_epoch``), reproducible from ``seed``; otherwise conventions §4's fixed shifts, unless ``shifts`` gives
    one shift per pair (in [0, W)). ``options`` go to the reader: ``image_sizes``, ``cache_dir``,
    ``use_cache``, ``check_files``, ``skip_missing``, ``satellite_only``, ``ground_rows`` for all; ``utm_zone``,
    ``utm_south``, ``utm_order`` for cvact; ``cities`` for vigor.
    """
    return dataset_kind(name)(
        root, split, fov_deg, train, ground_size=ground_size, sat_size=sat_size, seed=seed, shifts=shifts, **options
    )
