"""``python -m geoapp.bench search``: what the search engine achieves on this machine.

Prints, each figure next to its target:

- database build time per tile, measured through the real build path (``geoapp.build_db.build_database``: random
  750 x 750 JPEG tiles -> decode -> polar transform -> satellite branch -> store -> first-stage descriptors);
- bytes per reference on disk and in RAM; the bytes an exhaustive query reads and the machine's measured memory
  bandwidth, the floor under its latency;
- query latency (median, p90) of the exhaustive and the two-stage search for each gallery size;
- R@1 / R@10 of the two-stage search against the exhaustive one on the synthetic test set with the demo checkpoint
  (``checkpoints/demo.safetensors`` + ``data/synth``), skipped with a line when those are absent.

Timing uses a randomly initialised full-size model (full sizes: polar 128 x 512, 90 deg ground crops 128 x 128), or
the ``--checkpoint`` given (e.g. the demo's).
How the large galleries are simulated (a million full stores would need ~1 TB) is printed with the results.
Built files are kept under ``--work`` (default ``data/bench``) and reused by later runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ..data.fov import crop_fov
from ..data.polar import polar_transform
from ..data.transforms import to_tensor
from ..files import sha256_file
from ..model import ModelConfig, StageMaps, load_model
from ..model.align_modes import ALIGN_MODES, GATE_CORR
from ..model.checkpoint import read_metadata
from ..retrieval.build import ConcatSource, DatasetSource, Limited, TileFolderSource, build_database
from ..retrieval.codes import STORE_KINDS
from ..retrieval.database import DatabaseError, ReferenceDatabase
from ..retrieval.index import FirstStageIndex, compute_first_stage, num_orientations, two_stage_topk
from ..retrieval.loading import tune_allocator
from ..retrieval.metrics import ranks_from_distances, recall_from_ranks
from ..retrieval.search import gallery_chunks, topk_matches
from ..search_options import search_chunk
from ..testing import make_random_tiles, random_checkpoint
from ..training.precision import cpu_description
from .galleries import ModuloGallery, build_replica_store, simulated_first_stage
from .memory import peak_rss_bytes, reset_peak, resident_parts

TARGET_EXHAUSTIVE_10K_MS = {"full size": 300, "smaller (the demo's)": 100}  # by model size
TARGET_TWO_STAGE_1M_MS = 200
TARGET_1M_PEAK_GB = 4.0  # resident memory of the process with the store on disk (memory-mapped)
TARGET_R10_LOSS = 1.0


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_p90(seconds: list[float]) -> tuple[float, float]:
    return statistics.median(seconds) * 1000, float(np.percentile(seconds, 90)) * 1000


def query_maps(model, csv_path: Path, n: int, seed: int = 1) -> list[StageMaps]:
    """Ground maps of ``n`` 90 deg crops of polar images of the benchmark tiles (random weights: timing only)."""
    config = model.config
    source = TileFolderSource(csv_path.parent, csv_path, (config.sat_height, config.sat_width))
    rng = np.random.default_rng(seed)
    maps = []
    with torch.inference_mode():
        for i in range(n):
            tile = cv2.imread(str(source.files[i % len(source)]))[:, :, ::-1]
            polar = polar_transform(np.ascontiguousarray(tile), config.sat_height, config.sat_width)
            crop = crop_fov(polar, config.fov_deg, int(rng.integers(0, config.sat_width)))
            maps.append(model.encode_ground(to_tensor(np.ascontiguousarray(crop))[None]))
    return maps


def fmt_ms(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:,.0f}"


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "MISSES"


def exhaustive_latency(config, queries, gallery, chunk: int) -> list[float]:
    return [timed(lambda q=q: topk_matches(config, q, gallery, 10, chunk))[0] for q in queries]


def memory_bandwidth(megabytes: int = 512, repeats: int = 3) -> float:
    """This machine's memory read bandwidth in GB/s, as the search's threads see it: the best of ``repeats`` sums
    of a ``megabytes`` float32 tensor (larger than any cache, already paged in)."""
    x = torch.ones(megabytes * 2**20 // 4)
    best = min(timed(lambda: float(x.sum()))[0] for _ in range(repeats + 1))
    return x.numel() * 4 / best / 1e9


def bytes_per_query(config, per_ref: dict[str, float]) -> float:
    """Bytes an exhaustive query reads per reference: the window columns of every stage's features (the FoV's share
    of the width), and the whole width of what scores the offsets (gates and their energies, column energies)."""
    window = sum(per_ref[f"features_{s}.npy"] for s in config.stages) * config.fov_deg / 360
    whole = sum(v for k, v in per_ref.items() if k.startswith(("gates_", "gate_energy_", "col_energy_")))
    return window + whole


def time_gallery(config, db: ReferenceDatabase, n: int, queries: list[StageMaps], args):
    """Print one row of the latency table; returns ((median, p90) exhaustive or None, (median, p90) two-stage, peak
    resident memory in GB)."""
    gallery = ModuloGallery(db, n)
    reset_peak()
    ex = None
    if n <= args.max_exhaustive:
        nq = max(3, min(len(queries), len(queries) * 10000 // n))  # a 100k query takes minutes
        exhaustive_latency(config, queries[:1], gallery, args.chunk_size)  # warm-up (page cache)
        ex = median_p90(exhaustive_latency(config, queries[:nq], gallery, args.chunk_size))
    build_fs, fs = timed(lambda: simulated_first_stage(db, n))
    t_index, _ = timed(lambda: fs.faiss_index(fs.query_vector(queries[0])[1]))
    first = median_p90([timed(lambda q=q: fs.search(q, args.rerank))[0] for q in queries])
    two = median_p90([timed(lambda q=q: two_stage_topk(config, q, gallery, fs, 10, args.rerank, args.chunk_size))[0]
                      for q in queries])
    ex_txt = "not timed" if ex is None else f"{fmt_ms(ex[0])} / {fmt_ms(ex[1])}"
    print(f"{n:>10,} {ex_txt:>30} {fmt_ms(two[0]) + ' / ' + fmt_ms(two[1]):>26} {fmt_ms(first[0]):>15} "
          f"{build_fs + t_index:>8.1f} {fs.ram_bytes / n:>22,.0f} {peak_rss_bytes() / 1e9:>12.2f} "
          f"{resident_parts().get('anon', 0) / 1e9:>10.2f}", flush=True)
    return ex, two, peak_rss_bytes() / 1e9


def synth_database(demo: Path, synth: Path, config, distractors: int, work: Path) -> tuple[ReferenceDatabase, str]:
    """The demo checkpoint's database of the synthetic test split followed by ``distractors`` train tiles."""


    sha = sha256_file(demo)
    db_path = work / f"synth_test_plus_{distractors}_train_db"
    try:
        return ReferenceDatabase.open(db_path, sha, config), "reused"
    except DatabaseError:
        pass
    sources = [DatasetSource("synth", synth, "test", config)]
    if distractors:
        sources.append(Limited(DatasetSource("synth", synth, "train", config), distractors))
    t, _ = timed(lambda: build_database(ConcatSource(sources), demo, db_path, overwrite=True, show_progress=False))
    return ReferenceDatabase.open(db_path, sha, config), f"built in {t:.0f} s"


