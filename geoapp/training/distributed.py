"""Device, precision and multi-process (torchrun) helpers: one code path for CPU, one GPU and many GPUs.

``torchrun --nproc_per_node=N -m geoapp.train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; we then join a
process group (NCCL on GPUs, gloo on CPU) and wrap the model in DistributedDataParallel. Each process
trains on its own batch of ``batch_size`` pairs; its anchors mine their batch-hard negatives among every process's
batch (:func:`gather_across_ranks`; ``--negatives per-rank``: within its own batch, as a single-GPU run with the
same per-GPU batch would); gradients are averaged by DDP.
BatchNorm statistics are per process (no SyncBatchNorm), also as in a single-GPU run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..model import StageMaps
from ..runtime import resolve_device


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on at least one (for stopping together)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0])
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def mean(self, value: float) -> float:
        if not self.enabled:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return float(t.item()) / self.world


def setup_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Join the torchrun process group when there is one; return it and this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world <= 1:
        return Dist(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return Dist(rank, world, local_rank), device


class _GatherWithGradient(torch.autograd.Function):
    """all_gather whose backward sends every process's gradient of the gathered tensor back to its owner: summed
    over the processes (all_reduce, which gloo and NCCL both have), this process's rows kept."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows = slice(dist.get_rank() * len(tensor), (dist.get_rank() + 1) * len(tensor))
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rows]


def gather_across_ranks(maps: StageMaps) -> tuple[StageMaps, int]:
    """Every process's ``maps`` joined in rank order, with gradients flowing back to each process's own, and the
    position of this process's batch in them. Every process's batch has the same size."""
    return maps._map(_GatherWithGradient.apply), dist.get_rank() * len(maps)


def cleanup_distributed(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("fp16 autocast is for GPUs; use --precision bf16 (or fp32) on CPU")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
