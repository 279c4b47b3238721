"""First start on a fresh machine: serve the shipped demo model, or build one where it cannot be used.

With the shipped checkpoint (``checkpoints/demo.safetensors``, tracked in git, trained offline by
``python -m geoapp.train --preset demo``), a first start trains nothing. Its steps, each skipped when its output
exists, so an interrupted start continues where it stopped:

1. ``python -m geoapp.synth --out data/synth --splits val test --sample train:500``  the world and what the
   first start reads of it: the served test split (the reference database and the bundled examples), the val split
   (the confidence calibration's queries) and 500 training locations spread over their split (the calibration's
   distractor tiles, as many as the test split has more references than val has queries, and the familiarity test's
   training panoramas), not the other 4,500 training locations; the calibration comes out the same as on the whole
   world. A later ``python -m geoapp.train`` names the
   command that renders the rest.
2. verify: the test images against the checkpoint's record (:mod:`geoapp.data.digest`). The same exact digest, or
   else the same fingerprint within its recorded tolerance (the checkpoint's world record, ``demo.world.json``:
   another image library or CPU rounds a few pixels the other way): the recorded figures hold here. Otherwise: say
   so and re-measure the shipped model on this machine's world (``python -m geoapp.evaluate``, a few minutes);
   the app then shows that figure. Either way the model is not retrained.
3. ``python -m geoapp.build_db --checkpoint CHECKPOINT --dataset synth --data-root data/synth --split test
   --out reference_db/demo --calibrate val``

Only a shipped checkpoint that does not fit this code (missing, corrupt, another config, no provenance record) or
``--rebuild-model`` builds a model on this CPU, as the minutes-long ``demo-quick`` recipe, into
``checkpoints/demo-built.safetensors``; the message says why in plain words, and how good that model is.
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
from dataclasses import dataclass, field
from pathlib import Path

from geoapp.data.datasets import recorded_dataset
from geoapp.data.digest import compare_fingerprints, split_digest, split_fingerprint
from geoapp.files import REPO_ROOT, atomic_path, atomic_write_json, home_dir, sha256_file, shipped_file
from geoapp.model import ModelConfig
from geoapp.model.checkpoint import (
    QUALITY_FLOOR_R1,
    CheckpointError,
    LoadedCheckpoint,
    accuracy_text,
    measured_accuracy,
    read_metadata,
    read_world_record,
    world_record_path,
)
from geoapp.retrieval.calibrate import FAMILIARITY_PANORAMAS
from geoapp.retrieval.database import FORMAT_VERSION as DATABASE_FORMAT_VERSION
from geoapp.retrieval.familiarity import record_problem as familiarity_problem
from geoapp.training.run_dir import RunDir

HOME = home_dir()  # GEOAPP_HOME, a Space's /data, or the repository (geoapp.files.home_dir)
# in the checkout, wherever HOME is; in an installed package, the wheel's copy (geoapp.files.shipped_file)
SHIPPED_CHECKPOINT = shipped_file("demo.safetensors")
DEMO_SPLIT = "test"  # the reference database and the bundled examples: the reported split, never chosen on
CALIBRATION_SPLIT = "val"  # the confidence is fitted on the selection split, never on the split it serves
# the calibration fills its gallery up to the served database's size with tiles of this split, spread over it (a
# confidence depends on how many look-alikes a gallery holds), and the familiarity test learns its photos: a first
# start renders those locations (training_sample), not the whole split
TRAINING_SPLIT = "train"
ALL_SPLITS = ("train", "val", "test")  # the whole world: what training the fallback model reads
FALLBACK_PRESET = "demo-quick"
SYNTH_DONE_MARKER = "dataset.json"  # the generator writes its manifest last
DATABASE_DONE_MARKER = "metadata.json"  # build_db writes it last, then renames the folder into place


class BootstrapError(RuntimeError):
    """A demo build step failed; the message says which and how to run it by hand."""


@dataclass
class DemoPaths:
    shipped: Path = SHIPPED_CHECKPOINT
    built: Path = field(default_factory=lambda: HOME / "checkpoints" / "demo-built.safetensors")
    database: Path = field(default_factory=lambda: HOME / "reference_db" / "demo")
    data_root: Path = field(default_factory=lambda: HOME / "data" / "synth")
    run_dir: Path = field(default_factory=lambda: HOME / "runs" / FALLBACK_PRESET)
    verification: Path = field(default_factory=lambda: HOME / "checkpoints" / "demo.verified.json")


@dataclass
class DemoState:
    """What the first start settled on: the checkpoint and database to serve and the accuracy to show with them."""

    checkpoint: Path
    database: Path
    accuracy: dict | None = None  # a checkpoint-metadata-shaped record (``accuracy_text``); None: the checkpoint's
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    loaded: LoadedCheckpoint | None = None  # the checkpoint as the start loaded it, for the app to serve as it is


def _shown(path: Path) -> str:
    """A path as the commands take it: relative to the repository (their working directory) when inside it."""
    path = Path(path)
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def demo_commands(paths: DemoPaths, checkpoint: Path, python: str = sys.executable,
                  extra_flags: dict[str, list[str]] | None = None, training_sample: int | None = None
                  ) -> dict[str, list[str]]:
    """The commands of the demo build, run from the repository root (``train``: the fallback's fresh run), each with
    its ``extra_flags`` (by command name) appended: a smaller world or a shorter training, as tests use.
    ``training_sample``: ``synth`` renders what serving the shipped model reads (:func:`training_sample`), not the
    whole world."""
    data, run, ck, database = (_shown(p) for p in (paths.data_root, paths.run_dir, checkpoint, paths.database))
    build_db = [python, "-m", "geoapp.build_db", "--checkpoint", ck, "--dataset", "synth", "--data-root", data,
                "--split", DEMO_SPLIT, "--out", database, "--calibrate", CALIBRATION_SPLIT]
    served = [] if training_sample is None else ["--splits", CALIBRATION_SPLIT, DEMO_SPLIT] + (
        ["--sample", f"{TRAINING_SPLIT}:{training_sample}"] if training_sample else [])
    commands = {
        "synth": [python, "-m", "geoapp.synth", "--out", data, *served],
        "train": [python, "-m", "geoapp.train", "--preset", FALLBACK_PRESET, "--data-root", data, "--out", run],
        "evaluate": [python, "-m", "geoapp.evaluate", "--checkpoint", ck, "--data-root", data, "--split", DEMO_SPLIT,
                     "--out", _shown(paths.verification.with_suffix(".eval.json"))],
        "build_db": build_db,
        "calibrate": [*build_db, "--calibrate-only"],
    }
    return {name: command + list((extra_flags or {}).get(name, ())) for name, command in commands.items()}


@dataclass
class _Steps:
    """Runs the build's commands (or, with ``allowed`` False, refuses with the command a person would type)."""

    python: str
    log: Callable[[str], None]
    allowed: bool = True
    extra_flags: dict[str, list[str]] = field(default_factory=dict)  # demo_commands' extra flags
    timings: dict[str, float] = field(default_factory=dict)

    def commands(self, paths: DemoPaths, checkpoint: Path, training_sample: int | None = None
                 ) -> dict[str, list[str]]:
        return demo_commands(paths, checkpoint, self.python, self.extra_flags, training_sample)

    def run(self, name: str, command: list[str], key: str) -> None:
        shown = (shlex.join(["python", *command[1:]]) if command[0] == self.python else shlex.join(command))
        if not self.allowed:
            raise BootstrapError(f"the demo is not ready: its step '{name}' has not run here. Start the app without "
                                 f"--no-build (it runs the missing steps), or run it by hand from {REPO_ROOT}: {shown}")
        self.log(f"[geoapp] {name}: {shown}")
        start = time.perf_counter()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        result = subprocess.run(command, cwd=REPO_ROOT, env=env, check=False)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            raise BootstrapError(
                f"demo build step '{name}' failed with exit code {result.returncode} after {seconds:.0f} s; its "
                f"output is above. Fix the cause and start the app again (finished steps are kept), or run it by "
                f"hand: {shown}")
        self.log(f"[geoapp] {name}: done in {seconds:.1f} s")
        self.timings[key] = self.timings.get(key, 0.0) + seconds


# ------------------------------------------------------------------------------------------ checks


def load_shipped(checkpoint: Path, device: str = "cpu") -> tuple[LoadedCheckpoint | None, str | None]:
    """The shipped checkpoint loaded on ``device`` and None, or None and why it cannot be served as it is, in plain
    words."""
    try:
        loaded = LoadedCheckpoint.load(checkpoint, device)  # its config must be one this code builds, every tensor fit
    except CheckpointError as exc:
        return None, str(exc)
    meta = loaded.meta
    missing = [k for k in ("test_digest", "final_eval", "world") if k not in meta]
    if missing:
        return None, (f"{checkpoint} records no {', '.join(missing)} (it is not an exported demo checkpoint: "
                      "python -m geoapp.train --preset demo writes one)")
    trained_on = recorded_dataset((meta.get("train_config") or {}).get("dataset"))
    if trained_on is None or not trained_on.synthetic:
        return None, f"{checkpoint} was trained on {meta['train_config'].get('dataset')!r}, not on the synthetic world"
    return loaded, None


def shipped_problem(checkpoint: Path) -> str | None:
    """Why the shipped checkpoint cannot be served as it is, in plain words; None when it fits this code."""
    return load_shipped(checkpoint)[1]


def world_on_disk(data_root: Path) -> tuple[set[str], dict[str, int]]:
    """The splits the world at ``data_root`` has whole on disk, and those of which it has N locations only (split ->
    N; ``geoapp.synth --sample``); nothing before its manifest is written."""
    try:
        manifest = json.loads((data_root / SYNTH_DONE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set(), {}
    return set(manifest.get("rendered_splits", ALL_SPLITS)), dict(manifest.get("sampled") or {})


def training_sample(meta: dict) -> int | None:
    """How many training locations a first start renders for the shipped checkpoint of metadata ``meta``: the
    calibration's distractor tiles (its gallery is as large as the served test database and holds the val queries'
    own tiles, so it takes test - val training tiles) and the familiarity test's training panoramas
    (FAMILIARITY_PANORAMAS), whichever is more, at most the whole split. None when the checkpoint does not record its
    world's counts (then the whole world)."""
    counts = (meta.get("world") or {}).get("counts") or {}
    try:
        distractors = max(0, int(counts[DEMO_SPLIT]) - int(counts[CALIBRATION_SPLIT]))
        return min(int(counts[TRAINING_SPLIT]), max(distractors, FAMILIARITY_PANORAMAS))
    except (KeyError, TypeError, ValueError):
        return None


def database_checkpoint(database: Path) -> tuple[str | None, bool]:
    """(sha256 of the checkpoint the database was built with, whether it is calibrated); (None, False) if unbuilt.
    A database of another format version counts as built for no checkpoint: this code rebuilds it; one whose
    familiarity test this code cannot read counts as uncalibrated: this code refits it."""
    try:
        meta = json.loads((database / DATABASE_DONE_MARKER).read_text(encoding="utf-8"))
        if meta.get("format_version") != DATABASE_FORMAT_VERSION:
            return "format version " + str(meta.get("format_version")), False
        familiarity = (meta.get("calibration") or {}).get("familiarity")
        current = familiarity is None or familiarity_problem(familiarity) is None
        return meta["checkpoint"]["sha256"], "calibration" in meta and current
    except (OSError, ValueError, KeyError, TypeError):
        return None, False


def _verified_pair(paths: DemoPaths, checkpoint: LoadedCheckpoint) -> dict:
    """What a verification holds for: this checkpoint file and this rendering of the world (its manifest)."""
    return {"checkpoint_sha256": checkpoint.sha256,
            "world_manifest_sha256": sha256_file(paths.data_root / SYNTH_DONE_MARKER)}


def read_verification(paths: DemoPaths, checkpoint: LoadedCheckpoint) -> dict | None:
    """The saved result of step 2 for this checkpoint and world, or None (never verified, or for other files)."""
    try:
        record = json.loads(paths.verification.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pair = _verified_pair(paths, checkpoint)
    return record if all(record.get(k) == v for k, v in pair.items()) else None


def remeasured_accuracy(meta: dict, report: dict) -> dict:
    """A checkpoint-metadata-shaped record of figures measured on this machine (``accuracy_text`` reads it)."""
    return {"train_config": meta.get("train_config"), "final_eval": report["by_fov"],
            "final_eval_pairs": report.get("n_queries"), "report_split": report.get("split", DEMO_SPLIT),
            "accuracy_note": "re-measured on this machine's world, whose test images differ from the recorded ones"}


def _same_world(checkpoint: Path, meta: dict, test) -> dict | None:
    """The fingerprint comparison (:func:`geoapp.data.digest.compare_fingerprints`) of the test split with the
    checkpoint's world record; None when the checkpoint has no world record."""
    world = read_world_record(checkpoint, meta)
    if world is None:
        return None
    try:
        return compare_fingerprints(world["fingerprint"], split_fingerprint(test)).to_dict()
    except (OSError, ValueError, KeyError, TypeError) as exc:  # an unreadable image or record: not shown to be equal
        return {"same_world": False, "reason": f"the fingerprint could not be compared: {exc}"}


def verify_world(paths: DemoPaths, loaded: LoadedCheckpoint, steps: _Steps) -> dict:
    """Step 2: compare the test images with the checkpoint's record, exactly and then by their fingerprint; re-measure
    when they are not the same world."""
    from geoapp.training.data import open_split

    checkpoint, meta = loaded.path, loaded.meta
    model = ModelConfig.from_dict(meta["model_config"])
    test = open_split("synth", str(paths.data_root), DEMO_SPLIT, model.fov_deg, model.ground_height, model.sat_width,
                      train=False)
    here, recorded = split_digest(test), meta["test_digest"]
    record = {**_verified_pair(paths, loaded), "recorded_digest": recorded, "digest_here": here,
              "matches": here == recorded}
    log = steps.log
    if not record["matches"]:
        record["fingerprint"] = _same_world(checkpoint, meta, test)
    record["same_world"] = record["matches"] or bool((record.get("fingerprint") or {}).get("same_world"))
    if record["matches"]:
        log(f"[geoapp] verified: this machine's {here['pairs']} test locations are the ones the shipped model was "
            f"measured on (digest {here['sha256'][:12]}); its recorded figures hold here")
    elif record["same_world"]:
        log(f"[geoapp] verified: this machine's {here['pairs']} test locations are the world the shipped model was "
            f"measured on, up to rendering noise (their {record['fingerprint']['reason']}; the exact digest "
            f"{here['sha256'][:12]} differs from the recorded {recorded.get('sha256', '?')[:12]}, as another image "
            "library's or CPU's rounding makes it); its recorded figures hold here")
    else:
        compared = record.get("fingerprint")
        why = (f"their fingerprint too: {compared['reason']}" if compared else
               f"and {world_record_path(checkpoint).name}, which would tell rendering noise apart, is not there")
        log(f"[geoapp] NOTE: this machine's world differs from the one the shipped model was measured on (test image "
            f"digest {here['sha256'][:12]}, recorded {recorded.get('sha256', '?')[:12]}; {why}). Re-measuring the "
            "shipped model on this world (about two minutes); the app will show that figure, not the recorded one. "
            "The model is not retrained for this.")
        command = steps.commands(paths, checkpoint)["evaluate"]
        fovs = [f"{float(f):g}" for f in meta["final_eval"]]
        steps.run("re-measure on this world", [*command, "--fov", *fovs, "--no-progress"], "remeasure")
        report = json.loads(paths.verification.with_suffix(".eval.json").read_text(encoding="utf-8"))
        record["remeasured"] = remeasured_accuracy(meta, report)
    atomic_write_json(paths.verification, record)
    return record


def report_quality(checkpoint: Path | LoadedCheckpoint, log: Callable[[str], None] = print) -> dict | None:
    """Say in plain words how good the model this machine built is; below the floor, say what to do."""
    try:
        meta = checkpoint.meta if isinstance(checkpoint, LoadedCheckpoint) else read_metadata(checkpoint)
    except CheckpointError as exc:  # the app's own load reports it in full; the build itself is done
        log(f"[geoapp] cannot read the measured accuracy: {exc}")
        return None
    acc = measured_accuracy(meta)
    log(f"[geoapp] {accuracy_text(meta)}")
    if acc is not None and acc["below_floor"]:
        log("[geoapp] " + "=" * 100)
        log(f"[geoapp] WARNING: the demo model built on this machine is poor (R@1 {acc['R@1']:.1f} % < "
            f"{QUALITY_FLOOR_R1:.0f} %). The app will run, but its answers are little better than guesses.")
        log("[geoapp] What to do: restore the shipped checkpoints/demo.safetensors (git checkout "
            "checkpoints/demo.safetensors) and start again, or train the full recipe: python -m geoapp.train "
            "--preset demo (hours on a CPU, minutes on a GPU).")
        log("[geoapp] " + "=" * 100)
    return acc


# ------------------------------------------------------------------------------------------ steps


def _render(paths: DemoPaths, steps: _Steps, sample: int | None = None) -> None:
    """Render what is missing of the world: all of it (``sample`` None), or what serving the shipped model reads
    (the test and val splits and ``sample`` locations of the training split)."""
    whole, sampled = world_on_disk(paths.data_root)
    if sample is None:
        ready = set(ALL_SPLITS) <= whole
    else:
        ready = {DEMO_SPLIT, CALIBRATION_SPLIT} <= whole and (
            sample == 0 or TRAINING_SPLIT in whole or sampled.get(TRAINING_SPLIT) == sample)
    if not ready:
        steps.run("synthetic world", steps.commands(paths, paths.shipped, sample)["synth"], "synth")


def _build_model(paths: DemoPaths, steps: _Steps, device: str) -> LoadedCheckpoint:
    """The fallback: the whole world, the ``demo-quick`` recipe on this CPU, its best checkpoint copied out; loaded on
    ``device``."""
    fresh = not paths.built.is_file()
    if fresh:
        _train_model(paths, steps)
    try:
        loaded = LoadedCheckpoint.load(paths.built, device)
    except CheckpointError as exc:
        raise BootstrapError(f"the model built here cannot be served: {exc}. Delete {paths.built} and start again "
                             "(it is built anew)") from exc
    if fresh:
        report_quality(loaded, steps.log)
    return loaded


def _train_model(paths: DemoPaths, steps: _Steps) -> None:
    """Train the fallback model and copy its best checkpoint to ``paths.built``."""
    _render(paths, steps)
    run = RunDir(paths.run_dir)
    if not (run.best.is_file() and run.final_eval.is_file()):
        train = ([steps.python, "-m", "geoapp.train", "--out", _shown(run.path), "--resume"]
                 if run.last_dir() is not None else steps.commands(paths, paths.built)["train"])
        steps.run(f"training ({FALLBACK_PRESET})", train, "train")
    best = run.best
    if not best.is_file():
        raise BootstrapError(f"training finished but wrote no {best}; see its output above")
    with atomic_path(paths.built) as tmp:
        shutil.copyfile(best, tmp)
    steps.log(f"[geoapp] copied {best} -> {paths.built}")


def _forget_built_model(paths: DemoPaths) -> None:
    """--rebuild-model: a finished fallback run and its copy go, so training starts anew (a killed run resumes)."""
    paths.built.unlink(missing_ok=True)
    if RunDir(paths.run_dir).final_eval.is_file():
        shutil.rmtree(paths.run_dir)


def _build_database(paths: DemoPaths, loaded: LoadedCheckpoint, steps: _Steps) -> None:
    built_with, calibrated = database_checkpoint(paths.database)
    checkpoint = loaded.path
    commands = steps.commands(paths, checkpoint)
    if built_with != loaded.sha256:
        if built_with is not None and steps.allowed:  # built for the other model: its features do not fit this one
            steps.log(f"[geoapp] {paths.database} was built with another checkpoint or an older format "
                      f"({built_with[:20]}); rebuilding it for {checkpoint.name}")
            shutil.rmtree(paths.database)
        steps.run("reference database and its confidence calibration", commands["build_db"], "build_db")
    elif not calibrated:  # built before databases carried a calibration
        steps.run("confidence calibration", commands["calibrate"], "calibrate")


def ensure_demo(paths: DemoPaths | None = None, python: str = sys.executable, log: Callable[[str], None] = print,
                rebuild_model: bool = False, allow_build: bool = True,
                extra_flags: dict[str, list[str]] | None = None, device: str = "auto") -> DemoState:
    """Make the demo servable (module docstring) and say what it serves, its checkpoint loaded once on ``device``.
    ``allow_build`` False: a step that would run raises :class:`BootstrapError` with its command instead.
    ``extra_flags``: see :func:`demo_commands`."""
    paths = paths or DemoPaths()
    steps = _Steps(python, log, allow_build, dict(extra_flags or {}))
    loaded, problem = (None, "--rebuild-model was given") if rebuild_model else load_shipped(paths.shipped, device)
    if loaded is not None:
        _render(paths, steps, training_sample(loaded.meta))
        record = read_verification(paths, loaded)
        if record is None and not allow_build:
            raise BootstrapError("the demo is not ready: the world has not been checked against the shipped model's "
                                 "record here. Start the app without --no-build (it checks it in seconds)")
        record = record or verify_world(paths, loaded, steps)
        accuracy = record.get("remeasured")
    else:
        log("[geoapp] " + "=" * 100)
        log("[geoapp] --rebuild-model: serving a model trained here, not the shipped one (a later start without the "
            "flag serves the shipped one again)." if rebuild_model else
            f"[geoapp] The shipped demo model cannot be used: {problem}.")
        log(f"[geoapp] Building a model on this CPU instead (the {FALLBACK_PRESET} recipe: minutes of training, "
            "answers far weaker than the shipped model's; the figure it reaches is shown with every answer).")
        log("[geoapp] " + "=" * 100)
        if rebuild_model and allow_build:
            _forget_built_model(paths)
        loaded, accuracy = _build_model(paths, steps, device), None
    _build_database(paths, loaded, steps)
    return DemoState(loaded.path, paths.database, accuracy, [problem] if problem else [], steps.timings, loaded)
