"""Fork-based parallel map over shared, read-only state (the world is built once and inherited
copy-on-write by the workers; results that are large are written by the workers straight into arrays
in shared memory, see :func:`shared_zeros`)."""

from __future__ import annotations

import mmap
import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator

import cv2
import numpy as np

WORKER_STATE: dict = {}  # what the workers read; set before forking, cleared afterwards


def shared_zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A zero-filled array in anonymous shared memory (MAP_SHARED): visible to and from forked children."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    buf = mmap.mmap(-1, max(1, count * dtype.itemsize))
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)


def fork_map(func: Callable, items: Iterable, workers: int, state: dict, ordered: bool = False) -> Iterator:
    """Yield ``func(item)`` for every item, computed by ``workers`` forked processes (in this process when
    ``workers`` <= 1). ``func`` reads :data:`WORKER_STATE`, which holds ``state`` while the map runs."""
    WORKER_STATE.update(state)
    try:
        if workers <= 1:
            yield from map(func, items)
            return
        # One OpenCV thread per worker. It must be set before forking: calling cv2.setNumThreads in a
        # forked child whose parent had started OpenCV's thread pool deadlocks.
        cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            with mp.get_context("fork").Pool(workers) as pool:
                yield from (pool.imap if ordered else pool.imap_unordered)(func, items)
        finally:
            cv2.setNumThreads(cv_threads)
    finally:
        WORKER_STATE.clear()
