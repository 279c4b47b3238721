"""How training picks the windows its triplet loss sees: one object per choice, looked up by name.

Inference always takes the argmax of the model's alignment; these choices change only what a training step
computes (:mod:`geoapp.training.objective`, whose docstring says why each exists). ``TrainConfig.window_choice``
and ``--window-choice`` name a member; the objective asks it what to do. A new choice is a member here plus what it
computes in the objective; ``tests/test_window_choices.py`` covers every member.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.align_modes import ALIGN_MODES, AlignMode, align_mode


@dataclass(frozen=True)
class WindowChoice:
    """One way of choosing the training windows.

    - ``soft``: the distances are weighted over every offset by a softmax of the window scores (so the loss reaches
      the scores); ``straight_through``: the argmax's distances forward, the softmax's gradient backward.
    - ``known_positives``: each positive pair is cropped at its known true window (needs the crops' shifts).
    - ``hardest_negatives``: every negative pair at the window where its descriptors match best (the feature
      correlation) instead of the model's argmax.
    - ``descriptor_margin``: a second triplet loss on the descriptor alone (no gate term), the positives at their
      known windows and every negative at its hardest window.
    """

    name: str
    description: str
    soft: bool = False
    straight_through: bool = False
    known_positives: bool = False
    hardest_negatives: bool = False
    descriptor_margin: bool = False

    @property
    def reaches_temperature(self) -> bool:
        """Whether the loss reaches the learned window temperature (soft windows weigh the scores with it)."""
        return self.soft

    def problem(self, mode: AlignMode | str, gate_weight: float) -> str | None:
        """What is wrong with this choice for a model of ``mode`` and ``gate_weight`` (None: nothing): a soft window
        weighs cosine window scores, and it forms offset-averaged distances, which have no gate term."""
        mode = align_mode(mode)
        if self.soft and not mode.cosine_scores:
            cosine = [m.name for m in ALIGN_MODES.values() if m.cosine_scores]
            return (f"window_choice {self.name!r} needs an align_mode with cosine window scores {cosine}, got "
                    f"{mode.name!r}")
        if self.soft and gate_weight > 0:
            return (f"window_choice {self.name!r} forms offset-averaged distances without the gate term; train a "
                    f"gate_weight {gate_weight} model with a choice that is not soft")
        return None


_MEMBERS = (
    WindowChoice("argmax", "the model's own windows, as at inference (the paper's training)"),
    WindowChoice("soft", "a softmax over the offsets, so the loss trains the window scores", soft=True),
    WindowChoice("straight-through", "the argmax forward, the softmax's gradient backward", soft=True,
                 straight_through=True),
    WindowChoice("known-positive", "positives at their known window, negatives at the model's (the method)",
                 known_positives=True),
    WindowChoice("hardest-negative", "positives at their known window, every negative at its hardest window",
                 known_positives=True, hardest_negatives=True),
    WindowChoice("hardest-margin", "known-positive, plus the descriptor's own triplet loss at the hardest windows",
                 known_positives=True, descriptor_margin=True),
)
WINDOW_CHOICES: dict[str, WindowChoice] = {c.name: c for c in _MEMBERS}
ARGMAX, SOFT, STRAIGHT_THROUGH, KNOWN_POSITIVE, HARDEST_NEGATIVE, HARDEST_MARGIN = _MEMBERS
METHOD_WINDOW_CHOICE = KNOWN_POSITIVE  # chosen on the validation split (docs/results.md)


def window_choice(choice: WindowChoice | str) -> WindowChoice:
    """The member named ``choice`` (a :class:`WindowChoice` passes through); a clear error for an unknown name."""
    if isinstance(choice, WindowChoice):
        return choice
    if choice not in WINDOW_CHOICES:
        raise ValueError(f"unknown window choice {choice!r}; choose one of {tuple(WINDOW_CHOICES)}")
    return WINDOW_CHOICES[choice]
