"""One dataclass that describes a model completely; checkpoints store it so they can rebuild their model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..angles import fov_width
from ..provenance import config_from_dict, config_to_dict
from .align_modes import ALIGN_MODES, AlignMode, align_mode, default_align_mode, gate_weight_problem

STAGES = (1, 2, 3, 4)
CONFIG_VERSION = 1


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and matching settings of a cross-view model (conventions §1, 5, 6).

    - ``use_ca``: ResNet18_CA (paper) or the plain ResNet18 baseline.
    - ``align_mode``: the name of the window alignment (:mod:`geoapp.model.align_modes`; conventions §5); the
      attention modes are FCA, ``feature`` is DSM's correlation of raw features (the "no FCA" ablation). None: the
      method's, ``gate-corr`` with CA and ``feature`` without. :attr:`alignment` is the member itself.
    - ``base_channels``: channels of block 1 (ResNet18: 64); the other stages scale with it (2x, 4x, 8x). A
      narrower model is a CPU-sized one; only 64 loads ImageNet weights.
    - ``wrap_satellite``: the satellite branch pads the width circularly (the polar image is a panorama).
    - ``stages``: which stage maps form the descriptor; ``(1, 2, 3, 4)`` is FMC, ``(4,)`` the block-4-only ablation.
    - ``heading_stage``: the stage whose window offset gives the predicted heading; by default the finest stage
      in ``stages`` (its window step is the smallest: 2.8 deg at block 1 vs 22.5 deg at block 4).
    - ``shared_window`` (attention modes): only the heading stage's attention chooses the window, and every other
      stage crops at the same azimuth (``geoapp.model.align``, ``offset_stage``); False: each stage chooses its own.
      None: the mode's default (shared for FCA).
    - ``gate_weight`` (modes with cosine scores): weight λ of the attention agreement in the pair similarity,
      ``(cos_FMC + λ gate) / (1 + λ)`` with ``gate`` the window score at the chosen window
      (:mod:`geoapp.model.align`); 0: the paper's FMC cosine alone. It changes the ranking, not the window or the
      heading. None: the mode's default.
    - ``wrap_satellite`` stays False by default so that older database records, which lack it, keep their meaning;
      the training config's default model turns it on.

    The defaults left at None resolve in ``__post_init__``, so a saved config always records the values it ran with,
    and ``ModelConfig()`` is the method (``ModelConfig(use_ca=False)`` its plain baseline).
    - input sizes default to conventions §1; a reduced-resolution model (e.g. for CPU training) scales them together.
    """

    use_ca: bool = True
    ca_reduction: int = 32
    align_mode: str | None = None
    stages: tuple[int, ...] = STAGES
    fov_deg: float = 90.0
    ground_height: int = 128
    sat_height: int = 128
    sat_width: int = 512
    heading_stage: int | None = None
    base_channels: int = 64
    wrap_satellite: bool = False
    shared_window: bool | None = None
    gate_weight: float | None = None
    arch: str = "resnet18"
    version: int = field(default=CONFIG_VERSION)

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(sorted(int(s) for s in self.stages)))
        self._resolve_defaults()
        problems = []
        if self.arch != "resnet18":
            problems.append(f"arch must be 'resnet18', got {self.arch!r}")
        if self.align_mode not in ALIGN_MODES:
            problems.append(f"align_mode must be one of {tuple(ALIGN_MODES)}, got {self.align_mode!r}")
            object.__setattr__(self, "align_mode", default_align_mode(self.use_ca).name)  # to report the rest
        elif self.alignment.is_fca and not self.use_ca:
            problems.append(
                f"align_mode {self.align_mode!r} reads Coordinate Attention, so it needs use_ca=True "
                f"(the plain ResNet18 baseline uses align_mode={default_align_mode(False).name!r})"
            )
        if not self.stages or any(s not in STAGES for s in self.stages) or len(set(self.stages)) != len(self.stages):
            problems.append(f"stages must be distinct values from {STAGES}, got {self.stages}")
        if self.shared_window and not self.alignment.is_fca:
            fca = tuple(m.name for m in ALIGN_MODES.values() if m.is_fca)
            problems.append(f"shared_window needs an attention align_mode {fca}, got {self.align_mode!r}")
        gate_problem = gate_weight_problem(self.gate_weight, self.align_mode)
        if gate_problem:
            problems.append(gate_problem)
        if self.heading_stage is not None and self.heading_stage not in self.stages:
            problems.append(f"heading_stage {self.heading_stage} is not one of the used stages {self.stages}")
        if not 0 < self.fov_deg <= 360:
            problems.append(f"fov_deg must be in (0, 360], got {self.fov_deg}")
        for name in ("ground_height", "sat_height", "sat_width"):
            if getattr(self, name) < 32 or getattr(self, name) % 32:
                problems.append(f"{name} must be a positive multiple of 32 (ResNet stride), got {getattr(self, name)}")
        if self.base_channels < 8 or self.base_channels % 8:
            problems.append(f"base_channels must be a positive multiple of 8, got {self.base_channels}")
        if self.ground_height != self.sat_height:
            problems.append(f"ground_height ({self.ground_height}) and sat_height ({self.sat_height}) must be equal")
        if self.version != CONFIG_VERSION:
            problems.append(f"config version {self.version} is not supported (this code reads {CONFIG_VERSION})")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    def _resolve_defaults(self) -> None:
        """Fill the fields left at None with the method's choice for this model (class docstring)."""
        if self.align_mode is None:
            object.__setattr__(self, "align_mode", default_align_mode(self.use_ca).name)
        mode = ALIGN_MODES.get(self.align_mode)
        if self.shared_window is None:
            object.__setattr__(self, "shared_window", bool(mode and mode.default_shared_window))
        if self.gate_weight is None:
            object.__setattr__(self, "gate_weight", mode.default_gate_weight if mode else 0.0)

    @property
    def alignment(self) -> AlignMode:
        """The window alignment this model uses."""
        return align_mode(self.align_mode)

    @property
    def ground_width(self) -> int:
        """Width of the ground crop: ``int(fov / 360 * sat_width)`` (conventions §1: 99 at 70 deg, 128 at 90 deg)."""
        return fov_width(self.fov_deg, self.sat_width)

    @property
    def heading_stage_resolved(self) -> int:
        return self.heading_stage if self.heading_stage is not None else min(self.stages)

    @property
    def window_stage(self) -> int | None:
        """The stage whose scores choose every stage's window (``align_windows(offset_stage=)``), or None."""
        return self.heading_stage_resolved if self.shared_window else None

    def with_fov(self, fov_deg: float) -> ModelConfig:
        return dataclasses.replace(self, fov_deg=float(fov_deg))

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return config_from_dict(cls, d)
