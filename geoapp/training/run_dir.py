"""The run folder and its checkpoints.

    runs/NAME/
      config.json              resolved training config, model config, device/precision, dataset fingerprint,
                               selection_split (the split, or the carve, that chose best.safetensors) and
                               report_split (the final evaluation's split)
      metrics.jsonl            one JSON record per line: {"kind": "train"|"val"|"event", "step": ..., ...}
      curves.png               loss and validation recall curves
      last/model.safetensors   model weights (geoapp.model.save_model; loads with load_model)
      last/state.safetensors   optimizer tensors, torch RNG states
      last/state.json          everything else: step, epoch, best metrics, optimizer hyper-parameters,
                               GradScaler, Python and NumPy RNG states (written last)
      best.safetensors         the model the app uses (best R@1 on the selection split), metadata: configs,
                               command, code revision, dataset fingerprint, selection_split, report_split,
                               metrics
      final_eval.json          the final evaluation of best.safetensors on the report (test) split

``last`` is replaced as a whole: the new checkpoint is written into a temporary folder, then
``last -> last.old``, ``tmp -> last``, ``last.old`` removed; a crash at any point leaves ``last`` or
``last.old`` complete, and :meth:`RunDir.last_dir` finds whichever exists.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..files import atomic_write_bytes, atomic_write_json, sha256_file
from ..model import save_model

STATE_VERSION = 1


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.plot = self.path / "curves.png"
        self.best = self.path / "best.safetensors"
        self.final_eval = self.path / "final_eval.json"

    def last_dir(self) -> Path | None:
        """The newest complete checkpoint folder (``last``, or ``last.old`` after a crash mid-swap)."""
        for name in ("last", "last.old"):
            d = self.path / name
            if (d / "state.json").is_file() and (d / "model.safetensors").is_file():
                return d
        return None

    # ------------------------------------------------------------------------------- metrics log
    def log(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def read_log(self) -> list[dict]:
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text(encoding="utf-8").splitlines() if line.strip()]

    def truncate_log(self, step: int) -> None:
        """Drop records written after ``step`` (by a run that was killed after its last checkpoint)."""
        kept = [r for r in self.read_log() if r.get("step", 0) <= step]
        atomic_write_bytes(self.metrics, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode())


# ----------------------------------------------------------------------------------- RNG states
def rng_state() -> tuple[dict, dict]:
    """(JSON part, tensor part) of the Python, NumPy and torch RNG states."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002
    record = {
        "python": [version, list(internal), gauss],
        "numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_gauss)],
    }
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy_keys": torch.from_numpy(np_keys.astype(np.int64))}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return record, tensors


def set_rng_state(record: dict, tensors: dict) -> None:
    version, internal, gauss = record["python"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = record["numpy"]
    np.random.set_state((name, tensors["rng.numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors, key=_natural) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _natural(key: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


# ----------------------------------------------------------------------------- optimizer state
def _split_optimizer(state_dict: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for pid, entries in state_dict["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return {"param_groups": state_dict["param_groups"], "scalars": scalars}, tensors


def _join_optimizer(record: dict, tensors: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entries in record["scalars"].items():
        state.setdefault(int(pid), {}).update(entries)
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in record["param_groups"]]
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------------------------- checkpoints
def save_last(run: RunDir, model, optimizer, scaler, train_state: dict, metadata: dict) -> Path:
    """Write the ``last`` checkpoint (see the module docstring) and return its folder."""
    tmp = run.path / f".last.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(tmp / "model.safetensors", model, metadata)
    optim_record, tensors = _split_optimizer(optimizer.state_dict())
    rng_record, rng_tensors = rng_state()
    tensors.update(rng_tensors)
    save_file(tensors, str(tmp / "state.safetensors"))
    record = {
        "version": STATE_VERSION,
        "train": train_state,
        "optimizer": optim_record,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_record,
        "model_sha256": sha256_file(tmp / "model.safetensors"),
        "state_sha256": sha256_file(tmp / "state.safetensors"),
    }
    atomic_write_json(tmp / "state.json", record)
    last, old = run.path / "last", run.path / "last.old"
    if last.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(last, old)
    os.replace(tmp, last)
    shutil.rmtree(old, ignore_errors=True)
    return last


def load_last(run: RunDir) -> tuple[dict, dict, dict, dict | None, dict]:
    """(model state dict, optimizer state dict, train state, scaler state, RNG (record, tensors)) of ``last``."""
    d = run.last_dir()
    if d is None:
        raise FileNotFoundError(f"{run.path} has no complete checkpoint (last/state.json) to resume from")
    record = json.loads((d / "state.json").read_text(encoding="utf-8"))
    if record.get("version") != STATE_VERSION:
        raise ValueError(f"{d}/state.json: unsupported training-state version {record.get('version')}")
    for name in ("model", "state"):
        if sha256_file(d / f"{name}.safetensors") != record[f"{name}_sha256"]:
            raise ValueError(f"{d}/{name}.safetensors does not match the hash recorded in state.json (damaged?)")
    model_state = load_file(str(d / "model.safetensors"))
    tensors = load_file(str(d / "state.safetensors"))
    optimizer_state = _join_optimizer(record["optimizer"], tensors)
    rng = (record["rng"], {k: v for k, v in tensors.items() if k.startswith("rng.")})
    return model_state, optimizer_state, record["train"], record["scaler"], rng


# ---------------------------------------------------------------------------------- provenance
def dataset_fingerprint(*datasets) -> dict:
    """sha256 of the dataset manifest and of every split file the datasets were read from, and the ground footprint
    of the training tiles in metres."""
    files: dict[str, str] = {}
    for ds in datasets:
        manifest = Path(ds.root) / "dataset.json"
        if manifest.is_file():
            files[str(manifest)] = sha256_file(manifest)
        for name in sorted({re.split(r":\d+$|, entry", r.source)[0] for r in ds.records}):
            path = Path(name)
            if path.is_file() and str(path) not in files:
                files[str(path)] = sha256_file(path)
    # the tiles' ground footprint travels with the checkpoint: a database cut from an orthophoto needs it where the
    # training data is not
    footprint = getattr(datasets[0], "tile_metres", None)
    return {"name": getattr(datasets[0], "name", "?"), "root": str(datasets[0].root), "sha256": files,
            "tile_metres": footprint}
