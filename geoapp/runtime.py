"""The run's machine-side settings: the compute device and the seeds."""

from __future__ import annotations

import random

import numpy as np


def resolve_device(device="auto"):
    """A torch device from ``auto`` (the GPU when there is one), ``cpu``, ``cuda``, ``cuda:1``...; asking for CUDA
    where torch sees none is an error that says so, not a crash at the first tensor."""
    import torch

    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeding the global stream is the point here
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # torch-free tools (e.g. the synthetic world) still seed NumPy
        pass
