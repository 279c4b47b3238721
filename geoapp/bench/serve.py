"""``python -m geoapp.bench serve``: the web app under a crowd of API clients, beside Gradio's own cost.

    python -m geoapp.bench serve                                  # the demo's checkpoint and database
    python -m geoapp.bench serve --clients 1 16 --queries 16 2 --checkpoint X --reference-db Y
    python -m geoapp.bench serve --follow views                   # also each answer followed by /views, as a page
    python -m geoapp.bench serve --no-bare --app-args "--concurrency 2 --threads 1"   # the app's own options
    python -m geoapp.bench serve --app-dir /tmp/other-clone --checkpoint X --reference-db Y   # another checkout's app

Starts the real app (``python app.py`` of this checkout, or of ``--app-dir``, in a subprocess started from the
current directory) and drives its ``/localize`` event with N concurrent ``gradio_client`` clients, each sending
``--queries`` photos one after another (uploaded, answered, every output file downloaded, as a page would). The
photos are 90° crops of the database's own split (``--photos`` to send others). For every client count it prints:

- answers and dropped answers (an exception in the client: a refused or closed connection, a server error);
- answers/s over the run's wall time, and the round trip's p50 / p90 (the client's ``predict`` call);
- the server's CPU time per answer: the server process's ``utime + stime`` (``/proc/PID/stat``) over the run,
  every thread included, divided by the answers;
- what else ran: the cores other processes kept busy during the run (``/proc/stat``'s busy time less the server's
  and this process's, whose threads are the clients);
- the stages: the engine's own time (``Localizer.localize``'s timings, read from the answer's status line) as a
  share of the mean round trip, Gradio's own share (the bare app's mean round trip at the same client count over
  the real one's) and the rest (the app's pictures, map and texts, and waiting for them).

Then the same figures for a *bare app*: the real app's ``/localize`` interface (its input and output components,
read from the running app's ``/config``) answering instantly with fixed values, the pictures, map, texts and JSON
of one real answer. Its CPU per answer and round trip are what Gradio itself costs for this interface. Both servers
run one after the other in the same invocation, never at once. The clients run in this process, on the same CPU.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from ..files import REPO_ROOT, atomic_write_json
from ..training.precision import cpu_description

API_NAME = "localize"
FILE_TYPES = ("image", "gallery", "file")  # output components whose values are files
STATE_TYPES = ("state",)  # outputs that never reach an API client
ENGINE_RE = re.compile(r"query took ([0-9.]+) s \(([^)]*)\)")
STAGE_RE = re.compile(r"([a-z_ ]+?) ([0-9.]+) ms")
READY_TIMEOUT_S = 600.0  # a first start may still load a large database
BARE_PROPS = ("type", "file_count", "choices", "minimum", "maximum", "format", "image_mode", "columns", "rows",
              "precision")


# ------------------------------------------------------------------------------------------- arithmetic


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (``/proc/PID/stat`` fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": field 3 (state) is fields[0]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all the machine's cores have spent busy since boot (``/proc/stat``: everything but idle and
    iowait)."""
    with open("/proc/stat", encoding="ascii") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def parse_engine_timings(text: str) -> dict[str, float] | None:
    """The engine's own seconds from an answer's status line ("query took T s (preprocess P ms, encode E ms,
    ...)"): ``total`` and each stage; None when the text has none."""
    match = ENGINE_RE.search(text)
    if match is None:
        return None
    stages = {name.strip(): float(ms) / 1000.0 for name, ms in STAGE_RE.findall(match.group(2))}
    return {"total": float(match.group(1)), **stages}


@dataclass
class Run:
    """What one crowd of clients measured: each answer's round trip (s), each dropped answer's reason, the engine's
    timings of the answers that carried them, the wall time, the server's CPU seconds over the run, and the CPU
    seconds the rest of the machine spent (every core's busy time less the server's and the clients' own)."""

    round_trips: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    engine: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    others_s: float = 0.0


