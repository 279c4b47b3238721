"""``python -m geoapp.bench vector_engine``: the two-stage first stage in Milvus Lite against the in-RAM FAISS one.

For each simulated gallery size it prints: the upload throughput (references per second through
``geoapp.retrieval.vector_engine.upload_first_stage``: window vectors -> upsert requests -> Milvus Lite), the median
and p90 latency of the first stage's top-M candidates through Milvus Lite and through FAISS, and how often the
two-stage answers (the exact re-ranking of those candidates, top 10) agree. Needs ``pip install 'geoapp[milvus]'``.

The gallery is simulated as ``geoapp.bench.search`` does (``geoapp.bench.galleries``): a physical store of replicas
of a few network-built references (random weights, the demo model's sizes), and a first stage of as many distinct
descriptors as the gallery has references (rotated noisy copies). Files are kept under ``--work`` and reused; the
Milvus Lite file there is rewritten by every run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from datetime import date
from pathlib import Path

import numpy as np
import torch

from ..files import sha256_file
from ..model import ModelConfig, load_model, read_metadata
from ..retrieval.build import TileFolderSource, build_database
from ..retrieval.database import ReferenceDatabase
from ..retrieval.index import FirstStageIndex, two_stage_topk
from ..retrieval.vector_engine import MilvusFirstStage, connect, distinct_in_order, held_record, upload_first_stage
from ..testing import demo_model_config, make_random_tiles, random_checkpoint
from .galleries import ModuloGallery, build_replica_store, simulated_first_stage
from .search import median_p90, query_maps, timed


def cpu_model() -> str:
    """``lscpu``'s Model name (the CPU the figures were measured on)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no lscpu)"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                "unknown")


def checkpoint_for(args, work: Path) -> tuple[Path, str]:
    """The trained demo checkpoint when it is there (its first stage ranks a query's own tile high, as a served one
    does), else random weights of the same sizes; and a line saying which."""
    demo = Path(args.checkpoint)
    if demo.is_file():
        return demo, f"trained checkpoint {demo}"
    return random_checkpoint(work / "random_demo.safetensors", demo_model_config()), f"random weights ({demo} absent)"


def seed_store(ckpt: Path, work: Path, physical: int) -> ReferenceDatabase:
    """A physical store of ``physical`` references: replicas of 64 references built through the real path."""
    config = ModelConfig.from_dict(read_metadata(ckpt)["model_config"])
    csv_path = make_random_tiles(work / "tiles_256", 64, size=256)
    source = TileFolderSource(csv_path.parent, csv_path, (config.sat_height, config.sat_width))
    seed_path = work / f"seed_{ckpt.stem}_db"
    try:
        seed = ReferenceDatabase.open(seed_path, sha256_file(ckpt), config)
    except ValueError:  # DatabaseError: not built yet (or with another checkpoint)
        seed = ReferenceDatabase.open(build_database(source, ckpt, seed_path, overwrite=True, show_progress=False))
    return ReferenceDatabase.open(build_replica_store(seed, work / f"{ckpt.stem}_gallery_{physical}", physical))


class Replayed:
    """A first stage answering with candidates found before, in order: the agreement re-ranks what was timed."""

    def __init__(self, candidates: list[np.ndarray]):
        self.candidates = iter(candidates)

    def search(self, ground, m: int) -> list[np.ndarray]:
        return [next(self.candidates)[:m]]


def timed_candidates(stage, queries, m: int) -> tuple[tuple[float, float], list[np.ndarray]]:
    """(median, p90) ms of ``stage``'s top-``m`` search over ``queries`` (after one warm-up), and its candidates."""
    stage.search(queries[0], m)
    runs = [timed(lambda q=q: stage.search(q, m)[0]) for q in queries]
    return median_p90([t for t, _ in runs]), [c for _, c in runs]


def distinct_answers(config, query, gallery: ModuloGallery, first, rerank: int, k: int = 10) -> list[int]:
    """The first ``k`` distinct physical references of the two-stage ranking: the simulated gallery's references i,
    i + P, i + 2P ... hold the same maps, so they are one answer (and which copies a first stage keeps is chance)."""
    ranked = two_stage_topk(config, query, gallery, first, rerank, rerank).indices[0] % gallery.physical
    return distinct_in_order(ranked.cpu().numpy())[:k].tolist()


