"""``python -m geoapp.training.ablation``: the paper's ablation at demo scale, and the demo recipe's choices.

``--study ablation`` (default) trains every row at every FoV with the demo preset and the same step budget, one
run folder each under ``--out``, then prints a markdown table of the final evaluations. ``--train-fov F`` trains
each row once, at F, and evaluates that model at every ``--fov`` (the demo preset's own setting: it trains at 90
deg and serves photos of any FoV), which halves the CPU time of a two-FoV table. The rows are the
paper's (Tables 3-6), cumulatively:

- ``ResNet18``: plain backbone, no FCA (DSM-style feature alignment), block 4 only
- ``+CA``: Coordinate Attention, still feature alignment, block 4 only
- ``+CA+FCA``: window alignment from the CA attention (``gate-corr``), block 4 only
- ``+CA+FCA+FMC (demo)``: attention alignment and the multi-scale descriptor of blocks 1-4 (the paper's full
  model, as the demo preset trains it: block 1's gates place every stage's window)
- ``+CA+FCA+FMC, descriptor cosine only``: the demo's model with the paper's pair score, the FMC cosine alone
  (``--gate-weight 0``: the two branches' attention agreement does not count)
- ``+CA+FCA(each stage its own window)+FMC``: the same with every stage choosing its window from its own gates
- ``+CA+FCA(mask-corr)+FMC``: the same with conventions §5's mean-mask correlation instead of ``gate-corr``
- ``+CA+FMC``: feature alignment with the blocks 1-4 descriptor (no FCA)
- ``ResNet18+FMC``: the same without Coordinate Attention (what CA adds where the model learns at all)

Everything else (data, model width, batch, lr schedule, precision, the 0.3 alignment loss) is the demo preset's,
so the rows differ only in the ablated parts.

``--study recipe`` measures the demo preset's own choices the way the issue asks for them: the same wall-clock
budget (``--minutes``) for each variant of one setting (precision, batch size, input resolution), and the
accuracy each reaches in it at 90 deg. A recipe is a choice, so its table reads the runs' model-selection split
(the world's validation split, the runs' best validation record: conventions §7), never the test split.

``--study seeds --runs DIR [DIR ...]`` summarises runs that differ only in their training seed: per FoV, the mean
± std over the runs of each run's final evaluation (itself the mean over the shift seeds), and each run's R@1.

The ablation table reports each run's final evaluation on the test split (mean over the shift seeds of
``geoapp.training.evaluation.REPORT_SHIFT_SEEDS``); no setting is chosen from it.

Runs are subprocesses of ``python -m geoapp.train`` (their exact command is in each run's config.json); a run
whose ``final_eval.json`` exists is not trained again, and a killed one resumes, so a sweep can be restarted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..model.align_modes import FEATURE, GATE_CORR, MASK_CORR

ROWS = {
    "resnet18": ("ResNet18", ["--no-ca", "--align-mode", FEATURE.name, "--stages", "4"]),
    "ca": ("+CA", ["--align-mode", FEATURE.name, "--stages", "4"]),
    "ca-fca": ("+CA+FCA", ["--align-mode", GATE_CORR.name, "--stages", "4"]),
    "ca-fca-fmc": ("+CA+FCA+FMC (demo)", ["--align-mode", GATE_CORR.name, "--stages", "1", "2", "3", "4"]),
    "ca-fca-fmc-cos": ("+CA+FCA+FMC, descriptor cosine only (the paper's score)",
                       ["--align-mode", GATE_CORR.name, "--gate-weight", "0", "--stages", "1", "2", "3", "4"]),
    "ca-fca-own-fmc": ("+CA+FCA(each stage its own window)+FMC", ["--align-mode", GATE_CORR.name, "--no-shared-window",
                                                                 "--stages", "1", "2", "3", "4"]),
    "ca-maskfca-fmc": ("+CA+FCA(mask-corr)+FMC", ["--align-mode", MASK_CORR.name, "--stages", "1", "2", "3", "4"]),
    "ca-fmc": ("+CA+FMC", ["--align-mode", FEATURE.name, "--stages", "1", "2", "3", "4"]),
    "fmc": ("ResNet18+FMC", ["--no-ca", "--align-mode", FEATURE.name, "--stages", "1", "2", "3", "4"]),
}


RECIPE = {
    "demo": ("demo preset: precision auto, batch 32, 64x256", []),
    "bf16": ("bf16 autocast", ["--precision", "bf16"]),
    "batch16": ("batch 16", ["--batch-size", "16"]),
    "batch64": ("batch 64", ["--batch-size", "64"]),
    "fullres": ("full resolution 128x512", ["--height", "128", "--sat-width", "512"]),
}


def run_command(row: str, fov: float, steps: int, out: Path, data_root: str,
                eval_fovs: list[float] | None = None) -> list[str]:
    """The training command of one ablation run: trained at ``fov``, evaluated at ``eval_fovs`` (default: ``fov``)."""
    return [
        sys.executable, "-m", "geoapp.train", "--preset", "demo-quick", "--data-root", data_root,
        *ROWS[row][1], "--fov", f"{fov:g}", "--eval-fov", *[f"{f:g}" for f in (eval_fovs or [fov])],
        "--max-steps", str(steps), "--max-minutes", "0", "--val-every", str(steps),
        "--out", str(out / f"{row}-{fov:g}"), "--no-progress",
    ]


def recipe_command(name: str, minutes: float, out: Path, data_root: str) -> list[str]:
    return [
        sys.executable, "-m", "geoapp.train", "--preset", "demo-quick", "--data-root", data_root, *RECIPE[name][1],
        "--eval-fov", "90", "--max-minutes", f"{minutes:g}", "--val-every", "100000",
        "--out", str(out / f"recipe-{name}"), "--no-progress",
    ]


def _finished_run(run: Path, fov: float) -> tuple[dict | None, list[dict]] | None:
    """The final evaluation at ``fov`` (None if the run was not evaluated at it) and the training log records of a
    finished run; None if it has not finished."""
    path = run / "final_eval.json"
    if not path.exists():
        return None
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return json.loads(path.read_text())["by_fov"].get(f"{fov:g}"), [r for r in records if r.get("kind") == "train"]


def _with_std(m: dict, key: str) -> str:
    """``39.0 ± 1.1``: the mean over the shift seeds and, where the evaluation had several, their spread."""
    return f"{m[key]:.1f} ± {m[key + '_std']:.1f}" if key + "_std" in m else f"{m[key]:.1f}"


def _best_validation(run: Path) -> dict | None:
    """The best validation record (R@1, then R@5, R@10: how best.safetensors is chosen) of a finished run."""
    if not (run / "final_eval.json").exists():
        return None
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r.get("kind") == "val"]
    return max(val, key=lambda r: (r["R@1"], r["R@5"], r["R@10"])) if val else None


def recipe_table(out: Path, names: list[str]) -> str:
    lines = ["| variant | steps in the budget | pairs/s | val R@1 | val R@5 | val R@10 | val heading median |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        done = _finished_run(out / f"recipe-{name}", 90.0)
        m = _best_validation(out / f"recipe-{name}")
        if done is None or m is None:
            lines.append(f"| {RECIPE[name][0]} | not run | | | | | |")
            continue
        _, train = done
        steps = max(r["step"] for r in train)
        speed = sum(r["pairs_per_s"] for r in train) / len(train)
        lines.append(f"| {RECIPE[name][0]} | {steps} | {speed:.0f} | {m['R@1']:.1f} | {m['R@5']:.1f} | "
                     f"{m['R@10']:.1f} | {m['heading_median_deg']:.1f}° |")
    return "\n".join(lines)


def table(out: Path, rows: list[str], fovs: list[float], train_fov: float | None = None) -> str:
    """One line per (FoV, row); with ``train_fov`` every FoV reads the one run trained at that FoV."""
    lines = ["| model | trained at | FoV | R@1 | R@5 | R@10 | heading median | heading within 10° | train min |",
             "|---|---|---|---|---|---|---|---|---|"]
    for fov in fovs:
        trained = fov if train_fov is None else train_fov
        for row in rows:
            done = _finished_run(out / f"{row}-{trained:g}", fov)
            if done is None:
                lines.append(f"| {ROWS[row][0]} | {trained:g}° | {fov:g}° | not run | | | | | |")
                continue
            m, train = done
            if m is None:
                lines.append(f"| {ROWS[row][0]} | {trained:g}° | {fov:g}° | not evaluated at this FoV | | | | | |")
                continue
            timed = [r["elapsed_s"] for r in train if "elapsed_s" in r]
            minutes = f"{timed[-1] / 60:.1f}" if timed else ""
            lines.append(f"| {ROWS[row][0]} | {trained:g}° | {fov:g}° | {_with_std(m, 'R@1')} | "
                         f"{m['R@5']:.1f} | {m['R@10']:.1f} | "
                         f"{m['heading_median_deg']:.1f}° | {m['heading_within_10deg']:.1f}% | {minutes} |")
    return "\n".join(lines)


SEED_METRICS = (("R@1", "R@1"), ("R@10", "R@10"), ("heading median", "heading_median_deg"),
                ("heading within 10°", "heading_within_10deg"))


def seeds_table(runs: list[Path], fovs: list[float]) -> str:
    """Mean ± std over ``runs`` (training seeds) of their final evaluations at each FoV, and each run's R@1."""
    done = [(run, json.loads((run / "final_eval.json").read_text())["by_fov"]) for run in runs
            if (run / "final_eval.json").exists()]
    missing = [str(run) for run in runs if not (run / "final_eval.json").exists()]
    lines = ["| FoV | runs | " + " | ".join(name for name, _ in SEED_METRICS) + " | R@1 per run |",
             "|---|---|" + "---|" * len(SEED_METRICS) + "---|"]
    for fov in fovs:
        evals = [m[f"{fov:g}"] for _, m in done if f"{fov:g}" in m]
        if not evals:
            lines.append(f"| {fov:g}° | 0 | " + "| " * len(SEED_METRICS) + "|")
            continue
        cells = []
        for _, key in SEED_METRICS:
            v = np.array([e[key] for e in evals], dtype=float)
            cells.append(f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}")
        per_run = ", ".join(f"{e['R@1']:.1f}" for e in evals)
        lines.append(f"| {fov:g}° | {len(evals)} | " + " | ".join(cells) + f" | {per_run} |")
    if missing:
        lines.append(f"(not finished: {', '.join(missing)})")
    return "\n".join(lines)