def two_stage_ranks(fs: FirstStageIndex, ground: StageMaps, dist: torch.Tensor, m: int) -> tuple[np.ndarray, float]:
    """Rank of each query's true reference (= its query index) after the first stage keeps ``m`` candidates and
    the exact distances re-rank them: candidates strictly closer, or the gallery size when the first stage missed
    it. Also the share of queries whose true reference survived the first stage."""
    ranks, found = [], 0
    for q in range(len(ground)):
        cand = fs.search(ground.slice(q, q + 1), m)[0]
        if q in set(cand.tolist()):
            found += 1
            ranks.append(int((dist[q, cand] < dist[q, q]).sum()))
        else:
            ranks.append(dist.shape[1])
    return np.array(ranks), found / len(ground) * 100


def recall_section(args, work: Path) -> None:
    demo, synth = Path(args.demo_checkpoint), Path(args.synth)
    print("\n-- two-stage recall against exhaustive search (demo checkpoint, synthetic test set) --")
    if not demo.is_file() or not synth.is_dir():
        print(f"skipped: needs the trained demo checkpoint {demo} (python -m geoapp.train --preset demo) and the "
              f"synthetic world {synth} (python -m geoapp.synth --out {synth})")
        return
    from ..data.datasets import build_dataset

    model, _ = load_model(demo)
    config = model.config
    ds = build_dataset("synth", synth, "test", fov_deg=config.fov_deg, train=False,
                       ground_size=(config.ground_height, None), sat_size=(config.sat_height, config.sat_width))
    db, note = synth_database(demo, synth, config, args.distractors, work)
    n_test = len(ds)
    parts = []
    with torch.inference_mode():
        for s in range(0, n_test, 32):
            batch = torch.stack([ds.ground_item(i)["ground"] for i in range(s, min(n_test, s + 32))])
            parts.append(model.encode_ground(batch))
    ground = StageMaps.cat(parts)  # with the gates: a gate-corr checkpoint chooses its windows from them
    # one exhaustive pass with the shared search code gives every pair's exact distance (query q's true reference
    # is gallery entry q); the two-stage figures re-rank the first stage's candidates with these distances
    t, dist = timed(lambda: torch.cat([r.distances for _, r in gallery_chunks(config, ground, db, args.chunk_size)],
                                      dim=1))
    print(f"{n_test} queries ({config.fov_deg:g} deg, conventions §4 shifts) of the synthetic test split; database "
          f"{db.path} ({note}); exact distances of all pairs in {t:.0f} s")
    galleries = [(n_test, "test tiles only")]
    if len(db) > n_test:
        galleries.append((len(db), f"test + {len(db) - n_test} train tiles as distractors"))
    for dims in args.recall_dims:
        # other dims than the stored ones: recompute the first stage in memory from the stored maps (no network)
        arrays = {k: db.array(k) for k in ("first_stage_projection", "first_stage_blocks", "first_stage_energy")}
        if (dims, num_orientations(config)) != arrays["first_stage_blocks"].shape[1:][::-1]:  # (D, O) of the store
            arrays = compute_first_stage(db.slice, len(db), config, dims)
        for n, label in galleries:
            d = dist[:, :n]
            base = recall_from_ranks(ranks_from_distances(d), n, ks=(1, 10), top_percent=None)
            print(f"gallery {n:,} ({label}), first stage {dims} dims per block: exhaustive R@1 {base['R@1']:5.1f}  "
                  f"R@10 {base['R@10']:5.1f}")
            # both first-stage indexes at every size: the compressed one serves galleries above COMPRESSED_ABOVE
            for kind, compressed in (("flat SQ8", False), ("compressed IVF-SQ4", True)):
                fs = FirstStageIndex(config, arrays["first_stage_projection"], arrays["first_stage_blocks"][:n],
                                     arrays["first_stage_energy"][:n], compressed=compressed)
                for m in args.recall_rerank:
                    if m >= n:
                        continue
                    ranks, found = two_stage_ranks(fs, ground, d, m)
                    r = recall_from_ranks(ranks, n, ks=(1, 10), top_percent=None)
                    loss = base["R@10"] - r["R@10"]
                    print(f"  {kind:<18} M={m:<5} ({m / n:6.1%} of the gallery): true tile kept by the first stage "
                          f"{found:5.1f}%  R@1 {r['R@1']:5.1f}  R@10 {r['R@10']:5.1f}  R@10 loss {loss:4.1f} points "
                          f"(target <= {TARGET_R10_LOSS:g}: {verdict(loss, TARGET_R10_LOSS)})", flush=True)


