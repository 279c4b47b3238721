"""What a localization answers: the candidates with what the page shows of each, every photo as the model saw it,
the confidence, and the timings.

Display conventions
- score = (1 + cos) / 2 = 1 - d^2 / 4, in [0, 1], where cos is the cosine between the ground descriptor and the
  aligned satellite window (conventions §6) and d the Euclidean distance of the two unit descriptors.
- heading: conventions §5 from the window offset at the checkpoint's heading stage, as a compass bearing in [0, 360).
- window: that same offset and window width, in columns of the sat_height x sat_width polar image (it wraps).
- masks: the attention masks of the stage that chose the window (conventions §5), bilinearly upsampled to the model
  input (ground) or the polar image (satellite).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .confidence import Confidence
from .familiarity import Familiarity
from .prior import LocationPrior


@dataclass
class Candidate:
    """One matching reference tile."""

    rank: int  # 1 = best
    index: int  # row in the reference database
    distance: float  # conventions §6 distance between unit descriptors, in [0, 2]
    score: float  # (1 + cos) / 2, in [0, 1]
    lat: float
    lon: float
    heading_deg: float  # predicted heading of the photo if taken at this tile, compass bearing in [0, 360)
    path: str  # the tile's source file
    thumbnail: np.ndarray  # 96 x 96 x 3 uint8 RGB
    satellite_mask: np.ndarray | None  # sat_height x sat_width float32 (polar layout), None without masks
    window_offset: int  # first column of the aligned window in the polar image (wraps around)
    window_width: int  # window width in polar-image columns
    offsets: tuple[int, ...]  # window offset per used stage, in that stage's columns
    # gate-corr models: the window score (a cosine) of every offset at the heading stage, the evidence the
    # heading was read from (the argmax); None for the other alignment modes
    window_scores: np.ndarray | None = None
    # multi-photo queries: each photo's heading at this tile (the first is ``heading_deg``) and its own score
    view_headings: tuple[float, ...] = ()
    view_scores: tuple[float, ...] = ()


@dataclass
class QueryView:
    """One photo of a query as the model saw it."""

    input_image: np.ndarray  # the model input, uint8 H x w_fov x 3 (the photo on the panorama grid)
    ground_mask: np.ndarray | None  # H x w_fov float32, the block-3 mask upsampled to the model input
    fov_deg: float
    fov_source: str  # "given", "exif" or "crop width"
    projection: str  # "pinhole" (reprojected photo) or "crop" (already a panorama-grid crop)
    familiarity: Familiarity | None = None  # the database's familiarity test of this photo (None without one)


@dataclass
class LocalizationResult:
    candidates: list[Candidate]
    input_image: np.ndarray  # the (first) photo's model input, uint8 H x w_fov x 3 (the photo on the panorama grid)
    ground_mask: np.ndarray | None  # H x w_fov float32, the block-3 mask upsampled to the model input
    fov_deg: float
    fov_source: str  # "given", "exif" or "crop width"
    projection: str  # "pinhole" (reprojected photo) or "crop" (already a panorama-grid crop)
    elapsed_s: float
    device: str
    search: str  # "exhaustive" or "two-stage (first stage top M)"
    timings: dict[str, float] = field(default_factory=dict)  # seconds: preprocess, encode, search, results
    mask_stage: int = 1  # the stage whose attention the pictures show (attention_stage)
    # P(top-1 tile right), P(heading within 22.5 deg), from the database's calibration; None without one
    confidence: Confidence | None = None
    searched: int = 0  # references searched: the whole database, or those inside the prior
    prior: LocationPrior | None = None
    views: list[QueryView] = field(default_factory=list)  # every photo of the query (one for a single photo)
    # the (combined) similarities of the best min(searched, max(top_k, CONFIDENCE_K)) references of the ranking, best
    # first, distinct places or not: what the confidence is computed from
    similarities: np.ndarray | None = None
    # distinct places (geoapp.retrieval.places): no candidate is closer than distinct_m metres to a better one (0: off,
    # the ranking as it is); distinct_skipped: references of the ranking left out above the last candidate
    distinct_m: float = 0.0
    distinct_skipped: int = 0


def display_score(cosine: float) -> float:
    """The score the UI shows for a descriptor cosine: (1 + cos) / 2, in [0, 1] (module docstring)."""
    return float(min(1.0, max(0.0, (1.0 + cosine) / 2.0)))
