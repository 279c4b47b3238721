"""Evaluation of a checkpoint on a split: recall (conventions §7) and heading error of the true pair.

The satellite gallery is encoded once into a :class:`SpooledGallery` (the reference database's float16 layout, in
a temporary directory); queries are encoded block by block and ranked with
:func:`geoapp.retrieval.search.true_match_ranks`, the matching engine's own distance code, which reads the gallery
``chunk_size`` references at a time: host and device hold one chunk, not the gallery (the paper presets' model stores
1.04 MB a reference, where its float32 maps took 2.1 MB: 9.2 GB on disk instead of 18.8 GB in memory for CVUSA's 8,884
test tiles; ``python -m geoapp.bench memory`` measures the peak). The ranking arithmetic is the
database search's exact float32 path on the stored float16 values, so the figures equal an in-memory float32
evaluation's up to float16 rounding of the satellite maps (relative 2^-11).
For each FoV the model is rebuilt with ``config.with_fov(fov)``; each query gets conventions §4's fixed shift drawn
from each of the shift seeds (reported figures: :data:`REPORT_SHIFT_SEEDS`, 2019 first, then 2020 and 2021, with
every seed's figures and their mean +- std). The heading error is the circular difference between the heading
predicted from the TRUE pair's window offset (at the config's heading stage) and the true heading of the crop.
With ``place_m`` it also counts recall by place (conventions §7, :func:`~geoapp.retrieval.metrics.place_recall`): the
same pass over the gallery keeps each query's first :func:`~geoapp.retrieval.metrics.place_pool` references, whose
distinct places are checked against the true position.
Used by training's final evaluation and by ``python -m geoapp.evaluate``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..angles import angular_error, fov_width, heading_from_shift
from ..data.fov import EVAL_SHIFT_SEED, eval_shifts
from ..model import CrossViewModel, ModelConfig, StageMaps, build_model, pair_headings
from ..retrieval.database import array_layout, stage_maps_of
from ..retrieval.database_writer import stored_arrays
from ..retrieval.metrics import place_pool, place_recall, recall_from_ranks
from ..retrieval.search import gather_maps, true_match_ranks
from .data import PairImages, crop_batch, normalize
from .distributed import autocast

# reported figures: mean +- std over these (2019 first, conventions §4)
REPORT_SHIFT_SEEDS = (EVAL_SHIFT_SEED, 2020, 2021)
METRICS = ("R@1", "R@5", "R@10", "R@1%", "heading_median_deg", "heading_within_10deg", "heading_within_22.5deg")
PLACE_METRICS = ("R@1 place", "R@5 place", "R@10 place")  # with place_m (conventions §7, recall by place)
ATTENTION_ARRAYS = ("masks_", "gates_")  # stored in float32 by the evaluation (SpooledGallery)


def _blocks(indices: np.ndarray, size: int) -> list[np.ndarray]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


class SpooledGallery:
    """A gallery of ``n`` references stored as a reference database stores them (float16 features, float32 energies:
    :func:`~geoapp.retrieval.database_writer.stored_arrays`) but with float32 attention, in ``.npy`` files of a
    temporary directory under ``spool_dir`` (default: the system's, ``$TMPDIR``). :meth:`append` fills it in order;
    :meth:`slice` and :meth:`gather` return references as StageMaps on ``device``.

    Why float32 attention: the window argmax of nearly flat ``mask-corr`` scores flips under float16 rounding of the
    masks (an untrained tiny model's distances moved by 2e-3 and its ranks changed), while rounding the features
    moves distances by ~1e-5 and kept every offset; the attention is ~7 % of a reference's bytes. So in the attention
    modes the windows, and the headings, are the float32 path's; in ``feature`` mode they come from the rounded maps.

    Every call maps the files for that call only: the returned chunk's pages leave the process with it, where a
    mapping kept open would keep every page a ranking pass touches, i.e. the whole gallery, resident.
    """

    def __init__(self, config: ModelConfig, n: int, device="cpu", spool_dir=None):
        self.config, self.n, self.device = config, int(n), torch.device(device)
        self.filled = 0
        self.layout = {k: (shape, "float32" if k.startswith(ATTENTION_ARRAYS) else dtype)
                       for k, (shape, dtype) in array_layout(config).items() if k != "thumbnails"}
        self._dir = tempfile.TemporaryDirectory(prefix="geoapp-gallery-", dir=spool_dir)  # removed on close or exit
        for name, (shape, dtype) in self.layout.items():
            np.lib.format.open_memmap(self._path(name), mode="w+", dtype=dtype, shape=(self.n, *shape))  # sparse

    def _path(self, name: str) -> Path:
        return Path(self._dir.name) / f"{name}.npy"

    def _arrays(self, mode: str = "c") -> dict[str, np.ndarray]:
        # copy-on-write ("c") maps are writable, so torch.from_numpy takes them without a copy or a warning
        return {name: np.load(self._path(name), mmap_mode=mode) for name in self.layout}

    @property
    def bytes_per_reference(self) -> int:
        return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in self.layout.values())

    @property
    def nbytes(self) -> int:
        return self.n * self.bytes_per_reference

    def append(self, maps: StageMaps) -> None:
        start, stop = self.filled, self.filled + len(maps)
        if stop > self.n:
            raise ValueError(f"the gallery holds {self.n} references; {stop} do not fit")
        arrays = self._arrays("r+")
        for name, values in stored_arrays(self.config, maps, attention_dtype=torch.float32).items():
            arrays[name][start:stop] = values
        self.filled = stop

    def __len__(self) -> int:
        return self.filled

    def slice(self, start: int, stop: int) -> StageMaps:
        return stage_maps_of(self._arrays(), slice(start, min(stop, self.filled)), self.device)

    def gather(self, indices) -> StageMaps:
        return stage_maps_of(self._arrays(), np.asarray(indices, dtype=np.int64), self.device)

    def close(self) -> None:
        self._dir.cleanup()

    def __enter__(self) -> SpooledGallery:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@torch.no_grad()
def encode_gallery(model: CrossViewModel, images: PairImages, indices: np.ndarray, device, precision: str = "fp32",
                   batch_size: int = 64, progress=None, spool_dir=None) -> SpooledGallery:
    """Satellite stage maps of ``indices`` (in that order), stored batch by batch in a :class:`SpooledGallery` whose
    chunks go to ``device``."""
    gallery = SpooledGallery(model.config, len(indices), device, spool_dir)
    try:
        for _, polars in images.batches(_blocks(indices, batch_size), panos=False):
            with autocast(device, precision):
                maps = model.encode_satellite(normalize(polars).to(device, non_blocking=True))
            gallery.append(maps)
            if progress is not None:
                progress.update(len(polars))
    except BaseException:
        gallery.close()  # no spool left behind
        raise
    return gallery


def match_block(config: ModelConfig, ground: StageMaps, gallery, block: np.ndarray, chunk_size: int):
    """Queries ``ground`` against the gallery, query i's true reference being gallery entry ``block[i]``: their
    ranks (conventions §7), and the headings of the true pairs, per stage from its window offset and refined (the
    app's)."""
    return match_block_ranked(config, ground, gallery, block, chunk_size)[:3]


def match_block_ranked(config: ModelConfig, ground: StageMaps, gallery, block: np.ndarray, chunk_size: int,
                       keep: int = 0):
    """:func:`match_block`'s three values and each query's first ``keep`` gallery indices (Q x keep, best first;
    None without ``keep``), from the same pass over the gallery."""
    match = true_match_ranks(config, ground, gallery, block, chunk_size=chunk_size, keep=keep)
    by_stage = {s: match.result.headings(s) for s in config.stages}
    refined = pair_headings(config, ground, gather_maps(gallery, block.tolist()), match.result)
    return match.ranks, by_stage, refined, match.top_indices


@torch.no_grad()
def evaluate_model(
    model: CrossViewModel,
    images: PairImages,
    fovs=None,
    shift_seeds=(EVAL_SHIFT_SEED,),
    indices=None,
    device="cpu",
    precision: str = "fp32",
    batch_size: int = 64,
    chunk_size: int = 512,
    progress: bool = False,
    spool_dir=None,
    place_m: float | None = None,
) -> dict:
    """Recall and heading metrics of ``model`` on the pairs ``indices`` of ``images`` (default: all).

    Query ``i`` is matched against the satellites of the same ``indices`` (its own is the true one). Shifts
    are ``eval_shifts(N, seed)`` of the whole split, indexed by the pair's position in the split, so a
    subset sees the same crops as the full evaluation. The gallery is spooled to disk under ``spool_dir``
    (:class:`SpooledGallery`; ~1 MB per reference at full size) and read ``chunk_size`` references at a time.
    ``place_m`` (metres): also recall by place at that distance (:data:`PLACE_METRICS`); the split must record
    its tiles' positions.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
    fovs = [model.config.fov_deg] if not fovs else [float(f) for f in fovs]
    latlon, keep = _place_pool(images, indices, place_m)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(indices) * (1 + len(fovs) * len(shift_seeds)), desc="evaluating", unit="img")
    t0 = time.perf_counter()
    results = []
    with encode_gallery(model, images, indices, device, precision, batch_size, bar, spool_dir) as gallery:
        for fov in fovs:
            config = model.config.with_fov(fov)
            fov_model = build_model(config).to(device)
            fov_model.load_state_dict(model.state_dict())
            fov_model.eval()
            query_pass = _QueryPass(fov_model, config, fov, device, precision, batch_size, chunk_size, bar)
            for seed in shift_seeds:
                results.append(_evaluate_pass(query_pass, images, gallery, indices, int(seed), latlon, keep, place_m))
    if bar is not None:
        bar.close()
    if was_training:
        model.train()
    return {
        "n_queries": len(indices),
        "n_references": len(indices),
        "shift_seeds": [int(s) for s in shift_seeds],
        **({"place_metres": float(place_m)} if keep else {}),
        "results": results,
        "by_fov": summarize(results),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _place_pool(images: PairImages, indices: np.ndarray, place_m: float | None) -> tuple[np.ndarray | None, int]:
    """The gallery tiles' positions and how many references per query recall by place needs (None, 0 without
    ``place_m``)."""
    if not place_m:
        return None, 0
    latlon = np.asarray(images.dataset.satellite_locations, dtype=np.float64)[indices]
    if not np.isfinite(latlon).all(1).any():
        raise ValueError(f"recall by place needs the tiles' positions; the {images.dataset.split!r} split of "
                         f"{images.dataset.root} records none")
    return latlon, place_pool(latlon, place_m)


class _QueryPass(NamedTuple):
    """How evaluate_model encodes and ranks the queries at one FoV."""

    model: CrossViewModel  # the model rebuilt for the FoV
    config: ModelConfig  # its config
    fov: float
    device: torch.device
    precision: str
    batch_size: int
    chunk_size: int
    bar: object | None  # a tqdm progress bar, advanced per query


def _evaluate_pass(query_pass: _QueryPass, images: PairImages, gallery, indices: np.ndarray, seed: int,
                   latlon: np.ndarray | None, keep: int, place_m: float | None) -> dict:
    """One row of evaluate_model's results: the queries ``indices`` cropped at conventions §4's shifts of ``seed``,
    ranked against ``gallery``; recall by place when ``keep`` references per query are kept."""
    qp, config, fov, width = query_pass, query_pass.config, query_pass.fov, images.width
    crop_width = fov_width(fov, width)
    shifts = eval_shifts(len(images), seed, width)[indices]
    ranks, errors, fine_errors, rankings = [], {s: [] for s in config.stages}, [], []
    positions = np.arange(len(indices))
    for block, (panos, _) in zip(_blocks(positions, qp.batch_size),
                                 images.batches(_blocks(indices, qp.batch_size), polars=False)):
        ground = normalize(crop_batch(panos, shifts[block], crop_width)).to(qp.device, non_blocking=True)
        with autocast(qp.device, qp.precision):
            maps = qp.model.encode_ground(ground).to(dtype=torch.float32)
        block_ranks, by_stage, refined, top = match_block_ranked(config, maps, gallery, block, qp.chunk_size, keep)
        ranks.append(block_ranks)
        rankings.append(top)
        truth = heading_from_shift(shifts[block], fov, width)
        for s in config.stages:
            errors[s].append(angular_error(by_stage[s], truth))
        fine_errors.append(angular_error(refined, truth))
        if qp.bar is not None:
            qp.bar.update(len(block))
    errors = {s: np.concatenate(e) for s, e in errors.items()}
    row = {"fov": fov, "shift_seed": seed, "heading_stage": config.heading_stage_resolved}
    row.update(recall_from_ranks(np.concatenate(ranks), n_refs=len(indices)))
    if keep:
        row.update(place_recall(latlon, np.concatenate(rankings), positions, place_m))
    row.update(heading_stats(np.concatenate(fine_errors)))  # the heading the app shows: refined
    # diagnostics: the heading each stage's window offset gives (its window step is 360 / W_b degrees)
    row["heading_median_deg_by_stage"] = {str(s): float(np.median(e)) for s, e in errors.items()}
    return row


def heading_stats(errors: np.ndarray) -> dict:
    """Median circular heading error (deg) and the shares (%) within 10 and 22.5 degrees."""
    return {
        "heading_median_deg": float(np.median(errors)),
        "heading_within_10deg": float(np.mean(errors <= 10.0) * 100.0),
        "heading_within_22.5deg": float(np.mean(errors <= 22.5) * 100.0),
    }


def summarize(results: list[dict]) -> dict:
    """Per FoV: the mean (and, over several shift seeds, the std) of every metric."""
    out = {}
    for fov in dict.fromkeys(r["fov"] for r in results):
        rows = [r for r in results if r["fov"] == fov]
        entry = {}
        for m in METRICS + tuple(p for p in PLACE_METRICS if all(p in r for r in rows)):
            values = np.array([r[m] for r in rows])
            entry[m] = float(values.mean())
            if len(rows) > 1:
                entry[m + "_std"] = float(values.std(ddof=1))
        out[f"{fov:g}"] = entry
    return out


def format_table(report: dict) -> str:
    head = ["FoV", "R@1", "R@5", "R@10", "R@1%", "head.med", "<=10deg", "<=22.5deg"]
    places = [p for p in PLACE_METRICS if all(p in m for m in report["by_fov"].values())]
    head += [f"{p.split()[0]} pl." for p in places]
    split = f"split {report['split']!r}: " if report.get("split") else ""
    lines = [
        f"{split}{report['n_queries']} queries x {report['n_references']} references, shift seeds "
        f"{report['shift_seeds']}",
        "  ".join(f"{h:>14}" for h in head),
    ]
    for fov, m in report["by_fov"].items():
        cells = [f"{fov} deg"]
        for key in METRICS + tuple(places):
            text = f"{m[key]:.2f}"
            if key + "_std" in m:
                text += f" ± {m[key + '_std']:.2f}"
            cells.append(text)
        lines.append("  ".join(f"{c:>14}" for c in cells))
    spread = ", mean ± std over the shift seeds" if len(report.get("shift_seeds", ())) > 1 else ""
    lines.append(f"(recall and heading shares in %, heading median in degrees; heading of the true pair{spread})")
    if places:
        lines.append(f"(R@k pl.: recall by place, the true tile or one within {report['place_metres']:g} m of it among "
                     f"the first k distinct places, none within {report['place_metres']:g} m of a better one)")
    return "\n".join(lines)


def subset_indices(n: int, size: int) -> np.ndarray:
    """``size`` evenly spread pair positions of an ``n``-pair split (all when size is 0 or >= n)."""
    if size <= 0 or size >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, size).round().astype(np.int64))