# ------------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m geoapp.bench search", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000,1000000", help="gallery sizes (comma-separated)")
    p.add_argument("--work", default="data/bench", help="where built files are kept and reused")
    p.add_argument("--physical", type=int, default=10000, help="largest physical store (larger ones are simulated)")
    p.add_argument("--max-exhaustive", type=int, default=100000, help="largest gallery timed exhaustively")
    p.add_argument("--build-tiles", type=int, default=128, help="tiles built through the real build path")
    p.add_argument("--queries", type=int, default=10, help="timed queries per gallery (fewer above 10k exhaustive)")
    p.add_argument("--rerank", type=int, default=500, help="two-stage re-ranked candidates M")
    p.add_argument("--recall-rerank", default="20,50,100,200,500", help="M values for the recall comparison")
    p.add_argument("--recall-dims", default="16,32,64", help="first-stage PCA dims per block compared for recall")
    p.add_argument("--chunk-size", type=int, help="references per alignment chunk (default: the engine's for the "
                   "model's alignment mode)")
    p.add_argument("--store", default="fp16", choices=STORE_KINDS, help="how the timed store keeps its maps "
                   "(build_db --store)")
    p.add_argument("--checkpoint", help="latency: time this checkpoint (e.g. checkpoints/demo.safetensors) instead of "
                   "random weights at the full sizes")
    p.add_argument("--align-mode", default=GATE_CORR.name, choices=list(ALIGN_MODES),
                   help="window alignment of the random full-size model timed for latency (default: %(default)s; "
                   "ignored with --checkpoint)")
    p.add_argument("--shared-window", action=argparse.BooleanOptionalAction, default=True,
                   help="attention modes: block 1 places every stage's window (the demo's; default: %(default)s)")
    p.add_argument("--chunk-sweep", default="512,1024,2048,4096",
                   help="chunk sizes tried on the largest real gallery timed exhaustively")
    p.add_argument("--threads", type=int, default=1,
                   help="torch/FAISS threads (default 1: on this shared 2-core machine a 2-thread OpenMP region "
                        "waits for a core another process holds; measured 2-7x slower)")
    p.add_argument("--only", choices=["all", "latency", "recall"], default="all",
                   help="run only the latency part (random weights) or only the recall comparison (demo checkpoint)")
    p.add_argument("--demo-checkpoint", default="checkpoints/demo.safetensors")
    p.add_argument("--distractors", type=int, default=5000,
                   help="synthetic train tiles added to the test gallery for the recall comparison (0: none)")
    p.add_argument("--synth", default="data/synth")
    args = p.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    args.recall_rerank = [int(m) for m in args.recall_rerank.split(",")]
    args.recall_dims = [int(d) for d in args.recall_dims.split(",")]
    torch.set_num_threads(args.threads)
    tuned = tune_allocator()  # as the app does (see geoapp.retrieval.loading.tune_allocator)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cpu = cpu_description()
    print(f"== geoapp engine benchmark: CPU {cpu['model']} (kernels {cpu['torch_capability']}), {args.threads} "
          f"threads, torch {torch.__version__}, faiss {faiss.__version__}, glibc allocator tuned: {tuned} ==")
    print(f"load average at start: {os.getloadavg()[0]:.1f} (timings scale with what else runs on the CPU)")
    if args.only != "recall":
        latency_section(args, sizes, work)
    if args.only != "latency":
        try:
            recall_section(args, work)
        except (ValueError, OSError) as exc:  # e.g. a synthetic world still being written
            print(f"skipped: {exc}")
    return 0


