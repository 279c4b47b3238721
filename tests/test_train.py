"""Training: batches, one step, exact resume, self-describing checkpoints, CLI config, torchrun; split
discipline: choose on the selection split (the dataset's val split or a carved subset), report on test."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_world import write_tiny_cvusa

from geoapp.data.datasets import DATASETS
from geoapp.data.selection import carve_dataset, ids_sha256
from geoapp.files import sha256_file
from geoapp.model import ModelConfig, build_model, load_model, read_metadata, soft_margin_triplet_loss
from geoapp.train import config_from_args
from geoapp.train import main as train_main
from geoapp.training import TrainConfig
from geoapp.training.data import PairImages, TrainBatches, open_split
from geoapp.training.evaluation import REPORT_SHIFT_SEEDS, evaluate_model
from geoapp.training.loop import lr_at, train, train_step
from geoapp.training.objective import TrainForward, alignment_loss
from geoapp.training.run_dir import RunDir

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # train 12, val (selection-19zl.csv) 4, test (val-19zl.csv) 8
    return write_tiny_cvusa(tmp_path_factory.mktemp("tiny_world"), n_train=12, n_val=8, n_selection=4)


def tiny_config(root, out, **kw) -> TrainConfig:
    values = dict(dataset="synth", data_root=str(root), height=32, sat_width=128, batch_size=4, max_steps=4,
                  lr=1e-4, warmup_steps=1, val_every="100", ckpt_every="2", val_size=0, cache="yes", workers=0,
                  progress=False, log_every=1, out=str(out))
    values.update(kw)
    return TrainConfig.from_dict(values)


def test_batches_are_the_dataset_samples_and_a_function_of_seed_epoch_step(world):
    ds = open_split("synth", world, "train", 90, 32, 128, train=True, seed=3)
    batches = TrainBatches(PairImages(ds, cache="yes"), batch_size=4, seed=3)
    assert batches.steps_per_epoch == 3
    epoch1 = list(batches.epoch(1))
    for _, ground, sat, idx, shifts in epoch1:
        for k, i in enumerate(idx):
            ds.set_epoch(1)
            sample = ds[int(i)]  # the dataset's own crop and normalisation, bit for bit
            assert torch.equal(ground[k], sample["ground"]) and torch.equal(sat[k], sample["satellite"])
            assert shifts[k] == sample["shift"]
    # resuming mid-epoch gives the same remaining batches; other epochs differ in order and shifts
    again = list(TrainBatches(PairImages(ds, cache="no"), batch_size=4, seed=3).epoch(1, start=1))
    assert [t for t, *_ in again] == [1, 2]
    for (_, g1, s1, i1, _), (_, g2, s2, i2, _) in zip(epoch1[1:], again):
        assert np.array_equal(i1, i2) and torch.equal(g1, g2) and torch.equal(s1, s2)
    assert not np.array_equal(np.concatenate([b[3] for b in batches.epoch(0)]), np.concatenate([b[3] for b in epoch1]))


@pytest.mark.parametrize("align_weight", [0.0, 1.0])
def test_two_steps_lower_the_loss_on_that_batch(world, align_weight):
    ds = open_split("synth", world, "train", 90, 32, 128, train=True)
    _, ground, sat, _, shifts = next(TrainBatches(PairImages(ds, cache="yes"), batch_size=4, seed=0).epoch(0))
    torch.manual_seed(0)
    model = build_model(ModelConfig(ground_height=32, sat_height=32, sat_width=128)).train()
    net = TrainForward(model, with_logits=align_weight > 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    args = (10.0, torch.device("cpu"), "fp32", 0.0, shifts, align_weight, 128)
    before = train_step(net, opt, scaler, ground, sat, *args)
    train_step(net, opt, scaler, ground, sat, *args)
    with torch.no_grad():
        distances, scores = net(ground, sat)
        after = float(soft_margin_triplet_loss(distances))
        if align_weight:
            after += align_weight * float(alignment_loss(scores, shifts, 128))
    before = {k: float(v) for k, v in before.items()}
    assert after < before["loss"]
    assert before["loss"] == pytest.approx(before["triplet"] + align_weight * before["align"])


def test_alignment_loss_targets_the_true_offset():
    # a score row peaked at the conventions §5 true offset o* = (W - shift) / W * W_b gives a small loss
    shifts = np.array([0, 64, 100])
    width = 32  # stage map width for a 128-wide panorama at stride 4
    target = ((128 - shifts) / 128 * width).round().astype(int) % width
    peaked = torch.zeros(3, width)
    peaked[torch.arange(3), torch.as_tensor(target)] = 10.0
    wrong = torch.roll(peaked, 5, dims=1)
    assert float(alignment_loss([peaked], shifts, 128)) < 0.1 < float(alignment_loss([wrong], shifts, 128))


def test_lr_schedules():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.01)
    assert lr_at(cfg, 0, 110) == pytest.approx(0.1) and lr_at(cfg, 9, 110) == pytest.approx(1.0)
    assert lr_at(cfg, 10, 110) == pytest.approx(1.0) and lr_at(cfg, 110, 110) == pytest.approx(0.01)
    assert lr_at(cfg, 60, 110) == pytest.approx(0.505)
    step = TrainConfig(lr=1.0, lr_schedule="step")
    assert [lr_at(step, s, 100) for s in (0, 49, 50, 75, 99)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])


class SimulatedKill(RuntimeError):
    pass


def _kill_at(step_to_die):
    def on_step(step, model):
        if step == step_to_die:
            raise SimulatedKill(f"killed after step {step}")

    return on_step


def test_resume_after_kill_reaches_the_same_weights(world, tmp_path):
    # one precision for both runs: "auto" measures, and where fp32 and bf16 time alike (an AVX-512 BF16 CPU) two
    # fresh runs may choose differently (a resumed run keeps the choice in its config.json)
    whole = train(tiny_config(world, tmp_path / "whole", precision="fp32"))
    assert whole["step"] == 4
    # killed after step 3; its last checkpoint is step 2 (mid-epoch: 3 steps per epoch)
    with pytest.raises(SimulatedKill):
        train(tiny_config(world, tmp_path / "killed", precision="fp32"), on_step=_kill_at(3))
    run = RunDir(tmp_path / "killed")
    assert json.loads((run.last_dir() / "state.json").read_text())["train"]["step"] == 2
    with pytest.raises(FileExistsError):  # a fresh start must not overwrite the run
        train(tiny_config(world, tmp_path / "killed", precision="fp32"))
    resumed = train(tiny_config(world, tmp_path / "killed", precision="fp32"), resume=True)
    assert resumed["step"] == 4
    for name in ("model.safetensors", "state.safetensors"):  # weights, BN buffers, AdamW moments, RNG states
        a = load_file(str(tmp_path / "whole/last" / name))
        b = load_file(str(tmp_path / "killed/last" / name))
        assert a.keys() == b.keys()
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{name}: {different[:5]}"
    steps = [r["step"] for r in run.read_log() if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4]  # the killed run's step-3 record was dropped on resume
    assert whole["final_eval"] == resumed["final_eval"]


def test_checkpoint_rebuilds_its_model_and_reproduces_the_metrics(world, tmp_path):
    cfg = tiny_config(world, tmp_path / "run", max_steps=3, val_every="3", eval_fovs=(90.0, 70.0))
    summary = train(cfg)
    run = RunDir(cfg.out)
    for name in ("config.json", "metrics.jsonl", "curves.png", "best.safetensors", "final_eval.json"):
        assert (run.path / name).is_file(), name
    meta = read_metadata(run.best)
    assert meta["model_config"] == cfg.model_config().to_dict()
    assert meta["train_config"] == cfg.to_dict()
    split = Path(world) / "splits/train-19zl.csv"
    assert meta["dataset"]["sha256"][str(split)] == sha256_file(split)
    assert meta["dataset"]["sha256"][str(Path(world) / "dataset.json")] == sha256_file(Path(world) / "dataset.json")
    # what build_db --raster cuts: the world's recorded footprint, else its layout's default
    geometry = json.loads((Path(world) / "dataset.json").read_text()).get("geometry") or {}
    expected = geometry.get("tile_metres") or DATASETS[meta["dataset"]["name"]].default_tile_metres
    assert meta["dataset"]["tile_metres"] == expected > 0
    assert set(meta["final_eval"]) == {"90", "70"}
    # the best checkpoint's metrics are the validation record of the step it was saved at
    val = [json.loads(line) for line in run.metrics.read_text().splitlines() if '"kind": "val"' in line]
    assert meta["metrics"]["R@1"] == next(r["R@1"] for r in val if r["step"] == meta["step"])
    # chosen on the world's val split (selection-19zl.csv), reported on its test split (val-19zl.csv)
    assert (meta["selection_split"], meta["report_split"]) == ("val", "test")
    resolved = json.loads(run.config.read_text())["resolved"]
    assert (resolved["selection_split"], resolved["report_split"]) == ("val", "test")
    assert (resolved["train_pairs"], resolved["val_pairs"], resolved["test_pairs"]) == (12, 4, 8)
    selection = Path(world) / "splits/selection-19zl.csv"
    assert meta["dataset"]["sha256"][str(selection)] == sha256_file(selection)
    # rebuilt from its own metadata, the model gives the same outputs and hence the same metrics
    model, _ = load_model(run.best)
    by_hand = build_model(ModelConfig.from_dict(meta["model_config"]))
    by_hand.load_state_dict(load_file(str(run.best)))
    by_hand.eval()
    ds = open_split("synth", world, "test", 90, 32, 128, train=False)
    images = PairImages(ds, cache="yes")
    ground = torch.randn(2, 3, 32, 32)
    sat = torch.randn(3, 3, 32, 128)
    with torch.no_grad():
        assert torch.equal(model(ground, sat).distances, by_hand(ground, sat).distances)
    report = evaluate_model(model, images, [90.0, 70.0], shift_seeds=REPORT_SHIFT_SEEDS)
    final = json.loads(run.final_eval.read_text())
    assert report["by_fov"] == final["by_fov"] == summary["final_eval"]
    assert (final["split"], final["selection_split"], final["report_split"]) == ("test", "val", "test")
    assert final["shift_seeds"] == [2019, 2020, 2021] and final["n_queries"] == 8 and len(final["results"]) == 6
    assert "R@1_std" in final["by_fov"]["90"]
    records = run.read_log()
    assert [(r["step"], r["split"], r["n"]) for r in records if r["kind"] == "val"] == [(3, "val", 4)]
    train_records = [r for r in records if r["kind"] == "train"]
    assert all(k in train_records[0] for k in ("step", "epoch", "loss", "lr", "pairs_per_s"))


def _git(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)


def test_a_run_records_the_command_line_it_ran_and_the_checked_out_commit(world, tmp_path):
    """The command a run records is the one typed (``python -m geoapp.train`` and its flags), and its revision is
    the commit git reports for the checkout, with ``+dirty`` when tracked files differ (``unknown`` outside git)."""
    import shlex

    flags = ["--dataset", "synth", "--data-root", str(world), "--height", "32", "--sat-width", "128", "--batch-size",
             "4", "--max-steps", "1", "--val-every", "1", "--val-size", "0", "--cache", "yes", "--workers", "0",
             "--no-progress", "--eval-fov", "90", "--out", str(tmp_path / "run")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "geoapp.train", *flags], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    head = _git("rev-parse", "HEAD")
    if head.returncode == 0:
        dirty = _git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        revision = head.stdout.strip() + ("+dirty" if dirty else "")
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", revision)
    else:
        revision = "unknown"
    typed = shlex.join(["python", "-m", "geoapp.train", *flags])
    meta = read_metadata(tmp_path / "run/best.safetensors")
    config = json.loads((tmp_path / "run/config.json").read_text())
    assert (meta["command"], meta["code_revision"]) == (typed, revision)
    assert (config["command"], config["code_revision"]) == (typed, revision)
    start = next(r for r in RunDir(tmp_path / "run").read_log() if r.get("event") == "start")
    assert start["command"] == typed


def test_cli_resolution_presets_flags_and_resume_guard(tmp_path):
    cfg, resume = config_from_args(["--preset", "demo", "--batch-size", "8", "--no-ca", "--stages", "4"])
    assert not resume and cfg.preset == "demo" and cfg.batch_size == 8 and cfg.dataset == "synth"
    assert cfg.model.use_ca is False and cfg.model.align_mode == "feature" and cfg.model.stages == (4,)
    # feature alignment has no gates: neither a shared window nor a gate term
    cfg, _ = config_from_args(["--preset", "demo", "--align-mode", "feature"])
    assert (cfg.model.shared_window, cfg.model.gate_weight) == (False, 0.0)
    cfg, _ = config_from_args(["--preset", "demo", "--gate-weight", "0.5"])
    assert cfg.model_config().gate_weight == 0.5
    cfg, _ = config_from_args(["--preset", "paper-cvusa-70", "--imagenet-weights", "none"])
    assert (cfg.fov, cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.alpha) == (70.0, 100, 24, 5e-5, 5e-4, 10)
    assert cfg.imagenet_weights is None and cfg.height == 128 and cfg.sat_width == 512
    with pytest.raises(SystemExit, match="ImageNet"):
        config_from_args(["--preset", "paper-cvact-90"])
    with pytest.raises(ValueError, match="Coordinate Attention"):
        config_from_args(["--no-ca", "--align-mode", "mask-corr"])
    run = tmp_path / "r"
    run.mkdir()
    saved = TrainConfig(out=str(run), batch_size=6)
    (run / "config.json").write_text(json.dumps({"train_config": saved.to_dict()}))
    cfg, resume = config_from_args(["--out", str(run), "--resume", "--max-minutes", "5"])
    assert resume and cfg.batch_size == 6 and cfg.max_minutes == 5
    with pytest.raises(SystemExit, match="lr"):
        config_from_args(["--out", str(run), "--resume", "--lr", "1e-3"])


def test_cli_carves_a_spatially_separate_selection_subset_from_train(tmp_path):
    # a fake CVUSA layout without a selection split: 64 training pairs on a 25 m grid, 40 m tiles, 6 test pairs
    root = write_tiny_cvusa(tmp_path / "cvusa", n_train=64, n_val=6, spacing_m=25.0, tile_metres=40.0, seed=2)
    out = tmp_path / "run"
    assert train_main(["--dataset", "cvusa", "--data-root", str(root), "--height", "32", "--sat-width", "128",
                       "--batch-size", "4", "--max-steps", "2", "--val-every", "2", "--val-size", "6", "--cache",
                       "yes", "--workers", "0", "--no-progress", "--eval-fov", "90", "--out", str(out)]) == 0
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    record = resolved["selection_split"]
    # what the run recorded is the library's carve: seeded 80 m cells, training tiles overlapping them dropped
    full = open_split("cvusa", root, "train", 90, 32, 128, train=True)
    carve = carve_dataset(full, 6, seed=0)
    ids = [r.id for r in full.records]
    selected = [ids[i] for i in carve.selection]
    training = [ids[i] for i in carve.train]
    assert record == carve.record(ids, "train") and record["method"] == "spatial" and record["cell_m"] == 80.0
    assert record["ids_sha256"] == ids_sha256(selected) and 6 <= record["n"] == len(selected) < 6 + 16
    assert record["n"] + record["n_train"] + record["n_dropped"] == 64 and record["n_dropped"] > 0
    assert (resolved["train_pairs"], resolved["val_pairs"], resolved["test_pairs"]) == (len(training), record["n"], 6)
    assert resolved["report_split"] == "test"
    # disjoint from the reported split and from the run's own training pairs; no training tile overlaps one
    test_ids = [r.id for r in open_split("cvusa", root, "test", 90, 32, 128, train=False).records]
    assert not set(selected) & set(test_ids) and not set(selected) & set(training)
    pos = {r.id: r for r in full.records}
    for a in training:
        for b in selected:
            d_north = abs(pos[a].ground_lat - pos[b].ground_lat) * 111_195.0
            d_east = abs(pos[a].ground_lon - pos[b].ground_lon) * 111_195.0 * np.cos(np.radians(40.0))
            assert max(d_north, d_east) >= 40.0 - 1e-6, (a, b)
    # validation ran on the carved pairs, the final evaluation on the test split; the checkpoint records both
    val = [r for r in RunDir(out).read_log() if r["kind"] == "val"]
    assert [(r["split"], r["n"]) for r in val] == [("train[selection]", 6)]
    final = json.loads((out / "final_eval.json").read_text())
    assert (final["split"], final["n_queries"], final["shift_seeds"]) == ("test", 6, [2019, 2020, 2021])
    assert final["selection_split"] == record
    meta = read_metadata(out / "best.safetensors")
    assert (meta["selection_split"], meta["report_split"]) == (record, "test")


def test_selection_on_the_test_split_needs_the_explicit_flag(world, tmp_path, capsys):
    with pytest.raises(ValueError, match="val_split 'test' is the test split"):
        config_from_args(["--val-split", "test"])
    cfg, _ = config_from_args(["--val-split", "test", "--allow-test-selection"])
    assert cfg.allow_test_selection and cfg.val_split == "test"
    summary = train(tiny_config(world, tmp_path / "run", max_steps=1, val_every="1", val_split="test",
                                allow_test_selection=True))
    assert "WARNING: model selection on the TEST split 'test'" in capsys.readouterr().err
    assert summary["step"] == 1 and read_metadata(tmp_path / "run/best.safetensors")["selection_split"] == "test"
    # a selection split listing the test pairs again is refused as well
    copy = write_tiny_cvusa(tmp_path / "copy", n_train=12, n_val=8, n_selection=4)
    (copy / "splits/selection-19zl.csv").write_text((copy / "splits/val-19zl.csv").read_text())
    with pytest.raises(ValueError, match="selection split 'val' shares 8 pairs with the test split 'test'"):
        train(tiny_config(copy, tmp_path / "copy_run", max_steps=1))


@pytest.mark.slow
def test_torchrun_two_cpu_processes(world, tmp_path):
    # the demo's method without the alignment loss: its window temperature is then unused, which DDP refused
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "geoapp.train",
           "--preset", "demo-quick", "--align-loss", "0", "--base-channels", "8", "--max-minutes", "0",
           "--dataset", "synth", "--data-root", str(world), "--height", "32", "--sat-width", "128", "--batch-size", "3",
           "--max-steps", "3", "--val-every", "2", "--val-size", "0", "--device", "cpu", "--workers", "0",
           "--no-progress", "--eval-fov", "90", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["resolved"]["world_size"] == 2 and config["resolved"]["steps_per_epoch"] == 2
    state = json.loads((out / "last/state.json").read_text())
    assert state["train"]["step"] == 3
    assert (out / "best.safetensors").is_file() and (out / "final_eval.json").is_file()


@pytest.mark.slow
def test_torchrun_steps_every_preset_and_every_documented_combination():
    """Three DDP steps (2 gloo processes) of every preset and of every alignment mode x shared window x alignment
    loss x window choice the config accepts; the replicas' weights stay equal (tests/ddp_steps.py)."""
    from ddp_steps import configurations

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests/ddp_steps.py")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    expected = configurations()
    assert [r["name"] for r in results] == list(expected)
    assert len(expected) == 74 and sum(name.startswith("preset ") for name in expected) == 10
    failed = [r for r in results if not r["ok"]]
    assert not failed, failed
    assert max(r["weight_spread"] for r in results) == 0.0