def summarize(run: Run) -> dict:
    """The figures of a run: answered, dropped, answers/s (answers over the wall time), round trip p50 / p90 / mean
    (s), server CPU ms per answer, the cores other work kept busy on average and, when the answers carried them, the
    engine's mean ms per stage and its share of the mean round trip."""
    answered = len(run.round_trips)
    trips = np.asarray(run.round_trips, dtype=np.float64)
    out = {
        "answered": answered, "dropped": len(run.errors),
        "answers_per_s": answered / run.wall_s if run.wall_s > 0 else 0.0,
        "p50_s": float(np.percentile(trips, 50)) if answered else float("nan"),
        "p90_s": float(np.percentile(trips, 90)) if answered else float("nan"),
        "mean_s": float(trips.mean()) if answered else float("nan"),
        "cpu_ms_per_answer": run.cpu_s * 1000.0 / answered if answered else float("nan"),
        "others_cores": run.others_s / run.wall_s if run.wall_s > 0 else float("nan"),
        "wall_s": run.wall_s, "cpu_s": run.cpu_s,
    }
    if run.engine:
        stages = {k: float(np.mean([e.get(k, 0.0) for e in run.engine])) * 1000.0 for k in run.engine[0]}
        out["engine_ms"] = stages
        out["engine_share"] = stages["total"] / (out["mean_s"] * 1000.0) if answered else float("nan")
    if run.errors:
        kinds: dict[str, int] = {}
        for e in run.errors:
            kinds[e] = kinds.get(e, 0) + 1
        out["errors"] = kinds
    return out


def stage_shares(real: dict, bare: dict) -> dict[str, float]:
    """Where a real answer's mean round trip goes: the engine's own time, Gradio's (the bare app's mean round trip
    at the same client count) and the rest (the app's pictures, map and texts, and the waits for them); shares of
    1 (the rest may come out negative when the bare app's waits exceed the real one's, which they should not)."""
    engine = real.get("engine_share", 0.0)
    gradio = bare["mean_s"] / real["mean_s"]
    return {"engine": engine, "gradio": gradio, "rest": 1.0 - engine - gradio}


