"""The training loop: batch-hard soft-margin triplet training of a CrossViewModel (paper section 3.5, 4.1).

One path for CPU, one GPU and torchrun (see :mod:`geoapp.training.distributed`). Every batch is a function of
(seed, epoch, step) and the lr a function of the step, so a run resumed from its ``last`` checkpoint reaches
exactly the weights of an uninterrupted run. A time budget or SIGTERM/SIGINT stops the run cleanly after the
current step (checkpoint; with the time budget also the final evaluation).

Splits (conventions §7): validation during training and the choice of ``best.safetensors`` use the model-selection
split (``val_split``, resolved by :func:`geoapp.training.data.select_split`: the dataset's ``val`` split or a
subset carved from the training split); the final evaluation of ``best.safetensors`` runs on ``test_split``,
with the shift seeds of :data:`geoapp.training.evaluation.REPORT_SHIFT_SEEDS` (mean +- std). ``config.json``
("resolved"), every checkpoint's metadata and ``final_eval.json`` record ``selection_split`` and
``report_split``.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass

import torch

from ..files import atomic_write_json
from ..model import build_model, save_model
from ..provenance import code_revision, command_line
from ..runtime import seed_everything
from .config import TrainConfig, parse_every
from .data import PairImages, TrainBatches, open_split, select_split
from .distributed import autocast, cleanup_distributed, setup_distributed
from .evaluation import REPORT_SHIFT_SEEDS, evaluate_model, format_table, subset_indices
from .objective import TrainForward, alignment_loss, triplet_loss
from .plot import plot_curves
from .precision import choose_precision
from .run_dir import RunDir, dataset_fingerprint, load_last, save_last, set_rng_state


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based) in a run of ``total`` steps."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    if cfg.lr_schedule == "step":
        return cfg.lr * 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_step(net, optimizer, scaler, ground, sat, alpha: float, device, precision: str, grad_clip: float = 0.0,
               shifts=None, align_weight: float = 0.0, pano_width: int = 512) -> dict:
    """One optimizer step on one batch (positives on the diagonal). ``net`` is a :class:`TrainForward` (or
    its DDP wrapper). Returns the batch's losses before the step (0-d tensors): total, triplet and alignment."""
    with autocast(device, precision):
        distances, scores = net(ground, sat, shifts, pano_width)
    triplet = triplet_loss(distances, alpha)
    loss = triplet
    align = None
    if align_weight:
        align = alignment_loss(scores, shifts, pano_width)
        loss = triplet + align_weight * align
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    # detached tensors, read only when logged: a float() here would wait for the GPU at every step
    return {"loss": loss.detach(), "triplet": triplet.detach(),
            "align": align.detach() if align is not None else torch.zeros((), device=loss.device)}


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch on the compute device; to a GPU through pinned memory, so the copy does not block the host."""
    if device.type != "cuda":
        return batch
    return batch.pin_memory().to(device, non_blocking=True)


def training_forward(cfg: TrainConfig, model, d, device) -> torch.nn.Module:
    """What one step computes (:class:`TrainForward`), wrapped in DistributedDataParallel under torchrun."""
    net = TrainForward(model, with_logits=cfg.align_loss > 0, window_choice=cfg.window_choice,
                       across_ranks=d.enabled and cfg.negatives == "all-ranks")
    if d.enabled:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    return net


def interval_steps(text: str, steps_per_epoch: int, default: int) -> int:
    parsed = parse_every(text, allow_empty=True)
    if parsed is None:
        return default
    n, unit = parsed
    return n * steps_per_epoch if unit == "epochs" else n


class _StopFlag:
    """SIGTERM / first SIGINT ask for a clean stop after the current step (a second SIGINT interrupts)."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nsignal {signum}: stopping after this step (checkpoint first); Ctrl-C again to interrupt", flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(cfg: TrainConfig, resume: bool = False, on_step=None) -> dict:
    """Train as ``cfg`` says, in the run folder ``cfg.out``; returns a summary (steps, best and final metrics).

    ``on_step(step, model)`` is called after every optimizer step (tests use it to simulate a kill).
    """
    d, device = setup_distributed(cfg.device)
    try:
        return _train(cfg, d, device, resume, on_step)
    finally:
        cleanup_distributed(d)


