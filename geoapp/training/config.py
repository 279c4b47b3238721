"""The training config: one dataclass holding every setting of a run, its choices, and the ``--val-every`` style
intervals. Resolution order: ``TrainConfig`` defaults < preset (:mod:`geoapp.training.presets`) < flags given on
the command line; the resolved config is printed and saved as ``config.json`` in the run folder.

The defaults are the method (``docs/method.md``): a bare ``python -m geoapp.train`` trains it at the paper's sizes.
The model's part is a :class:`~geoapp.model.ModelConfig` held whole (``TrainConfig.model``); presets, flags and
older saved configs name its fields flat (``align_mode``, ``stages``, ...; ``fov`` and ``height`` for the FoV and
both image heights), and :func:`nested_values` turns those into the nested record."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field

from ..model import ModelConfig
from ..provenance import config_from_dict, config_to_dict
from .window_choices import METHOD_WINDOW_CHOICE, WINDOW_CHOICES

NEGATIVES = ("all-ranks", "per-rank")
# flat names of the model's fields that stand for others: the FoV, and one height for both images
MODEL_ALIASES = {"fov": ("fov_deg",), "height": ("ground_height", "sat_height")}
MODEL_KEYS = frozenset(f.name for f in dataclasses.fields(ModelConfig)) | set(MODEL_ALIASES)


def method_model() -> ModelConfig:
    """The model the method trains: ResNet18_CA at the paper's sizes with the method's alignment (ModelConfig's
    defaults) and circular padding in the satellite branch (its polar image is a panorama)."""
    return ModelConfig(wrap_satellite=True)


def nested_values(values: dict) -> dict:
    """A training config's values with the model's part as one ``model`` record: flat model fields (presets, flags,
    older saved configs) are moved into it, over the values of a ``model`` record already there (by default the
    method's model)."""
    out = {k: v for k, v in values.items() if k not in MODEL_KEYS}
    model = out.pop("model", None) or method_model()
    model = model.to_dict() if isinstance(model, ModelConfig) else dict(model)
    given = MODEL_KEYS & set(values)
    for key in given:
        for name in MODEL_ALIASES.get(key, (key,)):
            model[name] = values[key]
    if given & {"use_ca", "align_mode"}:  # another alignment brings its own defaults, unless they are given too
        for name in ("shared_window", "gate_weight", *(("align_mode",) if "use_ca" in given else ())):
            if name not in given:
                model[name] = None
    out["model"] = model
    return out


def flat_values(values: dict) -> dict:
    """The inverse view of :func:`nested_values`: every field by its flat name (to compare with flags)."""
    out = {k: v for k, v in values.items() if k != "model"}
    model = values.get("model") or {}
    aliased = {name for names in MODEL_ALIASES.values() for name in names}
    out.update({key: value for key, value in model.items() if key not in aliased})
    out.update({alias: model[names[0]] for alias, names in MODEL_ALIASES.items() if names[0] in model})
    return out


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
    fov_range: tuple[float, ...] = ()  # (lo, hi): each training batch at a FoV drawn uniformly from it (data.batch_fov)
    cache: str = "auto"  # keep decoded uint8 images in memory: auto | yes | no
    workers: int = 2  # DataLoader worker processes (image decoding when not cached)
    val_size: int = 1000  # validation locations used during training (0: the whole split); also the size of a
    # carved selection subset (0: about 5 %, at least 500 where the training split allows)
    # ---- model: architecture, sizes (its fov_deg is the nominal FoV: validation and, without fov_range, every
    # training batch) and matching
    model: ModelConfig = field(default_factory=method_model)
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
    align_loss: float = 0.3  # weight of the auxiliary window-alignment loss (not in the paper; objective.py)
    # how training picks the windows its loss sees (geoapp.training.window_choices); inference takes the argmax
    window_choice: str = METHOD_WINDOW_CHOICE.name
    # torchrun: where an anchor's batch-hard negative comes from: every process's batch (all-ranks, gathered as
    # Sample4Geo gathers) or its own process's batch (per-rank, as one GPU with the per-GPU batch would)
    negatives: str = "all-ranks"
    # ---- device and precision
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | fp32 | bf16 | fp16  (auto: bf16/fp16 on GPU, measured on CPU: precision.py)
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
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
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
            problems.append(f"window_choice must be one of {tuple(WINDOW_CHOICES)}, got {self.window_choice!r}")
        else:
            choice_problem = WINDOW_CHOICES[self.window_choice].problem(self.model.alignment, self.model.gate_weight)
            if choice_problem:
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

    @property
    def fov(self) -> float:
        """The model's nominal FoV: validation and, without ``fov_range``, every training batch."""
        return self.model.fov_deg

    @property
    def height(self) -> int:
        """Ground crop height = polar height."""
        return self.model.ground_height

    @property
    def sat_width(self) -> int:
        """Polar width = resized panorama width."""
        return self.model.sat_width

    def model_config(self) -> ModelConfig:
        return self.model

    def to_dict(self) -> dict:
        return {**config_to_dict(self), "model": self.model.to_dict()}

    def flat(self) -> dict:
        """Every field by its flat name (the names presets and flags use), tuples as tuples."""
        return flat_values({**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                            "model": dataclasses.asdict(self.model)})

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From a saved record (nested, or the flat form of older runs) or flat values (presets, flags)."""
        return config_from_dict(cls, nested_values(d), "training config")

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
