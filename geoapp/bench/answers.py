"""Answers a person can act on, measured on the test split: calibration, location prior, several photos.

    python -m geoapp.bench answers --checkpoint checkpoints/demo.safetensors --reference-db reference_db/demo \\
        --distractor-db reference_db/demo-test+train --out docs/answers.json --figures docs

Every query goes through the app's own :class:`~geoapp.retrieval.engine.Localizer` (the database's calibration,
its search, its prior filter); pair i of the test split has database row i as its true tile.

- ``calibration``: all test pairs at 90 and 70 deg (conventions §4 shifts): expected calibration error of the tile and
  heading probabilities, reliability bins (a PNG), and the risk-coverage curve (R@1 of the answers kept when the
  least confident are withheld).
- ``prior``: against the test tiles plus every training tile as distractors (``--distractor-db``, built with
  ``build_db --split test,train``), R@1 and latency with no prior, a 2 km and a 500 m prior. A prior's centre
  is the true location moved by a seeded random offset of up to half its radius (a phone's GPS is not exact).
- ``views``: 1, 2 and 4 random 90 deg views of the same panorama (the first at the conventions §4 shift) as one query:
  R@1 and the first photo's heading error.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from ..data.datasets import build_dataset
from ..data.geo import destination
from ..files import atomic_path, atomic_write_json
from ..retrieval.calibrate import collect_answers
from ..retrieval.confidence import expected_calibration_error, reliability_bins, risk_coverage
from ..retrieval.engine import Localizer
from ..retrieval.prior import LocationPrior
from ..training.evaluation import subset_indices
from ..training.precision import cpu_description

STUDIES = ("calibration", "prior", "views")
PRIOR_RADII_M = (None, 2000.0, 500.0)
VIEW_COUNTS = (1, 2, 4)


def _test_split(localizer: Localizer):
    source = localizer.db.metadata["source"]
    part = source["parts"][0] if source.get("kind") == "concat" else source
    if part.get("kind") != "dataset":
        raise ValueError("the database was not built from a dataset split, so its queries' truth is unknown")
    return build_dataset(part["dataset"], part["root"], part["split"], fov_deg=90.0, train=False), part["split"]


def calibration_study(localizer: Localizer, fovs=(90.0, 70.0), size: int = 0, progress: bool = True) -> dict:
    if localizer.calibration is None:
        raise ValueError(f"{localizer.db.path} has no calibration; build it with `build_db ... --calibrate val`")
    data, split = _test_split(localizer)
    indices = subset_indices(len(data), size)
    out = {"split": split, "queries": len(indices), "references": len(localizer.db),
           "fitted_on": localizer.calibration.record, "by_fov": {}}
    for fov in fovs:
        answers, seconds = collect_answers(localizer, data, (fov,), indices=indices, progress=progress,
                                           label=f"calibration {fov:g} deg")
        tile_p, heading_p = answers.confidence[:, 0], answers.confidence[:, 1]
        out["by_fov"][f"{fov:g}"] = {
            "R@1": float(answers.tile_right.mean() * 100),
            "heading_within_22.5deg": float(answers.heading_right.mean() * 100),
            "mean_tile_confidence": float(tile_p.mean() * 100),
            "ECE_tile": float(expected_calibration_error(tile_p, answers.tile_right) * 100),
            "ECE_heading": float(expected_calibration_error(heading_p, answers.heading_right) * 100),
            "reliability_tile": reliability_bins(tile_p, answers.tile_right),
            "reliability_heading": reliability_bins(heading_p, answers.heading_right),
            "risk_coverage": risk_coverage(tile_p, answers.tile_right, coverages=np.linspace(1.0, 0.05, 20)),
            "no_probability_share": float(np.mean(answers.no_probability) * 100),
            "median_query_ms": float(np.median(seconds) * 1000),
        }
    return out


def prior_study(localizer: Localizer, radii=PRIOR_RADII_M, size: int = 500, seed: int = 0,
                progress: bool = True) -> dict:
    data, split = _test_split(localizer)
    indices = subset_indices(len(data), size)
    out = {"split": split, "queries": len(indices), "references": len(localizer.db), "fov": 90.0, "rows": []}
    for radius in radii:
        rng = np.random.default_rng(seed)
        offsets = {int(i): (radius * 0.5 * math.sqrt(rng.uniform()), rng.uniform(0, 360)) if radius else None
                   for i in indices}

        def prior_of(index, radius=radius, offsets=offsets):
            if radius is None:
                return None
            lat, lon = data.locations[index]
            distance, bearing = offsets[index]
            return LocationPrior(*destination(float(lat), float(lon), bearing, distance), radius)

        answers, seconds = collect_answers(localizer, data, (90.0,), indices=indices, prior_of=prior_of,
                                           progress=progress, label=f"prior {radius or 'none'}")
        out["rows"].append({"radius_m": radius, "R@1": float(answers.tile_right.mean() * 100),
                            "heading_median_deg": float(np.median(answers.heading_error)),
                            "mean_references_searched": float(np.mean(answers.searched)),
                            "median_query_ms": float(np.median(seconds) * 1000)})
    return out


def views_study(localizer: Localizer, counts=VIEW_COUNTS, size: int = 300, progress: bool = True) -> dict:
    data, split = _test_split(localizer)
    indices = subset_indices(len(data), size)
    out = {"split": split, "queries": len(indices), "references": len(localizer.db), "fov": 90.0, "rows": []}
    for views in counts:
        answers, seconds = collect_answers(localizer, data, (90.0,), indices=indices, views=views,
                                           progress=progress, label=f"{views} photo(s)")
        out["rows"].append({"photos": views, "R@1": float(answers.tile_right.mean() * 100),
                            "heading_median_deg": float(np.median(answers.heading_error)),
                            "heading_within_22.5deg": float(answers.heading_right.mean() * 100),
                            "median_query_ms": float(np.median(seconds) * 1000)})
    return out


def draw_figures(calibration: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, key, title in ((axes[0], "reliability_tile", "top-1 tile is right"),
                           (axes[1], "reliability_heading", "heading within 22.5°")):
        ax.plot([0, 100], [0, 100], color="0.6", lw=1, ls="--", label="perfect calibration")
        for fov, row in calibration["by_fov"].items():
            bins = [b for b in row[key] if b["n"] >= 5]
            ece = row["ECE_tile" if key == "reliability_tile" else "ECE_heading"]
            ax.plot([100 * b["confidence"] for b in bins], [100 * b["accuracy"] for b in bins], marker="o",
                    label=f"{fov}° (ECE {ece:.1f} pts)")
        ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="stated confidence (%)", ylabel="observed accuracy (%)",
               title=f"P({title})")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Reliability on the {calibration['split']} split ({calibration['queries']} queries x "
                 f"{calibration['references']} references; bins with >= 5 answers)", fontsize=10)
    fig.tight_layout()
    written.append(_save(fig, folder / "reliability.png"))
    fig, ax = plt.subplots(figsize=(5, 4))
    for fov, row in calibration["by_fov"].items():
        rc = row["risk_coverage"]
        ax.plot([100 * r["coverage"] for r in rc], [100 * r["accuracy"] for r in rc], marker=".", label=f"{fov}°")
    ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="share of queries answered, most confident first (%)",
           ylabel="R@1 of the answered queries (%)", title="Risk-coverage")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, folder / "risk_coverage.png"))
    plt.close("all")
    return written


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def format_report(report: dict) -> str:
    cpu = report["cpu"]
    lines = [f"CPU: {cpu['model']} ({cpu['torch_capability']}, {cpu['threads']} threads)"]
    if "calibration" in report:
        c = report["calibration"]
        lines += ["", f"calibration: {c['queries']} {c['split']} queries x {c['references']} references (fitted on "
                  f"{c['fitted_on'].get('queries')} {c['fitted_on'].get('split')!r} queries)",
                  "| FoV | R@1 | mean P(tile) | ECE tile | heading <= 22.5° | ECE heading | R@1 at 50 % coverage "
                  "| R@1 at 25 % |", "|---|---|---|---|---|---|---|---|"]
        for fov, r in c["by_fov"].items():
            at = {round(x["coverage"], 2): x["accuracy"] * 100 for x in r["risk_coverage"]}
            half, quarter = at.get(0.5, float("nan")), at.get(0.25, float("nan"))
            lines.append(f"| {fov}° | {r['R@1']:.1f} % | {r['mean_tile_confidence']:.1f} % | {r['ECE_tile']:.1f} pts | "
                         f"{r['heading_within_22.5deg']:.1f} % | {r['ECE_heading']:.1f} pts | {half:.1f} % | "
                         f"{quarter:.1f} % |")
    if "prior" in report:
        p = report["prior"]
        lines += ["", f"prior: {p['queries']} {p['split']} queries at 90° x {p['references']} references",
                  "| prior | references searched | R@1 | heading median | median query |", "|---|---|---|---|---|"]
        for r in p["rows"]:
            name = "none" if r["radius_m"] is None else f"{r['radius_m'] / 1000:g} km"
            lines.append(f"| {name} | {r['mean_references_searched']:,.0f} | {r['R@1']:.1f} % | "
                         f"{r['heading_median_deg']:.1f}° | {r['median_query_ms']:.0f} ms |")
    if "views" in report:
        v = report["views"]
        lines += ["", f"several photos: {v['queries']} {v['split']} queries, 90° views x {v['references']} references",
                  "| photos | R@1 | heading median (1st photo) | heading <= 22.5° | median query |",
                  "|---|---|---|---|---|"]
        for r in v["rows"]:
            lines.append(f"| {r['photos']} | {r['R@1']:.1f} % | {r['heading_median_deg']:.1f}° | "
                         f"{r['heading_within_22.5deg']:.1f} % | {r['median_query_ms']:.0f} ms |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m geoapp.bench answers", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--reference-db", required=True, help="the app's database (calibrated; test split)")
    p.add_argument("--distractor-db", help="test split + training tiles (build_db --split test,train) for 'prior'")
    p.add_argument("--only", default=",".join(STUDIES), help=f"comma-separated studies (default: all of {STUDIES})")
    g = p.add_argument_group("sizes (evenly spread test pairs; 0: all)")
    g.add_argument("--calibration-queries", type=int, default=0)
    g.add_argument("--prior-queries", type=int, default=500)
    g.add_argument("--views-queries", type=int, default=300)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument("--figures", help="folder for reliability.png and risk_coverage.png")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    studies = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(studies) - set(STUDIES)
    if unknown:
        p.error(f"unknown studies {sorted(unknown)}; choose from {STUDIES}")
    if "prior" in studies and not args.distractor_db:
        p.error("the prior study needs --distractor-db (build_db --split test,train)")
    progress = not args.no_progress
    t0 = time.perf_counter()
    report = {"cpu": cpu_description(), "checkpoint": args.checkpoint, "reference_db": args.reference_db}
    localizer = Localizer(args.checkpoint, args.reference_db, device=args.device)
    if "calibration" in studies:
        report["calibration"] = calibration_study(localizer, size=args.calibration_queries, progress=progress)
        if args.figures:
            report["figures"] = [str(f) for f in draw_figures(report["calibration"], Path(args.figures))]
    if "views" in studies:
        report["views"] = views_study(localizer, size=args.views_queries, progress=progress)
    if "prior" in studies:
        del localizer
        distractors = Localizer(args.checkpoint, args.distractor_db, device=args.device)
        report["prior"] = prior_study(distractors, size=args.prior_queries, progress=progress)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(format_report(report))
    if args.out:
        atomic_write_json(args.out, report)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
