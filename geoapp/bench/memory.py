"""``python -m geoapp.bench memory``: peak memory of evaluating a CVUSA-size gallery (target <= 4 GB on a CPU).

The evaluation's own code with a simulated gallery: ``--seed-references`` random polar images go through the
satellite branch once (one batch, as the evaluation encodes them), and the ``--references`` gallery entries are
replicas of those maps, each rotated by whole stage-4 columns with per-channel gains 1 +- 0.1 (as the search
benchmark's stores, :mod:`geoapp.bench.galleries`), stored in the evaluation's :class:`SpooledGallery`; then
``--queries`` random ground crops are encoded and ranked block by block with the evaluation's
:func:`~geoapp.training.evaluation.match_block`, ``--chunk-size`` references at a time. The model is the paper
presets' (ResNet18_CA, 64 base channels, polar 128 x 512, 90 deg); random weights: memory and time do not depend
on them. Peak RSS is the kernel's high-water mark (VmHWM, reset between the phases where the kernel allows it).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from ..model import ModelConfig, StageMaps, build_model
from ..training.evaluation import SpooledGallery, match_block
from ..training.precision import cpu_description
from ..training.presets import resolve_config
from .galleries import rotated_blocks

TARGET_PEAK_GB = 4.0
GB = 1e9
# for tests: every stage chooses its own window, so every stage's attention is spooled
TINY = ModelConfig(ground_height=32, sat_height=32, sat_width=128, base_channels=16, shared_window=False)


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux: ``5`` to clear_refs); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The process's peak resident set since start or the last :func:`reset_peak` (VmHWM; else ru_maxrss)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def resident_parts() -> dict[str, int]:
    """The process's resident memory now, by kind (Linux): ``anon`` (its own heap and arrays) and ``file`` (pages of
    mapped files, e.g. a memory-mapped store: the OS page cache, which the kernel reclaims under pressure)."""
    parts = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("RssAnon:", "RssFile:")):
                    parts[line[3:7].lower()] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return parts


def float32_bytes_per_reference(maps: StageMaps) -> int:
    """What one reference took in the float32 StageMaps the evaluation used to keep on its device."""
    fields = [t for group in (maps.features, maps.masks or [], maps.gates or []) for t in group]
    return sum(t[0].numel() * 4 for t in fields)


def replicas(seed: StageMaps, start: int, stop: int, rng: np.random.Generator, blocks: int) -> StageMaps:
    """References ``start:stop``: seed ``i mod S`` rotated by a random number of ``blocks`` column blocks, with
    per-channel gains on the features (the replica stores of :mod:`geoapp.bench.galleries`, on N x C x H x W maps)."""
    src = torch.as_tensor(np.arange(start, stop) % len(seed))
    roll = rng.integers(0, blocks, stop - start)
    gains = torch.as_tensor(1 + 0.1 * rng.standard_normal((stop - start, seed.features[-1].shape[1], 1, 1)),
                            dtype=torch.float32).clamp(0.5, 1.5)
    feats = [rotated_blocks(f[src] * gains[:, : f.shape[1]], 3, roll, blocks) for f in seed.features]
    masks = None if seed.masks is None else [rotated_blocks(m[src], 2, roll, blocks) for m in seed.masks]
    gates = None if seed.gates is None else [rotated_blocks(g[src], 2, roll, blocks) for g in seed.gates]
    return StageMaps(feats, masks, gates=gates)


def _timed_peak(fn):
    """(result, seconds, peak RSS bytes) of ``fn()``, the peak measured from its start where the kernel allows."""
    reset_peak()
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, peak_rss_bytes()


@torch.no_grad()
def encode_seed(model, config: ModelConfig, n: int, device) -> StageMaps:
    polars = torch.randn(n, 3, config.sat_height, config.sat_width, generator=torch.Generator().manual_seed(0))
    return model.encode_satellite(polars.to(device)).to("cpu")


def fill_gallery(gallery: SpooledGallery, seed: StageMaps, batch: int) -> None:
    """Append replicas ``batch`` at a time, as the evaluation appends each batch the network encodes."""
    rng = np.random.default_rng(0)
    blocks = seed.features[-1].shape[-1]  # stage-4 columns: a rotation by whole blocks is valid at every stage
    for start in range(0, gallery.n, batch):
        gallery.append(replicas(seed, start, min(gallery.n, start + batch), rng, blocks))


@torch.no_grad()
def rank_queries(model, config: ModelConfig, gallery: SpooledGallery, queries: int, batch: int, chunk: int,
                 device) -> np.ndarray:
    """Ranks of ``queries`` random ground crops, query i's true reference being gallery entry i mod N."""
    gen = torch.Generator().manual_seed(1)
    ranks = []
    for start in range(0, queries, batch):
        n = min(batch, queries - start)
        ground = torch.randn(n, 3, config.ground_height, config.ground_width, generator=gen).to(device)
        maps = model.encode_ground(ground)
        ranks.append(match_block(config, maps, gallery, np.arange(start, start + n) % len(gallery), chunk)[0])
    return np.concatenate(ranks)


