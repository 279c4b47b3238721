"""The named presets of ``python -m geoapp.train --preset NAME`` (the config itself: :mod:`geoapp.training.config`).

Resolution order: ``TrainConfig`` defaults < preset < flags given on the command line (< nothing else: no config
files, no exec).

Paper presets (``paper-{cvusa,cvact}-{70,90}``): the method that learns the heading in our measurements, which is
``TrainConfig``'s default (``gate-corr`` windows chosen by the attention, block 1's gates placing every stage's
window, known-positive windows in training, the 0.2 gate term and the 0.3 alignment loss) at the paper's sizes and
optimisation (section 4.1): 100 epochs, AdamW, batch 24, lr 5e-5 with cosine decay to 1 % over the run (the paper
only says "gradually reduced"), weight decay 5e-4, batch-hard soft-margin triplet loss with alpha 10, ImageNet
initialisation (``--imagenet-weights``, required), full resolution (128 x 512 polar, 128-px-tall ground crops),
a new random heading per sample and epoch. Mixed precision on GPU (bf16 where supported, else fp16 + GradScaler).

Literal presets (``literal-{cvusa,cvact}-{70,90}``): the paper's recipe as written, for comparison: the same
sizes and optimisation, windows from the mean attention masks (``mask-corr``, conventions §5's reading; ``--align-mode
mask-sum`` is the wording taken literally), every stage choosing its own window at the argmax, no gate term, no
alignment loss. In none of our runs did the mask means learn the heading (docs/results.md).

Demo presets: the paper's method (ResNet18_CA + FCA ``gate-corr`` + FMC) on the synthetic world, sized for a
2-core CPU of either kind (AVX-512 or AVX2 only).

``demo`` trains the shipped checkpoint (``checkpoints/demo.safetensors``) once, offline, free of any start-up
budget: 12,000 steps of batch 32 with a field of view drawn per batch from 60-110 deg (one model for every
phone; validation at 90 deg), then exports the float16 checkpoint measured as stored (``export``). Its validation
curve is flat from step 8,000 on. ``demo-quick`` is the same method at 1,000 steps and 90 deg: the first start's
fallback when the shipped file does not fit, and the base of the ablation. Shared by both:

- a step target rather than a wall-clock race, so a faster CPU builds the same model sooner;
- ``precision="auto"``: measured per machine (:mod:`geoapp.training.precision`): emulated CPU bf16 is many times
  slower than fp32 without native bf16 (docs/results.md, "Precision and model size");
- ``base_channels=32`` and a 64 x 256 input: 4x fewer FLOPs than ResNet18's width, the changes a CPU forces;
  the paper presets keep 64 channels and 128 x 512;
- ``gate-corr`` with the shared window, known-positive windows in training, the gate term (0.2) and a 0.3
  alignment loss, each chosen on the validation split at the 1,000-step budget (docs/results.md, "The demo recipe
  and why each choice holds").
"""

from __future__ import annotations

from ..model.align_modes import MASK_CORR
from .config import TrainConfig
from .window_choices import ARGMAX

# The paper's recipe as written: the mean-mask correlation, each stage its own window, the argmax in training, the
# descriptor cosine alone, no alignment loss, zero padding
LITERAL_METHOD = dict(align_mode=MASK_CORR.name, shared_window=False, window_choice=ARGMAX.name, gate_weight=0.0,
                      align_loss=0.0, wrap_satellite=False)


def _paper(dataset: str, fov: float, literal: bool = False) -> dict:
    """The paper's sizes and optimisation on ``dataset``; the method (the defaults), or the paper's as written."""
    method = LITERAL_METHOD if literal else {}
    name = f"{'literal' if literal else 'paper'}-{dataset}-{fov:g}"
    return dict(
        dataset=dataset,
        data_root=f"data/{dataset}",
        fov=fov,
        height=128,
        sat_width=512,
        epochs=100,
        batch_size=24,
        lr=5e-5,
        lr_schedule="cosine",
        weight_decay=5e-4,
        alpha=10.0,
        val_every="1ep",
        val_size=2000,
        eval_fovs=(fov,),
        workers=8,
        cache="no",
        out=f"runs/{name}",
        **method,
    )


DEMO_STEPS = 12000


def _demo(**changes) -> dict:
    """The demo's recipe: the paper's method sized for a 2-core CPU (module docstring); ``changes`` on top."""
    return dict(dict(
        dataset="synth",
        data_root="data/synth",
        fov=90.0,
        height=64,
        sat_width=256,
        base_channels=32,
        max_steps=1000,
        batch_size=32,
        lr=3e-4,
        lr_schedule="cosine",
        warmup_steps=50,
        weight_decay=5e-4,
        precision="auto",
        cache="yes",
        workers=2,
        val_every="250",
        val_size=500,
        max_minutes=13.5,
        eval_fovs=(90.0, 70.0),
        out="runs/demo-quick",
    ), **changes)


# Presets that need ImageNet weights (the paper's recipe); the CLI refuses to start without them unless the
# user says ``--imagenet-weights none``.
PAPER_PRESETS = {f"{kind}-{dataset}-{fov:g}": _paper(dataset, fov, literal=kind == "literal")
                 for kind in ("paper", "literal") for dataset in ("cvusa", "cvact") for fov in (70.0, 90.0)}
NEEDS_IMAGENET = set(PAPER_PRESETS)

PRESETS: dict[str, dict] = {
    **PAPER_PRESETS,
    # the shipped checkpoint (checkpoints/demo.safetensors): trained once, offline, for as long as it converges
    "demo": _demo(fov_range=(60.0, 110.0), max_steps=DEMO_STEPS, warmup_steps=200, val_every="1000",
                  ckpt_every="500", max_minutes=0.0, eval_fovs=(60.0, 70.0, 90.0, 100.0), out="runs/demo",
                  export="checkpoints/demo.safetensors"),
    # minutes on a CPU: the first start's fallback when no shipped checkpoint fits, and the ablation's base
    "demo-quick": _demo(),
}


def resolve_config(preset: str | None, overrides: dict, base: dict | None = None) -> TrainConfig:
    """Defaults < ``base`` (a saved config, when resuming) or the preset < ``overrides`` (explicit flags)."""
    values: dict = dict(base or {})
    if preset:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        values.update(PRESETS[preset])
        values["preset"] = preset
    values.update(overrides)
    return TrainConfig.from_dict(values)