def _run(cmd: list[str], run: Path) -> None:
    if (run / "final_eval.json").exists():
        return
    if (run / "last").exists():  # killed earlier: continue it exactly from its last checkpoint
        cmd = [sys.executable, "-m", "geoapp.train", "--out", str(run), "--resume", "--no-progress"]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(prog="python -m geoapp.training.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", choices=["ablation", "recipe", "seeds"], default="ablation")
    p.add_argument("--runs", nargs="+", default=[], help="seeds: the run folders to summarise (one per training seed)")
    p.add_argument("--steps", type=int, default=500, help="ablation: optimizer steps per run (the shared budget)")
    p.add_argument("--fov", type=float, nargs="+", default=[90.0, 70.0], help="ablation: ground fields of view")
    p.add_argument("--train-fov", type=float, default=None,
                   help="ablation: train each row once at this FoV and evaluate it at every --fov "
                        "(default: one run per FoV, trained and evaluated at it)")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="ablation: which rows to run")
    p.add_argument("--minutes", type=float, default=3.0, help="recipe: wall-clock budget per run")
    p.add_argument("--variants", nargs="+", default=list(RECIPE), choices=list(RECIPE), help="recipe: which runs")
    p.add_argument("--data-root", default="data/synth", help="synthetic world (python -m geoapp.synth)")
    p.add_argument("--out", default="runs/ablation", help="parent folder of the run folders")
    p.add_argument("--table-only", action="store_true", help="print the table of finished runs, train nothing")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.study == "seeds":
        if not args.runs:
            p.error("--study seeds needs --runs DIR [DIR ...]")
        result = seeds_table([Path(r) for r in args.runs], args.fov)
        print(result)
        return result
    if args.study == "recipe":
        if not args.table_only:
            for name in args.variants:
                _run(recipe_command(name, args.minutes, out, args.data_root), out / f"recipe-{name}")
        result = recipe_table(out, args.variants)
    else:
        if not args.table_only:
            # (row, training FoV, evaluation FoVs): one run per row with --train-fov, else one per row and FoV
            runs = ([(row, args.train_fov, args.fov) for row in args.rows] if args.train_fov is not None
                    else [(row, fov, None) for fov in args.fov for row in args.rows])
            for row, fov, eval_fovs in runs:
                _run(run_command(row, fov, args.steps, out, args.data_root, eval_fovs), out / f"{row}-{fov:g}")
        result = table(out, args.rows, args.fov, args.train_fov)
    print(result)
    return result


if __name__ == "__main__":
    main()
