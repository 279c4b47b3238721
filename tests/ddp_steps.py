"""Run under ``torchrun --nproc_per_node=2``: three DistributedDataParallel steps of every preset and every
combination of alignment mode, shared window, alignment loss and window choice, at a tiny size; with
``--gradients``, the cross-process batch-hard mining checked against one process that holds both batches.

Each configuration is resolved as ``python -m geoapp.train`` resolves its flags (``config_from_args``), wrapped as
the training loop wraps it (``training_forward``) and stepped on seeded random batches that differ per process.
Rank 0 prints one JSON line per configuration: whether its three steps ran, and the largest difference of the
weights between the processes afterwards (DDP averages the gradients, so the replicas must stay equal).
"""

from __future__ import annotations

import itertools
import json
import os
import sys

import torch
import torch.distributed as dist

from geoapp.angles import fov_width
from geoapp.model import build_model, soft_margin_triplet_loss
from geoapp.model.align_modes import ALIGN_MODES
from geoapp.train import config_from_args
from geoapp.training.distributed import Dist, setup_distributed
from geoapp.training.loop import train_step, training_forward
from geoapp.training.objective import CrossRankDistances, TrainForward, alignment_loss
from geoapp.training.presets import PRESETS
from geoapp.training.window_choices import WINDOW_CHOICES

TINY = ["--height", "32", "--sat-width", "128", "--base-channels", "8", "--batch-size", "3",
        "--imagenet-weights", "none", "--device", "cpu", "--precision", "fp32"]


def configurations() -> dict[str, list[str]]:
    """Name -> the command-line flags of one configuration (every preset, then every documented combination)."""
    runs = {f"preset {name}": ["--preset", name] for name in sorted(PRESETS)}
    for mode, shared, loss, choice in itertools.product(ALIGN_MODES.values(), (True, False), ("0", "0.3"),
                                                        WINDOW_CHOICES.values()):
        if (shared and not mode.is_fca) or choice.problem(mode, 0.0):
            continue  # refused by the config: only FCA has a window to share; soft windows need cosine scores
        flags = ["--preset", "demo-quick", "--align-mode", mode.name, "--align-loss", loss, "--window-choice",
                 choice.name, "--shared-window" if shared else "--no-shared-window"]
        if choice.soft:
            flags += ["--gate-weight", "0"]  # soft windows average distances over offsets, without the gate term
        runs[f"{mode.name} shared={shared} align-loss={loss} {choice.name}"] = flags
    return runs


def weight_spread(model) -> float:
    """Largest difference of any weight between the processes."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    low, high = flat.clone(), flat.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return float((high - low).abs().max())


def three_steps(flags: list[str], d: Dist, device) -> float:
    cfg, _ = config_from_args(flags + TINY)
    torch.manual_seed(0)
    model = build_model(cfg.model_config()).to(device)
    net = training_forward(cfg, model, d, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    data = torch.Generator().manual_seed(100 + d.rank)  # every process its own batch
    width = fov_width(cfg.fov, cfg.sat_width)
    for _ in range(3):
        ground = torch.randn(cfg.batch_size, 3, cfg.height, width, generator=data)
        sat = torch.randn(cfg.batch_size, 3, cfg.height, cfg.sat_width, generator=data)
        shifts = torch.randint(0, cfg.sat_width, (cfg.batch_size,), generator=data).numpy()
        train_step(net, optimizer, scaler, ground, sat, cfg.alpha, device, "fp32", shifts=shifts,
                   align_weight=cfg.align_loss, pano_width=cfg.sat_width)
    return weight_spread(model)


GRADIENT_CHECKS = {  # window choices whose gathered mining must equal one process's mining over both batches
    "argmax": ["--window-choice", "argmax"],
    "known-positive + alignment loss": ["--window-choice", "known-positive"],
    "hardest-negative": ["--window-choice", "hardest-negative"],
    "soft": ["--window-choice", "soft", "--gate-weight", "0"],
    "per-rank": ["--window-choice", "argmax", "--negatives", "per-rank"],  # must differ: its own batch only
}


def gathered_against_one_process(flags: list[str], d: Dist, device) -> dict:
    """The loss and the DDP-averaged gradient of this process's half of a batch of 2 x B pairs, mined across both
    processes, beside the same of the whole batch in one process (eval mode: BatchNorm's statistics would otherwise
    differ between a half batch and the whole)."""
    cfg, _ = config_from_args(["--preset", "demo-quick", *flags, *TINY, "--batch-size", "4"])
    data = torch.Generator().manual_seed(7)
    n, width = 2 * cfg.batch_size, fov_width(cfg.fov, cfg.sat_width)
    ground = torch.randn(n, 3, cfg.height, width, generator=data)
    sat = torch.randn(n, 3, cfg.height, cfg.sat_width, generator=data)
    shifts = torch.randint(0, cfg.sat_width, (n,), generator=data).numpy()

    def loss_and_grad(net, model, part) -> tuple[float, torch.Tensor]:
        model.zero_grad(set_to_none=False)
        distances, logits = net(ground[part], sat[part], shifts[part], cfg.sat_width)

        loss = (distances.triplet_loss(cfg.alpha) if isinstance(distances, CrossRankDistances)
                else soft_margin_triplet_loss(distances, cfg.alpha))
        if cfg.align_loss:
            loss = loss + cfg.align_loss * alignment_loss(logits, shifts[part], cfg.sat_width)
        loss.backward()
        return float(loss.detach()), torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])

    torch.manual_seed(0)
    model = build_model(cfg.model_config()).to(device).eval()
    mine = slice(d.rank * cfg.batch_size, (d.rank + 1) * cfg.batch_size)
    loss, grad = loss_and_grad(training_forward(cfg, model, d, device), model, mine)
    losses = [torch.zeros(1) for _ in range(d.world)]
    dist.all_gather(losses, torch.tensor([loss]))
    torch.manual_seed(0)
    alone = build_model(cfg.model_config()).to(device).eval()
    whole = TrainForward(alone, with_logits=cfg.align_loss > 0, window_choice=cfg.window_choice)
    loss_all, grad_all = loss_and_grad(whole, alone, slice(0, n))
    return {"loss_mean_of_processes": float(torch.cat(losses).mean()), "loss_one_process": loss_all,
            "grad_max_abs_diff": float((grad - grad_all).abs().max()), "grad_max_abs": float(grad_all.abs().max())}


def main() -> None:
    d, device = setup_distributed("cpu")
    try:
        if "--gradients" in sys.argv:
            for name, flags in GRADIENT_CHECKS.items():
                result = {"name": name, **gathered_against_one_process(flags, d, device)}
                if d.main:
                    print(json.dumps(result), flush=True)
            return
        for name, flags in configurations().items():
            try:
                result = {"name": name, "ok": True, "weight_spread": three_steps(flags, d, device)}
            except Exception as exc:  # reported per configuration, so one failure names itself
                result = {"name": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:400]}
            if d.main:
                print(json.dumps(result), flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # every result is printed and the process group destroyed; leave without the interpreter's finalisation, where
    # gloo's worker threads can still release tensors and abort the process after the work is done (SIGABRT,
    # "terminate called without an active exception"; pytorch/pytorch#179291)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
