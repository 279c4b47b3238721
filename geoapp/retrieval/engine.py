"""The localisation engine behind the app: one photo (or a few from one spot) in, the best-matching reference tiles
out.

``Localizer`` loads a checkpoint and the reference database built with it once (:mod:`.loading`), then answers
``localize`` calls: prepare the photo on the panorama grid the model was trained on (:mod:`.query`), run the ground
branch, align it with every reference (``geoapp.retrieval.search.topk_matches``: the same code as the evaluation and
the benchmark) or with the two-stage search's candidates, read the headings, and return the top-k with what the UI
shows (:mod:`.results`); several photos are combined by :mod:`.together`.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..angles import wrap_degrees
from ..data.datasets import recorded_dataset
from ..data.transforms import to_tensor
from ..model import ModelConfig, StageMaps
from ..model.align import gate_corr_scores, headings_from_scores
from ..model.checkpoint import accuracy_text
from .confidence import CONFIDENCE_K, Calibration, window_peak_margin
from .database import ReferenceDatabase
from .familiarity import Familiarity, FamiliarityTest
from .index import two_stage_topk
from .loading import LoadedCheckpoint, choose_search, tune_allocator
from .places import check_distance, database_place_distance, distinct_places, neighbourhood_size, pool_size
from .prior import LocationPrior, coverage_box, restrict
from .query import prepare_views, query_arguments
from .results import Candidate, LocalizationResult, QueryView, display_score
from .search import GalleryHead, IndexedGallery, TopK, topk_matches
from .together import combine_views, search_together
from .vector_engine import engine_search_mode, first_stage_for

log = logging.getLogger(__name__)


def attention_stage(config: ModelConfig) -> int:
    """The stage whose attention the pictures show: the one that chose the window (a shared-window model's window
    stage), else the heading stage, whose window gives the heading."""
    return config.window_stage or config.heading_stage_resolved


def _upsample(mask: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    up = F.interpolate(mask.float()[None, None], size=size, mode="bilinear", align_corners=False)
    return up[0, 0].cpu().numpy()


def least_familiar(views: list[QueryView]) -> Familiarity | None:
    """The familiarity of a query's photos as one: the first unfamiliar photo's, else the first photo's."""
    tested = [v.familiarity for v in views if v.familiarity is not None]
    return next((f for f in tested if not f.familiar), tested[0] if tested else None)


