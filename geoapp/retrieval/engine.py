"""The localisation engine behind the app: one photo in, the best-matching reference tiles out.

``Localizer`` loads a checkpoint and the reference database built with it once, then answers ``localize`` calls:
preprocess the photo onto the panorama grid the model was trained on, run the ground branch, align it with every
reference (``geoapp.retrieval.search.topk_matches``: the same code as the evaluation and the benchmark) or with the
two-stage search's candidates, and return the top-k with what the UI shows.

Display conventions
- score = (1 + cos) / 2 = 1 - d^2 / 4, in [0, 1], where cos is the cosine between the ground descriptor and the
  aligned satellite window (conventions §6) and d the Euclidean distance of the two unit descriptors.
- heading: conventions §5 from the window offset at the checkpoint's heading stage, as a compass bearing in [0, 360).
- window: that same offset and window width, in columns of the sat_height x sat_width polar image (it wraps).
- masks: the block-3 attention masks (conventions §5; 8 x 32 for a 128 x 512 polar image, 4 x 16 for the 64 x 256 demo
  model), bilinearly upsampled to the model input (ground) or the polar image (satellite). Block 4 (4 x 16, or
  2 x 8 for the demo model) is too coarse to show which directions and distances the model attends to.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..allocator import keep_freed_buffers
from ..angles import fov_width, wrap_degrees
from ..data.photo import hfov_from_exif, load_image, photo_to_cylindrical
from ..data.transforms import resize_image, to_tensor
from ..files import sha256_file
from ..model import ModelConfig, StageMaps, load_model
from ..model.align import gate_corr_scores, headings_from_scores
from ..model.checkpoint import accuracy_text
from ..runtime import resolve_device
from .confidence import CONFIDENCE_K, Calibration, Confidence, window_peak_margin
from .database import ReferenceDatabase
from .index import two_stage_topk
from .prior import LocationPrior, coverage_box, restrict
from .search import GalleryHead, IndexedGallery, TopK, align_at, gallery_chunks, topk_matches
from .vector_engine import engine_search_mode, first_stage_for

log = logging.getLogger(__name__)

PROJECTIONS = ("auto", "pinhole", "crop")
MAX_VIEWS = 6  # photos in one multi-photo query
TOP_K_RANGE = (1, 50)


def attention_stage(config: ModelConfig) -> int:
    """The stage whose attention the pictures show: the one that chose the window (a shared-window model's window
    stage), else the heading stage, whose window gives the heading."""
    return config.window_stage or config.heading_stage_resolved


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
    # the (combined) similarities of the best min(searched, max(top_k, CONFIDENCE_K)) references, best first:
    # what the confidence is computed from
    similarities: np.ndarray | None = None


def tune_allocator() -> bool:
    """Keep large freed buffers in the heap instead of returning them to the OS (:mod:`geoapp.allocator`).

    Every alignment chunk allocates the same few tens of MB of temporaries (window columns upcast to float32).
    By default glibc serves blocks over 32 MB with fresh ``mmap``s and unmaps them on free, so every chunk pays
    page faults and kernel zeroing for all of its temporaries: measured on the 2-core CPU, exhaustive search ran
    3.6x faster with this (1,271 -> 351 ms per 1,000 references). The cost is that the process keeps its peak
    heap (a few hundred MB) instead of trimming it.
    """
    return keep_freed_buffers(mmap_threshold=1 << 30, trim_threshold=2 << 30, top_pad=64 << 20)


class FieldOfViewUnknown(ValueError):
    """A camera photo without EXIF focal length and without a given field of view."""


def prepare_query(image, config: ModelConfig, fov_deg: float | None = None,
                  projection: str = "auto") -> tuple[np.ndarray, float, str, str]:
    """Bring a photo onto the model's panorama grid: returns (uint8 H x w_fov x 3, fov, fov source, projection).

    - ``pinhole``: a perspective photo (phone camera), reprojected with ``photo_to_cylindrical``; its horizontal
      FoV is ``fov_deg`` or read from EXIF.
    - ``crop``: already a crop of an equirectangular panorama (e.g. the synthetic examples); resized to
      ``H x fov_width(fov)``. Without ``fov_deg`` it must already be ``H`` rows high, and its width gives the FoV.
    - ``auto``: ``pinhole`` when the FoV is known from EXIF or given, ``crop`` for an image of exactly the model's
      ground height without EXIF FoV, else an error asking for ``fov_deg``.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    exif_fov = None
    if not isinstance(image, np.ndarray):
        try:
            exif_fov = hfov_from_exif(image)
        except ValueError:  # unreadable input: load_image below says what is wrong
            exif_fov = None
    rgb = load_image(image)
    h, w_pano = config.ground_height, config.sat_width
    looks_like_crop = rgb.shape[0] == h and rgb.shape[1] <= w_pano
    if projection == "auto":
        if fov_deg is None and exif_fov is None and looks_like_crop:
            projection = "crop"
        else:
            projection = "pinhole"
    if projection == "crop":
        if fov_deg is not None:
            return resize_image(rgb, (h, fov_width(fov_deg, w_pano))), float(fov_deg), "given", "crop"
        if not looks_like_crop:
            raise ValueError(f"a panorama-grid crop without fov_deg must be {h} px high and at most {w_pano} px wide "
                             f"(the model's grid), got {rgb.shape[0]} x {rgb.shape[1]}; pass fov_deg")
        return rgb, rgb.shape[1] * 360.0 / w_pano, "crop width", "crop"
    fov, source = (float(fov_deg), "given") if fov_deg is not None else (exif_fov, "exif")
    if fov is None:
        raise FieldOfViewUnknown("the photo's field of view is unknown (no EXIF focal length); pass fov_deg, the "
                                 "horizontal field of view in degrees")
    return photo_to_cylindrical(rgb, fov, out_height=h, pano_width=w_pano), fov, source, "pinhole"


