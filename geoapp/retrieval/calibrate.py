"""Fitting a reference database's confidence calibration, and the answers it is fitted and measured on.

``fit_calibration`` answers the validation split's ground crops (conventions §4's fixed shifts, several FoVs) through
the app's own :class:`~geoapp.retrieval.engine.Localizer`, against a gallery of the validation tiles plus
training tiles as distractors, so that the gallery is as large as the database the calibration will serve (a
probability of being right depends on how many look-alikes there are). ``write_calibration`` stores the record
in that database's metadata; the ``Localizer`` reads it from there.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..angles import angular_error, heading_from_shift
from ..data.datasets import build_dataset
from ..data.fov import EVAL_SHIFT_SEED, crop_fov, eval_shifts
from ..data.photo import panorama_to_pinhole
from ..data.records import DatasetError
from ..data.selection import spread_rows
from ..files import atomic_path, atomic_write_json, sha256_file
from ..model.checkpoint import LoadedCheckpoint
from .build import ConcatSource, DatasetSource, Limited, StoredReferences, build_database
from .confidence import CONFIDENCE_K, HEADING_TOLERANCE_DEG, Calibration, window_peak_margin
from .database import METADATA_NAME, ReferenceDatabase, read_database_metadata
from .engine import Localizer
from .familiarity import GRID_ROWS, GRID_WIDTH, PATCHES_FILE, FamiliarityTest, on_grid
from .index import DEFAULT_DIMS
from .loading import TWO_STAGE_FROM
from .query import prepare_query

CALIBRATION_FOVS = (60.0, 70.0, 80.0, 90.0, 100.0)  # the phone photos the app is for
FAMILIARITY_PANORAMAS = 250  # panoramas on each side of the familiarity test's fit (the first start renders them)
FAMILIARITY_PHOTOS = 150  # at least this many photos on each side of the familiarity test's fit
PHONE_WIDTHS = (256, 400, 640)  # widths of the phone-like photos made of the world's panoramas
TWO_STAGE_CHECK_FOV = 90.0


@dataclass
class Answers:
    """The top-1 answers of a set of queries and whether they were right."""

    similarities: np.ndarray  # Q x k, best first
    peak_margins: np.ndarray | None  # Q, the top-1 candidate's window peak margin (gate-corr), else None
    tile_right: np.ndarray  # Q bool: the top-1 tile is the true one
    heading_error: np.ndarray  # Q, degrees between the top-1 heading and the true heading
    fovs: np.ndarray  # Q, the query's FoV
    confidence: np.ndarray | None  # Q x 2 (tile, heading), when the localizer has a calibration
    searched: np.ndarray  # Q, references each query searched (fewer with a prior)
    no_probability: np.ndarray | None = None  # Q bool, when calibrated: told no probability (Confidence.unfamiliar)

    @property
    def heading_right(self) -> np.ndarray:
        return self.heading_error <= HEADING_TOLERANCE_DEG



def split_queries(dataset, fov: float, shift_seed: int, indices, views: int = 1, view_seed: int = 0):
    """Yield ``(index, crops, true headings)`` per pair: ``views`` crops of its panorama, the first at conventions §4's
    fixed shift of ``shift_seed``, the others at seeded random shifts (the same for every run)."""
    width = dataset.pano_width
    shifts = eval_shifts(len(dataset), int(shift_seed), width)
    rng = np.random.default_rng(view_seed)
    for index in indices:
        pano = dataset.load_panorama(int(index))
        extra = rng.integers(0, width, size=views - 1)
        view_shifts = [int(shifts[index])] + [int(s) for s in extra]
        crops = [crop_fov(pano, fov, s) for s in view_shifts]
        headings = [float(heading_from_shift(s, fov, width)) % 360.0 for s in view_shifts]
        yield int(index), crops, headings


def collect_answers(localizer: Localizer, dataset, fovs=CALIBRATION_FOVS, shift_seed: int = EVAL_SHIFT_SEED,
                    indices=None, views: int = 1, prior_of=None, progress: bool = True, label: str = "answers"):
    """Answer every query of ``dataset`` (pair i's true tile is database row i) through ``localizer``; returns
    the :class:`Answers` and the per-query seconds. ``prior_of(index)`` gives an optional location prior."""
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    sims, peaks, right, errors, fov_of, conf, seconds, searched = [], [], [], [], [], [], [], []
    bar = tqdm(total=len(indices) * len(fovs), desc=label, unit="query", disable=not progress)
    for fov in fovs:
        for index, crops, headings in split_queries(dataset, fov, shift_seed, indices, views):
            prior = prior_of(index) if prior_of is not None else None
            # top CONFIDENCE_K: the similarities the calibration reads, with or without one loaded
            result = localizer.localize_together(crops, fov_deg=float(fov), top_k=CONFIDENCE_K, projection="crop",
                                                 prior=prior)
            best = result.candidates[0]
            sims.append(result.similarities)
            peaks.append(None if best.window_scores is None else window_peak_margin(best.window_scores))
            right.append(best.index == index)
            errors.append(float(angular_error(best.heading_deg, headings[0])))
            fov_of.append(float(fov))
            if result.confidence is not None:
                conf.append((result.confidence.tile, result.confidence.heading, result.confidence.unfamiliar))
            seconds.append(result.elapsed_s)
            searched.append(result.searched)
            bar.update(1)
    bar.close()
    width = min(len(s) for s in sims)
    answers = Answers(
        np.stack([s[:width] for s in sims]), None if any(p is None for p in peaks) else np.array(peaks),
        np.array(right), np.array(errors), np.array(fov_of),
        np.array(conf)[:, :2] if len(conf) == len(sims) else None, np.array(searched),
        np.array(conf)[:, 2].astype(bool) if len(conf) == len(sims) else None)
    return answers, np.array(seconds)


def fit_calibration(checkpoint: str | Path | LoadedCheckpoint, dataset: str, data_root: str | Path,
                    gallery_size: int, split: str = "val", distractor_split: str = "train", fovs=CALIBRATION_FOVS,
                    shift_seed: int = EVAL_SHIFT_SEED, device: str = "auto", work_dir: str | Path | None = None,
                    progress: bool = True, database: str | Path | None = None) -> Calibration:
    """Fit the calibration for a database of ``gallery_size`` references on ``split``'s queries. ``checkpoint``: its
    path (loaded here on ``device``) or a :class:`LoadedCheckpoint` (used as it is). ``database``: the database the
    calibration is for; the gallery's references it holds are copied from it, not encoded again.

    The gallery is a database of its own, written to a scratch folder: the :class:`Localizer` that answers the
    queries searches one database, and the calibration split's own tiles are never in the database it serves (its
    confidence would be fitted on the answers it is judged by; ``build_db`` refuses that), so they need the network.
    Distractors the database holds (``build_db --split test,train``: the training tiles) are copied."""
    loaded = LoadedCheckpoint.of(checkpoint, device)
    meta, config = loaded.meta, loaded.config
    queries = DatasetSource(dataset, data_root, split, config)
    parts = [queries]
    extra = max(0, int(gallery_size) - len(queries))
    if extra:
        distractors = DatasetSource(dataset, data_root, distractor_split, config)
        # spread over the split, not its first rows: distractors from everywhere in the training area
        parts.append(Limited(distractors, min(extra, len(distractors)), spread=True))
    source = ConcatSource(parts) if len(parts) > 1 else queries
    two_stage = len(source) >= TWO_STAGE_FROM  # the served database will search in two stages: measure its loss
    stored = stored_references(database, source, loaded, dataset, data_root) if database is not None else None
    scratch = Path(tempfile.mkdtemp(prefix="geoapp-calibration-", dir=work_dir))
    try:
        db_path = build_database(source, loaded, scratch / "db", first_stage_dims=DEFAULT_DIMS if two_stage else 0,
                                 show_progress=progress, stored=stored)
        localizer = Localizer(loaded, db_path, search="exhaustive")
        data = build_dataset(dataset, data_root, split, fov_deg=config.fov_deg, train=False)
        answers, _ = collect_answers(localizer, data, fovs, shift_seed, progress=progress,
                                     label=f"calibration ({split})")
        check = two_stage_check(loaded, db_path, data, answers, shift_seed, progress) if two_stage else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    record = {"split": split, "queries": int(len(data)), "fovs": [float(f) for f in fovs],
              "shift_seed": int(shift_seed), "gallery_size": len(source),
              "distractors": {"split": distractor_split, "count": len(source) - len(queries)},
              "checkpoint_sha256": loaded.sha256, "dataset": dataset,
              "accuracy_at_fit": {"tile_R@1": float(answers.tile_right.mean() * 100),
                                  "heading_within_22.5deg": float(answers.heading_right.mean() * 100)}}
    if check is not None:
        record["first_stage_recall"] = check
    calibration = Calibration.fit(answers.similarities, answers.fovs, answers.peak_margins, answers.tile_right,
                                  answers.heading_right, record)
    train_split = (meta.get("train_config") or {}).get("train_split", "train")
    calibration.familiarity = fit_familiarity(dataset, data_root, train_split, split, progress=progress)
    return calibration


def stored_references(database: str | Path, source, loaded: LoadedCheckpoint, dataset: str,
                      data_root: str | Path) -> StoredReferences | None:
    """The references of ``source`` (tiles of ``dataset`` at ``data_root``) that ``database`` holds as a fresh build
    would: float16 maps of this checkpoint, built from that dataset's own tiles (a tile folder's polar images are
    made otherwise). None when it holds none of them so."""
    db = ReferenceDatabase.open(database, loaded.sha256, loaded.config)
    built_from = db.metadata.get("source", {})
    root = str(Path(data_root).resolve())
    same_tiles = all(part.get("kind") == "dataset" and part.get("dataset") == dataset and part.get("root") == root
                     for part in built_from.get("parts", [built_from]))
    if not (db.store.float16_maps and same_tiles):
        return None
    row_of = {path: row for row, path in enumerate(db.paths)}
    rows = np.array([row_of.get(path, -1) for path in source.paths], dtype=np.int64)
    return StoredReferences(db, rows) if (rows >= 0).any() else None


def world_photos(data, rows, seed: int, photos_per_panorama: int = 3) -> list[np.ndarray]:
    """Photos of the panoramas ``rows`` of ``data`` on the familiarity grid, as the app receives them: alternately a
    panorama crop and a phone photo (a level perspective view of the panorama, reprojected as a phone photo is), each
    at a FoV drawn from 60-100 degrees and in a random direction."""
    rng = np.random.default_rng(seed)
    photos = []
    for index in rows:
        pano = data.load_panorama(int(index))
        for _ in range(photos_per_panorama):
            fov = float(rng.uniform(CALIBRATION_FOVS[0], CALIBRATION_FOVS[-1]))
            if len(photos) % 2 == 0:
                photos.append(crop_fov(pano, fov, int(rng.integers(0, pano.shape[1]))))
            else:
                phone = panorama_to_pinhole(pano, fov, float(rng.uniform(0, pano.shape[1])),
                                            int(rng.choice(PHONE_WIDTHS)))
                photos.append(on_grid(phone, fov, "pinhole"))
    return photos


def fit_familiarity(dataset: str, data_root: str | Path, train_split: str, val_split: str, seed: int = 0,
                    progress: bool = True) -> FamiliarityTest:
    """The familiarity test of a model trained on ``train_split``: centres and ranges from the photos of
    FAMILIARITY_PANORAMAS of that split's panoramas, thresholds from as many of ``val_split``'s (the calibration's),
    each spread over its split. Where the two are one split, or the training split has no panorama on disk (a world
    rendered in part), alternate panoramas of ``val_split``, so that the thresholds see places the centres did not."""
    val = _grid_dataset(dataset, data_root, val_split)
    train = None if train_split == val_split else _grid_dataset(dataset, data_root, train_split, missing_ok=True)
    if train is None:
        if train_split != val_split and progress:
            print(f"familiarity test: no {train_split!r} panorama on disk; fitted on {val_split!r} alone", flush=True)
        train_split, train = val_split, val
        rows = spread_rows(len(val), 2 * FAMILIARITY_PANORAMAS)
        fit_rows, threshold_rows = rows[0::2], rows[1::2]
    else:
        fit_rows = spread_rows(len(train), FAMILIARITY_PANORAMAS)
        threshold_rows = spread_rows(len(val), FAMILIARITY_PANORAMAS)
    per = max(3, -(-FAMILIARITY_PHOTOS // max(1, min(len(fit_rows), len(threshold_rows)))))  # small splits: more
    if progress:
        print(f"familiarity test: {per} photos of each of {len(fit_rows)} {train_split!r} + {len(threshold_rows)} "
              f"{val_split!r} panoramas", flush=True)
    return FamiliarityTest.fit(world_photos(train, fit_rows, seed, per), world_photos(val, threshold_rows, seed + 1,
                                                                                      per), seed,
                               record={"train_split": train_split, "val_split": val_split,
                                       "fit_panoramas": int(len(fit_rows)),
                                       "threshold_panoramas": int(len(threshold_rows)), "dataset": dataset})


def _grid_dataset(dataset: str, data_root: str | Path, split: str, missing_ok: bool = False):
    """``split``'s panoramas on the familiarity grid; with ``missing_ok``, None where the split has none on disk."""
    try:
        return build_dataset(dataset, data_root, split, fov_deg=90.0, train=False, ground_size=(GRID_ROWS, None),
                             sat_size=(GRID_ROWS, GRID_WIDTH))
    except DatasetError:
        if missing_ok:
            return None
        raise


def two_stage_check(loaded: LoadedCheckpoint, db_path, data, exhaustive: Answers, shift_seed: int, progress: bool,
                    fov: float = TWO_STAGE_CHECK_FOV, candidates: int = 500) -> dict:
    """The two-stage search's answers against the exhaustive ones on the calibration queries at ``fov``: how often
    its first stage kept the true tile among its ``candidates`` and the R@1 of both (what a switch to it costs)."""
    localizer = Localizer(loaded, db_path, search="two-stage", rerank=candidates)
    answers, _ = collect_answers(localizer, data, (fov,), shift_seed, progress=progress, label="two-stage check")
    kept = []
    for index, crops, _ in split_queries(data, fov, shift_seed, range(len(data))):
        ground = localizer.encode(prepare_query(crops[0], localizer.config, fov, "crop")[0])
        kept.append(int(index) in localizer.first_stage.search(ground, candidates)[0].tolist())
    at_fov = exhaustive.fovs == fov
    return {"fov": fov, "queries": int(len(kept)), "candidates": int(min(candidates, len(localizer.db))),
            "references": int(len(localizer.db)), "percent": float(np.mean(kept) * 100),
            "R@1_two_stage": float(answers.tile_right.mean() * 100),
            "R@1_exhaustive": float(exhaustive.tile_right[at_fov].mean() * 100)}


def unfittable_record(checkpoint: str | Path | LoadedCheckpoint, split: str, reason: Exception) -> dict:
    """The calibration record of a database whose model could not be calibrated (its answers serve without a
    probability; the Localizer reads the reason and shows it)."""
    sha = checkpoint.sha256 if isinstance(checkpoint, LoadedCheckpoint) else sha256_file(checkpoint)
    return {"unavailable": str(reason), "split": split, "checkpoint_sha256": sha}


def write_calibration(database: str | Path, calibration: Calibration | dict) -> None:
    """Store ``calibration`` (or an :func:`unfittable_record`) in the database's metadata record (atomically; the
    arrays are untouched)."""
    database = Path(database)
    meta = read_database_metadata(database)
    record = calibration if isinstance(calibration, dict) else calibration.record
    if record.get("checkpoint_sha256") not in (None, meta["checkpoint"]["sha256"]):
        raise ValueError(f"the calibration was fitted for checkpoint {record['checkpoint_sha256'][:12]}, "
                         f"but {database} belongs to {meta['checkpoint']['sha256'][:12]}")
    meta["calibration"] = calibration if isinstance(calibration, dict) else calibration.to_dict()
    familiarity = None if isinstance(calibration, dict) else calibration.familiarity
    if familiarity is not None:  # its centres first: the metadata that names them is written last
        with atomic_path(database / PATCHES_FILE) as tmp, open(tmp, "wb") as fh:
            np.save(fh, familiarity.centres, allow_pickle=False)
        (database / PATCHES_FILE).chmod(0o644)
    atomic_write_json(database / METADATA_NAME, meta)
    (database / METADATA_NAME).chmod(0o644)
