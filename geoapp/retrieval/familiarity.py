"""Is this photo one the model can know? A test of how familiar a photo looks next to the photos the model was
trained on, so that a photo from outside its world gets no probability.

A retrieval score cannot tell: the network maps any photo to some descriptor, and a real street photo scores as
high against a synthetic tile as a synthetic photo does. Nor can the network's own maps: the channel statistics,
Gram matrices and gates of every stage, and nearest neighbours of its block-2 and block-3 vectors, put real street
photos inside the training photos' cloud (``docs/results.md``, "A photo the model cannot know"); a network trained
to match a photo with a satellite tile learns to ignore what makes a photo look real. What does tell is the photo's
small-scale pixel content, compared on one grid for every model: the photo on the full-size panorama grid
(:data:`GRID_ROWS` rows, conventions §1), where its 2 x 2 pixel patches are compared with those of the training
photos. Two scores, each with a threshold set on the validation split's photos:

- ``patches``: the mean distance of the photo's patches to the nearest of K centres (k-means of the training photos'
  patches). A real photo's grass, gravel, haze and sensor noise make colour transitions a rendered world never has.
- ``statistics``: how far the logarithms of the photo's global statistics (colour means and spreads, edge
  strengths, saturation, the contrast of four horizontal bands) fall outside the training photos' range, summed in
  units of that range. A blank, gradient or noise image has familiar patches (a sky, a wall) but no training photo's
  contrast. Logarithms, because the statistics are scales: a photo with a quarter of the least saturated training
  photo's saturation is far outside, however wide the range above it.

A photo is unfamiliar when either score is above its threshold. The test is fitted by ``build_db --calibrate`` with
the confidence calibration (:func:`geoapp.retrieval.calibrate.fit_calibration`), so a model trained on real
photos gets its own, and lives in the reference database beside the calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import faiss
import numpy as np

from ..angles import fov_width
from ..data.photo import photo_to_cylindrical
from ..data.transforms import resize_image

GRID_ROWS = 128  # the full-size panorama grid (conventions §1): 128 x 512, whatever the model's own input size
GRID_WIDTH = 4 * GRID_ROWS
PATCH = 2  # patch side in grid pixels
CENTRES = 2048  # k-means centres of the training photos' patches
FLAG_RATE = 0.01  # the share of validation photos the two thresholds flag together (half each)
RANGE_QUANTILES = (0.005, 0.995)  # the training photos' range of each statistic
STATISTICS_FLOOR = 1e-4  # added before the logarithm: a blank image's zero spread is far outside, not infinitely
STATISTICS_SCALE = "log"  # what a record's ranges are in; a record of another scale is refitted
STATISTICS = ("red_mean", "green_mean", "blue_mean", "red_std", "green_std", "blue_std", "grey_std",
              "edge_x_mean", "edge_y_mean", "edge_x_q90", "edge_y_q90", "detail_mean", "detail_q90",
              "saturation_mean", "saturation_std", "band1_std", "band2_std", "band3_std", "band4_std")
PATCHES_FILE = "familiarity_patches.npy"  # the centres, in the reference database beside its metadata


def on_grid(rgb: np.ndarray, fov_deg: float, projection: str) -> np.ndarray:
    """The photo on the full-size panorama grid, as the model's input is on its own: a panorama-grid crop resized
    to ``GRID_ROWS x fov_width(fov)``, a phone photo reprojected (``projection`` is "crop" or "pinhole")."""
    if projection == "crop":
        return resize_image(rgb, (GRID_ROWS, fov_width(fov_deg, GRID_WIDTH)))
    return photo_to_cylindrical(rgb, fov_deg, out_height=GRID_ROWS, pano_width=GRID_WIDTH)


def patches(grid: np.ndarray) -> np.ndarray:
    """The non-overlapping PATCH x PATCH patches of a grid image as N x (3 PATCH^2) float32 rows in [0, 1]."""
    h, w = (s - s % PATCH for s in grid.shape[:2])
    if h == 0 or w == 0:
        raise ValueError(f"a {grid.shape[0]} x {grid.shape[1]} image has no {PATCH} x {PATCH} patch")
    blocks = grid[:h, :w].reshape(h // PATCH, PATCH, w // PATCH, PATCH, 3).transpose(0, 2, 1, 3, 4)
    return blocks.reshape(-1, 3 * PATCH * PATCH).astype(np.float32) / 255.0


def statistics(grid: np.ndarray) -> np.ndarray:
    """The logarithms of the :data:`STATISTICS` of a grid image (float64, in that order)."""
    rgb = grid.astype(np.float64) / 255.0
    grey = rgb.mean(2)
    edge_x, edge_y = np.abs(np.diff(grey, axis=1)), np.abs(np.diff(grey, axis=0))
    detail = np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 1.0))
    saturation = cv2.cvtColor(grid, cv2.COLOR_RGB2HSV)[..., 1] / 255.0
    bands = [band.std() for band in np.array_split(grey, 4, axis=0)]
    values = [*rgb.mean((0, 1)), *rgb.std((0, 1)), grey.std(), edge_x.mean(), edge_y.mean(),
              np.quantile(edge_x, 0.9), np.quantile(edge_y, 0.9), detail.mean(), np.quantile(detail, 0.9),
              saturation.mean(), saturation.std(), *bands]
    return np.log(np.asarray(values, dtype=np.float64) + STATISTICS_FLOOR)


@dataclass(frozen=True)
class Familiarity:
    """One photo's test: its two scores against their thresholds."""

    patch_score: float
    patch_threshold: float
    statistics_score: float
    statistics_threshold: float

    @property
    def familiar(self) -> bool:
        return self.patch_score <= self.patch_threshold and self.statistics_score <= self.statistics_threshold

    def reason(self) -> str:
        """Why the photo is unfamiliar, in words ("" for a familiar one)."""
        parts = []
        if self.patch_score > self.patch_threshold:
            parts.append(f"its fine detail is unlike the training photos' (score {self.patch_score:.3f}, "
                         f"threshold {self.patch_threshold:.3f})")
        if self.statistics_score > self.statistics_threshold:
            parts.append(f"its contrast and colours fall outside the training photos' range (score "
                         f"{self.statistics_score:.2f}, threshold {self.statistics_threshold:.2f})")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"familiar": self.familiar, "patch_score": round(self.patch_score, 5),
                "patch_threshold": round(self.patch_threshold, 5),
                "statistics_score": round(self.statistics_score, 4),
                "statistics_threshold": round(self.statistics_threshold, 4)}


