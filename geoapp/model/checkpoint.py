"""Model checkpoints: safetensors weights with a JSON metadata record in the file header.

The metadata holds the model config (so the file rebuilds its own model), provenance (command, code
revision, sha256 of inputs) and the metrics reached. Files are written atomically. Loading checks that
the stored tensors are exactly the ones the config's model has and says what does not fit.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..files import atomic_path, sha256_file
from ..provenance import code_revision, command_line
from ..runtime import resolve_device
from .config import ModelConfig
from .crossview import CrossViewModel, build_model

FORMAT = "geoapp-model"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with the reason."""


def model_metadata(config: ModelConfig, **extra) -> dict:
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": config.to_dict(),
        "command": command_line(),
        "code_revision": code_revision(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta.update(extra)
    return meta


def save_model(path: str | os.PathLike, model: CrossViewModel, metadata: dict | None = None,
               dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` (weights + buffers) and its metadata to ``path`` (a ``.safetensors`` file) atomically.
    ``dtype``: store the floating tensors in it (e.g. float16, half the size); loading casts them back."""
    meta = model_metadata(model.config)
    meta.update(metadata or {})
    meta["model_config"] = model.config.to_dict()  # always the model's own config
    state = {k: v.detach().to(dtype if dtype is not None and v.is_floating_point() else v.dtype).contiguous().cpu()
             for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"geoapp": json.dumps(meta, sort_keys=True)})
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata record of a checkpoint, without loading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({exc}); was it truncated?") from exc
    if "geoapp" not in header:
        raise CheckpointError(f"{path} has no geoapp metadata record; it was not written by geoapp.model.save_model")
    meta = json.loads(header["geoapp"])
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {meta.get('format')!r} v{meta.get('format_version')} "
            f"(this code reads {FORMAT!r} v{FORMAT_VERSION})"
        )
    return meta


WORLD_RECORD_FORMAT = "geoapp-world-record"


def world_record_path(checkpoint: str | os.PathLike) -> Path:
    """The world record beside an exported checkpoint (``demo.safetensors`` -> ``demo.world.json``): the fingerprint
    of the test images it was measured on (:func:`geoapp.training.export.write_world_record`)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.world.json")


def read_world_record(checkpoint: str | os.PathLike, meta: dict) -> dict | None:
    """The world record of ``checkpoint`` (metadata ``meta``) when there is one and it describes the measured world
    (the same ``test_digest``); None otherwise: a checkpoint without one is checked by its exact digest alone."""
    try:
        record = json.loads(world_record_path(checkpoint).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    fits = (isinstance(record, dict) and record.get("format") == WORLD_RECORD_FORMAT
            and record.get("test_digest") == meta.get("test_digest") and isinstance(record.get("fingerprint"), dict))
    return record if fits else None


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[CrossViewModel, dict]:
    """Rebuild the model described by the checkpoint's own config and load its weights (strictly)."""
    meta = read_metadata(path)
    try:
        config = ModelConfig.from_dict(meta["model_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the stored model config is not usable: {exc}") from exc
    model = build_model(config)
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} could not be read ({exc}); was it truncated?") from exc
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path} does not fit the model its config describes ({config}): "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}, wrong shape {wrong[:8]}"
        )
    model.load_state_dict(state, strict=True)
    model.to(map_location)
    model.eval()
    return model, meta


@dataclass(frozen=True, eq=False)  # compared by identity: it holds a model
class LoadedCheckpoint:
    """A checkpoint read once: its metadata, its model on ``device`` and the sha256 of its file. A command loads its
    checkpoint once and hands this on (to the database build, the calibration, every area's
    :class:`~geoapp.retrieval.engine.Localizer`), so the file is read, loaded and hashed once however many parts
    use it."""

    path: Path
    model: CrossViewModel
    meta: dict
    sha256: str
    device: torch.device

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> LoadedCheckpoint:
        dev = resolve_device(device)
        model, meta = load_model(Path(path), map_location=dev)
        return cls(Path(path), model, meta, sha256_file(path), dev)

    @classmethod
    def of(cls, checkpoint: str | os.PathLike | LoadedCheckpoint, device: str | torch.device = "auto"
           ) -> LoadedCheckpoint:
        """``checkpoint`` as it is when it is loaded already (on its own device, whatever ``device`` says), else
        loaded from its path on ``device``: what a function that takes either calls first."""
        return checkpoint if isinstance(checkpoint, LoadedCheckpoint) else cls.load(checkpoint, device)


# Below this R@1 (%, at the checkpoint's own FoV, on its reported split) a model's answers are close to guesses:
# the first start says so in plain words and the app shows it beside every answer.
QUALITY_FLOOR_R1 = 30.0


def measured_accuracy(meta: dict) -> dict | None:
    """The accuracy a checkpoint's metadata records from its final evaluation, at its training FoV when it was
    evaluated there (else the widest evaluated FoV): ``{"fov", "R@1", "R@1_std", "heading_median_deg", "split",
    "n", "below_floor"}``; None when the checkpoint was never evaluated."""
    by_fov = meta.get("final_eval")
    if not isinstance(by_fov, dict) or not by_fov:
        return None
    train_fov = (meta.get("model_config") or {}).get("fov_deg", (meta.get("train_config") or {}).get("fov"))
    key = f"{train_fov:g}" if isinstance(train_fov, (int, float)) and f"{train_fov:g}" in by_fov else max(
        by_fov, key=float)
    m = by_fov[key]
    try:
        r1 = float(m["R@1"])
    except (KeyError, TypeError, ValueError):
        return None
    return {"fov": float(key), "R@1": r1, "R@1_std": m.get("R@1_std"),
            "heading_median_deg": m.get("heading_median_deg"), "split": meta.get("report_split", "unknown split"),
            "n": meta.get("final_eval_pairs"), "below_floor": r1 < QUALITY_FLOOR_R1}


def accuracy_text(meta: dict) -> str:
    """One line a person reads to know how much to trust this model's answers."""
    acc = measured_accuracy(meta)
    if acc is None:
        return "model accuracy unknown (its checkpoint records no evaluation): treat its answers as unverified"
    spread = f" ± {acc['R@1_std']:.1f}" if isinstance(acc.get("R@1_std"), (int, float)) else ""
    heading = (f", median heading error {acc['heading_median_deg']:.1f}°"
               if isinstance(acc.get("heading_median_deg"), (int, float)) else "")
    where = f"{acc['n']:,} " if isinstance(acc.get("n"), int) else ""
    text = (f"model measured R@1 {acc['R@1']:.1f}{spread} % at {acc['fov']:g}°{heading} on {where}"
            f"{acc['split']} locations")
    if meta.get("accuracy_note"):
        text += f" ({meta['accuracy_note']})"
    if acc["below_floor"]:
        text += (f" — BELOW the {QUALITY_FLOOR_R1:.0f} % quality floor: its answers are little better than guesses")
    return text
