"""Train a cross-view model: ``python -m geoapp.train --preset NAME [flags]``.

Examples::

    python -m geoapp.synth --out data/synth                       # the synthetic world (once)
    python -m geoapp.train --preset demo                          # the shipped checkpoint: about 72 min on 2 CPU cores
    python -m geoapp.train --preset demo-quick                    # the same method in minutes -> runs/demo-quick
    python -m geoapp.train --preset paper-cvusa-90 --data-root data/cvusa --imagenet-weights resnet18.pth
    torchrun --nproc_per_node=4 -m geoapp.train --preset paper-cvact-70 --imagenet-weights resnet18.pth
    python -m geoapp.train --out runs/demo --resume               # continue a killed run exactly

Ablations (paper Tables 3-6; everything else as in the preset):

    ResNet18 baseline (Table 3/4 row 1):   --no-ca --align-mode feature --stages 4
    ResNet18_CA       (Table 3/4 row 2):   --align-mode feature --stages 4        (= Table 5/6 row 1, CA only)
    CA + FCA          (Table 5/6 row 2):   --align-mode mask-corr --stages 4
    CA + FCA + FMC    (Table 5/6 row 3):   --align-mode mask-corr --stages 1 2 3 4 (the default)

Splits (conventions §7): fit on --train-split, choose the best checkpoint on the model-selection split (--val-split;
the synthetic world has one, real CVUSA / CVACT / VIGOR do not, so a subset of the training split is carved
out and the training tiles overlapping it are dropped), report the final evaluation on --test-split (mean +-
std over shift seeds 2019, 2020, 2021). config.json and every checkpoint record both.

Flags override the preset; the resolved config is printed and saved in the run folder (config.json).
With several processes (torchrun) --batch-size is per process; each anchor mines its batch-hard negative among
every process's batch (--negatives all-ranks, the default) or its own (per-rank); gradients are averaged by
DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import json
import sys

from .data.datasets import DATASETS
from .training.config import NEGATIVES, WINDOW_CHOICES, TrainConfig
from .training.presets import NEEDS_IMAGENET, PRESETS, resolve_config

# fields a resumed run may change (they do not change what is computed)
RUN_CONTROL = {"max_minutes", "workers", "cache", "log_every", "progress", "out", "device", "final_eval_size",
               "eval_fovs", "export"}


def _default(name: str) -> str:
    return f" (default: {getattr(TrainConfig, name)!r})"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m geoapp.train", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--preset", choices=sorted(PRESETS), help="named recipe (see geoapp/training/presets.py)")

    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=list(DATASETS),
                   help="dataset layout" + _default("dataset"))
    g.add_argument("--data-root", help="dataset folder" + _default("data_root"))
    g.add_argument("--train-split", help="training split" + _default("train_split"))
    g.add_argument("--val-split", help="model-selection split (validation during training, best.safetensors): "
                   "'auto' = the dataset's val split if it has one, else a subset carved from the training split "
                   "(spatially separated where positions are known); 'carve' = always carve; or a split name"
                   + _default("val_split"))
    g.add_argument("--test-split", help="split of the final evaluation, reported only and never chosen on"
                   + _default("test_split"))
    g.add_argument("--allow-test-selection", action="store_const", const=True,
                   help="allow --val-split to be the test split (warns loudly: the reported figures are then not "
                   "held out)")
    g.add_argument("--fov", type=float, help="ground field of view in degrees" + _default("fov"))
    g.add_argument("--fov-range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="train each batch at a FoV drawn uniformly from LO-HI degrees, so one model serves every "
                   "phone (validation stays at --fov); default: every batch at --fov")
    g.add_argument("--height", type=int, help="ground and polar image height, multiple of 32" + _default("height"))
    g.add_argument("--sat-width", type=int, help="polar (and panorama) width, multiple of 32" + _default("sat_width"))
    g.add_argument("--cache", choices=["auto", "yes", "no"], help="keep decoded uint8 images in memory (auto: when "
                   "the split fits in 6 GiB)" + _default("cache"))
    g.add_argument("--workers", type=int, help="DataLoader worker processes" + _default("workers"))
    g.add_argument("--val-size", type=int, help="validation pairs used during training, 0 = all; also the size of a "
                   "carved selection subset (0: about 5 %%, at least 500)" + _default("val_size"))

    m = p.add_argument_group("model")
    m.add_argument("--base-channels", type=int, help="block-1 channels, the other stages scale with it (ResNet18: 64; "
                   "narrower trains faster on a CPU)" + _default("base_channels"))
    m.add_argument("--wrap-satellite", action="store_const", const=True,
                   help="circular width padding in the satellite branch (its polar image is a panorama)")
    m.add_argument("--imagenet-weights", help="torchvision resnet18 state-dict file for both branches, or 'none' "
                   "(paper presets require one)")

    a = p.add_argument_group("ablation (paper Tables 3-6)")
    a.add_argument("--no-ca", dest="use_ca", action="store_const", const=False,
                   help="plain ResNet18 without Coordinate Attention (implies --align-mode feature)")
    a.add_argument("--align-mode", choices=["gate-corr", "mask-corr", "mask-sum", "feature"],
                   help="window alignment: gate-corr/mask-corr/mask-sum = FCA from the CA attention (gate-corr: "
                   "centred correlation of the column gates), feature = DSM (no FCA)"
                   + _default("align_mode"))
    a.add_argument("--shared-window", dest="shared_window", action="store_const", const=True,
                   help="attention modes: only the heading stage's attention chooses the window, every other stage "
                   "crops at the same azimuth (the demo preset's choice; otherwise off)")
    a.add_argument("--no-shared-window", dest="shared_window", action="store_const", const=False,
                   help="each stage chooses its window from its own attention")
    a.add_argument("--gate-weight", type=float,
                   help="gate-corr: weight of the two branches' attention agreement (the gate-corr cosine at the "
                   "chosen window) in the pair similarity, beside the FMC cosine; 0 = the paper's FMC cosine alone"
                   + _default("gate_weight"))
    a.add_argument("--stages", type=int, nargs="+", help="descriptor stages: '1 2 3 4' = FMC, '4' = block 4 only "
                   "(default: 1 2 3 4)")

    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, help="epochs" + _default("epochs"))
    o.add_argument("--max-steps", type=int, help="run length in optimizer steps instead of epochs (0: use epochs)")
    o.add_argument("--batch-size", type=int, help="pairs per batch and process" + _default("batch_size"))
    o.add_argument("--lr", type=float, help="peak learning rate (AdamW)" + _default("lr"))
    o.add_argument("--lr-schedule", choices=["cosine", "step", "constant"], help="decay over the run: cosine to "
                   "min-lr-ratio x lr, or step (x0.1 at 50%% and 75%%)" + _default("lr_schedule"))
    o.add_argument("--min-lr-ratio", type=float, help="final lr / lr for cosine" + _default("min_lr_ratio"))
    o.add_argument("--warmup-steps", type=int, help="linear warm-up steps" + _default("warmup_steps"))
    o.add_argument("--weight-decay", type=float, help="AdamW weight decay" + _default("weight_decay"))
    o.add_argument("--alpha", type=float, help="soft-margin triplet scale" + _default("alpha"))
    o.add_argument("--grad-clip", type=float, help="clip the gradient norm, 0 = off" + _default("grad_clip"))
    o.add_argument("--negatives", choices=NEGATIVES, help="torchrun: mine each anchor's hardest negative among every "
                   "process's batch (all-ranks: the stage maps are gathered) or within its own process's batch "
                   "(per-rank)" + _default("negatives"))
    o.add_argument("--window-choice", choices=WINDOW_CHOICES, help="how training picks the window: argmax, soft "
                   "(softmax over offsets) or straight-through (argmax forward, softmax gradient), gate-corr only, so "
                   "the triplet loss trains the gates; or known-positive (argmax for the negatives, the known true "
                   "window for the positives, so the descriptor learns from aligned pairs from the first step); or "
                   "hardest-negative (known windows for the positives, every negative at the window where its "
                   "descriptors match best, found by the feature correlation: the hardest negatives, as a feature "
                   "model trains on); or hardest-margin (known-positive, plus a second triplet loss on the "
                   "descriptor alone with every negative at its hardest window); inference always takes the argmax" + _default("window_choice"))
    o.add_argument("--align-loss", type=float, help="weight of an auxiliary loss that teaches the alignment scores "
                   "the true heading (NOT in the paper; training only, see geoapp/training/objective.py), 0 = off"
                   + _default("align_loss"))

    dv = p.add_argument_group("device, precision and distributed (launch with torchrun for several processes)")
    dv.add_argument("--device", choices=["auto", "cpu", "cuda"], help="compute device" + _default("device"))
    dv.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="autocast precision; auto = bf16 "
                    "(fp16 + GradScaler on GPUs without bf16) on GPU, fp32 on CPU" + _default("precision"))
    dv.add_argument("--channels-last", action="store_const", const=True, help="channels-last memory format")

    r = p.add_argument_group("run and checkpointing")
    r.add_argument("--out", help="run folder" + _default("out"))
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    r.add_argument("--seed", type=int, help="seed of init, data order and shifts" + _default("seed"))
    r.add_argument("--val-every", help="validate every N steps or 'Nep' epochs" + _default("val_every"))
    r.add_argument("--ckpt-every", help="checkpoint every N steps or 'Nep' epochs (default: at every validation)")
    r.add_argument("--log-every", type=int, help="steps between metrics-log lines" + _default("log_every"))
    r.add_argument("--max-minutes", type=float, help="stop cleanly after this much wall clock (checkpoint + final "
                   "evaluation), 0 = no limit" + _default("max_minutes"))
    r.add_argument("--eval-fov", dest="eval_fovs", type=float, nargs="+",
                   help="FoVs of the final evaluation (default: the training FoV)")
    r.add_argument("--final-eval-size", type=int, help="pairs of the final evaluation, 0 = the whole split")
    r.add_argument("--export", help="after the final evaluation, write best.safetensors to this path in float16 "
                   "with its test figures measured as stored and the test images' digest (the demo preset: "
                   "checkpoints/demo.safetensors); '' = no export" + _default("export"))
    r.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bar")
    return p


def config_from_args(argv=None) -> tuple[TrainConfig, bool]:
    args = vars(build_parser().parse_args(argv))
    preset = args.pop("preset", None)
    resume = args.pop("resume", False)
    overrides = dict(args)
    if overrides.get("use_ca") is False and "align_mode" not in overrides:
        overrides["align_mode"] = "feature"
    if overrides.get("align_mode") == "feature" and "shared_window" not in overrides:
        overrides["shared_window"] = False  # a preset's shared window is for attention modes; feature has no gates
    if overrides.get("align_mode") not in (None, "gate-corr") and "gate_weight" not in overrides:
        overrides["gate_weight"] = 0.0  # a preset's gate weight reads gate-corr cosines, which other modes lack
    explicit_no_imagenet = str(overrides.get("imagenet_weights", "")).lower() == "none"
    if explicit_no_imagenet:
        overrides["imagenet_weights"] = None
    if preset and "export" not in overrides:
        variant = {k for k, v in overrides.items() if k not in RUN_CONTROL and PRESETS[preset].get(k, v) != v}
        if variant and PRESETS[preset].get("export"):
            overrides["export"] = ""  # the preset's shipped checkpoint is the preset's own, never a variant's
    if not resume:
        cfg = resolve_config(preset, overrides)
        if cfg.preset in NEEDS_IMAGENET and not cfg.imagenet_weights and not explicit_no_imagenet:
            raise SystemExit(f"error: preset {cfg.preset} follows the paper, which starts from ImageNet weights: pass "
                             "--imagenet-weights PATH (a torchvision resnet18 state dict), or --imagenet-weights none "
                             "to train from scratch")
        return cfg, False
    from .training.run_dir import RunDir

    out = overrides.get("out") or (PRESETS[preset]["out"] if preset else TrainConfig.out)
    run = RunDir(out)
    if not run.config.is_file():
        raise SystemExit(f"error: --resume: {run.config} does not exist (is --out the run folder?)")
    saved = json.loads(run.config.read_text())["train_config"]
    probe = resolve_config(None, overrides, base=saved).to_dict()
    changed = sorted(k for k in overrides if k not in RUN_CONTROL and probe[k] != saved.get(k))
    if preset and preset != saved.get("preset"):
        changed.append("preset")
    if changed:
        raise SystemExit(f"error: --resume continues {out} with its saved config; these flags would change what it "
                         f"computes: {changed} (allowed: {sorted(RUN_CONTROL)})")
    return resolve_config(None, overrides, base=saved), True


def main(argv=None) -> int:
    cfg, resume = config_from_args(argv)
    from .training.loop import train

    summary = train(cfg, resume=resume)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
