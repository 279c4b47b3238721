"""Small shared helpers: atomic writes, hashing, provenance (code revision, command line), seeding."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
SPACE_STORAGE = Path("/data")  # a Hugging Face Space's persistent storage, when the Space has it enabled


def config_to_dict(config) -> dict:
    """A config dataclass as a JSON-ready dict (its tuple fields as lists): what checkpoints and runs record."""
    d = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def config_from_dict(cls, d: dict, what: str | None = None):
    """Rebuild the config dataclass ``cls`` from :func:`config_to_dict`'s record. A field it does not know is an
    error that names the known ones (a record from other code is never half-read); lists return to tuples."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown {what or cls.__name__} fields {unknown}; known fields are {sorted(fields)}")
    values = {k: tuple(v) if isinstance(v, list) and str(fields[k].type).startswith("tuple") else v
              for k, v in d.items()}
    return cls(**values)


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
    if not (REPO_ROOT / "pyproject.toml").is_file():
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


def code_revision() -> str:
    """The git commit of this checkout, with ``+dirty`` when tracked files differ; ``unknown`` outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command_line() -> str:
    """The command that is running, as a user would type it (``python -m geoapp.x ...``)."""
    argv = list(sys.argv)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        name = spec.name[: -len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        argv = ["python", "-m", name, *argv[1:]]
    else:
        argv = ["python", *argv]
    return shlex.join(argv)


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
