"""geoapp's web app: ``python app.py`` (or ``geoapp-app``, ``python -m geoapp.app``), then open the printed address.

On a fresh machine the first start renders the synthetic world, checks its test images against the shipped model's
record and builds the reference database, with the project's own commands, showing their
progress here (a few minutes; later starts take seconds). ``--checkpoint`` and
``--reference-db`` (or GEOAPP_CHECKPOINT / GEOAPP_REFERENCE_DB) point it at other artifacts, e.g. a CVUSA
model. ``--reference-db`` takes several databases, or folders of them: each is an *area* the page and the API choose
from, all searched with the one loaded model (``geoapp.app.areas``; docs/areas.md). Host and port come from
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Gradio reads them itself).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from geoapp.app.areas import Areas, find_databases, load_areas
from geoapp.app.bootstrap import BootstrapError, DemoPaths, ensure_demo
from geoapp.app.context import DEFAULT_TOP_K
from geoapp.app.ui import CONCURRENCY, build_demo
from geoapp.model.checkpoint import LoadedCheckpoint
from geoapp.runtime import set_blas_threads
from geoapp.search_options import add_search_arguments

__all__ = ["build_demo", "main", "parse_args", "resolve_artifacts"]


def _prog() -> str:
    """How the app was started, for its usage line: ``python app.py``, ``python -m geoapp.app`` or ``geoapp-app``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "app.py"
    if name == "app.py":
        return "python app.py"
    return "python -m geoapp.app" if name in ("__main__.py", "main.py") else name


def parse_args(argv=None) -> argparse.Namespace:
    demo = DemoPaths()
    p = argparse.ArgumentParser(prog=_prog(), description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=os.environ.get("GEOAPP_CHECKPOINT"),
                   help=f"model checkpoint (env GEOAPP_CHECKPOINT; default: the demo's {demo.shipped})")
    env_dbs = os.environ.get("GEOAPP_REFERENCE_DB")
    p.add_argument("--reference-db", nargs="+", metavar="DB", default=env_dbs.split(os.pathsep) if env_dbs else None,
                   help="reference database folders, or folders of them: one area each (env GEOAPP_REFERENCE_DB, "
                        f"'{os.pathsep}'-separated; default: the demo's {demo.database})")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="candidates shown (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=CONCURRENCY,
                   help="events the server answers at once, the others wait in its queue (default %(default)s)")
    p.add_argument("--threads", type=int,
                   help="CPU threads of each query's model (default: the cores but one, for the server's own work, "
                        "shared among the events answered at once; at least 1)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1 ...")
    add_search_arguments(p)
    p.add_argument("--no-build", action="store_true",
                   help="fail with a message instead of building a missing part of the demo (world, database)")
    p.add_argument("--rebuild-model", action="store_true",
                   help="train the demo model on this CPU (the minutes-long demo-quick recipe) instead of serving the "
                        "shipped checkpoints/demo.safetensors")
    args = p.parse_args(argv)
    if not 1 <= args.top_k <= 20:
        p.error(f"--top-k must be between 1 and 20, got {args.top_k}")
    if not 1 <= args.concurrency <= 64:
        p.error(f"--concurrency must be between 1 and 64, got {args.concurrency}")
    if args.threads is None:
        args.threads = max(1, ((os.cpu_count() or 1) - 1) // args.concurrency)
    elif args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    return args


def resolve_artifacts(args: argparse.Namespace) -> tuple[Path | LoadedCheckpoint, list[Path], dict | None]:
    """The checkpoint (its path, or the demo's as its first start loaded it) and the database paths (folders of
    databases included) to load, and the accuracy record to show with them (None: the checkpoint's own). The
    default demo is made servable first (:func:`geoapp.app.bootstrap.ensure_demo`)."""
    if not args.checkpoint and not args.reference_db:
        try:
            state = ensure_demo(DemoPaths(), rebuild_model=args.rebuild_model, allow_build=not args.no_build,
                                device=args.device)
        except BootstrapError as exc:  # the failing command's own output is above it in the terminal
            raise SystemExit(f"error: {exc}") from exc
        return state.loaded or state.checkpoint, [state.database], state.accuracy
    if not (args.checkpoint and args.reference_db):
        raise SystemExit("error: give both --checkpoint and --reference-db (or GEOAPP_CHECKPOINT and "
                         "GEOAPP_REFERENCE_DB), or neither for the demo")
    checkpoint, databases = Path(args.checkpoint), [Path(p) for p in args.reference_db]
    missing = [str(p) for p in (checkpoint, *databases) if not p.exists()]
    if missing:
        raise SystemExit(f"error: {' and '.join(missing)} not found (set with --checkpoint / --reference-db or "
                         "GEOAPP_CHECKPOINT / GEOAPP_REFERENCE_DB); the app builds only the default demo itself")
    return checkpoint, databases, None


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests
    args = parse_args(argv)
    checkpoint, databases, accuracy = resolve_artifacts(args)
    # Events run in threads of one process beside Gradio's own (HTTP, the queue, files): a query on every core makes
    # PyTorch's threads wait for each other, and spin; a share of the cores but one each keeps them apart.
    torch.set_num_threads(args.threads)
    try:
        localizers, refused = load_areas(checkpoint, find_databases(databases), device=args.device, accuracy=accuracy,
                                         search=args.search, rerank=args.rerank, vector_engine=args.vector_engine,
                                         collection=args.collection)
    except (ValueError, OSError) as exc:  # CheckpointError, AreaError (e.g. no database fits): say what, stop
        print(f"error: {exc}", file=sys.stderr)
        return 2
    set_blas_threads(args.threads)  # NumPy's OpenBLAS (loaded by now) too: its idle threads spin on a core
    for name, localizer in localizers.items():  # (refused areas were logged, and the page lists them)
        print(f"[geoapp] {f'area {name!r}: ' if len(localizers) > 1 else ''}{localizer.describe()}")
    print(f"[geoapp] answering {args.concurrency} event(s) at once, {args.threads} CPU thread(s) each")
    build_demo(Areas.create(localizers, refused, top_k=args.top_k), concurrency=args.concurrency).launch(
        max_file_size="100mb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