def measure(config: ModelConfig, args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    resettable = reset_peak()
    torch.manual_seed(0)
    model = build_model(config).to(device).eval()
    seed, t_seed, peak_seed = _timed_peak(lambda: encode_seed(model, config, args.seed_references, device))
    with SpooledGallery(config, args.references, device, args.spool_dir) as gallery:
        _, t_fill, peak_fill = _timed_peak(lambda: fill_gallery(gallery, seed, args.batch_size))
        ranks, t_rank, peak_rank = _timed_peak(lambda: rank_queries(model, config, gallery, args.queries,
                                                                    args.batch_size, args.chunk_size, device))
        gallery_bytes, per_ref = gallery.nbytes, gallery.bytes_per_reference
    peaks = {"encode seed batch": peak_seed, "store gallery": peak_fill, "rank queries": peak_rank}
    out = {
        "cpu": cpu_description(), "device": str(device), "threads": torch.get_num_threads(),
        "references": args.references, "queries": len(ranks), "chunk_size": args.chunk_size,
        "batch_size": args.batch_size, "bytes_per_reference": per_ref, "gallery_bytes": gallery_bytes,
        "float32_in_memory_bytes": args.references * float32_bytes_per_reference(seed),
        "peak_rss_bytes": peaks, "peak_rss_max_bytes": max(peaks.values()),
        "seconds": {"encode seed batch": t_seed, "store gallery": t_fill, "rank queries": t_rank},
        "peak_reset_per_phase": resettable,
    }
    if device.type == "cuda":
        out["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    out["target_met"] = out["peak_rss_max_bytes"] <= TARGET_PEAK_GB * GB
    return out


def report(out: dict, config: ModelConfig) -> None:
    cpu = out["cpu"]
    print(f"== geoapp evaluation memory: CPU {cpu['model']} (kernels {cpu['torch_capability']}), {out['threads']} "
          f"threads, device {out['device']}, torch {torch.__version__} ==")
    print(f"model: polar {config.sat_height} x {config.sat_width}, {config.base_channels} base channels, "
          f"{config.fov_deg:g} deg, align {config.align_mode}; {out['references']:,} references, {out['queries']} "
          f"queries in blocks of {out['batch_size']}, chunks of {out['chunk_size']} references")
    print(f"gallery spooled to disk: {out['bytes_per_reference']:,} B per reference = "
          f"{out['gallery_bytes'] / GB:.3f} GB (the float32 gallery the evaluation used to hold in memory: "
          f"{out['float32_in_memory_bytes'] / GB:.3f} GB)")
    note = "" if out["peak_reset_per_phase"] else " (cumulative: this kernel does not reset the peak per phase)"
    print(f"peak RSS per phase{note}:")
    for phase, peak in out["peak_rss_bytes"].items():
        print(f"  {phase:<18} {peak / GB:6.2f} GB   {out['seconds'][phase]:8.1f} s")
    if "cuda_max_allocated_bytes" in out:
        print(f"CUDA max allocated: {out['cuda_max_allocated_bytes'] / GB:.2f} GB")
    verdict = "met" if out["target_met"] else "MISSED"
    print(f"peak RSS {out['peak_rss_max_bytes'] / GB:.2f} GB (target <= {TARGET_PEAK_GB:g} GB on CPU): {verdict}")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m geoapp.bench memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--references", type=int, default=8884, help="gallery size (CVUSA's test split: 8,884)")
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("--chunk-size", type=int, default=512, help="references per ranking chunk (evaluation's default)")
    p.add_argument("--batch-size", type=int, default=64, help="images per network pass (evaluation's default)")
    p.add_argument("--seed-references", type=int, default=64, help="references made by the network, then replicated")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--spool-dir", default=None, help="where the gallery is spooled (default: $TMPDIR)")
    p.add_argument("--preset", default="paper-cvusa-90", help="training preset whose model is measured")
    p.add_argument("--tiny", action="store_true", help="a 32 x 128 model with 16 base channels (tests)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = TINY if args.tiny else resolve_config(args.preset, {}).model
    load = os.getloadavg()[0]
    out = measure(config, args)
    report(out, config)
    print(f"load average at start {load:.1f}, at the end {os.getloadavg()[0]:.1f} (timings scale with what else runs "
          "on the CPU)")
    return out
