"""The digest of a split's images: one sha256 that changes when any image file of any pair changes.

A shipped checkpoint records the digest of the split its figures were measured on; a machine that regenerates
the synthetic world compares its own split against it before it trusts those figures (a renderer's float
rounding or another image library can change a pixel). The digest covers every file a pair reads (ground
panorama, satellite tile and, where stored, its polar image), in split order, each with its path relative to
the dataset root, so renaming, reordering or editing one pixel changes it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

DIGEST_VERSION = 1  # bump when the rule above changes (a record of another version then reads as a mismatch)


def _pair_files(record) -> list[Path]:
    files = [record.ground_path, record.satellite_path]
    if record.polar_path is not None and Path(record.polar_path).is_file():
        files.append(record.polar_path)
    return [Path(f) for f in files]


def split_digest(dataset) -> dict:
    """``{"sha256", "pairs", "files", "version"}`` of the images of ``dataset``'s records (any layout reader)."""
    total = hashlib.sha256()
    n_files = 0
    for record in dataset.records:
        for path in _pair_files(record):
            name = path.resolve().relative_to(Path(dataset.root).resolve()).as_posix()
            total.update(name.encode("utf-8") + b"\0")
            total.update(hashlib.sha256(path.read_bytes()).digest())
            n_files += 1
    return {"sha256": total.hexdigest(), "pairs": len(dataset.records), "files": n_files, "version": DIGEST_VERSION}
