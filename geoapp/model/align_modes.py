"""The window alignments: one object per way of choosing a pair's window (conventions §5), looked up by name.

A model config, a checkpoint, a database and the command lines name the alignment by its string; the code asks the
:class:`AlignMode` object what it needs (what chooses the window, whether its scores are cosines, ...) instead of
comparing names. Adding an alignment means adding a member here (and its score in :func:`geoapp.model.align
.window_scores` when it reads something new); ``tests/test_align_modes.py`` then checks it like every other member.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_GATE_WEIGHT = 0.2  # the gate term of the method (chosen on the validation split, docs/results.md)


@dataclass(frozen=True)
class AlignMode:
    """One alignment and its rules.

    - ``attention``: what chooses the window: the CA column ``"gates"``, the CA ``"masks"``, or None (the raw features:
      DSM's correlation, the "no FCA" baseline). An attention mode is FCA: it needs a model with CA, it can share
      one stage's window with the others, and its database keeps the attention.
    - ``reads_photo``: False where the score ignores the ground side (every photo gets the tile's same window).
    - ``cosine_scores``: the window scores are cosines in [-1, 1]: only then can they enter the pair similarity (the
      gate term), become window logits through a learned temperature, or be softened over the offsets in training.
    """

    name: str
    description: str
    attention: str | None
    reads_photo: bool = True
    cosine_scores: bool = False

    @property
    def is_fca(self) -> bool:
        """Whether the attention chooses the window (the paper's FCA) rather than the features."""
        return self.attention is not None

    @property
    def default_shared_window(self) -> bool:
        """The method's choice: one stage's attention places every stage's window (only FCA has a window to share)."""
        return self.is_fca

    @property
    def default_gate_weight(self) -> float:
        """The method's gate term where the scores allow one, else none."""
        return DEFAULT_GATE_WEIGHT if self.cosine_scores else 0.0

    def attention_of(self, maps, stage: int):
        """What this mode reads from encoded ``maps`` (a StageMaps) to choose the window at ``stage``; None when
        the maps lack it (a model without CA) or the mode reads the features."""
        att = {"gates": maps.gates, "masks": maps.masks}.get(self.attention)
        return None if att is None else att[stage - 1]

    def __str__(self) -> str:
        return self.name


_MEMBERS = (
    AlignMode("gate-corr", "centred correlation of the two branches' CA column gates (the method)", "gates",
              cosine_scores=True),
    AlignMode("mask-corr", "correlation of the two branches' mean CA masks (the paper's text, read literally)",
              "masks"),
    AlignMode("mask-sum", "sum of the tile's mean CA mask under the window (ignores the photo)", "masks",
              reads_photo=False),
    AlignMode("feature", "DSM's dot product of the raw features at every offset (no FCA)", None),
)
ALIGN_MODES: dict[str, AlignMode] = {m.name: m for m in _MEMBERS}
GATE_CORR, MASK_CORR, MASK_SUM, FEATURE = _MEMBERS  # for code that needs one particular alignment, not a rule


def align_mode(mode: AlignMode | str) -> AlignMode:
    """The member named ``mode`` (an :class:`AlignMode` passes through); a clear error for an unknown name."""
    if isinstance(mode, AlignMode):
        return mode
    if mode not in ALIGN_MODES:
        raise ValueError(f"unknown alignment mode {mode!r}; choose one of {tuple(ALIGN_MODES)}")
    return ALIGN_MODES[mode]


def default_align_mode(use_ca: bool) -> AlignMode:
    """The method's alignment for a model with (or without) Coordinate Attention."""
    return GATE_CORR if use_ca else FEATURE


def gate_weight_problem(gate_weight: float, mode: AlignMode | str) -> str | None:
    """What is wrong with a gate term of ``gate_weight`` under ``mode`` (None: nothing): the term adds the window's
    score to a cosine, so it needs a mode whose scores are cosines too."""
    mode = align_mode(mode)
    if gate_weight < 0 or (gate_weight > 0 and not mode.cosine_scores):
        cosine = [m.name for m in ALIGN_MODES.values() if m.cosine_scores]
        return (f"gate_weight must be >= 0 and needs an align_mode whose window scores are cosines {cosine}, got "
                f"{gate_weight} with {mode.name!r}")
    return None