def agreement(config, queries, gallery: ModuloGallery, milvus: list, local: list, rerank: int) -> tuple[float, float]:
    """Shares of queries (%) whose two-stage top 1 and top 10 are the same from Milvus's and from FAISS's
    candidates."""
    a, b = Replayed(milvus), Replayed(local)
    top1 = top10 = 0
    for q in queries:
        x, y = (distinct_answers(config, q, gallery, first, rerank) for first in (a, b))
        top1, top10 = top1 + (x[0] == y[0]), top10 + (x == y)
    return top1 * 100 / len(queries), top10 * 100 / len(queries)


def measure(db: ReferenceDatabase, size: int, queries, client, args) -> dict:
    """One gallery size: upload, first-stage latency both ways, shared candidates, two-stage agreement."""
    local: FirstStageIndex = simulated_first_stage(db, size)
    n = local.query_vector(queries[0])[1]
    record = {"database": f"simulated {size}", "fingerprint": f"bench-{size}", "checkpoint_sha256": db.checkpoint_sha,
              "references": size, "n_blocks": n}
    name = f"bench_{size}"
    upload_s, _ = timed(lambda: upload_first_stage(client, name, local, record, replace=True, progress=False))
    milvus = MilvusFirstStage(client, name, local, held_record(client, name))
    local.faiss_index(n)  # built before timing, as a served database loads its saved index
    out = {"upload_refs_per_s": size / upload_s}
    out["milvus"], from_milvus = timed_candidates(milvus, queries, args.rerank)
    out["faiss"], from_faiss = timed_candidates(local, queries, args.rerank)
    shared = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(from_milvus, from_faiss)]
    out["shared_candidates"] = float(np.mean(shared) * 100 / min(args.rerank, size))
    out["top1"], out["top10"] = agreement(db.config, queries, ModuloGallery(db, size), from_milvus, from_faiss,
                                          args.rerank)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m geoapp.bench vector_engine", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="5000,50000", help="gallery sizes (comma-separated)")
    p.add_argument("--work", default="data/bench", help="where built files are kept and reused")
    p.add_argument("--physical", type=int, default=1000, help="physical store (second-stage reads) size")
    p.add_argument("--queries", type=int, default=20, help="timed queries per gallery")
    p.add_argument("--rerank", type=int, default=500, help="first-stage candidates M")
    p.add_argument("--checkpoint", default="checkpoints/demo.safetensors",
                   help="model whose first stage is measured (default: the shipped demo's; random weights without it)")
    p.add_argument("--threads", type=int, default=1, help="torch/FAISS threads (default 1, as geoapp.bench search)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"== first stage in Milvus Lite vs FAISS: {date.today()}, CPU {cpu_model()} (torch kernels "
          f"{torch.backends.cpu.get_cpu_capability()}), {args.threads} threads, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {os.getloadavg()[0]:.1f} ==")
    ckpt, which = checkpoint_for(args, work)
    db = seed_store(ckpt, work, args.physical)
    model, _ = load_model(ckpt)
    queries = query_maps(model, work / "tiles_256" / "tiles.csv", args.queries)
    lite = work / "vector_engine_bench.db"
    client = connect(str(lite), create=True)
    vectors, _ = FirstStageIndex.from_database(db).query_vector(queries[0])
    print(f"simulated galleries: first stage of N distinct descriptors (the {len(db):,}-reference physical store's "
          f"and rotated noisy copies; 16 orientations x {vectors.shape[1]}-dim vectors), "
          f"second stage reading reference i mod {len(db):,}; {which}; queries: 90 deg crops of the tiles' polar "
          f"images; Milvus Lite file {lite} (FLAT, inner product), FAISS 8-bit scalar quantiser; {len(queries)} "
          f"queries, M = {args.rerank}")
    print(f"{'gallery':>8} {'upload refs/s':>14} {'Milvus p50 / p90 ms':>20} {'FAISS p50 / p90 ms':>19} "
          f"{'shared candidates':>18} {'two-stage top-1 / top-10 agree':>31}")
    for size in sorted(int(s) for s in args.sizes.split(",")):
        r = measure(db, size, queries, client, args)
        print(f"{size:>8,} {r['upload_refs_per_s']:>14,.0f} {r['milvus'][0]:>11,.1f} / {r['milvus'][1]:>6,.1f} "
              f"{r['faiss'][0]:>10,.1f} / {r['faiss'][1]:>6,.1f} {r['shared_candidates']:>17.1f}% "
              f"{r['top1']:>21.0f}% / {r['top10']:>5.0f}%", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
