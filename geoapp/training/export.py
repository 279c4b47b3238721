"""The shipped checkpoint: a run's ``best.safetensors`` stored in float16, measured as stored, with its provenance.

``python -m geoapp.train --preset demo`` ends here (the preset's ``export``), and ``python -m geoapp.train --out RUN
--resume --export PATH`` exports a finished run. The file's metadata says what a machine that regenerates the
world needs to trust the figures: the training command and code revision, the world's seed and generator version,
the digest of the test split's images (:mod:`geoapp.data.digest`), the selection and report splits, and the test
figures of the float16 weights themselves (mean ± std over the shift seeds, at every evaluated FoV).

Beside the file goes its world record (``demo.safetensors`` -> ``demo.world.json``,
:func:`geoapp.model.checkpoint.world_record_path`): the fingerprint of the same test images, which a machine whose
libraries round a few pixels the other way still matches. ``python -m geoapp.training.export CHECKPOINT --data-root
DIR`` writes it for a checkpoint exported before, from a world whose test images are exactly the recorded ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ..data.digest import split_digest, split_fingerprint
from ..files import atomic_write_json
from ..model import CrossViewModel, load_model, save_model
from ..model.checkpoint import WORLD_RECORD_FORMAT, CheckpointError, read_metadata, world_record_path
from ..provenance import command_line
from .config import TrainConfig
from .data import PairImages, open_split
from .evaluation import REPORT_SHIFT_SEEDS, evaluate_model, format_table
from .run_dir import RunDir

SHIPPED_DTYPE = torch.float16


def round_weights(model: CrossViewModel, dtype: torch.dtype = SHIPPED_DTYPE) -> CrossViewModel:
    """Round every floating parameter and buffer to ``dtype`` and back, in place: the model then computes exactly
    what a checkpoint stored in ``dtype`` loads to."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype))
    return model


def world_record(manifest: dict | None) -> dict:
    """What identifies a generated world: its seed, generator version and settings hash (``dataset.json``)."""
    manifest = manifest or {}
    settings = manifest.get("settings") or {}
    return {"generator": manifest.get("generator"), "generator_version": manifest.get("generator_version"),
            "seed": manifest.get("seed"), "settings_code": settings.get("code"), "counts": manifest.get("counts")}


def export_checkpoint(run_path, out, device: torch.device | str = "cpu", progress: bool = True, log=print) -> dict:
    """Write ``run_path``'s best model to ``out`` in float16 with its test figures and provenance; returns them."""
    run = RunDir(run_path)
    run_config = json.loads(run.config.read_text(encoding="utf-8"))
    model, meta = load_model(run.best, map_location=device)
    round_weights(model)
    cfg = TrainConfig.from_dict(meta["train_config"])
    test = open_split(cfg.dataset, cfg.data_root, cfg.test_split, cfg.fov, cfg.height, cfg.sat_width, train=False)
    images = PairImages(test, cfg.cache, cfg.workers, progress=progress)
    fovs = list(cfg.eval_fovs) or [cfg.fov]
    log(f"export: evaluating the float16 weights of {run.best} (step {meta['step']}) on {len(test)} "
        f"{cfg.test_split!r} pairs at {fovs} deg, shift seeds {list(REPORT_SHIFT_SEEDS)}")
    report = evaluate_model(model, images, fovs, REPORT_SHIFT_SEEDS, device=device, precision="fp32",
                            progress=progress)
    log(format_table(report))
    record = {
        "train_config": meta["train_config"], "step": meta["step"], "epoch": meta.get("epoch"),
        "metrics": meta.get("metrics"), "precision": meta.get("precision"), "dataset": meta.get("dataset"),
        "selection_split": meta.get("selection_split"), "report_split": cfg.test_split,
        "final_eval": report["by_fov"], "final_eval_pairs": len(test), "final_eval_results": report["results"],
        "training": {"command": run_config.get("command"), "code_revision": run_config.get("code_revision"),
                     "resolved": run_config.get("resolved")},
        "world": world_record(test.manifest),
        "test_digest": split_digest(test),
        "weights_dtype": str(SHIPPED_DTYPE).removeprefix("torch."),
    }
    path = save_model(out, model, record, dtype=SHIPPED_DTYPE)
    log(f"export: wrote {path} ({Path(path).stat().st_size / 2**20:.1f} MiB)")
    log(f"export: wrote {write_world_record(path, test)}")
    return record


def write_world_record(checkpoint, test) -> Path:
    """Write ``checkpoint``'s world record (module docstring) from the split ``test`` (a dataset), whose images must be
    exactly the ones the checkpoint's ``test_digest`` describes; returns its path."""
    checkpoint = Path(checkpoint)
    recorded = read_metadata(checkpoint).get("test_digest")
    if recorded is None:
        raise CheckpointError(f"{checkpoint} records no test_digest: there is no measured world to describe")
    here = split_digest(test)
    if here != recorded:
        raise ValueError(f"the {here['pairs']} {test.split!r} pairs at {test.root} are not the images {checkpoint} was "
                         f"measured on (digest {here['sha256'][:12]}, recorded {recorded.get('sha256', '?')[:12]}); "
                         "a world record describes only the measured world")
    path = world_record_path(checkpoint)
    atomic_write_json(path, {
        "format": WORLD_RECORD_FORMAT, "split": test.split, "test_digest": recorded,
        "fingerprint": split_fingerprint(test), "command": command_line(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m geoapp.training.export",
                                description="Write the world record of an exported checkpoint (CHECKPOINT with "
                                            ".world.json for .safetensors) from the world it was measured on.")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data-root", help="the dataset (default: the data root the checkpoint was trained on)")
    args = p.parse_args(argv)
    try:
        meta = read_metadata(args.checkpoint)
        cfg = TrainConfig.from_dict(meta["train_config"])
        test = open_split(cfg.dataset, args.data_root or cfg.data_root, meta.get("report_split", cfg.test_split),
                          cfg.fov, cfg.height, cfg.sat_width, train=False)
        path = write_world_record(args.checkpoint, test)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB): the fingerprint of the {len(test)} {test.split!r} "
          f"pairs at {test.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
