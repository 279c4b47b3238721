"""``python -m geoapp.bench <name> [options]``: dispatch to ``geoapp.bench.<name>:main`` (names: ``SUBCOMMANDS``).

Subcommands are imported only when chosen, so one benchmark's imports (or absence) never affect another.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "search": "search engine: database build, storage, query latency, two-stage recall",
    "model": "model core: branch latency, training step, alignment cost",
    "data": "data pipeline: decoding, polar transform, loading throughput",
    "answers": "calibrated confidence, location prior and several photos, on the test split",
    "memory": "peak memory of evaluating a CVUSA-size gallery (target <= 4 GB on CPU)",
    "gpu": "training step, evaluation and search on CUDA beside the CPU (says so and exits without a GPU)",
    "vector_engine": "the two-stage search's first stage in Milvus Lite against FAISS: upload, latency, agreement",
    "familiarity": "which photos the familiarity test flags: in-world, real panoramas and photos, non-photos",
    "serve": "the web app under N concurrent API clients: server CPU per answer, round trips, beside a bare app",
}


def usage() -> str:
    lines = ["usage: python -m geoapp.bench {" + ",".join(SUBCOMMANDS) + "} [options]", ""]
    lines += [f"  {name:<8}{what}" for name, what in SUBCOMMANDS.items()]
    lines += ["", "python -m geoapp.bench <name> --help shows a benchmark's options"]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"unknown benchmark {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"geoapp.bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"geoapp.bench.{name}":
            raise
        print(f"the {name!r} benchmark is not available in this checkout (geoapp/bench/{name}.py is missing)",
              file=sys.stderr)
        return 2
    sys.argv = [f"python -m geoapp.bench {name}", *rest]
    result = module.main(rest)
    return result if isinstance(result, int) else 0  # some benchmarks return their figures (a dict)


if __name__ == "__main__":
    sys.exit(main())
