"""The training config (one dataclass) and the named presets of ``python -m geoapp.train --preset NAME``.

Resolution order: ``TrainConfig`` defaults < preset < flags given on the command line (< nothing else:
no config files, no exec). The resolved config is printed and saved as ``config.json`` in the run folder.

Paper presets (``paper-{cvusa,cvact}-{70,90}``): the method that learns the heading in our measurements
(the demo's: ``gate-corr`` windows chosen by the attention, block 1's gates placing every stage's window,
known-positive windows in training, the 0.2 gate term and the 0.3 alignment loss) at the paper's sizes and
optimisation (section 4.1): 100 epochs, AdamW, batch 24, lr 5e-5 with cosine decay to 1 % over the run (the paper
only says "gradually reduced"), weight decay 5e-4, batch-hard soft-margin triplet loss with alpha 10, ImageNet
initialisation (``--imagenet-weights``, required), full resolution (128 x 512 polar, 128-px-tall ground crops),
a new random heading per sample and epoch. Mixed precision on GPU (bf16 where supported, else fp16 + GradScaler).

Literal presets (``literal-{cvusa,cvact}-{70,90}``): the paper's recipe as written, for comparison: the same
sizes and optimisation, windows from the mean attention masks (``mask-corr``, conventions §5's reading; ``--align-mode
mask-sum`` is the wording taken literally), every stage choosing its own window at the argmax, no gate term, no
alignment loss. In none of our runs did the mask means learn the heading (README, "The method").

Demo presets: the paper's method (ResNet18_CA + FCA ``gate-corr`` + FMC) on the synthetic world, sized for a
2-core CPU of either kind (AVX-512 or AVX2 only).

``demo`` trains the shipped checkpoint (``checkpoints/demo.safetensors``) once, offline, free of any start-up
budget: 12,000 steps of batch 32 with a field of view drawn per batch from 60-110 deg (one model for every
phone; validation at 90 deg), then exports the float16 checkpoint measured as stored (``export``). Its validation
curve is flat from step 8,000 on. ``demo-quick`` is the same method at 1,000 steps and 90 deg: the first start's
fallback when the shipped file does not fit, and the base of the ablation. Shared by both:

- a step target rather than a wall-clock race, so a faster CPU builds the same model sooner;
- ``precision="auto"``: measured per machine (:mod:`geoapp.training.precision`): emulated CPU bf16 is ~12x slower
  than fp32 without native bf16 (AVX2 EPYC: fp32 534 ms, bf16 3,100 ms per probe step);
- ``base_channels=32`` and a 64 x 256 input: 4x fewer FLOPs than ResNet18's width, the changes a CPU forces;
  the paper presets keep 64 channels and 128 x 512;
- ``gate-corr`` with the shared window, known-positive windows in training, the gate term (0.2) and a 0.3
  alignment loss, each chosen on the validation split at the 1,000-step budget (README, "The demo recipe and why").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..model import ModelConfig
from ..utils import config_from_dict, config_to_dict

SOFT_WINDOW_CHOICES = ("soft", "straight-through")  # gate-corr only: the triplet loss reaches the window scores
KNOWN_POSITIVE_CHOICES = ("known-positive", "hardest-negative")  # positives cropped at their known window
WINDOW_CHOICES = ("argmax", *SOFT_WINDOW_CHOICES, *KNOWN_POSITIVE_CHOICES)
NEGATIVES = ("all-ranks", "per-rank")


@dataclass
class TrainConfig:
    # ---- data
    dataset: str = "synth"
    data_root: str = "data/synth"
    train_split: str = "train"
    # model selection (validation during training, best.safetensors): "auto" = the dataset's val split if it has
    # one, else a subset carved from train_split (geoapp.data.selection); "carve"; or a split name
    val_split: str = "auto"
    test_split: str = "test"  # the final evaluation's split: reported only, never chosen on
    allow_test_selection: bool = False  # let val_split be the test split (warns loudly)
    fov: float = 90.0  # the model's nominal FoV: validation and, without fov_range, every training batch
    fov_range: tuple[float, ...] = ()  # (lo, hi): each training batch at a FoV drawn uniformly from it (data.batch_fov)
    height: int = 128  # ground crop height = polar height
    sat_width: int = 512  # polar width = resized panorama width
    cache: str = "auto"  # keep decoded uint8 images in memory: auto | yes | no
    workers: int = 2  # DataLoader worker processes (image decoding when not cached)
    val_size: int = 1000  # validation locations used during training (0: the whole split); also the size of a
    # carved selection subset (0: about 5 %, at least 500 where the training split allows)
    # ---- model
    use_ca: bool = True
    align_mode: str = "mask-corr"
    stages: tuple[int, ...] = (1, 2, 3, 4)
    base_channels: int = 64  # block-1 channels (ResNet18: 64); a narrower model trains faster on a CPU
    wrap_satellite: bool = False  # circular width padding in the satellite branch (the polar image wraps)
    shared_window: bool = False  # attention modes: the heading stage's window offset places every stage's window
    gate_weight: float = 0.0  # gate-corr: weight of the attention agreement in the pair similarity (ModelConfig)
    imagenet_weights: str | None = None
    # ---- optimisation
    epochs: int = 100
    max_steps: int = 0  # 0: epochs * steps per epoch; otherwise the run's length in optimizer steps
    batch_size: int = 24  # per process (per GPU)
    lr: float = 5e-5
    lr_schedule: str = "cosine"  # cosine | step | constant
    min_lr_ratio: float = 0.01  # final lr / lr (cosine); step: lr x 0.1 at 50 % and 75 % of the run
    warmup_steps: int = 0
    weight_decay: float = 5e-4
    alpha: float = 10.0
    grad_clip: float = 0.0  # 0: off
    align_loss: float = 0.0  # weight of the auxiliary window-alignment loss (not in the paper; objective.py)
    # how training picks the window (gate-corr only for soft / straight-through; inference always takes the argmax):
    # argmax, soft (softmax over offsets) or straight-through (argmax forward, softmax gradient)
    window_choice: str = "argmax"
    # torchrun: where an anchor's batch-hard negative comes from: every process's batch (all-ranks, gathered as
    # Sample4Geo gathers) or its own process's batch (per-rank, as one GPU with the per-GPU batch would)
    negatives: str = "all-ranks"
    # ---- device and precision
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | fp32 | bf16 | fp16  (auto: bf16/fp16 on GPU, fp32 on CPU)
    channels_last: bool = False
    # ---- run
    out: str = "runs/demo"
    seed: int = 0
    val_every: str = "1ep"  # N steps, or "Nep" epochs
    ckpt_every: str = ""  # same syntax; empty: at every validation
    log_every: int = 20
    max_minutes: float = 0.0  # 0: no time budget
    eval_fovs: tuple[float, ...] = ()  # FoVs of the final evaluation (default: the training FoV)
    final_eval_size: int = 0  # locations of the final evaluation on test_split (0: all)
    progress: bool = True
    export: str = ""  # after the final evaluation, write best.safetensors here in float16, measured as stored
    preset: str = ""

    def __post_init__(self):
        self.stages = tuple(sorted(int(s) for s in self.stages))
        self.eval_fovs = tuple(float(f) for f in self.eval_fovs)
        self.fov_range = tuple(float(f) for f in self.fov_range)
        problems = []
        if self.fov_range and not (len(self.fov_range) == 2 and 0 < self.fov_range[0] <= self.fov_range[1] <= 360):
            problems.append(f"fov_range must be two FoVs lo <= hi in (0, 360], got {self.fov_range}")
        if self.cache not in ("auto", "yes", "no"):
            problems.append(f"cache must be auto|yes|no, got {self.cache!r}")
        if self.lr_schedule not in ("cosine", "step", "constant"):
            problems.append(f"lr_schedule must be cosine|step|constant, got {self.lr_schedule!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be auto|cpu|cuda, got {self.device!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            problems.append(f"precision must be auto|fp32|bf16|fp16, got {self.precision!r}")
        if self.window_choice not in WINDOW_CHOICES:
            problems.append(f"window_choice must be one of {WINDOW_CHOICES}, got {self.window_choice!r}")
        elif self.window_choice in SOFT_WINDOW_CHOICES and self.align_mode != "gate-corr":
            problems.append(f"window_choice {self.window_choice!r} needs align_mode gate-corr, got {self.align_mode!r}")
        if self.negatives not in NEGATIVES:
            problems.append(f"negatives must be one of {NEGATIVES}, got {self.negatives!r}")
        if self.batch_size < 2:
            problems.append(f"batch_size must be >= 2 (batch-hard mining needs negatives), got {self.batch_size}")
        if not self.test_split or self.test_split in ("auto", "carve"):
            problems.append(f"test_split must name a split of the dataset, got {self.test_split!r}")
        if self.val_split == self.test_split and not self.allow_test_selection:
            problems.append(f"val_split {self.val_split!r} is the test split: model selection on the reported split "
                            "needs allow_test_selection (--allow-test-selection)")
        for name in ("val_every", "ckpt_every"):
            try:
                parse_every(getattr(self, name), allow_empty=name == "ckpt_every")
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))
        self.model_config()  # raises on an invalid model part (align mode without CA, bad sizes, ...)

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            use_ca=self.use_ca,
            align_mode=self.align_mode,
            stages=self.stages,
            base_channels=self.base_channels,
            wrap_satellite=self.wrap_satellite,
            shared_window=self.shared_window,
            gate_weight=self.gate_weight,
            fov_deg=self.fov,
            ground_height=self.height,
            sat_height=self.height,
            sat_width=self.sat_width,
        )

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return config_from_dict(cls, d, "training config")

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def parse_every(text: str, allow_empty: bool = False) -> tuple[int, str] | None:
    """``"500"`` -> (500, "steps"); ``"2ep"`` -> (2, "epochs"); ``""`` -> None when allowed."""
    text = str(text).strip()
    if not text and allow_empty:
        return None
    m = re.fullmatch(r"(\d+)\s*(ep|epochs?)?", text)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"an interval must be N (steps) or Nep (epochs) with N >= 1, got {text!r}")
    return int(m.group(1)), "epochs" if m.group(2) else "steps"


def _paper(dataset: str, fov: float, literal: bool = False) -> dict:
    """The paper's sizes and optimisation on ``dataset``; the learning method, or the paper's as written."""
    method = dict(align_mode="mask-corr", shared_window=False, window_choice="argmax", gate_weight=0.0,
                  align_loss=0.0, wrap_satellite=False) if literal else LEARNING_METHOD
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


# The method the demo and paper presets train: FCA with windows chosen by the attention's column gates, each piece
# chosen on the validation split (README, "The demo recipe and why"; docs/results.md)
LEARNING_METHOD = dict(
    align_mode="gate-corr",
    shared_window=True,  # block 1's gates place every stage's window (3-seed comparison)
    window_choice="known-positive",  # positives at their known window (1,000-step 3-seed comparison)
    gate_weight=0.2,  # the attention agreement in the pair similarity (chosen on val)
    align_loss=0.3,
    wrap_satellite=True,  # circular padding: the polar image is a panorama
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
        **LEARNING_METHOD,
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
