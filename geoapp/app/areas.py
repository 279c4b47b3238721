"""The areas the app serves: one reference database each, all searched with one model loaded once.

``--reference-db`` names database folders (each holds ``metadata.json``) or folders of them; each database is an
*area* named after its folder. A database only fits the satellite branch that built it, so each one's recorded
checkpoint is compared with the loaded one: a database that does not fit is not served, and the log and the page
say which and how to rebuild it. Start-up fails only when no database fits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from geoapp.retrieval.codes import DEFAULT_STORE, store_kind
from geoapp.retrieval.database import METADATA_NAME, read_database_metadata
from geoapp.retrieval.engine import Localizer
from geoapp.retrieval.loading import LoadedCheckpoint

from .context import DEFAULT_TOP_K, EXAMPLE_COUNT, AppContext
from .mapview import AreaBox

log = logging.getLogger(__name__)


class AreaError(ValueError):
    """The reference databases given cannot be served: none found, two with one name, or none fits the model."""


# ------------------------------------------------------------------------------------------- finding them


def find_databases(paths) -> list[Path]:
    """The database folders named by ``paths``: each is a database (it holds ``metadata.json``) or a folder whose
    database folders are taken in name order. The same folder named twice counts once."""
    found: list[Path] = []
    seen: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise AreaError(f"{path} not found: give reference database folders (or folders of them)")
        if (path / METADATA_NAME).is_file():
            inside = [path]
        else:
            inside = sorted(p for p in path.iterdir() if (p / METADATA_NAME).is_file()) if path.is_dir() else []
        if not inside:
            raise AreaError(f"{path} holds no reference database: neither it nor a folder inside it has a "
                            f"{METADATA_NAME} (build one with `python -m geoapp.build_db ... --out {path}/NAME`)")
        for database in inside:
            if database.resolve() not in seen:
                seen.add(database.resolve())
                found.append(database)
    return found


def area_names(databases: list[Path]) -> dict[str, Path]:
    """Each database by its area name, its folder name; two folders of one name are an error (the name is what the
    page and the API choose an area by)."""
    named: dict[str, Path] = {}
    for path in databases:
        other = named.setdefault(path.name, path)
        if other != path:
            raise AreaError(f"two reference databases are both named {path.name!r} ({other} and {path}); an area is "
                            "named after its folder, so rename one of them")
    return named


# ------------------------------------------------------------------------------------------- the fit check


def _source_arguments(metadata: dict) -> list[str] | None:
    """build_db's source options that rebuild what ``metadata`` records, or None when it does not say enough."""
    source = metadata.get("source", {})
    parts = source.get("parts", [source])
    if parts and all(p.get("kind") == "dataset" for p in parts) and len(
            {(p.get("dataset"), p.get("root")) for p in parts}) == 1:
        return ["--dataset", parts[0]["dataset"], "--data-root", parts[0]["root"],
                "--split", ",".join(p["split"] for p in parts)]
    if source.get("kind") == "tiles":
        return ["--tiles", source["tiles_dir"], "--locations", source["locations_csv"]]
    if source.get("kind") == "raster" and source.get("spacing_metres"):
        return ["--raster", source["raster"], "--spacing", f"{source['spacing_metres']:g}"]
    return None


def rebuild_command(path: Path, metadata: dict, checkpoint: Path) -> str:
    """The build_db command that rebuilds the database at ``path`` from its recorded source with ``checkpoint``."""
    source = _source_arguments(metadata)
    store = store_kind(metadata.get("store", DEFAULT_STORE.name))
    calibrated = (metadata.get("calibration") or {}).get("split")
    tail = (["--store", store.name] if store is not DEFAULT_STORE else []) + (
        ["--calibrate", calibrated] if calibrated else [])
    return " ".join([shlex.join(["python", "-m", "geoapp.build_db", "--checkpoint", str(checkpoint)]),
                     shlex.join(source) if source else "<the source it was built from>",
                     shlex.join(["--out", str(path), *tail, "--overwrite"])])


