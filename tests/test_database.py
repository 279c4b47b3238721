"""The reference database: layout, reproducible and resumable builds, and refusing unusable databases."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from geoapp.build_db import main
from geoapp.data.photo import load_image
from geoapp.data.polar import polar_transform
from geoapp.data.transforms import to_tensor
from geoapp.files import sha256_file
from geoapp.model import ModelConfig, load_model
from geoapp.model.align import column_energy
from geoapp.retrieval.build import TileFolderSource, build_database
from geoapp.retrieval.codes import STORES
from geoapp.retrieval.database import DatabaseError, ReferenceDatabase, array_layout
from geoapp.testing import make_random_tiles, random_checkpoint

CONFIG = ModelConfig(ground_height=64, sat_height=64, sat_width=256)
N_TILES = 10
CHUNK = 4  # 3 chunks of 4, 4, 2


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    ckpt = random_checkpoint(root / "tiny.safetensors", CONFIG, seed=0)
    csv_path = make_random_tiles(root / "tiles", N_TILES, size=96, seed=0)
    source = TileFolderSource(csv_path.parent, csv_path, (CONFIG.sat_height, CONFIG.sat_width))
    db_path = build_database(source, ckpt, root / "db", chunk_size=CHUNK, batch_size=3, show_progress=False)
    return {"root": root, "ckpt": ckpt, "csv": csv_path, "source": source, "db": db_path}


@pytest.fixture(scope="module")
def stored(world):
    """The world's database in every store kind of the registry (fp16: the world's own)."""
    return {name: world["db"] if name == "fp16" else build_database(
        world["source"], world["ckpt"], world["root"] / f"db_{name}", chunk_size=CHUNK, batch_size=3,
        show_progress=False, store=name) for name in STORES}


def _data_files(path):
    return {f.name: f.read_bytes() for f in sorted(path.iterdir()) if f.name != "metadata.json"}


def test_layout_holds_the_satellite_branch_outputs(world):
    db = ReferenceDatabase.open(world["db"])
    model, _ = load_model(world["ckpt"])
    assert len(db) == N_TILES
    tiles = [world["source"].load(i)[0] for i in range(N_TILES)]
    with torch.inference_mode():
        maps = model.encode_satellite(torch.stack(tiles))
    view = db.slice(0, N_TILES)
    for b in range(4):
        n, c, h, w = maps.features[b].shape
        # column-major on disk (R x W x C x H), N x C x H x W through the view, values rounded to float16
        assert db.array(f"features_{b + 1}").shape == (n, w, c, h)
        assert view.features[b].shape == (n, c, h, w) and view.features[b].dtype == torch.float16
        # (the build ran batches of 3: the network's last bits depend on the batch, hence a tolerance)
        assert torch.allclose(view.features[b].float(), maps.features[b], rtol=2e-3, atol=1e-4)
        assert torch.allclose(view.masks[b].float(), maps.masks[b], rtol=2e-3, atol=1e-4)
        # precomputed window-energy columns equal what the alignment would compute from the stored maps
        assert torch.equal(view.col_energy[b], column_energy(view.features[b]))
    assert np.allclose(db.latlon, world["source"].latlon)
    assert db.paths == world["source"].paths
    assert db.thumbnail(3).shape == (96, 96, 3) and db.thumbnail(3).dtype == np.uint8
    assert db.mask(2, 3).shape == (CONFIG.sat_height // 16, CONFIG.sat_width // 16)
    # a slice of the view is the same data as the full view, and so is a store preloaded onto the device
    assert torch.equal(db.slice(5, 9).features[0], view.features[0][5:9])
    assert torch.equal(db.gather([7, 1]).masks[2], view.masks[2][[7, 1]])
    held = ReferenceDatabase.open(world["db"], preload=True)
    for got, want in ((held.slice(2, 7), db.slice(2, 7)), (held.gather([9, 0, 4]), db.gather([9, 0, 4]))):
        for field in ("features", "masks", "col_energy"):
            assert all(torch.equal(a, b) for a, b in zip(getattr(got, field), getattr(want, field)))


def test_tiles_are_polar_transformed_at_the_checkpoint_size(world):
    polar, thumb = world["source"].load(0)
    assert polar.shape == (3, CONFIG.sat_height, CONFIG.sat_width)
    tile = load_image(world["source"].files[0])
    assert torch.allclose(polar, to_tensor(polar_transform(tile, CONFIG.sat_height, CONFIG.sat_width)))


@pytest.mark.parametrize("store", STORES)
def test_metadata_records_provenance_and_layout(world, stored, store):
    db = ReferenceDatabase.open(stored[store])
    meta = db.metadata
    assert db.store is STORES[store] and meta["store"] == store
    assert meta["checkpoint"]["sha256"] == sha256_file(world["ckpt"])
    assert meta["checkpoint"]["model_config"] == CONFIG.to_dict()
    assert meta["source"]["kind"] == "tiles"
    assert meta["source"]["locations_sha256"] == sha256_file(world["csv"])
    assert meta["num_references"] == N_TILES
    for name, (shape, dtype) in array_layout(CONFIG, STORES[store]).items():  # every array as the store lays it out
        assert meta["files"][f"{name}.npy"]["dtype"] == dtype and meta["files"][f"{name}.npy"]["shape"] == [
            N_TILES, *shape]
    assert all(f["bytes"] == (stored[store] / name).stat().st_size for name, f in meta["files"].items())
    for key in ("command", "code_revision", "built", "build_seconds", "layout"):
        assert key in meta
    assert db.thumbnail(3).shape == (96, 96, 3) and db.thumbnail(3).dtype == np.uint8


def test_fp16_features_are_stored_as_they_are(world):
    f1 = ReferenceDatabase.open(world["db"]).metadata["files"]["features_1.npy"]
    assert f1["dtype"] == "float16" and f1["shape"] == [N_TILES, 64, 64, 16]


@pytest.mark.parametrize("store", STORES)
def test_rebuild_is_bit_identical(world, stored, store, tmp_path):
    again = build_database(world["source"], world["ckpt"], tmp_path / "again", chunk_size=CHUNK, batch_size=3,
                           show_progress=False, store=store)
    assert _data_files(again) == _data_files(stored[store])


@pytest.mark.parametrize("store", STORES)
def test_interrupted_build_resumes_to_the_same_bytes(world, stored, store, tmp_path):
    out = tmp_path / "resumed"
    kwargs = dict(chunk_size=CHUNK, batch_size=3, show_progress=False, store=store)

    def stop_after_chunk_1(chunk):
        if chunk == 1:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        build_database(world["source"], world["ckpt"], out, on_chunk_done=stop_after_chunk_1, **kwargs)
    assert not out.exists()
    state = json.loads((tmp_path / "resumed.partial" / "build_state.json").read_text())
    assert state["done_chunks"] == [0, 1]
    with pytest.raises(DatabaseError, match="unfinished build"):
        ReferenceDatabase.open(out)
    other = next(name for name in STORES if name != store)
    with pytest.raises(DatabaseError, match="different inputs"):  # the store is part of the plan
        build_database(world["source"], world["ckpt"], out, **{**kwargs, "store": other})

    redone = []
    build_database(world["source"], world["ckpt"], out, on_chunk_done=redone.append, **kwargs)
    assert redone == [2]  # only the missing chunk was encoded
    assert _data_files(out) == _data_files(stored[store])
    assert ReferenceDatabase.open(out).metadata["build_sessions"] == 2
    assert not (tmp_path / "resumed.partial").exists()
    assert not (out / "thumbnail_chunks").exists()


def test_partial_build_of_other_inputs_is_not_resumed(world, tmp_path):
    out = tmp_path / "db"

    def stop(chunk):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_database(world["source"], world["ckpt"], out, chunk_size=CHUNK, show_progress=False, on_chunk_done=stop)
    with pytest.raises(DatabaseError, match="different inputs"):
        build_database(world["source"], world["ckpt"], out, chunk_size=CHUNK, show_progress=False, limit=5)


def test_other_checkpoint_is_refused_with_both_hashes(world, tmp_path):
    other = random_checkpoint(tmp_path / "other.safetensors", CONFIG, seed=1)
    mine, theirs = sha256_file(world["ckpt"]), sha256_file(other)
    with pytest.raises(DatabaseError) as err:
        ReferenceDatabase.open(world["db"], checkpoint_sha=theirs, model_config=CONFIG)
    message = str(err.value)
    assert f"built with checkpoint {mine[:12]}" in message and f"loaded checkpoint {theirs[:12]}" in message
    with pytest.raises(DatabaseError, match="sat_width: database 256 vs app 512"):
        ReferenceDatabase.open(world["db"], model_config=ModelConfig())


@pytest.mark.parametrize("store", STORES)
def test_truncated_file_and_missing_metadata_are_refused(stored, store, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(stored[store], broken)
    data = (broken / "features_2.npy").read_bytes()
    (broken / "features_2.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatabaseError, match=r"features_2.npy is .* bytes but metadata.json records .*truncated"):
        ReferenceDatabase.open(broken)
    (broken / "metadata.json").unlink()
    with pytest.raises(DatabaseError, match="no metadata.json"):
        ReferenceDatabase.open(broken)
    with pytest.raises(DatabaseError, match="no reference database"):
        ReferenceDatabase.open(tmp_path / "nowhere")


def test_cli_refuses_bad_tile_lists_clearly(world, tmp_path, capsys):
    csv_path = tmp_path / "tiles.csv"
    csv_path.write_text("file,lat,lon\ntile_000000.jpg,40.1,-75\nmissing.jpg,40.2,-75\n")
    args = ["--checkpoint", str(world["ckpt"]), "--tiles", str(world["csv"].parent), "--locations", str(csv_path),
            "--out", str(tmp_path / "db")]
    assert main(args) == 2
    assert f"{csv_path}:3: tile" in capsys.readouterr().err
    csv_path.write_text("tile_000000.jpg,140.1,-75\n")
    assert main(args) == 2
    assert "lat/lon must be numbers" in capsys.readouterr().err


def test_cli_builds_a_database(world, tmp_path, capsys):
    out = tmp_path / "cli_db"
    args = ["--checkpoint", str(world["ckpt"]), "--tiles", str(world["csv"].parent), "--locations",
            str(world["csv"]), "--out", str(out), "--limit", "3", "--chunk-size", "2"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert len(ReferenceDatabase.open(out)) == 3
    assert main(args) == 2  # exists: needs --overwrite
    assert "already exists" in capsys.readouterr().err


def test_shared_window_database_stores_only_the_choosing_stage_gates_and_says_what_a_model_misses(world, tmp_path):
    """A shared-window model's search reads block 1's gates only, so its database stores no others; a model that
    chooses at every stage is refused with the stages it would miss."""
    import dataclasses

    shared = dataclasses.replace(CONFIG, align_mode="gate-corr", shared_window=True)
    ckpt = random_checkpoint(tmp_path / "shared.safetensors", shared, seed=0)
    db_path = build_database(world["source"], ckpt, tmp_path / "db", chunk_size=CHUNK, batch_size=3,
                             show_progress=False)
    names = {f.name for f in db_path.iterdir()}
    assert {"gates_1.npy", "gate_energy_1.npy"} <= names
    assert not names & ({f"gates_{s}.npy" for s in (2, 3, 4)} | {f"gate_energy_{s}.npy" for s in (2, 3, 4)})
    db = ReferenceDatabase.open(db_path, sha256_file(ckpt), shared)
    assert db.array("gates_1").shape == (N_TILES, 64, CONFIG.sat_width // 4)  # R x C_1 x W_1
    own = dataclasses.replace(shared, shared_window=False)
    with pytest.raises(DatabaseError, match=r"gates of stage\(s\) \[2, 3, 4\], which the database does not store"):
        ReferenceDatabase.open(db_path, sha256_file(ckpt), own)


@pytest.fixture(scope="module")
def synth_world(tmp_path_factory):
    """A tiny synthetic world with the three splits a first start reads: 4 train, 4 val and 8 test locations."""
    from geoapp.synth.world import WorldConfig
    from geoapp.synth.writer import ImageOptions, write_dataset

    root = tmp_path_factory.mktemp("synth_world") / "synth"
    world = WorldConfig(seed=2, n_train=4, n_val=4, n_test=8, tile_metres=64.0, block_metres=256.0,
                        district_metres=200.0, metres_per_pixel=1.0)
    images = ImageOptions(tile_size=128, pano_height=64, pano_width=256, polar_height=64, polar_width=256,
                          mosaic_size=256)
    write_dataset(root, world, images, workers=1, progress=False, log=lambda message: None)
    return root


def count_checkpoint_reads(monkeypatch, checkpoint) -> dict[str, int]:
    """Count, from now on, how often any geoapp module reads ``checkpoint``'s metadata, loads its weights or hashes
    it: every module-level name bound to those functions is replaced by a counting wrapper."""
    import sys
    from collections import Counter

    import geoapp.build_db  # noqa: F401 - everything a build_db run calls is imported before the names are replaced
    from geoapp import files
    from geoapp.model import checkpoint as checkpoint_module

    counts: Counter = Counter()
    target = checkpoint.resolve()
    originals = {"metadata": checkpoint_module.read_metadata, "weights": checkpoint_module.load_model,
                 "hash": files.sha256_file}
    for kind, original in originals.items():
        def counted(path, *args, _original=original, _kind=kind, **kwargs):
            counts[_kind] += Path(path).resolve() == target
            return _original(path, *args, **kwargs)

        for module in [m for name, m in sys.modules.items() if name.startswith("geoapp") and m is not None]:
            for name, value in list(vars(module).items()):
                if value is original:
                    monkeypatch.setattr(module, name, counted)
    return counts


def test_build_db_with_calibration_reads_loads_and_hashes_the_checkpoint_once(synth_world, tmp_path, monkeypatch):
    from geoapp.testing import demo_model_config

    ckpt = random_checkpoint(tmp_path / "demo.safetensors", demo_model_config(), seed=0)
    counts = count_checkpoint_reads(monkeypatch, ckpt)
    out = tmp_path / "db"
    assert main(["--checkpoint", str(ckpt), "--dataset", "synth", "--data-root", str(synth_world), "--split", "test",
                 "--out", str(out), "--calibrate", "val", "--device", "cpu"]) == 0
    calibration = json.loads((out / "metadata.json").read_text())["calibration"]
    assert calibration["split"] == "val"  # the calibration ran (fitted, or recorded as unfittable)
    assert dict(counts) == {"metadata": 1, "weights": 1, "hash": 1}
    counts.clear()
    assert main(["--checkpoint", str(ckpt), "--dataset", "synth", "--data-root", str(synth_world), "--split", "test",
                 "--out", str(out), "--calibrate", "val", "--calibrate-only", "--device", "cpu"]) == 0
    assert dict(counts) == {"metadata": 1, "weights": 1, "hash": 1}
