"""Loading the pieces a localizer serves and checking that they fit: the checkpoint (loaded once, shared by several
databases: :class:`geoapp.model.checkpoint.LoadedCheckpoint`, named here too), which search a database gets, and the
process's allocator setting."""

from __future__ import annotations

from ..allocator import keep_freed_buffers
from ..model.checkpoint import LoadedCheckpoint
from ..search_options import SEARCH_MODES, TWO_STAGE_FROM

__all__ = ["LoadedCheckpoint", "choose_search", "tune_allocator"]  # LoadedCheckpoint: geoapp.model.checkpoint's


def tune_allocator() -> bool:
    """Keep large freed buffers in the heap instead of returning them to the OS (:mod:`geoapp.allocator`).

    Every alignment chunk allocates the same few tens of MB of temporaries (window columns upcast to float32).
    By default glibc serves blocks over 32 MB with fresh ``mmap``s and unmaps them on free, so every chunk pays
    page faults and kernel zeroing for all of its temporaries, which cost more than the search's arithmetic; kept
    in the heap, they are faulted in once. The cost is that the process keeps its peak heap (a few hundred MB)
    instead of trimming it.
    """
    return keep_freed_buffers(mmap_threshold=1 << 30, trim_threshold=2 << 30, top_pad=64 << 20)


def choose_search(mode: str, db) -> str:
    """``exhaustive`` or ``two-stage`` for a database: ``auto`` takes the two-stage search from
    :data:`TWO_STAGE_FROM` references on when the database has its first stage; asked for explicitly, a missing first
    stage is an error that says how to build one."""
    if mode not in SEARCH_MODES:
        raise ValueError(f"search must be one of {SEARCH_MODES}, got {mode!r}")
    has_first_stage = db.has("first_stage_blocks")
    if mode == "two-stage" and not has_first_stage:
        raise ValueError(f"the two-stage search needs the database's first stage, and {db.path} has none (built with "
                         "--first-stage-dims 0): rebuild it with build_db's default --first-stage-dims")
    if mode == "auto":
        return "two-stage" if has_first_stage and len(db) >= TWO_STAGE_FROM else "exhaustive"
    return mode