@pytest.mark.slow
def test_negatives_mined_across_processes_equal_one_process_holding_both_batches():
    """Two gloo processes with B pairs each, their stage maps gathered: the mean of their losses and the DDP-averaged
    gradient equal the loss and gradient of one process mining the 2 x B batch; mining per process does not."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests/ddp_steps.py"), "--gradients"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {r.pop("name"): r for r in (json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{"))}
    assert set(results) == {"argmax", "known-positive + alignment loss", "hardest-negative", "soft", "per-rank"}
    for name, r in results.items():
        same = (r["loss_mean_of_processes"] == pytest.approx(r["loss_one_process"], rel=1e-5)
                and r["grad_max_abs_diff"] <= 1e-5 * r["grad_max_abs"] + 1e-6)
        assert same == (name != "per-rank"), (name, r)


def test_paper_presets_train_the_learning_method_and_the_literal_ones_the_mask_means():
    from geoapp.training.presets import PRESETS

    method = {"align_mode": "gate-corr", "shared_window": True, "window_choice": "known-positive",
              "gate_weight": 0.2, "align_loss": 0.3, "wrap_satellite": True}
    assert {k: TrainConfig().flat()[k] for k in method} == method  # the defaults are the method
    for name, values in PRESETS.items():
        cfg = TrainConfig.from_dict(values).flat()
        if name.startswith(("paper-", "demo")):
            assert {k: cfg[k] for k in method} == method, name
        else:
            assert name.startswith("literal-") and cfg["align_mode"] == "mask-corr" and cfg["window_choice"] == "argmax"
            assert (cfg["shared_window"], cfg["gate_weight"], cfg["align_loss"]) == (False, 0.0, 0.0)
        if name.startswith(("paper-", "literal-")):
            assert (cfg["height"], cfg["sat_width"], cfg["base_channels"], cfg["batch_size"], cfg["lr"]) == (
                128, 512, 64, 24, 5e-5)
    # one flag from a paper preset to the paper's literal wording
    cfg, _ = config_from_args(["--preset", "paper-cvusa-90", "--imagenet-weights", "none", "--align-mode", "mask-sum"])
    assert cfg.model.align_mode == "mask-sum" and cfg.model.gate_weight == 0.0


def test_fov_range_batches_vary_their_width_as_a_function_of_seed_epoch_step(world):
    from geoapp.angles import fov_width
    from geoapp.training.data import batch_fov

    ds = open_split("synth", world, "train", 90, 32, 128, train=True, seed=3)
    images = PairImages(ds, cache="yes")
    ranged = TrainBatches(images, batch_size=4, seed=3, fov_range=(60.0, 110.0))
    widths = [g.shape[-1] for e in range(4) for _, g, *_ in ranged.epoch(e)]
    assert len(set(widths)) > 3 and all(fov_width(60, 128) <= w <= fov_width(110, 128) for w in widths)
    again = TrainBatches(images, batch_size=4, seed=3, fov_range=(60.0, 110.0))  # a resumed run draws the same
    assert [g.shape[-1] for _, g, *_ in again.epoch(2, start=1)] == widths[7:9]
    for e in range(3):
        for t in range(3):
            assert 60.0 <= batch_fov((60.0, 110.0), 3, e, t) <= 110.0
    fixed = TrainBatches(images, batch_size=4, seed=3)
    assert {g.shape[-1] for _, g, *_ in fixed.epoch(0)} == {fov_width(90, 128)}
    with pytest.raises(ValueError, match="fov_range"):
        TrainConfig(fov_range=(110.0, 60.0))


def test_the_demo_preset_exports_the_shipped_checkpoint_and_its_variants_do_not():
    cfg, _ = config_from_args(["--preset", "demo"])
    assert cfg.export == "checkpoints/demo.safetensors" and cfg.fov_range == (60.0, 110.0)
    assert cfg.eval_fovs == (60.0, 70.0, 90.0, 100.0) and cfg.max_minutes == 0
    assert config_from_args(["--preset", "demo", "--out", "runs/x", "--workers", "1"])[0].export  # run control
    assert config_from_args(["--preset", "demo", "--data-root", "data/synth"])[0].export  # the preset's own value
    assert config_from_args(["--preset", "demo", "--align-mode", "feature"])[0].export == ""
    explicit = config_from_args(["--preset", "demo", "--seed", "1", "--export", "x.safetensors"])[0]
    assert explicit.export == "x.safetensors"
    assert config_from_args(["--preset", "demo-quick"])[0].export == ""


@pytest.mark.parametrize("choice, mode, gate, problem", [
    ("soft", "mask-corr", 0.0, r"needs an align_mode with cosine window scores \['gate-corr'\]"),
    ("straight-through", "gate-corr", 0.2, "forms offset-averaged distances without the gate term"),
])
def test_a_window_choice_rule_is_one_rule_for_the_config_and_the_objective(choice, mode, gate, problem):
    """The config refuses what the objective would refuse, with the same words (one rule, two callers)."""
    from geoapp.training.objective import TrainForward

    with pytest.raises(ValueError, match=problem):
        TrainConfig.from_dict(dict(window_choice=choice, align_mode=mode, gate_weight=gate, shared_window=False))
    model = build_model(ModelConfig(align_mode=mode, gate_weight=gate, base_channels=8, ground_height=32,
                                    sat_height=32, sat_width=128))
    with pytest.raises(ValueError, match=problem):
        TrainForward(model, window_choice=choice)
    TrainConfig.from_dict(dict(window_choice="known-positive", align_mode=mode, gate_weight=gate,
                               shared_window=False))  # accepted