def _train(cfg: TrainConfig, d, device, resume: bool, on_step) -> dict:
    started = time.time()  # the time budget counts from here: data caching and validations included
    run = RunDir(cfg.out)
    check_run_folder(run, resume)
    log = print if d.main else (lambda *a, **k: None)
    saved = json.loads(run.config.read_text()).get("resolved", {}) if resume and run.config.is_file() else {}
    precision, precision_choice = run_precision(cfg, d, device, saved, log)
    data = RunData.open(cfg, d, log)
    trainer = Trainer(cfg, d, device, run, data, precision, log)
    trainer.start(resume, saved, resolved_record(trainer, device, precision_choice))
    stop_reason = trainer.loop(started, on_step)
    summary = {"step": trainer.state["step"], "total_steps": trainer.total, "stopped": stop_reason,
               "best": trainer.state["best"], "best_step": trainer.state["best_step"],
               "minutes": (time.time() - started) / 60.0}
    if stop_reason == "signal" or not d.main:  # other processes do not wait for the final evaluation
        return summary
    summary.update(trainer.final_evaluation())
    if cfg.export:
        from .export import export_checkpoint

        shipped = export_checkpoint(run.path, cfg.export, device, trainer.show, log)
        summary["export"] = {"path": cfg.export, "final_eval": shipped["final_eval"]}
    summary["minutes"] = (time.time() - started) / 60.0
    return summary


def check_run_folder(run: RunDir, resume: bool) -> None:
    """A new run needs an empty folder; ``--resume`` needs one with a checkpoint."""
    if resume and run.last_dir() is None:
        raise FileNotFoundError(f"--resume: {run.path} has no checkpoint to resume from")
    if not resume and run.last_dir() is not None:
        raise FileExistsError(f"{run.path} already holds a run; pass --resume to continue it or choose another --out")


def run_precision(cfg: TrainConfig, d, device, saved: dict, log) -> tuple[str, dict | None]:
    """The run's precision and how it was chosen: a resumed run keeps its own, so it computes the same."""
    if "precision" in saved:
        return saved["precision"], saved.get("precision_choice")
    if cfg.precision == "auto" and device.type == "cpu" and d.enabled:  # every process must choose the same
        return "fp32", {"requested": "auto", "chosen": "fp32", "how": "several CPU processes"}
    return choose_precision(cfg.precision, device, cfg.model, log=log)


@dataclass
class RunData:
    """The run's splits and images: fit on train, choose on the selection split, report on the test split
    (conventions §7). Only the main process holds the selection split's images (it alone validates)."""

    train: object
    val: object
    test: object
    selection: object
    train_images: PairImages
    batches: TrainBatches
    val_images: PairImages | None
    val_idx: list | None
    show: bool
    report_split: str

    @classmethod
    def open(cls, cfg: TrainConfig, d, log) -> RunData:
        train_ds = open_split(cfg.dataset, cfg.data_root, cfg.train_split, cfg.fov, cfg.height, cfg.sat_width,
                              train=True, seed=cfg.seed)
        test_ds = open_split(cfg.dataset, cfg.data_root, cfg.test_split, cfg.fov, cfg.height, cfg.sat_width,
                             train=False)
        selection = select_split(cfg, train_ds, test_ds)
        log(selection.message)
        show = d.main and cfg.progress
        train_images = PairImages(selection.train, cfg.cache, cfg.workers, progress=show)
        batches = TrainBatches(train_images, cfg.batch_size, cfg.seed, d.rank, d.world, cfg.fov_range)
        val_images = val_idx = None
        if d.main:
            val_images = PairImages(selection.val, cfg.cache, cfg.workers, progress=show)
            val_idx = subset_indices(len(selection.val), cfg.val_size)
        return cls(selection.train, selection.val, test_ds, selection, train_images, batches, val_images, val_idx,
                   show, cfg.test_split)

    @property
    def splits(self) -> dict:
        return {"selection_split": self.selection.record, "report_split": self.report_split}


