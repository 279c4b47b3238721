"""Files: where built things live (the repository, ``GEOAPP_HOME``, a Space's storage), atomic writes that never
leave a half-written file, and sha256 digests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent
SPACE_STORAGE = Path("/data")  # a Hugging Face Space's persistent storage, when the Space has it enabled
SHIPPED_IN_PACKAGE = "checkpoints"  # where the wheel carries the repository's checkpoints/ files (setup.py)


def in_checkout() -> bool:
    """Whether this code runs from a checkout (or an editable install) rather than from an installed package."""
    return (REPO_ROOT / "pyproject.toml").is_file()


def shipped_file(name: str) -> Path:
    """A file the repository ships in ``checkpoints/`` (the demo model and its world record): that file in a checkout;
    in an installed package the copy its wheel carries in ``geoapp/checkpoints/``, made from it at build time."""
    return REPO_ROOT / "checkpoints" / name if in_checkout() else PACKAGE_DIR / SHIPPED_IN_PACKAGE / name


def home_dir() -> Path:
    """Where built things go (data/, runs/, checkpoints/, reference_db/): ``GEOAPP_HOME`` when set; on a Hugging
    Face Space with persistent storage ``/data/geoapp`` (a Space restarts on a fresh disk, ``/data`` survives);
    else the repository itself, or ``~/.geoapp`` for an installed package (``pip install .``: the package then
    lives in site-packages, which is no place for gigabytes of built data)."""
    env = os.environ.get("GEOAPP_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if os.environ.get("SPACE_ID") and SPACE_STORAGE.is_dir() and os.access(SPACE_STORAGE, os.W_OK):
        return SPACE_STORAGE / "geoapp"
    if not in_checkout():
        return Path.home() / ".geoapp"
    return REPO_ROOT


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``.

    A crash or an exception leaves the old file (or no file) in place, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry (a rename inside it) to disk; a no-op where the OS does not allow it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
