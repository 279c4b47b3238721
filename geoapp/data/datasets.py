"""The dataset registry: one :class:`~geoapp.data.base.CrossViewDataset` family chosen by name.

=========  ===========================================================  ==========================
name       layout                                                       splits
=========  ===========================================================  ==========================
cvusa      CVUSA subset of CVM-Net/SAFA/DSM (:mod:`geoapp.data.cvusa`)   train, test
cvact      CVACT ANU_data_small (:mod:`geoapp.data.cvact`)               train, test
vigor      VIGOR same-area (:mod:`geoapp.data.vigor`)                    train, test
synth      our synthetic world, written in the CVUSA layout              train, val, test
=========  ===========================================================  ==========================

Split names (conventions §7): ``train`` is fitted on, ``val`` selects (best checkpoint, recipe and ablation choices,
calibration), ``test`` is only reported on (CVUSA's ``val-19zl.csv``, CVACT_val, VIGOR's same-area test).
A dataset without ``val`` raises :class:`NoSelectionSplitError` for it; ``python -m geoapp.train`` then
carves a model-selection subset from ``train`` (:mod:`geoapp.data.selection`).
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
    "cvusa": CVUSADataset,
    "cvact": CVACTDataset,
    "vigor": VIGORDataset,
    "synth": SynthDataset,
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
]


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
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[key](
        root, split, fov_deg, train, ground_size=ground_size, sat_size=sat_size, seed=seed, shifts=shifts, **options
    )