def timed_model(args, work: Path) -> tuple[Path, ModelConfig]:
    """The checkpoint the latency part times and its config: ``--checkpoint``, or random weights at the full sizes.
    The files built with it under ``work`` start with its name, so two models never overwrite each other's."""
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        return ckpt, ModelConfig.from_dict(read_metadata(ckpt)["model_config"])
    shared = args.shared_window and ALIGN_MODES[args.align_mode].is_fca
    # no gate term, as the full-size figures in docs/results.md were measured
    config = ModelConfig(align_mode=args.align_mode, shared_window=shared, gate_weight=0.0)
    return random_checkpoint(work / f"random_full_{args.align_mode}{'_shared' if shared else ''}.safetensors",
                             config), config


def latency_section(args, sizes: list[int], work: Path) -> None:
    ckpt, config = timed_model(args, work)
    prefix = f"{ckpt.stem}_"
    print(f"model: {ckpt if args.checkpoint else 'random weights'}, polar {config.sat_height} x {config.sat_width}, "
          f"ground {config.ground_height} x {config.ground_width} = {config.fov_deg:g} deg, {config.base_channels} "
          f"base channels, align {config.align_mode}" + (", shared window" if config.shared_window else ""))
    csv_path, seed_db = build_seed_database(args, ckpt, config, work / f"{prefix}seed_db", work)
    db = physical_store(args, config, seed_db, sizes, work, prefix)
    storage_report(args, config, db, sizes)
    queries = timed_queries(args, ckpt, config, csv_path)
    chunk_sweep(args, config, db, sizes, queries)
    results = latency_table(args, config, db, seed_db, sizes, queries)
    print(f"load average after the latency table: {os.getloadavg()[0]:.1f}")
    print_targets(config, results)


