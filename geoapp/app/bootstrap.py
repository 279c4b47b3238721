"""First start on a fresh machine: build the demo checkpoint and reference database with the project's own commands.

Steps (each skipped when its output already exists, so an interrupted start continues where it stopped):

1. ``python -m geoapp.synth --out data/synth``                       the synthetic world
2. ``python -m geoapp.train --preset demo --data-root data/synth --out runs/demo``  (``--resume`` after a kill),
   then ``runs/demo/best.safetensors`` is copied to ``checkpoints/demo.safetensors``
3. ``python -m geoapp.build_db --checkpoint checkpoints/demo.safetensors --dataset synth --data-root data/synth
   --split test --out reference_db/demo --calibrate val``             (continues an unfinished build itself; then
   fits the confidence calibration on the val split; a database built without it is calibrated with
   ``--calibrate-only``)

The commands run as subprocesses with the terminal as their output, so their own progress bars show.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from geoapp.model.checkpoint import QUALITY_FLOOR_R1, CheckpointError, accuracy_text, measured_accuracy, read_metadata
from geoapp.utils import REPO_ROOT, atomic_path, home_dir

HOME = home_dir()  # GEOAPP_HOME, a Space's /data, or the repository (geoapp.utils.home_dir)
DEMO_CHECKPOINT = HOME / "checkpoints" / "demo.safetensors"
DEMO_DATABASE = HOME / "reference_db" / "demo"
DEMO_DATA_ROOT = HOME / "data" / "synth"
DEMO_RUN = HOME / "runs" / "demo"
DEMO_SPLIT = "test"  # the reference database and the bundled examples: the reported split, never chosen on
CALIBRATION_SPLIT = "val"  # the confidence is fitted on the selection split, never on the split it serves
SYNTH_DONE_MARKER = "dataset.json"  # the generator writes its manifest last
DATABASE_DONE_MARKER = "metadata.json"  # build_db writes it last, then renames the folder into place


class BootstrapError(RuntimeError):
    """A demo build step failed; the message says which and how to run it by hand."""


@dataclass
class DemoPaths:
    checkpoint: Path = DEMO_CHECKPOINT
    database: Path = DEMO_DATABASE
    data_root: Path = DEMO_DATA_ROOT
    run_dir: Path = DEMO_RUN


def _shown(path: Path) -> str:
    """A path as the commands take it: relative to the repository (their working directory) when inside it."""
    path = Path(path)
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def demo_commands(paths: DemoPaths, python: str = sys.executable) -> dict[str, list[str]]:
    """The three commands of the demo build (``train`` is the fresh-run form), run from the repository root."""
    data, run, checkpoint, database = (_shown(p) for p in (paths.data_root, paths.run_dir, paths.checkpoint,
                                                            paths.database))
    return {
        "synth": [python, "-m", "geoapp.synth", "--out", data],
        "train": [python, "-m", "geoapp.train", "--preset", "demo", "--data-root", data, "--out", run],
        "build_db": [python, "-m", "geoapp.build_db", "--checkpoint", checkpoint, "--dataset", "synth",
                     "--data-root", data, "--split", DEMO_SPLIT, "--out", database, "--calibrate", CALIBRATION_SPLIT],
        "calibrate": [python, "-m", "geoapp.build_db", "--checkpoint", checkpoint, "--dataset", "synth",
                      "--data-root", data, "--split", DEMO_SPLIT, "--out", database, "--calibrate",
                      CALIBRATION_SPLIT, "--calibrate-only"],
    }


def manual_steps(paths: DemoPaths) -> list[str]:
    """The demo build as a person types it, from the repository root (the copy ``ensure_demo`` does included)."""
    commands = {name: shlex.join(["python", *c[1:]]) for name, c in demo_commands(paths).items()}
    copy = shlex.join(["cp", f"{_shown(paths.run_dir)}/best.safetensors", _shown(paths.checkpoint)])
    return [commands["synth"], commands["train"], copy, commands["build_db"]]


def _is_calibrated(database: Path) -> bool:
    try:
        return "calibration" in json.loads((database / DATABASE_DONE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def is_demo_built(paths: DemoPaths) -> bool:
    return paths.checkpoint.is_file() and _is_calibrated(paths.database)


def _run(name: str, command: list[str], log: Callable[[str], None]) -> float:
    shown = shlex.join(["python", *command[1:]]) if command[0] == sys.executable else shlex.join(command)
    log(f"[geoapp] {name}: {shown}")
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise BootstrapError(
            f"demo build step '{name}' failed with exit code {result.returncode} after {seconds:.0f} s; its output "
            f"is above. Fix the cause and start the app again (finished steps are kept), or run it by hand: {shown}"
        )
    log(f"[geoapp] {name}: done in {seconds:.1f} s")
    return seconds


def _training_finished(run_dir: Path) -> bool:
    return (run_dir / "best.safetensors").is_file() and (run_dir / "final_eval.json").is_file()


def _resumable(run_dir: Path) -> bool:
    return any((run_dir / name / "state.json").is_file() for name in ("last", "last.old"))


def report_quality(checkpoint: Path, log: Callable[[str], None] = print) -> dict | None:
    """Say in plain words how good the model this machine built is; below the floor, say what to do."""
    try:
        meta = read_metadata(checkpoint)
    except CheckpointError as exc:  # the app's own load reports it in full; the build itself is done
        log(f"[geoapp] cannot read the measured accuracy: {exc}")
        return None
    acc = measured_accuracy(meta)
    log(f"[geoapp] {accuracy_text(meta)}")
    if acc is not None and acc["below_floor"]:
        log("[geoapp] " + "=" * 100)
        log(f"[geoapp] WARNING: the demo model built on this machine is poor (R@1 {acc['R@1']:.1f} % < "
            f"{QUALITY_FLOOR_R1:.0f} %). The app will run, but its answers are little better than guesses.")
        log("[geoapp] Likely cause: this CPU trained too few steps in the time budget (see runs/demo/config.json: "
            "'precision_choice' and the steps reached in metrics.jsonl).")
        log("[geoapp] What to do: train longer and rebuild, e.g. `python -m geoapp.train --preset demo --max-minutes "
            "40 --out runs/demo-long`, copy its best.safetensors to checkpoints/demo.safetensors, delete "
            "reference_db/demo and start the app again; or run the first start on a machine with a GPU.")
        log("[geoapp] " + "=" * 100)
    return acc


def ensure_demo(paths: DemoPaths | None = None, python: str = sys.executable,
                log: Callable[[str], None] = print) -> dict[str, float]:
    """Build whatever of the demo is missing; returns the seconds each step that ran took."""
    paths = paths or DemoPaths()
    commands = demo_commands(paths, python)
    timings: dict[str, float] = {}
    if is_demo_built(paths):
        return timings
    log("[geoapp] first start: building the demo (synthetic world, model, reference database); "
        "later starts skip the finished steps")

    if not paths.checkpoint.is_file():
        if not (paths.data_root / SYNTH_DONE_MARKER).is_file():
            timings["synth"] = _run("1/3 synthetic world", commands["synth"], log)
        if not _training_finished(paths.run_dir):
            train = commands["train"]
            if _resumable(paths.run_dir):  # a killed run continues exactly where it stopped
                train = [python, "-m", "geoapp.train", "--out", _shown(paths.run_dir), "--resume"]
            timings["train"] = _run("2/3 training", train, log)
        best = paths.run_dir / "best.safetensors"
        if not best.is_file():
            raise BootstrapError(f"training finished but wrote no {best}; see its output above")
        with atomic_path(paths.checkpoint) as tmp:
            shutil.copyfile(best, tmp)
        log(f"[geoapp] copied {best} -> {paths.checkpoint}")
        report_quality(paths.checkpoint, log)
    else:
        log(f"[geoapp] 1-2/3: {paths.checkpoint} exists, skipping the world and training")

    if not (paths.database / DATABASE_DONE_MARKER).is_file():
        if not (paths.data_root / SYNTH_DONE_MARKER).is_file():  # a checkpoint copied in without its world
            timings["synth"] = _run("1/3 synthetic world", commands["synth"], log)
        timings["build_db"] = _run("3/3 reference database and its confidence calibration", commands["build_db"],
                                   log)
    elif not _is_calibrated(paths.database):  # built before databases carried a calibration
        timings["calibrate"] = _run("3/3 confidence calibration", commands["calibrate"], log)
    return timings
