"""``python -m geoapp.bench gpu``: training, evaluation and search on a CUDA device, each beside the CPU.

- training: :func:`~geoapp.training.loop.train_step` of a :class:`~geoapp.training.objective.TrainForward` on random
  batches at the paper presets' full size (batch 24, polar 128 x 512, 90 deg crops), with the autocast precision
  training resolves (bf16 where supported, else fp16 with a GradScaler; fp32 on the CPU);
- evaluation: the satellite branch's throughput, and the ranking of a block of queries against a simulated gallery
  (replicas of network-built maps in the evaluation's :class:`SpooledGallery`, chunks copied to the device);
- search: the exhaustive top-10 (:func:`~geoapp.retrieval.search.topk_matches`) of one query over the same
  references held on the device in float16, as a preloaded database.

The CPU runs fewer steps and queries. Random weights: speed does not depend on them. Without a CUDA device it says
so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from ..model import ModelConfig, build_model
from ..retrieval.search import topk_matches
from ..training.config import TrainConfig
from ..training.distributed import autocast, resolve_precision
from ..training.evaluation import SpooledGallery, match_block
from ..training.loop import train_step
from ..training.objective import TrainForward
from ..training.precision import cpu_description
from ..training.presets import resolve_config
from .memory import encode_seed, fill_gallery


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    """Seconds of ``fn()``, synchronised before and after only (kernels queue freely inside)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def host_batch(shape, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    """A random host batch, pinned when it goes to a GPU (so its copy can run asynchronously)."""
    x = torch.randn(shape, generator=gen)
    return x.pin_memory() if device.type == "cuda" else x


def train_seconds(cfg: TrainConfig, device: torch.device, steps: int, batch: int) -> float:
    """Mean seconds per training step over ``steps`` steps after a warm-up step."""
    config = cfg.model
    precision = resolve_precision(cfg.precision, device)
    torch.manual_seed(0)
    model = build_model(config).to(device).train()
    net = TrainForward(model, with_logits=cfg.align_loss > 0, window_choice=cfg.window_choice)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    gen = torch.Generator().manual_seed(0)
    grounds = [host_batch((batch, 3, config.ground_height, config.ground_width), device, gen) for _ in range(2)]
    sats = [host_batch((batch, 3, config.sat_height, config.sat_width), device, gen) for _ in range(2)]
    shifts = np.random.default_rng(0).integers(0, config.sat_width, batch)

    def step(i: int) -> None:
        # train_step returns its losses as floats: one synchronisation per step, as in training itself
        ground, sat = grounds[i % 2].to(device, non_blocking=True), sats[i % 2].to(device, non_blocking=True)
        train_step(net, optimizer, scaler, ground, sat, cfg.alpha, device, precision, cfg.grad_clip, shifts,
                   cfg.align_loss, config.sat_width)

    step(0)  # warm-up: cuDNN's algorithm choice, the allocator's pools
    return timed(lambda: [step(i) for i in range(1, steps + 1)], device) / steps


@torch.no_grad()
def satellite_images_per_s(model, config: ModelConfig, device, precision: str, batch: int, repeats: int) -> float:
    x = host_batch((batch, 3, config.sat_height, config.sat_width), device, torch.Generator().manual_seed(2))

    def encode() -> None:
        with autocast(device, precision):
            model.encode_satellite(x.to(device, non_blocking=True))

    encode()
    return batch * repeats / timed(lambda: [encode() for _ in range(repeats)], device)


@torch.no_grad()
def ranking_us_per_pair(model, config: ModelConfig, gallery: SpooledGallery, queries: int, chunk: int) -> float:
    """The evaluation's ranking of one block of ``queries`` over the whole gallery, in microseconds per pair."""
    device = gallery.device
    ground = model.encode_ground(torch.randn(queries, 3, config.ground_height, config.ground_width).to(device))
    block = np.arange(queries) % len(gallery)
    return timed(lambda: match_block(config, ground, gallery, block, chunk), device) / (queries * len(gallery)) * 1e6


@torch.no_grad()
def search_ms_per_query(model, config: ModelConfig, gallery: SpooledGallery, queries: int, chunk: int) -> float:
    """Median milliseconds of a top-10 over the gallery held on its device in float16 (a preloaded database)."""
    device = gallery.device
    held = gallery.slice(0, len(gallery))
    ground = model.encode_ground(torch.randn(queries, 3, config.ground_height, config.ground_width).to(device))
    topk_matches(config, ground.slice(0, 1), held, 10, chunk)  # warm-up
    return statistics.median(timed(lambda q=q: topk_matches(config, ground.slice(q, q + 1), held, 10, chunk), device)
                             for q in range(queries)) * 1000


def measure(cfg: TrainConfig, device: torch.device, args, steps: int, queries: int) -> dict:
    """Every figure on one device; ``steps`` training steps, ``queries`` ranked and searched queries."""
    config = cfg.model
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out = {"precision": precision, "train_s_per_step": train_seconds(cfg, device, steps, args.batch)}
    if device.type == "cuda":
        out["train_peak_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    torch.manual_seed(0)
    model = build_model(config).to(device).eval()
    out["satellite_img_per_s"] = satellite_images_per_s(model, config, device, precision, args.eval_batch,
                                                        max(1, steps))
    seed = encode_seed(model, config, args.eval_batch, device)
    with SpooledGallery(config, args.references, device, args.spool_dir) as gallery:
        fill_gallery(gallery, seed, args.eval_batch)
        out["ranking_us_per_pair"] = ranking_us_per_pair(model, config, gallery, queries, args.chunk_size)
        out["search_ms_per_query"] = search_ms_per_query(model, config, gallery, queries, args.chunk_size)
    return out


ROWS = (("train_s_per_step", "training step, batch {batch}", "s"),
        ("satellite_img_per_s", "satellite branch (evaluation)", "img/s"),
        ("ranking_us_per_pair", "evaluation ranking", "us/pair"),
        ("search_ms_per_query", "search top-10, {references:,} refs", "ms/query"))


def report(gpu: dict, cpu: dict, args) -> None:
    print(f"{'figure':<38} {'GPU':>12} {'CPU':>12}  unit (precision GPU {gpu['precision']}, CPU {cpu['precision']})")
    for key, label, unit in ROWS:
        name = label.format(batch=args.batch, references=args.references)
        print(f"{name:<38} {gpu[key]:>12,.3f} {cpu[key]:>12,.3f}  {unit}")
    if "train_peak_gb" in gpu:
        print(f"GPU memory at the training step's peak (torch.cuda.max_memory_allocated): "
              f"{gpu['train_peak_gb']:.2f} GB")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m geoapp.bench gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="paper-cvusa-90", help="training preset whose model and step are timed")
    p.add_argument("--batch", type=int, default=24, help="training batch (the paper's: 24)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps on the GPU")
    p.add_argument("--cpu-steps", type=int, default=1, help="timed training steps on the CPU")
    p.add_argument("--queries", type=int, default=64, help="ranked and searched queries on the GPU")
    p.add_argument("--cpu-queries", type=int, default=4, help="ranked and searched queries on the CPU")
    p.add_argument("--references", type=int, default=2048, help="simulated gallery size")
    p.add_argument("--eval-batch", type=int, default=64, help="satellite images per evaluation batch")
    p.add_argument("--chunk-size", type=int, default=512, help="references per ranking chunk")
    p.add_argument("--spool-dir", default=None, help="where the simulated gallery is spooled (default: $TMPDIR)")
    args = p.parse_args(argv)
    cpu = cpu_description()
    if not torch.cuda.is_available():
        print(f"no CUDA device is available (torch {torch.__version__}, CPU {cpu['model']}): nothing to compare; "
              "run this on a machine with an NVIDIA GPU")
        return 0
    device = torch.device("cuda")
    print(f"== geoapp GPU benchmark: {torch.cuda.get_device_name(device)}, torch {torch.__version__} (CUDA "
          f"{torch.version.cuda}), CPU {cpu['model']} (kernels {cpu['torch_capability']}, {cpu['threads']} threads) ==")
    cfg = resolve_config(args.preset, {})
    gpu_figures = measure(cfg, device, args, args.steps, args.queries)
    cpu_figures = measure(cfg, torch.device("cpu"), args, args.cpu_steps, args.cpu_queries)
    report(gpu_figures, cpu_figures, args)
    return 0