def build_seed_database(args, ckpt: Path, config: ModelConfig, out: Path, work: Path):
    """Random tiles built through the real path (decode, polar transform, satellite branch, store, first stage),
    timed per tile; returns the tiles' CSV and the database."""
    csv_path = make_random_tiles(work / "tiles", args.build_tiles)
    source = TileFolderSource(csv_path.parent, csv_path, (config.sat_height, config.sat_width))
    build_s, seed_path = timed(lambda: build_database(source, ckpt, out, overwrite=True, show_progress=False))
    print(f"\nbuild (real path, {len(source)} random 750x750 JPEG tiles -> polar -> satellite branch -> store -> "
          f"first stage, batch 32, CPU): {build_s / len(source) * 1000:.0f} ms per tile")
    return csv_path, ReferenceDatabase.open(seed_path)


def physical_store(args, config: ModelConfig, seed_db: ReferenceDatabase, sizes: list[int], work: Path,
                   prefix: str) -> ReferenceDatabase:
    """The largest real store timed (``--physical`` at most): replicas of the seed database's references."""
    physical_n = min(args.physical, max(sizes))
    name = f"{prefix}gallery_{physical_n}" + ("" if args.store == "fp16" else f"_{args.store}")
    t, phys_path = timed(lambda: build_replica_store(seed_db, work / name, physical_n, store=args.store))
    print(f"physical store: {physical_n:,} references, store {args.store} ({phys_path}, "
          f"{'reused' if t < 5 else f'written in {t:.0f} s'})")
    return ReferenceDatabase.open(phys_path, seed_db.checkpoint_sha, config)


def storage_report(args, config: ModelConfig, db: ReferenceDatabase, sizes: list[int]) -> None:
    """Bytes per reference on disk by kind, what a query reads of them, and the memory bandwidth that floors it."""
    per_ref = {k: v["bytes"] / len(db) for k, v in db.metadata["files"].items()}
    group = {"features": sum(v for k, v in per_ref.items() if k.startswith("features")),
             "column energies": sum(v for k, v in per_ref.items() if k.startswith("col_energy")),
             "masks": sum(v for k, v in per_ref.items() if k.startswith("masks")),
             "gates": sum(v for k, v in per_ref.items() if k.startswith("gate")),  # and their energies
             "scales": sum(v for k, v in per_ref.items() if k.startswith("feature_scale")),
             "thumbnail": sum(v for k, v in per_ref.items() if k.startswith("thumbnail")),
             "first stage": sum(v for k, v in per_ref.items() if k.startswith("first_stage")),
             "other": per_ref["latlon.npy"] + per_ref.get("paths.txt", 0)}
    print(f"disk: {sum(per_ref.values()):,.0f} B per reference = "
          + " + ".join(f"{k} {v:,.0f}" for k, v in group.items()))
    read = bytes_per_query(config, per_ref)
    print(f"RAM, exhaustive: the store is memory-mapped; the process itself holds {group['other']:,.0f} B per reference"
          f" (lat/lon, paths); a warm query reads {read:,.0f} B per reference at {config.fov_deg:g} deg (window "
          "columns, gates, energies) from the OS page cache (a cold one from disk). RAM, two-stage: see the table.")
    bandwidth = memory_bandwidth()
    print(f"memory read bandwidth, measured ({args.threads} threads, sum of a 512 MB tensor): {bandwidth:.1f} GB/s; "
          "an exhaustive query cannot beat reading its bytes: "
          + ", ".join(f"{n:,} references {read * n / 1e6:,.0f} MB >= {read * n / bandwidth / 1e6:,.0f} ms"
                      for n in sizes if n <= args.max_exhaustive))


def timed_queries(args, ckpt: Path, config: ModelConfig, csv_path: Path) -> list[StageMaps]:
    """The ground maps of ``--queries`` crops of the benchmark tiles; prints what encoding one costs."""
    model, _ = load_model(ckpt)
    queries = query_maps(model, csv_path, args.queries)
    encode_s = [timed(lambda: model.encode_ground(torch.zeros(1, 3, config.ground_height, config.ground_width)))[0]
                for _ in range(5)]
    print(f"ground branch (one {config.ground_height} x {config.ground_width} query): "
          f"{statistics.median(encode_s) * 1000:.0f} ms; latencies below are the search alone")
    return queries


