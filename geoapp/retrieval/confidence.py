"""Calibrated confidence: the probability that an answer is right, from the query's own score distribution.

A similarity score says how alike a photo and a tile are, not how likely the answer is: 0.89 for a correct match
and 0.86 for a wrong neighbour look alike. What separates a sure answer from a guess is how the best score stands
out from the rest of that query's scores, so each answer is described by a few features of its top-k
similarities (:data:`TILE_FEATURES`) and, for the heading, how sharply the window scores peak
(:data:`HEADING_FEATURES`). A logistic model per question maps them to a probability:

- ``tile``: P(the top-1 tile is the true one);
- ``heading``: P(the top-1 heading is within :data:`HEADING_TOLERANCE_DEG` of the true heading).

Both are fitted on the validation split (never the reported test split) against a gallery as large as the
database they are used with, and live in the reference database's metadata with what they were fitted on.
Also here: the expected calibration error, reliability bins and the risk-coverage curve that measure them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .familiarity import Familiarity, FamiliarityTest

HEADING_TOLERANCE_DEG = 22.5
CONFIDENCE_K = 10  # the top-k similarities the features read (a search for confidence asks for at least these)
TILE_FEATURES = ("top1", "margin12", "margin1_rest", "fov_deg")
HEADING_FEATURES = TILE_FEATURES + ("window_peak_margin",)
LIKELY, UNSURE = 0.7, 0.3  # the words' thresholds: "likely" from 70 %, "unsure" below 30 %


def tile_features(similarity: np.ndarray, fov_deg) -> np.ndarray:
    """Q x 4 features of each query: from its top-k similarities (Q x k, best first; k >= 2, the first
    CONFIDENCE_K are read) the best similarity, its margin over the second and its margin over the mean of the
    rest; and its field of view (one value or one per query: a wider photo sees more, so the same margins mean
    more)."""
    s = np.asarray(similarity, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"need Q x k similarities with k >= 2, got shape {s.shape}")
    s = s[:, :CONFIDENCE_K]
    fov = np.broadcast_to(np.asarray(fov_deg, dtype=np.float64), (len(s),))
    return np.stack([s[:, 0], s[:, 0] - s[:, 1], s[:, 0] - s[:, 1:].mean(1), fov], axis=1)


def window_peak_margin(window_scores: np.ndarray, tolerance_deg: float = HEADING_TOLERANCE_DEG) -> float:
    """How far the best window score stands above the best score more than ``tolerance_deg`` away from it (the
    scores cover 360 degrees, one per offset): large for one clear direction, near 0 for an ambiguous scene."""
    s = np.asarray(window_scores, dtype=np.float64).ravel()
    w = len(s)
    best = int(np.argmax(s))
    steps = np.abs((np.arange(w) - best + w // 2) % w - w // 2) * 360.0 / w
    far = s[steps > tolerance_deg]
    return float(s[best] - far.max()) if len(far) else 0.0


def heading_features(similarity: np.ndarray, fov_deg, peak_margins: np.ndarray | None) -> np.ndarray:
    """Q x 5: the tile features and the top-1 candidate's window peak margin (0 where the model has no window
    scores, i.e. alignment modes other than gate-corr)."""
    tiles = tile_features(similarity, fov_deg)
    peaks = np.zeros(len(tiles)) if peak_margins is None else np.asarray(peak_margins, dtype=np.float64)
    return np.concatenate([tiles, peaks.reshape(-1, 1)], axis=1)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


@dataclass
class LogisticCalibrator:
    """p = sigmoid(w . (x - mean) / scale + b), fitted by Newton's method with a small L2 penalty on w."""

    features: tuple[str, ...]
    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    fitted_on: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, features: tuple[str, ...], l2: float = 1e-3,
            fitted_on: dict | None = None, iterations: int = 50) -> LogisticCalibrator:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        if x.ndim != 2 or x.shape[1] != len(features) or len(x) != len(y):
            raise ValueError(f"need N x {len(features)} features and N labels, got {x.shape} and {y.shape}")
        if len(y) < 20 or y.min() == y.max():
            raise UnfittableCalibration(f"cannot fit a calibrator on {len(y)} answers with {int(y.sum())} right: it "
                                        "needs at least 20 answers and both right and wrong ones")
        mean = x.mean(0)
        scale = x.std(0)
        scale[scale < 1e-12] = 1.0  # a constant feature (e.g. no window scores) gets no weight, not a NaN
        z = np.concatenate([(x - mean) / scale, np.ones((len(x), 1))], axis=1)
        theta = np.zeros(z.shape[1])
        theta[-1] = np.log(y.mean() / (1.0 - y.mean()))
        penalty = np.full(z.shape[1], l2 * len(y))
        penalty[-1] = 0.0  # the bias is not shrunk
        for _ in range(iterations):
            p = _sigmoid(z @ theta)
            grad = z.T @ (p - y) + penalty * theta
            hess = (z * (p * (1.0 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hess, grad)
            theta -= step
            if np.abs(step).max() < 1e-10:
                break
        record = {"n": int(len(y)), "positives": int(y.sum()), **(fitted_on or {})}
        return cls(tuple(features), theta[:-1], float(theta[-1]), mean, scale, record)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        if x.shape[1] != len(self.features):
            raise ValueError(f"this calibrator takes {len(self.features)} features {self.features}, got {x.shape[1]}")
        return _sigmoid(((x - self.mean) / self.scale) @ self.weights + self.bias)

    def to_dict(self) -> dict:
        return {"features": list(self.features), "weights": self.weights.tolist(), "bias": self.bias,
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: dict) -> LogisticCalibrator:
        try:
            features = tuple(d["features"])
            weights, mean, scale = (np.asarray(d[k], dtype=np.float64) for k in ("weights", "mean", "scale"))
            bias = float(d["bias"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a calibrator record ({exc!r}): need features, weights, bias, mean, scale") from exc
        if any(a.shape != (len(features),) for a in (weights, mean, scale)):
            raise ValueError(f"calibrator record: weights, mean and scale must each have {len(features)} values")
        return cls(features, weights, bias, mean, scale, fitted_on=dict(d.get("fitted_on", {})))


class UnfittableCalibration(ValueError):
    """Too few answers, or none right (or none wrong), to fit a calibrator: a model near chance, or a tiny split."""


@dataclass
class Calibration:
    """The two calibrators of a reference database, and the lowest top-1 similarity seen when fitting them
    (below it a photo does not look like anything the model was fitted on)."""

    tile: LogisticCalibrator
    heading: LogisticCalibrator
    top1_floor: float  # the 1st percentile of the fitting queries' top-1 similarity
    record: dict = field(default_factory=dict)  # split, queries, gallery size, FoVs, checkpoint: what it was fitted on
    # fitted beside it, written by calibrate.write_calibration; a loaded calibration keeps its record in ``record``
    familiarity: FamiliarityTest | None = None

    def to_dict(self) -> dict:
        familiarity = {} if self.familiarity is None else {"familiarity": self.familiarity.to_dict()}
        return {"tile": self.tile.to_dict(), "heading": self.heading.to_dict(), "top1_floor": self.top1_floor,
                **self.record, **familiarity}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        extra = {k: v for k, v in d.items() if k not in ("tile", "heading", "top1_floor")}
        try:
            return cls(LogisticCalibrator.from_dict(d["tile"]), LogisticCalibrator.from_dict(d["heading"]),
                       float(d["top1_floor"]), extra)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a calibration record ({exc!r}): need tile, heading and top1_floor") from exc

    @classmethod
    def fit(cls, similarity: np.ndarray, fov_deg, peak_margins: np.ndarray | None, tile_right: np.ndarray,
            heading_right: np.ndarray, record: dict | None = None) -> Calibration:
        record = dict(record or {})
        tile = LogisticCalibrator.fit(tile_features(similarity, fov_deg), tile_right, TILE_FEATURES,
                                      fitted_on=record)
        heading = LogisticCalibrator.fit(heading_features(similarity, fov_deg, peak_margins), heading_right,
                                         HEADING_FEATURES, fitted_on=record)
        floor = float(np.percentile(np.asarray(similarity)[:, 0], 1.0))
        return cls(tile, heading, floor, record)

    def confidence(self, similarity: np.ndarray, fov_deg: float, peak_margin: float | None,
                   familiarity: Familiarity | None = None) -> Confidence:
        """The confidence of one query's answer from its top-k similarities (k >= 2, best first), its FoV and, when
        the database has a familiarity test, the photo's (the least familiar photo of a multi-photo query)."""
        s = np.asarray(similarity, dtype=np.float64).reshape(1, -1)
        tile = float(self.tile.predict(tile_features(s, fov_deg))[0])
        margins = None if peak_margin is None else np.array([peak_margin])
        heading = float(self.heading.predict(heading_features(s, fov_deg, margins))[0])
        return Confidence(tile, heading, below_floor=bool(s[0, 0] < self.top1_floor), familiarity=familiarity)


@dataclass(frozen=True)
class Confidence:
    tile: float  # P(the top-1 tile is the true one)
    heading: float  # P(the top-1 heading is within HEADING_TOLERANCE_DEG of the truth)
    below_floor: bool = False  # the best score is below what 99 % of the fitting queries reached
    familiarity: Familiarity | None = None  # the photo's familiarity test; None where the database has none

    @property
    def unknown_place(self) -> bool:
        """The photo fails the familiarity test: it looks unlike every photo the model was trained on."""
        return self.familiarity is not None and not self.familiarity.familiar

    @property
    def unfamiliar(self) -> bool:
        """No probability is stated: the photo fails the familiarity test, or its best score is below the floor."""
        return self.below_floor or self.unknown_place

    def stated(self) -> tuple[float | None, float | None]:
        """(tile, heading) as told to a person: none for an unfamiliar photo, where the calibration would
        extrapolate (a real photo against a synthetic world, a grey or noise image: their margins mean nothing)."""
        return (None, None) if self.unfamiliar else (self.tile, self.heading)

    def why_unfamiliar(self) -> str:
        """What made the photo unfamiliar, in words ("" for a familiar one)."""
        reasons = [self.familiarity.reason()] if self.unknown_place else []
        if self.below_floor:
            reasons.append("its best score is below that of 99 % of the calibration photos")
        return "; ".join(reasons)

    def words(self) -> str:
        """The answer's trust in words, as the page shows it."""
        if self.unknown_place:
            return (f"no probability: this photo looks unlike every photo the model was trained on "
                    f"({self.why_unfamiliar()}), so it is not a place the model can know; the tiles are only its "
                    "nearest look-alikes")
        if self.below_floor:
            return ("no probability: this photo's best score is below that of 99 % of the photos the confidence was "
                    "calibrated on, where the calibration would extrapolate, so treat the answer as a guess")
        pct = f"{100 * self.tile:.0f} %"
        if self.tile >= LIKELY:
            text = f"likely: {pct}"
        elif self.tile >= UNSURE:
            text = f"possible: {pct} - check the other candidates"
        else:
            text = f"unsure: {pct} - the tiles below are similar"
        return text + f"; heading within {HEADING_TOLERANCE_DEG:g}°: {100 * self.heading:.0f} %"


# ------------------------------------------------------------------------------------------ measuring it


def reliability_bins(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict]:
    """Equal-width probability bins: per bin the answers in it, their mean confidence and their accuracy."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        out.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(sel.sum()),
                    "confidence": float(p[sel].mean()) if sel.any() else float("nan"),
                    "accuracy": float(y[sel].mean()) if sel.any() else float("nan")})
    return out


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """ECE: the answer-weighted mean |accuracy - confidence| over equal-width bins, in [0, 1]."""
    n = len(np.asarray(p))
    return float(sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability_bins(p, y, bins)
                     if b["n"]))


def risk_coverage(p: np.ndarray, y: np.ndarray, coverages=(1.0, 0.75, 0.5, 0.25, 0.1)) -> list[dict]:
    """Accuracy of the answers kept when only the most confident share ``coverage`` is answered (ties broken by
    the order given, so the figure does not depend on a random draw)."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    out = []
    for c in coverages:
        keep = max(1, int(round(c * len(p))))
        out.append({"coverage": float(c), "answered": keep, "accuracy": float(y[order[:keep]].mean()),
                    "threshold": float(p[order[keep - 1]])})
    return out