def fit_problem(name: str, path: Path, loaded: LoadedCheckpoint) -> str | None:
    """Why the database at ``path`` does not fit the loaded checkpoint, or None when it does: its features come
    from the satellite branch of the checkpoint it records, and only that one's ground branch can be matched
    with them. Raises :class:`~geoapp.retrieval.database.DatabaseError` for an unreadable database."""
    metadata = read_database_metadata(path)
    built = metadata["checkpoint"].get("sha256") or "unknown"
    if built == loaded.sha256:
        return None
    return (f"area {name!r} was built with checkpoint {built[:12]}… ({metadata['checkpoint'].get('name')}), not the "
            f"loaded {loaded.path.name} {loaded.sha256[:12]}…: rebuild it with "
            f"`{rebuild_command(path, metadata, loaded.path)}`")


def load_areas(checkpoint: str | os.PathLike | LoadedCheckpoint, databases: list[Path], device: str = "auto",
               **options) -> tuple[dict[str, Localizer], dict[str, str]]:
    """Load ``checkpoint`` once (unless it is loaded already) and a localizer (``options``: :class:`Localizer`'s) for
    each database that fits it; returns them by area name, and the refused areas with the reason (also logged).
    Raises :class:`AreaError` when none can be served."""
    named = area_names(databases)
    loaded = LoadedCheckpoint.of(checkpoint, device)
    served: dict[str, Localizer] = {}
    refused: dict[str, str] = {}
    for name, path in named.items():
        try:
            problem = fit_problem(name, path, loaded)
            if problem is None:
                served[name] = Localizer(loaded, path, **options)
        except (ValueError, OSError) as exc:  # DatabaseError (e.g. another model's config), a missing first stage
            problem = f"area {name!r} ({path}) cannot be served: {exc}"
        if problem is not None:
            refused[name] = problem
            log.warning("not serving %s", problem)
    if not served:
        raise AreaError("no reference database can be served with the loaded checkpoint:\n"
                        + "\n".join(f"- {reason}" for reason in refused.values()))
    return served, refused


# ------------------------------------------------------------------------------------------- serving them


@dataclass
class Areas:
    """The served areas in order (the first is the default) and the refused ones with the reason. With several
    areas every context carries every area's box, so its maps draw them all."""

    contexts: dict[str, AppContext]
    refused: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if not self.contexts:
            raise AreaError("an app serves at least one area")
        if len(self.contexts) > 1:
            boxes = self.boxes()
            self.contexts = {name: dataclasses.replace(ctx, area_boxes=boxes) for name, ctx in self.contexts.items()}

    @classmethod
    def create(cls, localizers: dict[str, Localizer], refused: dict[str, str] | None = None,
               top_k: int = DEFAULT_TOP_K, cache_root: str | os.PathLike | None = None,
               example_count: int = EXAMPLE_COUNT) -> Areas:
        """Each area's context (its examples, world image) from its localizer; ``cache_root``: a folder per area
        there instead of the default cache."""
        return cls({name: AppContext.create(loc, top_k, None if cache_root is None else Path(cache_root) / name,
                                            example_count) for name, loc in localizers.items()}, dict(refused or {}))

    @classmethod
    def of(cls, ctx: AppContext) -> Areas:
        return cls({ctx.name: ctx})

    @property
    def names(self) -> list[str]:
        return list(self.contexts)

    @property
    def first(self) -> AppContext:
        return next(iter(self.contexts.values()))

    def __len__(self) -> int:
        return len(self.contexts)

    def boxes(self) -> tuple[AreaBox, ...]:
        """Each area's coverage box (areas whose tiles have no coordinates have none)."""
        out = []
        for name, ctx in self.contexts.items():
            box = ctx.localizer.coverage()["box"]
            if box is not None:
                out.append(AreaBox(name, *box, references=len(ctx.localizer.db)))
        return tuple(out)

    def choices(self) -> list[tuple[str, str]]:
        """The area dropdown's (label, value) pairs: each name with its size."""
        return [(f"{name} ({len(ctx.localizer.db):,} references)", name) for name, ctx in self.contexts.items()]

    def report(self) -> str:
        """The refused areas and why, for the page; empty when every area is served."""
        if not self.refused:
            return ""
        heading = f"**Not served ({len(self.refused)} of {len(self.refused) + len(self)} areas):**"
        return heading + "\n\n" + "\n".join(f"- {reason}" for reason in self.refused.values())
