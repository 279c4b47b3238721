"""Model checkpoints: safetensors weights with a JSON metadata record in the file header.

The metadata holds the model config (so the file rebuilds its own model), provenance (command, code
revision, sha256 of inputs) and the metrics reached. Files are written atomically. Loading checks that
the stored tensors are exactly the ones the config's model has and says what does not fit.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..utils import atomic_path, code_revision, command_line
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


def save_model(path: str | os.PathLike, model: CrossViewModel, metadata: dict | None = None) -> Path:
    """Write ``model`` (weights + buffers) and its metadata to ``path`` (a ``.safetensors`` file) atomically."""
    meta = model_metadata(model.config)
    meta.update(metadata or {})
    meta["model_config"] = model.config.to_dict()  # always the model's own config
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
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