def chunk_sweep(args, config: ModelConfig, db: ReferenceDatabase, sizes: list[int], queries) -> None:
    """Exhaustive latency per chunk size on the largest real gallery timed exhaustively: the exhaustive path's main
    knob outside the alignment code (a gallery smaller than a chunk cannot tell chunk sizes apart)."""
    timed_in_full = [n for n in sizes if n <= min(len(db), args.max_exhaustive)]
    swept = ModuloGallery(db, max(timed_in_full) if timed_in_full else min(sizes[0], len(db)))
    sweep = {}
    for c in (int(x) for x in args.chunk_sweep.split(",")):
        exhaustive_latency(config, queries[:1], swept, c)  # warm the page cache
        sweep[c] = median_p90(exhaustive_latency(config, queries[:3], swept, c))[0]
    chunk = args.chunk_size or search_chunk(config.alignment)
    print(f"exhaustive chunk-size sweep on {len(swept):,} refs (median ms): "
          + ", ".join(f"{c}: {ms:,.0f}" for c, ms in sweep.items()) + f"; using --chunk-size {chunk}")


def latency_table(args, config: ModelConfig, db: ReferenceDatabase, seed_db: ReferenceDatabase, sizes: list[int],
                  queries) -> dict:
    """How the galleries are simulated, then one row per size (:func:`time_gallery`); returns the rows' figures."""
    physical_n = len(db)
    larger = "/".join(f"{s:,}" for s in sizes if s > physical_n) or "no"
    print("\nsimulation: galleries up to the physical store are real stores; a larger gallery reads reference i from"
          f" physical reference i mod {physical_n:,} in the second stage (ModuloGallery), while its first stage holds"
          f" {larger} distinct descriptors: the {physical_n:,} real"
          " ones plus copies rotated by a random number of blocks with Gaussian noise (0.25 x std). Physical store:"
          f" {physical_n:,} replicas of the {len(seed_db)} network-built references (random rotation + per-channel"
          " gains 1 +- 0.1), written without the network.")
    print(f"\n{'gallery':>10} {'exhaustive ms (median / p90)':>30} {'two-stage ms, M=' + str(args.rerank):>26} "
          f"{'first stage ms':>15} {'setup s':>8} {'first-stage RAM B/ref':>22} {'peak RSS GB':>12} {'anon GB':>10}")
    print("(setup: making the simulated first-stage descriptors + building the FAISS index in memory; a built "
          "database ships the index of its checkpoint's FoV and loads it instead; peak RSS: the whole process's "
          "resident memory, model and page-cache pages of the memory-mapped store it touched included; anon: the "
          "process's own memory after the row's queries, without the mapped store's pages)")
    return {n: time_gallery(config, db, n, queries, args) for n in sizes}


def print_targets(config: ModelConfig, results: dict) -> None:
    """The exhaustive search at 10,000 and the two-stage search at 1,000,000 against their targets, where timed."""
    print("\ntargets:")
    if 10000 in results and results[10000][0] is not None:
        ms = results[10000][0][0]
        full = ModelConfig()
        full_size = (config.sat_height, config.sat_width) == (full.sat_height, full.sat_width)
        size = "full size" if full_size else "smaller (the demo's)"
        target = TARGET_EXHAUSTIVE_10K_MS[size]
        print(f"  exhaustive, 10,000 tiles: {ms:,.0f} ms median (target at the model's size, {size}: <= {target}): "
              f"{verdict(ms, target)}")
    if 1000000 in results:
        ms, peak = results[1000000][1][0], results[1000000][2]
        print(f"  two-stage, 1,000,000 tiles: {ms:,.0f} ms median (target <= {TARGET_TWO_STAGE_1M_MS}): "
              f"{verdict(ms, TARGET_TWO_STAGE_1M_MS)}; peak resident memory {peak:.2f} GB (target <= "
              f"{TARGET_1M_PEAK_GB:g}): {verdict(peak, TARGET_1M_PEAK_GB)}")
