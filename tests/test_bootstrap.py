"""The app's first start, end to end with the real commands on a tiny world: the shipped model is served without
training, a world that differs from its record is re-measured (not retrained), and only a checkpoint that does not
fit leads to a model built here, with a message in plain words.

The real commands run as the app runs them, with the tiny world's flags appended to ``geoapp.synth`` and a short
training's to ``geoapp.train`` (``ensure_demo(extra_flags=...)``); which steps ran is read from the start's own
timings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geoapp.app.bootstrap import BootstrapError, DemoPaths, ensure_demo, shipped_problem, world_on_disk
from geoapp.data.digest import compare_fingerprints, split_digest, split_fingerprint
from geoapp.model.checkpoint import accuracy_text, read_metadata, read_world_record, world_record_path
from geoapp.synth.writer import location_paths
from geoapp.training.data import open_split

TINY_WORLD = ["--seed", "1", "--train", "8", "--val", "6", "--test", "8", "--tile-metres", "64", "--block-metres",
              "256", "--district-metres", "200", "--metres-per-pixel", "1", "--tile-size", "128", "--pano-size", "64",
              "256", "--polar-size", "64", "256", "--mosaic-size", "512", "--workers", "1", "--no-progress"]
TINY_TRAIN = ["--max-steps", "2", "--batch-size", "4", "--base-channels", "8", "--val-every", "2", "--val-size", "0",
              "--max-minutes", "0", "--eval-fov", "90", "--precision", "fp32", "--workers", "0", "--no-progress"]

TINY = {"synth": TINY_WORLD, "train": TINY_TRAIN}  # ensure_demo's extra flags: the tiny world, a short training


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    """A tiny model trained on the whole tiny world and exported as a shipped checkpoint (float16, digest)."""
    from geoapp.train import main as train_main

    made = tmp_path_factory.mktemp("made")
    world = made / "synth"
    subprocess.run([sys.executable, "-m", "geoapp.synth", "--out", str(world), *TINY_WORLD], check=True,
                   capture_output=True)
    out = made / "shipped.safetensors"
    assert train_main(["--preset", "demo", "--data-root", str(world), "--out", str(made / "run"), "--export",
                       str(out), *TINY_TRAIN, "--eval-fov", "90", "70"]) == 0
    return out


def _paths(tmp_path: Path, shipped: Path) -> DemoPaths:
    """The demo's paths under ``tmp_path``, with the shipped checkpoint and its world record there, as the repository
    ships them."""
    (tmp_path / "checkpoints").mkdir()
    copy = tmp_path / "checkpoints" / "demo.safetensors"
    shutil.copyfile(shipped, copy)
    shutil.copyfile(world_record_path(shipped), world_record_path(copy))
    return DemoPaths(shipped=copy, built=tmp_path / "checkpoints" / "demo-built.safetensors",
                     database=tmp_path / "reference_db" / "demo", data_root=tmp_path / "data" / "synth",
                     run_dir=tmp_path / "runs" / "demo-quick", verification=tmp_path / "checkpoints" / "verified.json")


def test_the_export_records_what_a_first_start_checks(shipped):
    meta = read_metadata(shipped)
    assert meta["weights_dtype"] == "float16" and set(meta["final_eval"]) == {"90", "70"}
    assert meta["world"]["seed"] == 1 and meta["world"]["generator_version"]
    assert meta["test_digest"]["pairs"] == 8 and meta["test_digest"]["files"] == 24
    assert meta["selection_split"] == "val" and meta["report_split"] == "test"
    run_config = json.loads((shipped.parent / "run" / "config.json").read_text())
    assert meta["training"]["command"] == run_config["command"]
    assert meta["training"]["code_revision"] == run_config["code_revision"] != "unknown"
    assert {"R@1_std", "heading_median_deg_std"} <= set(meta["final_eval"]["90"])
    world = read_world_record(shipped, meta)  # the export's world record: the fingerprint of the same test images
    assert world["test_digest"] == meta["test_digest"] and world["fingerprint"]["files"] == 24
    from safetensors import safe_open

    with safe_open(str(shipped), framework="pt") as fh:
        dtypes = {str(fh.get_tensor(k).dtype) for k in fh.keys()}
    assert "torch.float16" in dtypes and "torch.float32" not in dtypes


def test_the_first_start_serves_the_shipped_model_without_training(tmp_path, shipped):
    paths = _paths(tmp_path, shipped)
    lines: list[str] = []
    state = ensure_demo(paths, log=lines.append, extra_flags=TINY)
    assert list(state.timings) == ["synth", "build_db"]  # no training
    assert any("geoapp.build_db" in line and "--calibrate val" in line for line in lines)
    assert state.checkpoint == paths.shipped and state.accuracy is None and not state.notes
    assert any("verified" in line for line in lines)
    assert json.loads(paths.verification.read_text())["matches"] is True
    # the world rendered is what serving reads: test, val and a training sample for the calibration's 8 - 6 = 2
    # distractor tiles and the familiarity test's panoramas (FAMILIARITY_PANORAMAS, here more than the split's 8)
    assert any("--splits val test --sample train:8" in line for line in lines)
    assert world_on_disk(paths.data_root) == ({"val", "test"}, {"train": 8})
    assert all((paths.data_root / location_paths(i)["pano"]).exists() for i in range(1, 9))
    # ... and the calibration's gallery is the one the whole world gives: the same tiles, in the same order
    _the_calibration_gallery_is_the_whole_worlds(paths, shipped)
    again = ensure_demo(paths, log=lines.append, extra_flags=TINY)  # a later start runs nothing
    assert again.checkpoint == paths.shipped and again.timings == {}


def _the_calibration_gallery_is_the_whole_worlds(paths: DemoPaths, shipped: Path) -> None:
    from geoapp.model import ModelConfig
    from geoapp.retrieval.build import DatasetSource, Limited

    config = ModelConfig.from_dict(read_metadata(shipped)["model_config"])
    whole_world = shipped.parent / "synth"  # the fixture's, rendered whole
    galleries = [Limited(DatasetSource("synth", root, "train", config), 2, spread=True)
                 for root in (whole_world, paths.data_root)]
    whole, served = ([Path(p).relative_to(root) for p in g.paths] for g, root in zip(galleries,
                                                                                     (whole_world, paths.data_root)))
    assert whole == served == [Path("bingmap/19/0000001.jpg"), Path("bingmap/19/0000008.jpg")]
    for row in range(2):
        assert torch.equal(galleries[0].load(row)[0], galleries[1].load(row)[0])
    assert np.array_equal(galleries[0].latlon, galleries[1].latlon)


def test_a_world_that_differs_is_remeasured_not_retrained(tmp_path, shipped):
    paths = _paths(tmp_path, shipped)
    subprocess.run([sys.executable, "-m", "geoapp.synth", "--out", str(paths.data_root), *TINY_WORLD], check=True,
                   capture_output=True)
    panos = sorted((paths.data_root / "streetview" / "panos").glob("*.jpg"))
    shutil.copyfile(panos[-2], panos[-1])  # a test location shows another one's street: not the measured world
    lines: list[str] = []
    state = ensure_demo(paths, log=lines.append, extra_flags=TINY)
    assert list(state.timings) == ["remeasure", "build_db"]  # the world was there; nothing trained
    assert any("differs" in line and "their fingerprint too: cell means differ" in line and "not retrained" in line
               for line in lines)
    record = json.loads(paths.verification.read_text())
    assert not record["matches"] and not record["same_world"] and record["fingerprint"]["max_level"] > 3
    assert state.checkpoint == paths.shipped and set(state.accuracy["final_eval"]) == {"90", "70"}
    assert "re-measured on this machine's world" in accuracy_text(state.accuracy)


def test_rendering_noise_keeps_the_recorded_figures(tmp_path, shipped):
    """Every test image one level off in a third of its pixels and written again by another JPEG encoder (Pillow),
    as another library or CPU makes it: the exact digest differs, the fingerprint does not; the recorded figures are
    served without re-measuring. Without the world record the same world is re-measured, as before."""
    paths = _paths(tmp_path, shipped)
    subprocess.run([sys.executable, "-m", "geoapp.synth", "--out", str(paths.data_root), *TINY_WORLD], check=True,
                   capture_output=True)
    rng = np.random.default_rng(0)
    test = open_split("synth", str(paths.data_root), "test", 90.0, 64, 256, train=False)
    for record in test.records:
        for path in (record.ground_path, record.satellite_path, record.polar_path):
            pixels = np.array(Image.open(path).convert("RGB")).astype(np.int16)
            noise = rng.choice([-1, 0, 0, 0, 0, 1], size=pixels.shape)
            Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(path, quality=92)
    assert split_digest(test) != read_metadata(shipped)["test_digest"]
    lines: list[str] = []
    state = ensure_demo(paths, log=lines.append, extra_flags=TINY)
    assert list(state.timings) == ["build_db"] and state.accuracy is None  # no re-measure: the recorded figures
    assert any("verified" in line and "up to rendering noise" in line for line in lines)
    record = json.loads(paths.verification.read_text())
    assert not record["matches"] and record["same_world"] and record["fingerprint"]["max_level"] <= 1

    world_record_path(paths.shipped).unlink()
    paths.verification.unlink()
    state = ensure_demo(paths, log=lines.append, extra_flags=TINY)
    assert list(state.timings) == ["remeasure"] and "re-measured" in accuracy_text(state.accuracy)
    assert any("demo.world.json, which would tell rendering noise apart, is not there" in line for line in lines)


def test_the_fingerprint_tells_another_world_apart(tmp_path, shipped):
    """A world of another seed (the same sizes, the same file names) is not the recorded one."""
    other = tmp_path / "other"
    subprocess.run([sys.executable, "-m", "geoapp.synth", "--out", str(other), "--splits", "test", *TINY_WORLD,
                    "--seed", "2"], check=True, capture_output=True)
    recorded = read_world_record(shipped, read_metadata(shipped))["fingerprint"]
    match = compare_fingerprints(recorded, split_fingerprint(open_split("synth", str(other), "test", 90.0, 64, 256,
                                                                        train=False)))
    assert not match.same_world and match.max_level > 20 and match.mean_level > 5, match
    assert compare_fingerprints(recorded, recorded).same_world


def test_the_digest_sees_one_changed_pixel(tmp_path, shipped):
    world = tmp_path / "w"
    subprocess.run([sys.executable, "-m", "geoapp.synth", "--out", str(world), "--splits", "test", *TINY_WORLD],
                   check=True, capture_output=True)
    split = open_split("synth", str(world), "test", 90.0, 64, 256, train=False)
    before = split_digest(split)
    assert before == read_metadata(shipped)["test_digest"]  # rendering only the test split gives the same images
    polar = split.records[3].polar_path
    original = polar.read_bytes()
    pixels = np.array(Image.open(polar))
    pixels[10, 20, 1] ^= 1  # one channel of one pixel, by one level (PNG: lossless)
    Image.fromarray(pixels).save(polar)
    assert split_digest(split)["sha256"] != before["sha256"]
    polar.write_bytes(original)
    assert split_digest(split) == before


def test_a_checkpoint_that_does_not_fit_is_named_and_replaced_by_a_model_built_here(tmp_path, shipped):
    paths = _paths(tmp_path, shipped)
    paths.shipped.write_bytes(paths.shipped.read_bytes()[:5000])  # a truncated download
    lines: list[str] = []
    state = ensure_demo(paths, log=lines.append, extra_flags=TINY)
    text = "\n".join(lines)
    assert "The shipped demo model cannot be used" in text and "truncated" in text
    assert "Building a model on this CPU instead" in text
    assert list(state.timings) == ["synth", "train", "build_db"]
    assert any("geoapp.train --preset demo-quick" in line for line in lines)
    assert state.checkpoint == paths.built and paths.built.is_file() and state.notes
    assert any("geoapp.build_db" in line and f"--checkpoint {paths.built}" in line for line in lines)
    # the app built on what the first start made answers a query through its named API
    _the_app_answers_one_query(paths, state)
    # the shipped file restored: it is served again, the database rebuilt for it, nothing retrained
    shutil.copyfile(shipped, paths.shipped)
    state = ensure_demo(paths, log=lines.append, extra_flags=TINY)
    assert state.checkpoint == paths.shipped and list(state.timings) == ["build_db"]
    # --rebuild-model trains on purpose, even with a valid shipped checkpoint
    state = ensure_demo(paths, log=lines.append, rebuild_model=True, extra_flags=TINY)
    assert state.checkpoint == paths.built and list(state.timings) == ["train", "build_db"]


def _the_app_answers_one_query(paths: DemoPaths, state) -> None:
    """The page the first start serves (Localizer -> build_demo, as ``python app.py``), asked through gradio_client."""
    from gradio_client import Client, handle_file

    from geoapp.app.handlers import PHOTO_TYPES
    from geoapp.app.screenshot import free_port
    from geoapp.app.ui import build_demo
    from geoapp.data.fov import crop_fov
    from geoapp.retrieval.engine import Localizer

    crop_type = next(k for k, v in PHOTO_TYPES.items() if v == "crop")
    localizer = Localizer(state.checkpoint, state.database, device="cpu", accuracy=state.accuracy)
    demo = build_demo(localizer, top_k=3)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        crop = paths.data_root.parent / "query.png"  # a 90 deg crop of the last (a test) location's panorama
        pano = np.array(Image.open(sorted((paths.data_root / "streetview" / "panos").glob("*.jpg"))[-1]))
        Image.fromarray(crop_fov(pano, 90.0, 40)).save(crop)
        client = Client(demo.local_url, verbose=False)
        result = client.predict(handle_file(str(crop)), 90.0, crop_type, api_name="/localize")
    finally:
        demo.close()
    answer = result[-1]
    assert [c["rank"] for c in answer["candidates"]] == [1, 2, 3]
    assert answer["searched_references"] == 8  # the tiny world's test split
    assert "demo-built.safetensors" in result[-2]  # the status names the model the first start built


def test_another_config_is_explained(tmp_path, shipped):
    from safetensors.torch import load_file, save_file

    meta = read_metadata(shipped)
    meta["model_config"]["base_channels"] = 16  # the stored tensors are 8 channels wide
    wrong = tmp_path / "wrong.safetensors"
    save_file(load_file(str(shipped)), str(wrong), metadata={"geoapp": json.dumps(meta)})
    assert "does not fit the model its config describes" in shipped_problem(wrong)
    assert "checkpoint not found" in shipped_problem(tmp_path / "missing.safetensors")
    del meta["test_digest"]
    meta["model_config"]["base_channels"] = 8
    save_file(load_file(str(shipped)), str(wrong), metadata={"geoapp": json.dumps(meta)})
    assert "records no test_digest" in shipped_problem(wrong)


def test_no_build_names_the_missing_step(tmp_path, shipped, monkeypatch):
    import app
    import geoapp.app.main as app_main

    assert app.resolve_artifacts is app_main.resolve_artifacts  # app.py is the thin launcher of this module
    paths = _paths(tmp_path, shipped)
    with pytest.raises(BootstrapError, match=r"has not run here.*geoapp\.synth --out \S+synth --splits val test "
                                             r"--sample train:8$"):
        ensure_demo(paths, allow_build=False, log=lambda message: None)
    monkeypatch.setattr(app_main, "DemoPaths", lambda: paths)
    monkeypatch.delenv("GEOAPP_CHECKPOINT", raising=False)
    monkeypatch.delenv("GEOAPP_REFERENCE_DB", raising=False)
    with pytest.raises(SystemExit, match="has not run here"):
        app_main.resolve_artifacts(app_main.parse_args(["--no-build"]))
    with pytest.raises(SystemExit, match="not found"):
        app_main.resolve_artifacts(app_main.parse_args(["--checkpoint", str(tmp_path / "nope.safetensors"),
                                                         "--reference-db", str(tmp_path / "nodb")]))


def test_the_shipped_checkpoint_fits_the_code_and_records_its_provenance():
    """The tracked checkpoints/demo.safetensors: it loads into the model its config describes, in float16, within
    the 25 MB limit, and records what the first start checks and what the README reports."""
    from geoapp.app.bootstrap import SHIPPED_CHECKPOINT
    from geoapp.model import load_model
    from geoapp.synth.world import GENERATOR_VERSION, WorldConfig
    from geoapp.training.presets import PRESETS

    assert SHIPPED_CHECKPOINT.is_file(), "checkpoints/demo.safetensors is tracked in git"
    assert SHIPPED_CHECKPOINT.stat().st_size <= 25 * 2**20
    assert shipped_problem(SHIPPED_CHECKPOINT) is None
    model, meta = load_model(SHIPPED_CHECKPOINT)
    trained = meta["train_config"]
    assert trained["preset"] == "demo" and trained["fov_range"] == list(PRESETS["demo"]["fov_range"])
    assert model.config.align_mode == "gate-corr" and model.config.shared_window  # the paper's attention windows
    assert meta["weights_dtype"] == "float16" and meta["world"]["generator_version"] == GENERATOR_VERSION
    assert meta["world"]["seed"] == WorldConfig().seed and meta["world"]["counts"]["test"] == 1000
    assert meta["test_digest"]["pairs"] == 1000 and meta["selection_split"] == "val" and meta["report_split"] == "test"
    assert set(meta["final_eval"]) == {"60", "70", "90", "100"}
    assert len(meta["final_eval_results"]) == 12  # 4 FoVs x 3 shift seeds
    assert "--preset demo" in meta["training"]["command"]


def test_a_database_of_an_older_format_is_rebuilt(tmp_path):
    from geoapp.app.bootstrap import database_checkpoint
    from geoapp.retrieval.database import FORMAT_VERSION

    db = tmp_path / "demo"
    db.mkdir()
    (db / "metadata.json").write_text(json.dumps({"format_version": 1, "checkpoint": {"sha256": "ab" * 32},
                                                  "calibration": {}}))
    assert FORMAT_VERSION > 1 and database_checkpoint(db) == ("format version 1", False)  # never a checkpoint's sha
    (db / "metadata.json").write_text(json.dumps({"format_version": FORMAT_VERSION,
                                                  "checkpoint": {"sha256": "ab" * 32}, "calibration": {}}))
    assert database_checkpoint(db) == ("ab" * 32, True)


def test_a_familiarity_test_this_code_cannot_read_is_refitted(tmp_path):
    """A database whose familiarity record has other statistics or ranges on another scale counts as uncalibrated, so
    the first start refits its calibration (``build_db --calibrate-only``) instead of serving without the test."""
    from geoapp.app.bootstrap import database_checkpoint
    from geoapp.retrieval import familiarity as fam
    from geoapp.retrieval.database import FORMAT_VERSION

    db = tmp_path / "demo"
    db.mkdir()
    current = {"statistics": list(fam.STATISTICS), "statistics_scale": fam.STATISTICS_SCALE}
    for record, calibrated in ((current, True), ({**current, "statistics_scale": "linear"}, False),
                               ({k: v for k, v in current.items() if k != "statistics_scale"}, False),
                               ({**current, "statistics": ["red_mean"]}, False)):
        (db / "metadata.json").write_text(json.dumps({"format_version": FORMAT_VERSION,
                                                      "checkpoint": {"sha256": "ab" * 32},
                                                      "calibration": {"familiarity": record}}))
        assert database_checkpoint(db) == ("ab" * 32, calibrated), record