def resolved_record(trainer: Trainer, device, precision_choice: dict | None) -> dict:
    """What the run resolved from its config on this machine (``config.json``'s "resolved")."""
    cfg, d, data = trainer.cfg, trainer.d, trainer.data
    return {
        "device": str(device),
        "precision": trainer.precision,
        "precision_choice": precision_choice,
        "world_size": d.world,
        "global_batch": cfg.batch_size * d.world,
        **data.splits,
        "train_pairs": len(data.train),
        "val_pairs": len(data.val),
        "val_subset": len(data.val_idx) if data.val_idx is not None else None,
        "test_pairs": len(data.test),
        "steps_per_epoch": trainer.steps_per_epoch,
        "total_steps": trainer.total,
        "val_every_steps": trainer.val_every,
        "ckpt_every_steps": trainer.ckpt_every,
        "images_cached": data.train_images.cached,
        "torch_threads": torch.get_num_threads(),
    }


class Trainer:
    """One run in progress: its folder, model, optimizer, step counters and best validation record."""

    def __init__(self, cfg: TrainConfig, d, device, run: RunDir, data: RunData, precision: str, log):
        self.cfg, self.d, self.device, self.run, self.data, self.precision, self.log = (
            cfg, d, device, run, data, precision, log)
        self.show = data.show
        self.steps_per_epoch = data.batches.steps_per_epoch
        self.total = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.val_every = interval_steps(cfg.val_every, self.steps_per_epoch, self.steps_per_epoch)
        self.ckpt_every = interval_steps(cfg.ckpt_every, self.steps_per_epoch, self.val_every)
        self.fingerprint = dataset_fingerprint(data.train, data.val, data.test)
        seed_everything(cfg.seed)  # after the data (its caching draws nothing from these streams), before the model
        self.model = build_model(cfg.model)
        self.optimizer = self.scaler = None
        self.state = {"step": 0, "best": None, "best_step": None, "last_val_step": None}

    def start(self, resume: bool, saved: dict, resolved: dict) -> None:
        """Load ImageNet weights (a new run) or the last checkpoint (``resume``), record the run's start, and wrap
        the model for training."""
        cfg, d, run, model = self.cfg, self.d, self.run, self.model
        if cfg.imagenet_weights and not resume:
            for branch, report in model.load_imagenet_weights(cfg.imagenet_weights).items():
                self.log(f"{branch} branch: {report}")
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        if resume:
            self._resume(saved)
        elif d.main:
            run.path.mkdir(parents=True, exist_ok=True)
            atomic_write_json(run.config, {
                "train_config": cfg.to_dict(), "model_config": cfg.model.to_dict(), "resolved": resolved,
                "dataset": self.fingerprint, "command": command_line(), "code_revision": code_revision(),
            })
            run.log({"kind": "event", "event": "start", "step": 0, "command": command_line()})
        self.log("training config:\n" + cfg.dumps() + "\nresolved: " + str(resolved))
        self.net = training_forward(cfg, model, d, self.device)

    def _resume(self, saved: dict) -> None:
        run, record = self.run, self.data.selection.record
        if "selection_split" in saved and saved["selection_split"] != record:
            raise ValueError(f"--resume: {run.path} chose on {saved['selection_split']}, this run would "
                             f"choose on {record} (has the dataset changed?)")
        model_state, optim_state, self.state, scaler_state, rng = load_last(run)
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optim_state)
        if scaler_state:
            self.scaler.load_state_dict(scaler_state)
        set_rng_state(*rng)
        if self.d.main:
            run.truncate_log(self.state["step"])
            run.log({"kind": "event", "event": "resume", "step": self.state["step"], "command": command_line()})
        self.log(f"resumed {run.path} at step {self.state['step']} "
                 f"(epoch {self.state['step'] / self.steps_per_epoch:.2f})")

    # ---------------------------------------------------------------------------------------- records
    def metadata(self, metrics=None) -> dict:
        state = self.state
        return {"train_config": self.cfg.to_dict(), "dataset": self.fingerprint, **self.data.splits,
                "step": state["step"], "epoch": state["step"] / self.steps_per_epoch,
                "metrics": metrics or state["best"], "precision": self.precision}

    def validate(self) -> None:
        """Evaluate on the selection split; a better R@1 (then R@5, R@10) becomes ``best.safetensors``."""
        cfg, state, run = self.cfg, self.state, self.run
        report = evaluate_model(self.model, self.data.val_images, [cfg.fov], indices=self.data.val_idx,
                                device=self.device, precision=self.precision)
        m = report["by_fov"][f"{cfg.fov:g}"]
        record = {"kind": "val", "step": state["step"], "epoch": state["step"] / self.steps_per_epoch,
                  "fov": cfg.fov, "split": self.data.val.split, "n": report["n_queries"],
                  "seconds": report["seconds"], **m,
                  "heading_median_deg_by_stage": report["results"][0]["heading_median_deg_by_stage"]}
        run.log(record)
        state["last_val_step"] = state["step"]
        key = (m["R@1"], m["R@5"], m["R@10"])
        if state["best"] is None or key > (state["best"]["R@1"], state["best"]["R@5"], state["best"]["R@10"]):
            state["best"], state["best_step"] = dict(m), state["step"]
            save_model(run.best, self.model, self.metadata(dict(m, validation_subset=report["n_queries"])))
        self.log(f"\nstep {state['step']}: val R@1 {m['R@1']:.2f} R@5 {m['R@5']:.2f} R@10 {m['R@10']:.2f} "
                 f"R@1% {m['R@1%']:.2f} heading median {m['heading_median_deg']:.1f} deg ({report['seconds']:.0f} s); "
                 f"best R@1 {state['best']['R@1']:.2f} at step {state['best_step']}")
        plot_curves(run.read_log(), run.plot, title=str(run.path))

    def checkpoint(self) -> None:
        if self.d.main:
            save_last(self.run, self.model, self.optimizer, self.scaler, self.state, self.metadata())
        self.d.barrier()

    # ---------------------------------------------------------------------------------------- the loop
    def loop(self, started: float, on_step) -> str | None:
        """Train until the last step, the time budget or a signal; returns why it stopped early (None: it did not)."""
        from tqdm import tqdm

        cfg, d, state = self.cfg, self.d, self.state
        budget_s = cfg.max_minutes * 60.0
        stop_reason = None
        bar = tqdm(total=self.total, initial=state["step"], disable=not self.show, unit="step", dynamic_ncols=True)
        self.window = new_window()
        self.model.train()
        with _StopFlag() as stop_flag:
            while state["step"] < self.total and stop_reason is None:
                epoch, start = divmod(state["step"], self.steps_per_epoch)
                t_data = time.perf_counter()
                for _, ground, sat, _, shifts in self.data.batches.epoch(epoch, start):
                    self.window["data"] += time.perf_counter() - t_data
                    step, logged = self.one_step(ground, sat, shifts, bar, started, on_step)
                    out_of_time = budget_s > 0 and time.time() - started > budget_s
                    # several processes agree on stopping at logged steps only: the agreement is a collective
                    if (logged or not d.enabled) and d.any(out_of_time or stop_flag.requested):
                        stop_reason = "time budget" if out_of_time else "signal"
                    self.pause_for_records(step, stop_reason)
                    if stop_reason is not None or step >= self.total:
                        break
                    t_data = time.perf_counter()
        bar.close()
        return stop_reason

    def one_step(self, ground, sat, shifts, bar, started: float, on_step) -> tuple[int, bool]:
        """One optimizer step (then ``on_step``); returns the new step number and whether it was a logged step."""
        cfg, state = self.cfg, self.state
        lr = lr_at(cfg, state["step"], self.total)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        ground, sat = to_device(ground, self.device), to_device(sat, self.device)
        if cfg.channels_last:
            ground = ground.contiguous(memory_format=torch.channels_last)
            sat = sat.contiguous(memory_format=torch.channels_last)
        losses = train_step(self.net, self.optimizer, self.scaler, ground, sat, cfg.alpha, self.device, self.precision,
                            cfg.grad_clip, shifts, cfg.align_loss, cfg.sat_width)
        state["step"] = step = state["step"] + 1
        w = self.window
        w["loss"] += losses["loss"]
        w["align"] += losses["align"]
        w["n"] += 1
        bar.update(1)
        if on_step is not None:
            on_step(step, self.model)
        logged = step % cfg.log_every == 0 or step == self.total
        if logged:
            self.log_window(step, lr, bar, started)
        return step, logged

    def log_window(self, step: int, lr: float, bar, started: float) -> None:
        """The mean loss and throughput since the last logged step, on the bar and in the metrics log."""
        cfg, d, w = self.cfg, self.d, self.window
        elapsed = time.perf_counter() - w["t"]
        mean_loss = d.mean(float(w["loss"]) / w["n"])
        extra = {"align_loss": d.mean(float(w["align"]) / w["n"])} if cfg.align_loss else {}
        pairs_s = w["n"] * cfg.batch_size * d.world / elapsed
        bar.set_postfix(loss=f"{mean_loss:.4f}", pairs_s=f"{pairs_s:.1f}", lr=f"{lr:.2e}")
        if d.main:
            self.run.log({"kind": "train", "step": step, "epoch": step / self.steps_per_epoch, "loss": mean_loss,
                          "lr": lr, "pairs_per_s": pairs_s, "data_wait": w["data"] / elapsed,
                          "elapsed_s": time.time() - started, **extra})
        self.window = new_window()

    def pause_for_records(self, step: int, stop_reason: str | None) -> None:
        """Validate and checkpoint when due; their time does not count in the throughput."""
        t_pause = time.perf_counter()
        if step % self.val_every == 0 or step == self.total or stop_reason == "time budget":
            if self.d.main:
                self.validate()
            self.d.barrier()
        if step % self.ckpt_every == 0 or step == self.total or stop_reason is not None:
            self.checkpoint()
        self.window["t"] += time.perf_counter() - t_pause

    # ---------------------------------------------------------------------------------------- the end
    def final_evaluation(self) -> dict:
        """Evaluate ``best.safetensors`` (the model the app uses) on the test split, over the report shift seeds."""
        from ..model import load_model

        cfg, run, state, data = self.cfg, self.run, self.state, self.data
        if state["last_val_step"] != state["step"]:
            self.validate()
        best_model, best_meta = load_model(run.best, map_location=self.device)
        data.val_images = None  # the selection split's images are not needed any more
        eval_images = PairImages(data.test, cfg.cache, cfg.workers, progress=self.show)
        final_idx = subset_indices(len(data.test), cfg.final_eval_size)
        fovs = list(cfg.eval_fovs) or [cfg.fov]
        self.log(f"final evaluation of {run.best} (step {best_meta['step']}, chosen on the selection split) on "
                 f"{len(final_idx)} {cfg.test_split!r} pairs, shift seeds {list(REPORT_SHIFT_SEEDS)}")
        t_eval = time.time()
        report = evaluate_model(best_model, eval_images, fovs, REPORT_SHIFT_SEEDS, indices=final_idx,
                                device=self.device, precision="fp32", progress=self.show)  # as evaluate, the app
        report.update(checkpoint=str(run.best), step=best_meta["step"], split=cfg.test_split, **data.splits,
                      precision="fp32")
        atomic_write_json(run.final_eval, report)
        run.log({"kind": "event", "event": "final_eval", "step": state["step"], "by_fov": report["by_fov"]})
        best_meta.pop("model_config", None)
        save_model(run.best, best_model, dict(best_meta, final_eval=report["by_fov"], final_eval_pairs=len(final_idx)))
        self.log(format_table(report))
        return {"final_eval": report["by_fov"], "final_eval_minutes": (time.time() - t_eval) / 60.0}


def new_window() -> dict:
    """The running sums between two logged steps (``t``: when the window opened)."""
    return {"loss": 0.0, "align": 0.0, "n": 0, "t": time.perf_counter(), "data": 0.0}
