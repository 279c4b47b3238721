"""Learning curves of a run folder: training loss and validation recall / heading error against step."""

from __future__ import annotations

from pathlib import Path

from ..files import atomic_path


def plot_curves(records: list[dict], path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig, (ax_loss, ax_rec) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
    ax_loss.set(xlabel="step", ylabel="triplet loss (train)", title="loss")
    ax_loss.grid(alpha=0.3)
    for key in ("R@1", "R@5", "R@10", "R@1%"):
        if val and key in val[0]:
            ax_rec.plot([r["step"] for r in val], [r[key] for r in val], marker="o", ms=3, label=key)
    ax_rec.set(xlabel="step", ylabel="recall (%)", ylim=(0, 100), title="validation")
    ax_rec.grid(alpha=0.3)
    if val and "heading_median_deg" in val[0]:
        ax_head = ax_rec.twinx()
        ax_head.plot([r["step"] for r in val], [r["heading_median_deg"] for r in val], "k--", lw=1,
                     label="median heading error")
        ax_head.set_ylabel("median heading error (deg)")
        ax_head.legend(loc="lower right", fontsize=8)
    if val:
        ax_rec.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