# --------------------------------------------------------------------------------------------- servers


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait until the Gradio server at ``url`` answers its ``/config``; a server that exits first is an error with
    its log's tail."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} before serving; the end of its "
                               f"log ({log}):\n{tail(log)}")
        try:
            if httpx.get(f"{url}/config", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server did not answer within {timeout_s:.0f} s; the end of its log ({log}):\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


class Server:
    """A server subprocess on 127.0.0.1:``port``, its output in ``log``; stopped (and waited for) on exit."""

    def __init__(self, command: list[str], port: int, log: Path, cwd: str | os.PathLike | None = None):
        env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
               "GRADIO_ANALYTICS_ENABLED": "False"}
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._fh = open(log, "w", encoding="utf-8")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=self._fh, stderr=subprocess.STDOUT)

    def __enter__(self) -> Server:
        try:
            wait_ready(self.url, self.process, self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._fh.close()


def app_command(args: argparse.Namespace) -> list[str]:
    """``python app.py`` of this checkout or ``--app-dir``, with the artifacts given (none: the demo, not built)."""
    app = Path(args.app_dir or REPO_ROOT) / "app.py"
    if not app.is_file():
        raise SystemExit(f"error: {app} not found (--app-dir must be a checkout of this project)")
    command = [sys.executable, str(app), *shlex.split(args.app_args)]
    if args.checkpoint:
        command += ["--checkpoint", str(args.checkpoint), "--reference-db", str(args.reference_db)]
    else:
        command += ["--no-build"]
    return command


# ------------------------------------------------------------------------------------------- the clients


def query_photos(args: argparse.Namespace, folder: Path) -> tuple[list[str], str]:
    """The photos to send and the kind of image they are (a ``PHOTO_TYPES`` label): ``--photos`` as phone photos,
    else 90° crops of the database's own split, written to ``folder``, as panorama crops."""
    from ..app.handlers import PHOTO_TYPES

    phone, crop = list(PHOTO_TYPES)
    if args.photos:
        photos = [str(p) for p in args.photos]
        missing = [p for p in photos if not os.path.isfile(p)]
        if missing:
            raise SystemExit(f"error: {', '.join(missing)} not found")
        return photos, phone
    from ..app.bootstrap import DemoPaths
    from ..app.examples import write_examples

    database = Path(args.reference_db) if args.reference_db else DemoPaths().database
    try:
        source = json.loads((database / "metadata.json").read_text(encoding="utf-8"))["source"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"error: cannot read the database {database} ({exc}); build the demo first with "
                         "`python app.py`, or give --checkpoint and --reference-db") from exc
    if source.get("kind") != "dataset":
        raise SystemExit(f"error: {database} was not built from a dataset split: give the photos to send with --photos")
    examples = write_examples(folder, source["dataset"], source["root"], source["split"], 90.0, args.distinct_photos)
    return [str(examples.path(e)) for e in examples.examples], crop


def run_threads(targets) -> None:
    """Call each of ``targets`` in a thread of its own, all at once, and wait for them all."""
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def connect_clients(url: str, clients: int) -> list:
    """``clients`` gradio clients of the app at ``url``, connected in parallel."""
    from gradio_client import Client

    connected = [None] * clients

    def connect(i: int) -> None:
        connected[i] = Client(url, verbose=False)

    run_threads([lambda i=i: connect(i) for i in range(clients)])
    if any(c is None for c in connected):
        raise RuntimeError(f"only {sum(c is not None for c in connected)} of {clients} clients could connect to {url}")
    return connected


def send_photos(client, photos: list[str], first: int, queries: int, photo_type: str, follow: str | None,
                engine: bool, run: Run, lock: threading.Lock, last: list) -> None:
    """One client's ``queries`` photos in turn, from ``photos[first]`` on (and ``follow`` after each answer, inside
    its round trip); each round trip, dropped answer and engine timing goes into ``run``, the last answer into
    ``last``."""
    from gradio_client import handle_file

    for q in range(queries):
        photo = photos[(first + q) % len(photos)]
        t0 = time.perf_counter()
        try:
            result = client.predict(handle_file(photo), 90.0, photo_type, api_name=f"/{API_NAME}")
            if follow:
                client.predict(api_name=f"/{follow}")
        except Exception as exc:  # a dropped answer: counted with its reason, the client goes on
            with lock:
                run.errors.append(f"{type(exc).__name__}: {str(exc)[:100]}")
            continue
        elapsed = time.perf_counter() - t0
        texts = [v for v in result if isinstance(v, str)] if engine else []
        timings = next((t for t in map(parse_engine_timings, texts) if t is not None), None)
        with lock:
            run.round_trips.append(elapsed)
            if timings is not None:
                run.engine.append(timings)
            last[:] = [result]


def drive(url: str, photos: list[str], photo_type: str, clients: int, queries: int, server_pid: int,
          engine: bool = True, follow: str | None = None) -> tuple[Run, list | None]:
    """``clients`` clients (connected first, then started together), each sending ``queries`` photos in turn (and
    calling the event ``follow``, without arguments, after each answer, inside its round trip); the run's figures
    (with the engine's timings read from the answers when ``engine``) and the last answer."""
    connected = connect_clients(url, clients)
    run, lock, last = Run(), threading.Lock(), []
    start = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        start.wait()
        send_photos(connected[i], photos, i * queries, queries, photo_type, follow, engine, run, lock, last)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for w in workers:
        w.start()
    cpu0, busy0, own0 = cpu_seconds(server_pid), machine_busy_seconds(), time.process_time()
    t0 = time.perf_counter()
    start.wait()
    for w in workers:
        w.join()
    run.wall_s = time.perf_counter() - t0
    run.cpu_s = cpu_seconds(server_pid) - cpu0
    run.others_s = max(machine_busy_seconds() - busy0 - run.cpu_s - (time.process_time() - own0), 0.0)
    # closed (their heartbeat connections too), so no run pays for an earlier run's idle clients
    run_threads([c.close for c in connected])
    return run, (last[0] if last else None)


# ------------------------------------------------------------------------------------------- the bare app


def interface_spec(url: str, result, files: Path) -> dict:
    """The ``/localize`` event of the app at ``url`` (its input and output components, from ``/config``) and one
    real answer's values (``result``, as ``gradio_client`` returned it; its files copied to ``files``): what the
    bare app serves."""
    import httpx

    url = url.rstrip("/")
    config = httpx.get(f"{url}/config", timeout=30).json()
    event = next((d for d in config["dependencies"] if d.get("api_name") == API_NAME), None)
    if event is None:
        raise RuntimeError(f"the app at {url} has no /{API_NAME} event")
    components = {c["id"]: c for c in config["components"]}

    def described(cid: int, keys=BARE_PROPS) -> dict:
        c = components[cid]
        return {"type": c["type"], "props": {k: c["props"][k] for k in keys if k in c["props"]}}

    outputs = [described(i) for i in event["outputs"]]
    values = list(result)
    if len(values) != sum(o["type"] not in STATE_TYPES for o in outputs):
        raise RuntimeError(f"the answer has {len(values)} values for {len(outputs)} outputs")
    files.mkdir(parents=True, exist_ok=True)

    def kept(path) -> str | None:
        if path is None:
            return None
        target = files / f"{len(list(files.iterdir()))}{Path(path).suffix}"
        shutil.copyfile(path, target)
        return str(target)

    it = iter(values)
    for out in outputs:
        if out["type"] in STATE_TYPES:
            out["value"] = None
            continue
        value = next(it)
        if out["type"] == "gallery":
            value = [[kept(item.get("image") or item.get("video")), item.get("caption")] for item in value or []]
        elif out["type"] in FILE_TYPES:
            value = [kept(v) for v in value] if isinstance(value, list) else kept(value)
        out["value"] = value
    # the parameters keep their names and defaults: a client may leave the optional ones out, as with the real app
    info = httpx.get(f"{url}{config.get('api_prefix', '')}/info", timeout=30).json()
    parameters = [{"name": q["parameter_name"], "default": q["parameter_default"]} if q["parameter_has_default"]
                  else {"name": q["parameter_name"]} for q in info["named_endpoints"][f"/{API_NAME}"]["parameters"]]
    inputs = [described(i, (*BARE_PROPS, "value")) for i in event["inputs"]]
    return {"api_name": API_NAME, "inputs": inputs, "parameters": parameters, "outputs": outputs}


def output_shape(value):
    """A value's structure without its content: the type of each leaf, the keys of each dict, the length of each
    list (a file is a "file"), to compare two apps' answers."""
    if isinstance(value, dict):
        return {k: output_shape(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [output_shape(v) for v in value]
    if isinstance(value, str) and os.path.isfile(value):
        return "file"
    return type(value).__name__


def build_bare_app(spec: dict, concurrency: int):
    """The bare app: ``spec``'s components, its event answering instantly with ``spec``'s fixed values (the files
    placed in Gradio's cache folder once, so each answer is served as the real app's pictures are)."""
    import gradio as gr
    from gradio import utils as gradio_utils
    from gradio.components.base import get_component_instance

    cache = Path(gradio_utils.get_upload_folder()) / "geoapp-bench-bare"
    cache.mkdir(parents=True, exist_ok=True)

    def cached(path: str | None) -> str | None:
        if path is None:
            return None
        target = cache / f"{os.getpid()}-{Path(path).name}"
        if not target.exists():
            shutil.copyfile(path, target)
        return str(target)

    values = []
    for out in spec["outputs"]:
        value = out["value"]
        if out["type"] == "gallery":
            value = [(cached(image), caption) for image, caption in value]
        elif out["type"] in FILE_TYPES:
            value = [cached(v) for v in value] if isinstance(value, list) else cached(value)
        values.append(value)
    answer = tuple(values)

    def instantly(*_args):
        return answer

    # the real event's parameter names and defaults (Gradio reads them from the function's signature)
    instantly.__signature__ = inspect.Signature([
        inspect.Parameter(q["name"], inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          default=q.get("default", inspect.Parameter.empty)) for q in spec["parameters"]])

    with gr.Blocks(analytics_enabled=False) as demo:
        inputs = [get_component_instance({"name": c["type"], **c["props"]}, render=True) for c in spec["inputs"]]
        outputs = [get_component_instance({"name": c["type"], **c["props"]}, render=True) for c in spec["outputs"]]
        button = gr.Button()
        button.click(instantly, inputs=inputs, outputs=outputs, api_name=spec["api_name"], preprocess=False)
    return demo.queue(default_concurrency_limit=concurrency)


def serve_bare(spec_path: str, concurrency: int) -> int:
    """Serve the bare app of a spec file (GRADIO_SERVER_NAME / _PORT), until stopped."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    build_bare_app(spec, concurrency).launch(quiet=True)
    return 0


# ----------------------------------------------------------------------------------------------- report


def measure(label: str, server: Server, photos: list[str], photo_type: str, args, engine: bool = True,
            follow: str | None = None) -> tuple[dict, object]:
    """Warm the server up, then one run per client count; the summaries and one answer."""
    sample = None
    for _ in range(args.warmup):  # first queries pay for lazy imports, caches and the allocator
        _, sample = drive(server.url, photos, photo_type, 1, 1, server.process.pid, engine, follow)
    results = {}
    for n, queries in zip(args.clients, args.queries):
        run, answer = drive(server.url, photos, photo_type, n, queries, server.process.pid, engine, follow)
        sample = answer or sample
        results[n] = summarize(run)
        print(row(label, n, results[n]), flush=True)
    return results, sample


HEADER = (f"{'app':<8} {'others':>6} {'clients':>7} {'answers':>7} {'dropped':>7} {'answers/s':>9} {'p50 s':>6} "
          f"{'p90 s':>6} {'server CPU ms/answer':>20}  engine ms (share of the round trip)")


def row(label: str, clients: int, s: dict) -> str:
    engine = ""
    if "engine_ms" in s:
        parts = ", ".join(f"{k} {v:.0f}" for k, v in s["engine_ms"].items() if k != "total")
        engine = f"{s['engine_ms']['total']:.0f} ({s['engine_share'] * 100:.0f} %; {parts})"
    line = (f"{label:<8} {s['others_cores']:>6.2f} {clients:>7} {s['answered']:>7} {s['dropped']:>7} "
            f"{s['answers_per_s']:>9.2f} "
            f"{s['p50_s']:>6.3f} {s['p90_s']:>6.3f} {s['cpu_ms_per_answer']:>20.0f}  {engine}")
    if s.get("errors"):
        line += "\n" + "\n".join(f"         dropped {n} x {kind}" for kind, n in s["errors"].items())
    return line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m geoapp.bench serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="checkpoint the app serves (default: the demo's; give --reference-db too)")
    p.add_argument("--reference-db", help="reference database the app serves (default: the demo's)")
    p.add_argument("--app-dir", help="serve the app.py of this checkout instead of this one's (e.g. a clone of an "
                                     "earlier revision); it runs from the current directory")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 16], help="concurrent clients, one run each "
                                                                           "(default: 1 16)")
    p.add_argument("--queries", type=int, nargs="+", default=[2], help="queries per client in each run: one "
                                                                     "number, or one per --clients (default 2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed queries before the runs (default 3)")
    p.add_argument("--port", type=int, default=7870, help="the app's port; the bare app takes the next one")
    p.add_argument("--photos", nargs="+", help="photos to send, as phone photos (default: 90° crops of the "
                                               "database's own split)")
    p.add_argument("--distinct-photos", type=int, default=32, help="how many crops of the split to send in turn")
    p.add_argument("--bare-concurrency", type=int, help="events the bare app runs at once (default: this checkout's "
                                                        "geoapp.app.ui.CONCURRENCY)")
    p.add_argument("--no-bare", action="store_true", help="measure the real app only")
    p.add_argument("--follow", metavar="EVENT", help="also measure each answer followed by this event of the app, "
                                                     "called without arguments, as its page does (e.g. views)")
    p.add_argument("--app-args", default="", help="more arguments for the app, e.g. '--concurrency 2'")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--serve-bare", metavar="SPEC", help=argparse.SUPPRESS)  # the bare app's own process
    return p


def check_runs(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The artifacts come as a pair; one --queries per --clients (a single one is repeated), each at least 1."""
    if bool(args.checkpoint) != bool(args.reference_db):
        p.error("give both --checkpoint and --reference-db, or neither for the demo")
    if len(args.queries) == 1:
        args.queries = args.queries * len(args.clients)
    if len(args.queries) != len(args.clients):
        p.error(f"give one --queries, or one per --clients ({len(args.clients)}), not {len(args.queries)}")
    if min(args.clients) < 1 or min(args.queries) < 1:
        p.error("--clients and --queries must be at least 1")


def measure_app(command: list[str], args, work: Path, photos: list[str], photo_type: str, out: dict):
    """The real app's runs (and, with --follow, the runs that follow each answer) into ``out``; returns one real
    answer and the bare app's spec made from it (None with --no-bare)."""
    with Server(command, args.port, work / "app.log") as server:
        out["app"], sample = measure("geoapp", server, photos, photo_type, args)
        if sample is None:
            raise SystemExit(f"error: the app answered none of the queries; the end of its log:\n"
                             f"{tail(server.log)}")
        spec = None if args.no_bare else interface_spec(server.url, sample, work / "answer")
        if args.follow:
            out["app_" + args.follow], _ = measure(f"+{args.follow}", server, photos, photo_type, args,
                                                   follow=args.follow)
    return sample, spec


def measure_bare(spec: dict, sample, args, work: Path, photos: list[str], photo_type: str, out: dict) -> None:
    """The bare app's runs into ``out``, then where each real answer's mean round trip goes."""
    atomic_write_json(work / "bare.json", spec)
    bare_command = [sys.executable, "-m", "geoapp.bench", "serve", "--serve-bare", str(work / "bare.json"),
                    "--bare-concurrency", str(args.bare_concurrency)]
    with Server(bare_command, args.port + 1, work / "bare.log", cwd=REPO_ROOT) as bare:
        out["bare"], bare_sample = measure("bare", bare, photos, photo_type, args, engine=False)
    if bare_sample is None or output_shape(list(bare_sample)) != output_shape(list(sample)):
        print("warning: the bare app's answer is not shaped like the real one's")
    print("\nwhere a real answer's mean round trip goes (engine: Localizer.localize's own timings; gradio: the "
          "bare app's mean round trip; rest: the app's pictures, map and texts, and the waits for them):")
    for n in args.clients:
        real, bare_n = out["app"][n], out["bare"][n]
        if real["answered"] and bare_n["answered"]:
            shares = stage_shares(real, bare_n)
            out["app"][n]["shares"] = shares
            print(f"  {n:>3} client(s): mean {real['mean_s'] * 1000:.0f} ms = "
                  + ", ".join(f"{k} {v * 100:.0f} %" for k, v in shares.items()))


def main(argv=None) -> dict | int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.bare_concurrency is None:
        from ..app.ui import CONCURRENCY

        args.bare_concurrency = CONCURRENCY
    if args.serve_bare:
        return serve_bare(args.serve_bare, args.bare_concurrency)
    check_runs(p, args)

    cpu = cpu_description()
    command = app_command(args)
    print(f"# geoapp serve benchmark, {date.today().isoformat()}: CPU {cpu['model']} ({os.cpu_count()} cores), "
          f"torch capability {cpu['torch_capability']}; load average at start {os.getloadavg()[0]:.1f}")
    runs = ", ".join(f"{n} x {q}" for n, q in zip(args.clients, args.queries))
    print(f"# app: {' '.join(command)} (from {os.getcwd()}); runs (clients x queries each): {runs}; bare app: "
          f"{args.bare_concurrency} event(s) at once")
    out: dict = {"date": date.today().isoformat(), "cpu": cpu, "command": command, "queries": args.queries,
                 "app": {}, "bare": {}}
    with tempfile.TemporaryDirectory(prefix="geoapp-bench-serve-") as work:
        work = Path(work)
        photos, photo_type = query_photos(args, work / "photos")
        print(f"# photos: {len(photos)} ({photo_type}); others: the cores other processes kept busy during the run "
              f"(of {os.cpu_count()}; the machine is quiet when it is near 0)\n{HEADER}", flush=True)
        sample, spec = measure_app(command, args, work, photos, photo_type, out)
        if not args.no_bare:
            measure_bare(spec, sample, args, work, photos, photo_type, out)
    if args.json:
        atomic_write_json(args.json, out)
    return out
