"""The training config: one dataclass holding every setting of a run, its choices, and the ``--val-every`` style
intervals. Resolution order: ``TrainConfig`` defaults < preset (:mod:`geoapp.training.presets`) < flags given on
the command line; the resolved config is printed and saved as ``config.json`` in the run folder."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..model import ModelConfig
from ..provenance import config_from_dict, config_to_dict

SOFT_WINDOW_CHOICES = ("soft", "straight-through")  # gate-corr only: the triplet loss reaches the window scores
HARDEST_MARGIN = "hardest-margin"  # known-positive plus the descriptor's triplet loss at the hardest windows
KNOWN_POSITIVE_CHOICES = ("known-positive", "hardest-negative", HARDEST_MARGIN)  # positives at their known window
WINDOW_CHOICES = ("argmax", *SOFT_WINDOW_CHOICES, *KNOWN_POSITIVE_CHOICES)
NEGATIVES = ("all-ranks", "per-rank")


def window_choice_problem(window_choice: str, align_mode: str, gate_weight: float) -> str | None:
    """What is wrong with training windows chosen by ``window_choice`` for a model of ``align_mode`` and
    ``gate_weight`` (None: nothing): a soft window weighs the gate-corr scores of every offset, so it needs that mode,
    and it forms offset-averaged distances, which have no gate term."""
    if window_choice in SOFT_WINDOW_CHOICES and align_mode != "gate-corr":
        return f"window_choice {window_choice!r} needs align_mode gate-corr, got {align_mode!r}"
    if window_choice in SOFT_WINDOW_CHOICES and gate_weight > 0:
        return (f"window_choice {window_choice!r} forms offset-averaged distances without the gate term; train a "
                f"gate_weight {gate_weight} model with argmax or known-positive")
    return None


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
        choice_problem = window_choice_problem(self.window_choice, self.align_mode, self.gate_weight)
        if choice_problem:  # (None for an unknown choice, refused just above)
            problems.append(choice_problem)
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
