"""The run's machine-side settings: the compute device, the seeds and the BLAS thread pools."""

from __future__ import annotations

import ctypes
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


OPENBLAS_SYMBOLS = [f"{prefix}_{{}}_num_threads{suffix}" for prefix in ("openblas", "scipy_openblas")
                    for suffix in ("", "64_", "_64_")]  # the names NumPy's and SciPy's OpenBLAS builds export


def _openblas_libraries() -> list[ctypes.CDLL]:
    """The OpenBLAS libraries loaded in this process (NumPy's, SciPy's), from ``/proc/self/maps`` (Linux)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower()
                            and line.split()[-1].startswith("/")})
    except OSError:
        return []
    libraries = []
    for path in paths:
        try:
            libraries.append(ctypes.CDLL(path))
        except OSError:
            continue
    return libraries


def _openblas_call(library: ctypes.CDLL, verb: str):
    return next((getattr(library, name.format(verb)) for name in OPENBLAS_SYMBOLS
                 if hasattr(library, name.format(verb))), None)


def blas_threads() -> list[int]:
    """The thread count of each OpenBLAS library loaded in this process."""
    calls = [_openblas_call(library, "get") for library in _openblas_libraries()]
    return [int(call()) for call in calls if call is not None]


def set_blas_threads(count: int) -> int:
    """Let each OpenBLAS library loaded in this process (NumPy's matrix products) use ``count`` threads; returns how
    many libraries were set. An OpenBLAS thread spins for a while after each product it helped with: in a server
    whose events each own a share of the cores, a small product must not keep a second core busy."""
    done = 0
    for library in _openblas_libraries():
        call = _openblas_call(library, "set")
        if call is not None:
            call(ctypes.c_int(int(count)))
            done += 1
    return done
