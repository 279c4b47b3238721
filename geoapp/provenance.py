"""What a run and an artifact record about themselves: the code revision, the command line, and configs as JSON-ready
records (read back strictly)."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys

from .files import REPO_ROOT


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
