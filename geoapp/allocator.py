"""Keeping large freed buffers in the process: glibc's ``mallopt``, set in one place for the whole process.

By default glibc serves blocks over 32 MB with fresh ``mmap``s, unmaps them on free and trims the heap's top above
128 kB, so a loop that allocates and frees the same large temporaries pays page faults and kernel zeroing every
time. Callers ask for the thresholds their work needs; the largest value asked for so far wins, so a later caller
never undoes an earlier one's setting. Linux with glibc only; elsewhere nothing changes and the answer is False.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameter numbers (malloc.h)
_applied: dict[int, int] = {}


def keep_freed_buffers(mmap_threshold: int, trim_threshold: int, top_pad: int = 0) -> bool:
    """Serve blocks up to ``mmap_threshold`` bytes from the heap, trim it only above ``trim_threshold`` and grow
    it ``top_pad`` bytes at a time (process-wide). True when glibc took every setting in force."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    wanted = {M_MMAP_THRESHOLD: mmap_threshold, M_TRIM_THRESHOLD: trim_threshold, M_TOP_PAD: top_pad}
    ok = True
    for param, value in wanted.items():
        value = max(value, _applied.get(param, 0))
        if value and _applied.get(param) != value:
            try:
                if not libc.mallopt(param, value):
                    ok = False
                    continue
            except AttributeError:  # a libc without mallopt (musl)
                return False
            _applied[param] = value
    return ok
