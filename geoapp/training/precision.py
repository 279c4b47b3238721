"""Choose the training precision by measuring it on this machine (``--precision auto``).

CPU bf16 autocast is fast only where the CPU has native bf16 arithmetic (AVX-512 BF16, AMX); elsewhere PyTorch
emulates it and a training step runs many times slower than fp32 (docs/results.md, "Precision and model size").
So ``auto`` on a CPU times a few forward + backward steps of the run's own model in each candidate precision and
takes the fastest; fp32 is always a candidate, so the choice is never slower than fp32. GPUs keep the capability rule
(bf16 where supported, else fp16 with a GradScaler), which is reliable there.
"""

from __future__ import annotations

import platform
import time

import torch

from ..model import ModelConfig, build_model, soft_margin_triplet_loss
from .distributed import autocast, resolve_precision

CPU_CANDIDATES = ("fp32", "bf16")
PROBE_BATCH = 8  # pairs per probe step: big enough for the real kernels, small enough to cost seconds
PROBE_STEPS = 2  # timed steps per candidate, after one warm-up step
GIVE_UP_RATIO = 3.0  # stop timing a candidate whose warm-up is this many times slower than the best so far


def cpu_description() -> dict:
    """The CPU that produced a figure: its model name and the kernels PyTorch picked for it."""
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"model": model or "unknown", "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads()}


def time_train_steps(config: ModelConfig, precision: str, device: torch.device, batch: int = PROBE_BATCH,
                     steps: int = PROBE_STEPS, give_up_s: float | None = None) -> float:
    """Median seconds of one forward + backward + AdamW step of a fresh ``config`` model on random data.

    The global RNG state is restored afterwards, so probing does not change the run it chooses for.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(config).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
        ground = torch.randn(batch, 3, config.ground_height, config.ground_width, device=device)
        sat = torch.randn(batch, 3, config.sat_height, config.sat_width, device=device)
        times = []
        for i in range(steps + 1):
            t = time.perf_counter()
            with autocast(device, precision):
                result = model(ground, sat)
            loss = soft_margin_triplet_loss(result.distances.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
            if i == 0 and give_up_s is not None and times[0] > give_up_s:
                return times[0]
        timed = sorted(times[1:])
        return timed[len(timed) // 2]


def pick_fastest(timings: dict[str, float]) -> str:
    """The fastest precision of ``timings`` (seconds per step); fp32 wins ties."""
    return min(timings, key=lambda p: (timings[p], p != "fp32"))


def choose_precision(requested: str, device: torch.device, config: ModelConfig, log=print) -> tuple[str, dict]:
    """Resolve ``requested`` (auto | fp32 | bf16 | fp16) for this device; returns the precision and a record of
    how it was chosen (stored in the run's config). ``auto`` on a CPU measures (see the module docstring)."""
    if requested != "auto" or device.type != "cpu":
        chosen = resolve_precision(requested, device)
        return chosen, {"requested": requested, "chosen": chosen, "how": "given" if requested != "auto" else
                        "capability (GPU)"}
    timings: dict[str, float] = {}
    for candidate in CPU_CANDIDATES:
        best = min(timings.values()) if timings else None
        give_up = None if best is None else GIVE_UP_RATIO * best * 2  # the warm-up step costs about two steps
        timings[candidate] = measure_precision(config, candidate, device, give_up)
    chosen = pick_fastest(timings)
    record = {"requested": "auto", "chosen": chosen, "how": f"measured ({PROBE_BATCH} pairs, forward + backward)",
              "seconds_per_probe_step": {k: round(v, 4) for k, v in timings.items()}, "cpu": cpu_description()}
    figures = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())
    log(f"precision auto: {chosen} (probe step of {PROBE_BATCH} pairs: {figures}; CPU {record['cpu']['model']}, "
        f"kernels {record['cpu']['torch_capability']})")
    return chosen, record


def measure_precision(config: ModelConfig, precision: str, device: torch.device, give_up_s: float | None) -> float:
    """Seconds per probe step of ``precision`` (tests replace this to inject timings)."""
    return time_train_steps(config, precision, device, give_up_s=give_up_s)
