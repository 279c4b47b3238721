"""``python -m geoapp.bench model``: speed of the model core on this machine.

Prints ground-branch latency (batch 1, 70 and 90 deg), satellite-branch throughput, the training-step
time (batch 24, both branches, forward + backward + alignment + loss), each for ResNet18_CA and for the
plain ResNet18 measured in the same run (the CA overhead), and the alignment cost per (query, reference)
pair for each mode at full size. Figures are medians of repeated runs after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ..model import ModelConfig, StageMaps, align_windows, build_model, soft_margin_triplet_loss
from ..model.align import column_energy, gate_energy
from ..model.align_modes import FEATURE, GATE_CORR, MASK_CORR, MASK_SUM
from ..retrieval.loading import tune_allocator
from ..retrieval.window_dots import fp16_window_dots
from ..training.precision import cpu_description


def _median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_branches(use_ca: bool, args) -> dict:
    cfg = ModelConfig(use_ca=use_ca)
    model = build_model(cfg).eval()
    out = {}
    with torch.inference_mode():
        for fov in (70, 90):
            x = torch.randn(1, 3, 128, cfg.with_fov(fov).ground_width)
            out[f"ground_ms_{fov}"] = 1000 * _median_seconds(lambda x=x: model.encode_ground(x), args.repeats)
        sat = torch.randn(args.sat_batch, 3, 128, 512)
        t = _median_seconds(lambda: model.encode_satellite(sat), max(2, args.repeats // 3))
        out["satellite_img_per_s"] = args.sat_batch / t
    return out


def bench_train_step(use_ca: bool, args) -> float:
    cfg = ModelConfig(use_ca=use_ca, stages=(1, 2, 3, 4))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=5e-4)
    ground = torch.randn(args.train_batch, 3, 128, cfg.ground_width)
    sat = torch.randn(args.train_batch, 3, 128, 512)

    def step():
        loss = soft_margin_triplet_loss(model(ground, sat).distances)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _median_seconds(step, args.train_repeats)


def bench_alignment(args) -> dict:
    """Per-pair cost of ``align_windows`` for one 90-deg query against a gallery at full size (random maps),
    set up as the engine runs it: fp16 column-major maps, precomputed column energies, tuned allocator."""
    gen = torch.Generator().manual_seed(0)
    dims = [(64, 32, 128, 32), (128, 16, 64, 16), (256, 8, 32, 8), (512, 4, 16, 4)]
    n = args.gallery
    ground = StageMaps(
        [torch.randn(1, c, h, w, generator=gen) for c, h, _, w in dims],
        [torch.rand(1, h, w, generator=gen) for _, h, _, w in dims],
        gates=[torch.rand(1, c, w, generator=gen) for c, _, _, w in dims],
    )
    # the gallery in the database's column-major fp16 layout, viewed as N x C x H x W
    features = [torch.randn(n, big_w, c, h, generator=gen).half().permute(0, 2, 3, 1) for c, h, big_w, _ in dims]
    sat = StageMaps(
        features,
        [torch.rand(n, h, big_w, generator=gen).half() for _, h, big_w, _ in dims],
        [column_energy(f) for f in features],  # precomputed by build_db, as the engine reads them
        [torch.rand(n, c, big_w, generator=gen).half() for c, _, big_w, _ in dims],
    )
    sat.gate_energy = [gate_energy(g) for g in sat.gates]  # precomputed by build_db too
    tune_allocator()  # the engine's allocator setting (see geoapp.retrieval.loading.tune_allocator)
    out = {}
    with torch.inference_mode():
        # "gate-corr shared": only the finest stage's gates choose the window (ModelConfig.shared_window)
        for mode, shared in ((GATE_CORR, True), (GATE_CORR, False), (MASK_CORR, False), (MASK_SUM, False),
                             (FEATURE, False)):
            for stages in ((1, 2, 3, 4), (4,)):
                if shared and len(stages) == 1:
                    continue  # one stage: nothing to share
                # fp16 dots: the engine's first pass (topk_matches re-ranks the few pairs inside its error bound)
                for fp16 in ((False, True) if mode.is_fca else (False,)):
                    # the shared stage is the one the model's own config names (ModelConfig.window_stage)
                    window_stage = ModelConfig(align_mode=mode.name, stages=stages, shared_window=shared).window_stage
                    t = _median_seconds(lambda m=mode, s=stages, f=fp16, o=window_stage: align_windows(
                        ground, sat, m, s, chunk_size=512, offset_stage=o,
                        window_dots=fp16_window_dots if f else None), 3)
                    name = (f"{mode.name}{' shared' if shared else ''} stages {''.join(map(str, stages))}"
                            + (", fp16 dots" if fp16 else ""))
                    out[name] = 1e6 * t / n
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m geoapp.bench model", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20, help="timed repeats for the ground-branch latency")
    p.add_argument("--sat-batch", type=int, default=16, help="batch size for the satellite-branch throughput")
    p.add_argument("--train-batch", type=int, default=24, help="training-step batch size (paper: 24)")
    p.add_argument("--train-repeats", type=int, default=3, help="timed training steps per variant")
    p.add_argument("--gallery", type=int, default=2000, help="references for the alignment-cost measurement")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cpu = cpu_description()
    print(f"# geoapp model benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU {cpu['model']}, capability {cpu['torch_capability']}")
    ca, plain = bench_branches(True, args), bench_branches(False, args)
    step_ca, step_plain = bench_train_step(True, args), bench_train_step(False, args)
    align = bench_alignment(args)

    rows = [
        ("ground branch, 70 deg, batch 1 (ms)", ca["ground_ms_70"], plain["ground_ms_70"]),
        ("ground branch, 90 deg, batch 1 (ms)", ca["ground_ms_90"], plain["ground_ms_90"]),
        (
            f"satellite branch, batch {args.sat_batch} (images/s)",
            ca["satellite_img_per_s"],
            plain["satellite_img_per_s"],
        ),
        (f"training step, batch {args.train_batch}, 90 deg (s)", step_ca, step_plain),
    ]
    print(f"\n{'measure':<44} {'ResNet18_CA':>12} {'ResNet18':>10} {'CA/plain':>9}")
    for name, a, b in rows:
        print(f"{name:<44} {a:>12.2f} {b:>10.2f} {a / b:>9.2f}")
    print(f"\nalignment cost per (query, reference) pair, 90 deg query, gallery of {args.gallery} (fp16 store):")
    for name, us in align.items():
        print(f"  {name:<37} {us:8.2f} us/pair  ({us * 10:.0f} ms per 10,000 references)")
    result = {
        "torch": torch.__version__,
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "resnet18_ca": ca,
        "resnet18": plain,
        "train_step_s": {"resnet18_ca": step_ca, "resnet18": step_plain},
        "align_us_per_pair": align,
    }
    if args.json:
        from ..files import atomic_write_json

        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