def display_score(cosine: float) -> float:
    """The score the UI shows for a descriptor cosine: (1 + cos) / 2, in [0, 1] (module docstring)."""
    return float(min(1.0, max(0.0, (1.0 + cosine) / 2.0)))


def _upsample(mask: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    up = F.interpolate(mask.float()[None, None], size=size, mode="bilinear", align_corners=False)
    return up[0, 0].cpu().numpy()


SEARCH_MODES = ("auto", "exhaustive", "two-stage")
# From this many references ``auto`` takes the two-stage search: measured faster from a few thousand on (10,000
# full-size references: 154 against 1,036 ms on an AVX2 EPYC), and no answer lost at 6,000 with 500 candidates
# (README, "python -m geoapp.bench search"); below it the exhaustive search is as fast and exact by construction.
TWO_STAGE_FROM = 5000


def choose_search(mode: str, db) -> str:
    """``exhaustive`` or ``two-stage`` for a database: ``auto`` takes the two-stage search from
    :data:`TWO_STAGE_FROM` references on when the database has its first stage; asked for explicitly, a missing first
    stage is an error that says how to build one."""
    if mode not in SEARCH_MODES:
        raise ValueError(f"search must be one of {SEARCH_MODES}, got {mode!r}")
    has_first_stage = db.has("first_stage_blocks")
    if mode == "two-stage" and not has_first_stage:
        raise ValueError(f"the two-stage search needs the database's first stage, and {db.path} has none (built with "
                         "--first-stage-dims 0): rebuild it with build_db's default --first-stage-dims")
    if mode == "auto":
        return "two-stage" if has_first_stage and len(db) >= TWO_STAGE_FROM else "exhaustive"
    return mode


@dataclass(frozen=True, eq=False)  # compared by identity: it holds a model
class LoadedCheckpoint:
    """A checkpoint loaded once, so that the localizers of several reference databases share one model in memory
    (pass it to :class:`Localizer` in place of the checkpoint's path)."""

    path: Path
    model: torch.nn.Module
    meta: dict
    sha256: str
    device: torch.device

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> LoadedCheckpoint:
        dev = resolve_device(device)
        model, meta = load_model(Path(path), map_location=dev)
        return cls(Path(path), model, meta, sha256_file(path), dev)


class Localizer:
    """Checkpoint + reference database, loaded once; ``localize`` answers one photo at a time."""

    def __init__(self, checkpoint_path: str | os.PathLike | LoadedCheckpoint, database_path: str | os.PathLike,
                 device: str = "auto", search: str = "auto", rerank: int = 500, chunk_size: int = 512,
                 accuracy: dict | None = None, vector_engine: str | None = None, collection: str | None = None):
        """``search``: ``exhaustive``, ``two-stage`` (a FAISS first stage, then the exact alignment of ``rerank``
        candidates), or ``auto`` (:func:`choose_search`). ``accuracy``: figures measured for this checkpoint
        elsewhere than its metadata (e.g. re-measured on this machine's world), shaped like its metadata
        (``accuracy_text``); shown instead of the recorded ones. ``vector_engine`` (a Milvus Lite ``.db`` file or
        ``http(s)://host:port``) and ``collection``: the two-stage first stage is that Milvus collection
        (:mod:`geoapp.retrieval.vector_engine`)."""
        tune_allocator()
        # a LoadedCheckpoint is shared with other localizers as is (``device`` is then the one it was loaded on)
        loaded = (checkpoint_path if isinstance(checkpoint_path, LoadedCheckpoint)
                  else LoadedCheckpoint.load(checkpoint_path, device))
        self.device, self.checkpoint_path, self.checkpoint_sha = loaded.device, loaded.path, loaded.sha256
        self.model, self.checkpoint_meta = loaded.model, loaded.meta
        self.accuracy_meta = accuracy or self.checkpoint_meta
        self.config: ModelConfig = self.model.config
        self.mask_stage = attention_stage(self.config)
        self.db = ReferenceDatabase.open(database_path, self.checkpoint_sha, self.config, self.device)
        self.chunk_size = chunk_size
        self.rerank = int(rerank)
        self.search_mode = choose_search(engine_search_mode(search, vector_engine, collection), self.db)
        self.first_stage = (first_stage_for(self.db, vector_engine, collection) if self.search_mode == "two-stage"
                            else None)
        self.calibration = self._read_calibration()
        self.warm_up()

    def _read_calibration(self) -> Calibration | None:
        """The database's calibration record, when it was fitted for this checkpoint; else None with a warning
        (the answers still come, only without a probability)."""
        record = self.db.metadata.get("calibration")
        self.calibration_note = "no confidence calibration"
        if not record:
            return None
        if "unavailable" in record:
            self.calibration_note = f"no confidence calibration ({record['unavailable']})"
            return None
        try:
            calibration = Calibration.from_dict(record)
        except ValueError as exc:
            log.warning("ignoring the database's calibration record: %s", exc)
            return None
        fitted_for = calibration.record.get("checkpoint_sha256")
        if fitted_for not in (None, self.checkpoint_sha):
            log.warning("ignoring the database's calibration: it was fitted for checkpoint %s, not %s; refit it with "
                        "`build_db --calibrate-only`", fitted_for[:12], self.checkpoint_sha[:12])
            return None
        return calibration

    @torch.inference_mode()
    def warm_up(self) -> None:
        """One dummy query at the checkpoint's FoV: first-call allocations, and the two-stage FAISS index."""
        dummy = torch.zeros(1, 3, self.config.ground_height, self.config.ground_width, device=self.device)
        ground = self.model.encode_ground(dummy)
        if self.first_stage is not None:
            self.first_stage.search(ground, 1)
        self.choose_search_precision(ground)

    def choose_search_precision(self, ground: StageMaps, sample: int = 1000, repeats: int = 2) -> None:
        """Time the search's fp16 first pass against the plain fp32 search on (up to) ``sample`` references and keep
        the faster: fp16 products are fast on CPUs with AVX-512 FP16/BF16 and on GPUs, but emulated elsewhere (both
        give the same answers, see ``topk_matches``)."""
        sub = GalleryHead(self.db, sample)
        seconds = {}
        for fast in (True, False):
            times = []
            for _ in range(repeats + 1):
                t = time.perf_counter()
                topk_matches(self.config, ground, sub, 5, self.chunk_size, fast=fast)
                self._sync()
                times.append(time.perf_counter() - t)
            seconds["fp16 first pass" if fast else "fp32"] = min(times[1:])
        self.fast_search = seconds["fp16 first pass"] < seconds["fp32"]
        self.search_timings = seconds

    def describe(self) -> str:
        search = self.search_text()
        if self.first_stage is None:
            search += " fp16-first-pass" if self.fast_search else " fp32"
        calibrated = "calibrated confidence" if self.calibration is not None else self.calibration_note
        return (f"checkpoint {self.checkpoint_path.name} ({self.checkpoint_sha[:12]}; "
                f"{accuracy_text(self.accuracy_meta)}), database {self.db.describe()}, {search} search on "
                f"{self.device}, {calibrated}")

    def search_text(self) -> str:
        """Which search answers a single photo over the whole database, and its first stage's measured recall."""
        if self.first_stage is None:
            return "exhaustive"
        recall = (self.calibration.record.get("first_stage_recall") if self.calibration is not None else None)
        kept = (f"; it kept the true tile for {recall['percent']:.1f} % of {recall['queries']} calibration queries at "
                f"{recall['candidates']} of {recall['references']:,}" if recall else "; its recall was not measured "
                "for this database (build_db --calibrate measures it)")
        where = getattr(self.first_stage, "collection", None)  # a Milvus collection (vector_engine)
        return f"two-stage (first stage top {self.rerank}{f' from Milvus collection {where}' if where else ''}{kept})"

    def coverage(self) -> dict:
        """What the loaded database can answer: its source, size and extent, and the model's training data."""
        source = self.db.metadata.get("source", {})
        parts = source.get("parts", [source])  # a ConcatSource lists its parts
        datasets = sorted({p.get("dataset") for p in parts if p.get("kind") == "dataset"} - {None})
        trained = self.checkpoint_meta.get("train_config") or {}
        return {
            "references": len(self.db),
            "box": coverage_box(self.db.latlon),  # (south, west, north, east) or None
            "synthetic": bool(datasets) and set(datasets) == {"synth"},
            "datasets": datasets,
            "splits": [p.get("split") for p in parts if p.get("kind") == "dataset"],
            "trained_on": trained.get("dataset"),
        }

    @torch.inference_mode()
    def encode(self, model_input: np.ndarray) -> StageMaps:
        return self.model.encode_ground(to_tensor(model_input)[None].to(self.device))

    def search(self, ground: StageMaps, top_k: int, subset: np.ndarray | None = None) -> TopK:
        """The top ``top_k`` of the whole database, or of the references ``subset`` (ascending indices)."""
        if subset is not None:
            top = topk_matches(self.config, ground, IndexedGallery(self.db, subset), top_k, self.chunk_size,
                               fast=self.fast_search)
            top.indices = torch.as_tensor(subset, device=top.indices.device)[top.indices]
            return top
        if self.first_stage is not None:
            rerank = max(self.rerank, top_k)  # never fewer candidates than answers
            return two_stage_topk(self.config, ground, self.db, self.first_stage, top_k, rerank, self.chunk_size)
        return topk_matches(self.config, ground, self.db, top_k, self.chunk_size, fast=self.fast_search)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _encode_view(self, prepared: tuple[np.ndarray, float, str, str]) -> tuple[QueryView, StageMaps]:
        model_input, fov, fov_source, projection = prepared
        ground = self.encode(model_input)
        mask = None if ground.masks is None else _upsample(ground.masks[self.mask_stage - 1][0], model_input.shape[:2])
        return QueryView(model_input, mask, fov, fov_source, projection), ground

    @torch.inference_mode()
    def localize(self, image, fov_deg: float | None = None, top_k: int = 5, projection: str = "auto",
                 prior: LocationPrior | None = None) -> LocalizationResult:
        """Top ``top_k`` reference tiles for a photo (path, bytes, PIL image or uint8 RGB array); with a ``prior``
        only the references inside it are searched."""
        return self.localize_together([image], fov_deg, top_k, projection, prior)

    @torch.inference_mode()
    def localize_together(self, images, fov_deg=None, top_k: int = 5, projection: str = "auto",
                          prior: LocationPrior | None = None) -> LocalizationResult:
        """One answer for 1-6 photos taken at the same spot in unknown directions.

        Each photo is aligned with every reference as a single photo would be; a reference's combined similarity
        is the mean of the photos' similarities, so two 90 deg photos look at 180 deg of the scene. Each
        candidate carries every photo's heading at that tile. ``fov_deg`` and ``projection`` are one value for
        all photos or one per photo (fov None: from EXIF / the crop's width). One photo is the single-photo
        search itself (the two-stage index and the fp16 first pass apply); several are scored exactly over the
        whole (or the prior's) gallery.
        """
        images = list(images)
        if not 1 <= len(images) <= MAX_VIEWS:
            raise ValueError(f"a query holds 1 to {MAX_VIEWS} photos, got {len(images)}")
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not (
                TOP_K_RANGE[0] <= top_k <= TOP_K_RANGE[1]):
            raise ValueError(f"top_k must be a whole number in [{TOP_K_RANGE[0]}, {TOP_K_RANGE[1]}], got {top_k!r}")
        fovs = list(fov_deg) if isinstance(fov_deg, (list, tuple)) else [fov_deg] * len(images)
        if len(fovs) != len(images):
            raise ValueError(f"got {len(fovs)} fields of view for {len(images)} photos; give one, or one per photo")
        projections = list(projection) if isinstance(projection, (list, tuple)) else [projection] * len(images)
        if len(projections) != len(images):
            raise ValueError(f"got {len(projections)} projections for {len(images)} photos; give one, or one per "
                             "photo")
        t0 = time.perf_counter()
        subset = restrict(self.db.latlon, prior) if prior is not None else None
        searched = len(self.db) if subset is None else len(subset)
        # a calibrated confidence reads the top CONFIDENCE_K similarities (so a two-stage search re-ranks at least
        # that many); without a calibration only the answers are needed
        k = min(max(int(top_k), CONFIDENCE_K if self.calibration is not None else 1), searched)
        prepared = [prepare_query(image, self.config, fov, kind) for image, fov, kind in zip(images, fovs, projections)]
        t1 = time.perf_counter()
        views, grounds = zip(*(self._encode_view(p) for p in prepared))
        self._sync()
        t2 = time.perf_counter()
        if len(views) == 1:
            top = self.search(grounds[0], k, subset)
            per_view = [top]
            combined = top.similarity[0]
        else:
            per_view, combined = self._search_together(grounds, k, subset)
        self._sync()
        t3 = time.perf_counter()
        candidates = self._candidates(per_view[0], grounds[0], int(top_k))
        if len(views) > 1:
            candidates = self._combine(candidates, per_view, combined, grounds)
        confidence = None
        if self.calibration is not None and len(combined) >= 2:
            scores = candidates[0].window_scores
            peak = None if scores is None else window_peak_margin(scores)
            # a multi-photo query is judged by its first photo's FoV: fitted on single photos, this errs low
            confidence = self.calibration.confidence(combined.float().cpu().numpy(), views[0].fov_deg, peak)
        t4 = time.perf_counter()
        first = views[0]
        if subset is not None:
            search = f"exhaustive over the {searched:,} references inside the prior"
        elif len(views) > 1:
            search = f"exhaustive, {len(views)} photos combined"
        else:
            search = self.search_text()
        return LocalizationResult(
            candidates=candidates, input_image=first.input_image, ground_mask=first.ground_mask, fov_deg=first.fov_deg,
            fov_source=first.fov_source, projection=first.projection, elapsed_s=t4 - t0, device=str(self.device),
            search=search, timings={"preprocess": t1 - t0, "encode": t2 - t1, "search": t3 - t2, "results": t4 - t3},
            confidence=confidence, searched=searched, prior=prior, views=list(views), mask_stage=self.mask_stage,
            similarities=combined.float().cpu().numpy(),
        )

    def _search_together(self, grounds, k: int, subset) -> tuple[list[TopK], torch.Tensor]:
        """Per photo, the similarity to every searched reference; their mean ranks the references."""
        gallery = self.db if subset is None else IndexedGallery(self.db, subset)
        total = None
        for ground in grounds:
            sims = torch.cat([res.similarity[0].double()
                              for _, res in gallery_chunks(self.config, ground, gallery, self.chunk_size)])
            total = sims if total is None else total + sims
        mean = total / len(grounds)
        order = torch.sort(-mean, stable=True).indices[:k].cpu().numpy()  # ties: lower index first
        per_view = [align_at(self.config, ground, gallery, order) for ground in grounds]
        if subset is not None:
            for top in per_view:
                top.indices = torch.as_tensor(subset, device=top.indices.device)[top.indices]
        return per_view, mean[torch.as_tensor(order, device=mean.device)].float()

    def _combine(self, candidates: list[Candidate], per_view: list[TopK], combined: torch.Tensor,
                 grounds: list[StageMaps]) -> list[Candidate]:
        # each photo's heading at a tile: the one a single-photo query of it gets there (refined likewise)
        headings = [self._headings(top, ground, len(candidates))[0] for top, ground in zip(per_view, grounds)]
        out = []
        for i, c in enumerate(candidates):
            sim = float(combined[i])
            view_scores = tuple(display_score(float(t.similarity[0, i])) for t in per_view)
            out.append(replace(c, score=display_score(sim),
                               distance=math.sqrt(max(0.0, 2.0 - 2.0 * sim)),
                               view_headings=tuple(float(h[i]) for h in headings), view_scores=view_scores))
        return out

    def _heading_scores(self, ground: StageMaps, indices: list[int], stage: int) -> list[np.ndarray | None]:
        """gate-corr window scores over all offsets at ``stage`` for the references ``indices`` (k x W_b)."""
        if self.config.align_mode != "gate-corr" or not self.db.has(f"gates_{stage}") or not indices:
            return [None] * len(indices)
        rows = np.asarray(indices)  # only the gates and their energies: no feature maps are read for this
        sat_gates = torch.from_numpy(np.asarray(self.db.array(f"gates_{stage}")[rows])).to(self.device)
        energy = (torch.from_numpy(np.asarray(self.db.array(f"gate_energy_{stage}")[rows])).to(self.device)
                  if self.db.has(f"gate_energy_{stage}") else None)
        scores = gate_corr_scores(ground.gates[stage - 1], sat_gates, sat_energy=energy)  # 1 x k x W_b, as searched
        return [row.float().cpu().numpy() for row in scores[0]]

    def _headings(self, top: TopK, ground: StageMaps, top_k: int) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """The headings (degrees in [0, 360)) of ``top``'s first ``top_k`` answers, refined below the column grid where
        the gate-corr window scores are at hand, and those scores."""
        stage = self.config.heading_stage_resolved
        i = top.stages.index(stage)
        heading_scores = self._heading_scores(ground, top.indices[0, :top_k].tolist(), stage)
        headings = np.asarray(wrap_degrees(top.headings(stage)))[0, :top_k] % 360.0
        for rank, scores in enumerate(heading_scores):
            if scores is not None:
                offset = top.offsets[0, rank, i].reshape(1)
                headings[rank] = headings_from_scores(torch.from_numpy(scores)[None], offset, top.window_widths[i],
                                                      top.map_widths[i])[0] % 360.0
        return headings, heading_scores

    def _candidates(self, top: TopK, ground: StageMaps, top_k: int) -> list[Candidate]:
        """The first ``top_k`` answers of ``top`` with what the UI shows of them."""
        i = top.stages.index(self.config.heading_stage_resolved)
        headings, heading_scores = self._headings(top, ground, top_k)
        scale = self.config.sat_width / top.map_widths[i]  # polar-image columns per stage column
        polar_size = (self.config.sat_height, self.config.sat_width)
        out = []
        for rank, (idx, dist, sim, offs, heading, scores) in enumerate(zip(
                top.indices[0].tolist(), top.distances[0].tolist(), top.similarity[0].tolist(),
                top.offsets[0].tolist(), headings, heading_scores), start=1):
            mask = self.db.mask(idx, self.mask_stage)
            out.append(Candidate(
                rank=rank, index=idx, distance=float(dist), score=display_score(sim),
                lat=float(self.db.latlon[idx, 0]), lon=float(self.db.latlon[idx, 1]), heading_deg=float(heading),
                path=self.db.paths[idx], thumbnail=self.db.thumbnail(idx),
                satellite_mask=None if mask is None else _upsample(torch.from_numpy(mask), polar_size),
                window_offset=int(round(offs[i] * scale)), window_width=int(round(top.window_widths[i] * scale)),
                offsets=tuple(int(o) for o in offs), window_scores=scores,
            ))
        return out
