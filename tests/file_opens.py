"""Which files a piece of code opens: every Python-level opening (``open``, ``io.open``, ``os.open``, Pillow's and
pillow-heif's readers) raises the ``open`` audit event, recorded here while :func:`opened_files` is active.

A plain module (no fixtures), imported by the tests that check that a photo is opened once per query.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_recording: list[list[Path]] = []


def _on_audit(event: str, args: tuple) -> None:
    if event == "open" and _recording and isinstance(args[0], (str, bytes, os.PathLike)):
        path = Path(os.fsdecode(args[0])).resolve()
        for opened in _recording:
            opened.append(path)


sys.addaudithook(_on_audit)  # once per process: a module is imported once; inert while nothing records


@contextmanager
def opened_files() -> Iterator[list[Path]]:
    """The resolved paths opened inside the ``with`` block, in order, repeats included."""
    opened: list[Path] = []
    _recording.append(opened)
    try:
        yield opened
    finally:
        _recording.remove(opened)


def times_opened(opened: list[Path], path: str | os.PathLike) -> int:
    return opened.count(Path(path).resolve())