@dataclass
class FamiliarityTest:
    """The fitted test: the patch centres, the statistics' range, and the two thresholds."""

    centres: np.ndarray  # K x 3 PATCH^2 float32
    low: np.ndarray  # per statistic
    high: np.ndarray
    patch_threshold: float
    statistics_threshold: float
    record: dict = field(default_factory=dict)  # what it was fitted on, and its validation flag rate

    def __post_init__(self):
        self.centres = np.ascontiguousarray(self.centres, dtype=np.float32)
        self._centre_norms = (self.centres * self.centres).sum(1)

    def patch_score(self, grid: np.ndarray) -> float:
        """The mean distance of the grid's patches to their nearest centre (one matrix product: |p|^2 - 2 p.c + |c|^2,
        faster than a FAISS flat search for a few thousand patches)."""
        rows = patches(grid)
        nearest = (self._centre_norms[None, :] - 2.0 * rows @ self.centres.T).min(1) + (rows * rows).sum(1)
        return float(np.sqrt(np.maximum(nearest, 0.0)).mean())

    def statistics_score(self, grid: np.ndarray) -> float:
        return range_excess(statistics(grid)[None], self.low, self.high)[0]

    def assess(self, grid: np.ndarray) -> Familiarity:
        """The test of one photo on the full-size grid (:func:`on_grid`)."""
        return Familiarity(self.patch_score(grid), self.patch_threshold, self.statistics_score(grid),
                           self.statistics_threshold)

    @classmethod
    def fit(cls, train_grids: list[np.ndarray], val_grids: list[np.ndarray], seed: int = 0,
            record: dict | None = None) -> FamiliarityTest:
        """Centres and ranges from the training photos; thresholds from the validation photos, each flagging
        FLAG_RATE / 2 of them."""
        if len(train_grids) < 50 or len(val_grids) < 50:
            raise ValueError(f"a familiarity test needs at least 50 training and 50 validation photos, got "
                             f"{len(train_grids)} and {len(val_grids)}")
        rng = np.random.default_rng(seed)
        rows = np.concatenate([patches(g) for g in train_grids])
        sample = rows[rng.choice(len(rows), min(len(rows), 100 * CENTRES), replace=False)]
        kmeans = faiss.Kmeans(sample.shape[1], CENTRES, niter=20, seed=seed, verbose=False)
        kmeans.train(sample)
        stats = np.stack([statistics(g) for g in train_grids])
        low, high = np.quantile(stats, RANGE_QUANTILES[0], axis=0), np.quantile(stats, RANGE_QUANTILES[1], axis=0)
        test = cls(kmeans.centroids, low, high, float("inf"), float("inf"))
        patch_scores = np.array([test.patch_score(g) for g in val_grids])
        stat_scores = range_excess(np.stack([statistics(g) for g in val_grids]), low, high)
        test.patch_threshold = float(np.quantile(patch_scores, 1.0 - FLAG_RATE / 2))
        test.statistics_threshold = float(np.quantile(stat_scores, 1.0 - FLAG_RATE / 2))
        flagged = (patch_scores > test.patch_threshold) | (stat_scores > test.statistics_threshold)
        test.record = {**(record or {}), "train_photos": len(train_grids), "val_photos": len(val_grids),
                       "val_flagged_percent": round(float(flagged.mean() * 100), 2), "grid_rows": GRID_ROWS,
                       "patch": PATCH, "centres": CENTRES, "seed": int(seed)}
        return test

    def to_dict(self) -> dict:
        """The record kept in the database's metadata (the centres go to :data:`PATCHES_FILE`)."""
        return {"patches_file": PATCHES_FILE, "statistics": list(STATISTICS), "statistics_scale": STATISTICS_SCALE,
                "low": self.low.tolist(),
                "high": self.high.tolist(), "patch_threshold": self.patch_threshold,
                "statistics_threshold": self.statistics_threshold, **self.record}

    @classmethod
    def load(cls, record: dict, folder: Path) -> FamiliarityTest:
        """The test recorded in a database's metadata, with its centres from ``folder``."""
        problem = record_problem(record)
        if problem:
            raise ValueError(problem)
        try:
            centres = np.load(folder / record["patches_file"], allow_pickle=False)
            test = cls(centres, np.asarray(record["low"], float), np.asarray(record["high"], float),
                       float(record["patch_threshold"]), float(record["statistics_threshold"]),
                       {k: v for k, v in record.items() if k not in ("low", "high", "statistics", "patches_file",
                                                                     "patch_threshold", "statistics_threshold",
                                                                     "statistics_scale")})
        except (KeyError, TypeError, OSError) as exc:
            raise ValueError(f"not a familiarity record ({exc!r}); refit it with `build_db --calibrate-only`") from exc
        if test.centres.ndim != 2 or test.centres.shape[1] != 3 * PATCH * PATCH:
            raise ValueError(f"familiarity centres of shape {test.centres.shape}, expected K x {3 * PATCH * PATCH}")
        return test


def record_problem(record: dict) -> str | None:
    """Why a stored familiarity record does not fit this code (None: it does): other statistics, or another scale."""
    if not isinstance(record, dict) or list(record.get("statistics") or ()) != list(STATISTICS):
        return "it was fitted on other statistics; refit it with `build_db --calibrate-only`"
    if record.get("statistics_scale") != STATISTICS_SCALE:
        return (f"its statistics' ranges are on the {record.get('statistics_scale', 'linear')} scale, not "
                f"{STATISTICS_SCALE}; refit it with `build_db --calibrate-only`")
    return None


def range_excess(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per row, how far its values fall outside [low, high], summed over columns in units of each column's range."""
    span = np.maximum(high - low, 1e-9)
    return (np.maximum(0.0, low - values) / span + np.maximum(0.0, values - high) / span).sum(1)