class Localizer:
    """Checkpoint + reference database, loaded once; ``localize`` answers one photo at a time."""

    def __init__(self, checkpoint_path: str | os.PathLike | LoadedCheckpoint, database_path: str | os.PathLike,
                 device: str = "auto", search: str = "auto", rerank: int = 500, chunk_size: int | None = None,
                 accuracy: dict | None = None, vector_engine: str | None = None, collection: str | None = None):
        """``search``: ``exhaustive``, ``two-stage`` (a FAISS first stage, then the exact alignment of ``rerank``
        candidates), or ``auto`` (:func:`choose_search`). ``chunk_size``: references aligned at a time (default:
        :func:`~geoapp.search_options.search_chunk`'s for the model). ``accuracy``: figures measured for this checkpoint
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
        self.familiarity = self._read_familiarity()
        # distinct places (geoapp.retrieval.places): the distance the app uses by default, from the tiles' footprint
        self.place_distance_m, self.place_distance_note = database_place_distance(
            self.db.metadata.get("source", {}), self.checkpoint_meta, self.db.latlon)
        self._neighbours: dict[float, int] = {}  # distance -> places.neighbourhood_size of the database
        self.place_pool(1, self.place_distance_m, len(self.db))  # counted once here, not in the app's first query
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

    def _read_familiarity(self) -> FamiliarityTest | None:
        """The familiarity test fitted with the calibration (:mod:`.familiarity`); None without one (then only a
        best score below the calibration's floor marks a photo as unfamiliar)."""
        record = (self.calibration.record.get("familiarity") if self.calibration is not None else None)
        if not record:
            return None
        try:
            return FamiliarityTest.load(record, self.db.path)
        except ValueError as exc:
            log.warning("ignoring the database's familiarity test: %s", exc)
            return None

    def assess(self, grid: np.ndarray) -> Familiarity | None:
        """The familiarity test of a photo on its full-size grid (``prepare_views``); None without a test."""
        return None if self.familiarity is None else self.familiarity.assess(grid)

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
        kinds = [recorded_dataset(name) for name in datasets]
        trained = self.checkpoint_meta.get("train_config") or {}
        return {
            "references": len(self.db),
            "box": coverage_box(self.db.latlon),  # (south, west, north, east) or None
            "synthetic": bool(kinds) and all(kind is not None and kind.synthetic for kind in kinds),
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

    def _encode_view(self, prepared: tuple[np.ndarray, float, str, str],
                     grid: np.ndarray) -> tuple[QueryView, StageMaps]:
        model_input, fov, fov_source, projection = prepared
        ground = self.encode(model_input)
        mask = None if ground.masks is None else _upsample(ground.masks[self.mask_stage - 1][0], model_input.shape[:2])
        return QueryView(model_input, mask, fov, fov_source, projection, self.assess(grid)), ground

    def place_pool(self, top_k: int, distinct_m: float, searched: int) -> int:
        """Ranked candidates a search asks for so that they hold the first ``top_k`` distinct places at ``distinct_m``
        metres (:func:`~geoapp.retrieval.places.pool_size`; ``top_k`` when places are off)."""
        if not distinct_m:
            return min(int(top_k), searched)
        if distinct_m not in self._neighbours:
            if len(self._neighbours) >= 16:  # API clients may send any distance: keep the few last ones
                self._neighbours.clear()
            self._neighbours[distinct_m] = neighbourhood_size(self.db.latlon, distinct_m)
        return pool_size(top_k, self._neighbours[distinct_m], searched)

    @torch.inference_mode()
    def localize(self, image, fov_deg: float | None = None, top_k: int = 5, projection: str = "auto",
                 prior: LocationPrior | None = None, distinct_m: float | None = None) -> LocalizationResult:
        """Top ``top_k`` reference tiles for a photo (path, bytes, PIL image or uint8 RGB array); with a ``prior``
        only the references inside it are searched; with ``distinct_m`` (metres) they are distinct places."""
        return self.localize_together([image], fov_deg, top_k, projection, prior, distinct_m)

    @torch.inference_mode()
    def localize_together(self, images, fov_deg=None, top_k: int = 5, projection: str = "auto",
                          prior: LocationPrior | None = None, distinct_m: float | None = None) -> LocalizationResult:
        """One answer for 1-6 photos taken at the same spot in unknown directions.

        Each photo is aligned with every reference as a single photo would be; a reference's combined similarity
        is the mean of the photos' similarities, so two 90 deg photos look at 180 deg of the scene. Each
        candidate carries every photo's heading at that tile. ``fov_deg`` and ``projection`` are one value for
        all photos or one per photo, placed by the query policy (:func:`~.query.choose_placement`: a plausible EXIF
        FoV first, then ``fov_deg``; a crop's width when neither). One photo is the single-photo
        search itself (the two-stage index and the fp16 first pass apply); several are scored exactly over the
        whole (or the prior's) gallery.

        ``distinct_m`` (metres; None or 0: off, the ranking as it is): the answers are distinct places, no candidate
        closer than ``distinct_m`` to a better one (:func:`~geoapp.retrieval.places.distinct_places` on the search's
        ranking; :attr:`place_distance_m` is the database's default, half its tile footprint). The top-1 and the
        confidence stay as they are: the confidence reads the similarities of the ranking's best CONFIDENCE_K
        references, places or not.
        """
        images, fovs, projections = query_arguments(images, fov_deg, projection, top_k)
        distinct_m = check_distance(distinct_m)
        t0 = time.perf_counter()
        subset = restrict(self.db.latlon, prior) if prior is not None else None
        searched = len(self.db) if subset is None else len(subset)
        # a calibrated confidence reads the top CONFIDENCE_K similarities (so a two-stage search re-ranks at least
        # that many); without a calibration only the answers are needed
        k = min(max(int(top_k), CONFIDENCE_K if self.calibration is not None else 1), searched)
        pool = max(k, self.place_pool(int(top_k), distinct_m, searched))  # k itself when places are off
        prepared = [prepare_views(image, self.config, fov, kind) for image, fov, kind in zip(images, fovs, projections)]
        t1 = time.perf_counter()
        views, grounds = zip(*(self._encode_view(p, grid) for p, grid in prepared))
        self._sync()
        t2 = time.perf_counter()
        if len(views) == 1:
            top = self.search(grounds[0], pool, subset)
            per_view = [top]
            combined = top.similarity[0]
        else:
            per_view, combined = search_together(self, grounds, pool, subset)
        self._sync()
        t3 = time.perf_counter()
        keep = distinct_places(self.db.latlon, per_view[0].indices[0].cpu().numpy(), distinct_m, int(top_k))
        shown = [top.take(keep) for top in per_view]
        candidates = self._candidates(shown[0], grounds[0], int(top_k))
        if len(views) > 1:
            candidates = combine_views(self, candidates, shown, combined[torch.as_tensor(keep, device=combined.device)],
                                       grounds)
        combined = combined[:k]  # the ranking's best k, places or not: what the confidence reads
        confidence = None
        if self.calibration is not None and len(combined) >= 2:
            scores = candidates[0].window_scores
            peak = None if scores is None else window_peak_margin(scores)
            # a multi-photo query is judged by its first photo's FoV: fitted on single photos, this errs low
            confidence = self.calibration.confidence(combined.float().cpu().numpy(), views[0].fov_deg, peak,
                                                     least_familiar(views))
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
            similarities=combined.float().cpu().numpy(), distinct_m=distinct_m,
            distinct_skipped=int(keep[-1]) + 1 - len(keep) if len(keep) else 0,
        )

    def _heading_scores(self, ground: StageMaps, indices: list[int], stage: int) -> list[np.ndarray | None]:
        """gate-corr window scores over all offsets at ``stage`` for the references ``indices`` (k x W_b)."""
        if self.config.alignment.attention != "gates" or not self.db.has(f"gates_{stage}") or not indices:
            return [None] * len(indices)
        rows = np.asarray(indices)  # only the gates and their energies: no feature maps are read for this
        sat_gates = torch.from_numpy(np.asarray(self.db.array(f"gates_{stage}")[rows])).to(self.device)
        energy = (torch.from_numpy(np.asarray(self.db.array(f"gate_energy_{stage}")[rows])).to(self.device)
                  if self.db.has(f"gate_energy_{stage}") else None)
        scores = gate_corr_scores(ground.gates[stage - 1], sat_gates, sat_energy=energy)  # 1 x k x W_b, as searched
        return [row.float().cpu().numpy() for row in scores[0]]

    def headings(self, top: TopK, ground: StageMaps, top_k: int) -> tuple[np.ndarray, list[np.ndarray | None]]:
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
        headings, heading_scores = self.headings(top, ground, top_k)
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
