"""Real dataset layouts end to end: ``python -m geoapp.train`` -> ``evaluate`` -> ``build_db`` -> ``localize`` on tiny
CVUSA and CVACT folders in the layouts a researcher downloads (tests/real_layouts.py: real file names, JPEGs at the
real sizes, the real index files, no manifest, no model-selection split).

Every stage is the command-line entry point's ``main(argv)`` (in-process: one torch import for the module). Training
uses the demo-quick preset's model (gate-corr, shared window, known-positive windows, the gate term, the alignment
loss, 32 base channels) at a 32 x 128 input for 2 steps: the assertions are about what each tool reads, records and
writes for a real layout, not about accuracy.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from real_layouts import write_tiny_cvact_layout, write_tiny_cvusa_layout

from geoapp.build_db import main as build_db_main
from geoapp.data.datasets import build_dataset
from geoapp.data.fov import crop_fov, eval_shifts
from geoapp.data.selection import carve_dataset
from geoapp.data.transforms import to_tensor
from geoapp.evaluate import main as evaluate_main
from geoapp.localize import main as localize_main
from geoapp.model import ModelConfig, build_model, load_model, read_metadata, save_model
from geoapp.retrieval.metrics import ranks_from_distances, recall_from_ranks
from geoapp.train import main as train_main

pytestmark = pytest.mark.slow  # about 10 s per dataset on one core

WRITERS = {"cvusa": write_tiny_cvusa_layout, "cvact": write_tiny_cvact_layout}
# where each layout keeps the satellite tile of a pair id
TILE_PATHS = {"cvusa": "bingmap/19/{}.jpg", "cvact": "satview_polish/{}_satView_polish.jpg"}
# a box around each layout's place: catches a wrong UTM zone / hemisphere or swapped lat and lon
PLACES = {"cvusa": ((39.9, 40.1), (-75.1, -74.8)), "cvact": ((-35.5, -35.0), (149.0, 149.3))}
N_TRAIN, N_TEST, CARVE = 16, 8, 3
HEIGHT, WIDTH, FOV = 32, 128, 90.0
PHOTO_PAIRS = (0, 5)  # test pairs whose ground crops are localized
SEED = 2019  # conventions §4's shift seed: the only one evaluated here


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny tensors: a second thread only adds synchronisation (and triples the time beside a busy core)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_args(name: str, root: Path, out: Path) -> list[str]:
    """The demo-quick recipe at a tiny size and length. fp32 is given because --precision auto times bf16 first
    (seconds on a CPU without native bf16); --val-size 3 is the size of the selection subset carved from train."""
    return ["--preset", "demo-quick", "--dataset", name, "--data-root", str(root), "--height", str(HEIGHT),
            "--sat-width", str(WIDTH), "--batch-size", "4", "--max-steps", "2", "--val-every", "2",
            "--val-size", str(CARVE), "--workers", "0", "--eval-fov", str(FOV), "--precision", "fp32",
            "--no-progress", "--out", str(out)]


@pytest.fixture(scope="module", params=sorted(WRITERS))
def trained(request, tmp_path_factory):
    """(dataset name, the layout written, the run folder) after ``python -m geoapp.train`` on the layout."""
    name = request.param
    base = tmp_path_factory.mktemp(name)
    layout = WRITERS[name](base / name, n_train=N_TRAIN, n_test=N_TEST, seed=0)
    out = base / "run"
    assert train_main(train_args(name, layout.root, out)) == 0
    return name, layout, out


def open_test_split(name: str, root: Path, config: ModelConfig):
    # no polar cache: the images as the reader makes them, not as training cached them
    return build_dataset(name, root, "test", config.fov_deg, train=False, ground_size=(config.ground_height, None),
                         sat_size=(config.sat_height, config.sat_width), use_cache=False)


def brute_force_recall(checkpoint: Path, name: str, root: Path) -> dict:
    """Recall of the checkpoint on the whole test split from one full distance matrix of the model's own forward
    pass (evaluate ranks block by block through the search code)."""
    model, _ = load_model(checkpoint)
    ds = open_test_split(name, root, model.config)
    shifts = eval_shifts(len(ds), SEED, width=WIDTH)
    ground = torch.stack([to_tensor(crop_fov(ds.load_panorama(i), FOV, int(s))) for i, s in enumerate(shifts)])
    sat = torch.stack([to_tensor(ds.load_polar(i)) for i in range(len(ds))])
    with torch.no_grad():
        distances = model.eval()(ground, sat).distances
    return recall_from_ranks(ranks_from_distances(distances), n_refs=len(ds))


def write_photos(name: str, root: Path, config: ModelConfig, folder: Path) -> list[Path]:
    """JPEG photos: the ground crops (FoV 90, the model's height) of the test pairs ``PHOTO_PAIRS``."""
    ds = open_test_split(name, root, config)
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for i in PHOTO_PAIRS:
        crop = np.ascontiguousarray(crop_fov(ds.load_panorama(i), FOV, ds.shift_for(i)))
        photos.append(folder / f"IMG_{i:04d}.jpg")
        assert cv2.imwrite(str(photos[-1]), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return photos


def build_db_args(checkpoint: Path, name: str, root: Path, out: Path) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--dataset", name, "--data-root", str(root), "--split", "test",
            "--out", str(out), "--device", "cpu"]


def localize_args(photos, checkpoint: Path, database: Path, out: Path) -> list[str]:
    return [*map(str, photos), "--checkpoint", str(checkpoint), "--reference-db", str(database), "--top-k", "1",
            "--out", str(out), "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def database(trained, tmp_path_factory):
    name, layout, run = trained
    out = tmp_path_factory.mktemp(f"{name}_db") / "db"
    assert build_db_main(build_db_args(run / "best.safetensors", name, layout.root, out)) == 0
    return out


# ---------------------------------------------------------------------------------------------- the layout


def test_each_tiles_polar_image_is_its_own_panorama(trained):
    # what makes the layout learnable: the reader's polar image of a tile (CVACT: against the panorama's kept
    # band) matches its own panorama, and no other, by a wide margin (mean absolute difference in grey levels)
    name, layout, _ = trained
    ds = open_test_split(name, layout.root, ModelConfig(ground_height=HEIGHT, sat_height=HEIGHT, sat_width=WIDTH))
    panos = np.stack([ds.load_panorama(i) for i in range(len(ds))]).astype(np.float64)
    polars = np.stack([ds.load_polar(i) for i in range(len(ds))]).astype(np.float64)
    difference = np.abs(panos[:, None] - polars[None]).mean(axis=(2, 3, 4))  # panorama x polar image
    others = difference[~np.eye(len(ds), dtype=bool)]
    assert difference.diagonal().max() < 25 and others.min() > 50


# --------------------------------------------------------------------------------------------------- train


def test_training_chooses_on_a_carve_of_train_and_reports_on_test(trained):
    name, layout, run = trained
    meta = read_metadata(run / "best.safetensors")
    assert meta["train_config"]["dataset"] == name and meta["train_config"]["data_root"] == str(layout.root)
    assert meta["model_config"]["align_mode"] == "gate-corr" and meta["model_config"]["shared_window"] is True
    # no val split in a real layout: a spatial carve (positions are known) of --val-size pairs from train
    train_ds = build_dataset(name, layout.root, "train", FOV, train=True, ground_size=(HEIGHT, None),
                             sat_size=(HEIGHT, WIDTH))
    carve = carve_dataset(train_ds, CARVE, seed=0)
    record = meta["selection_split"]
    assert record == carve.record([r.id for r in train_ds.records], "train")
    assert record["carved_from"] == "train" and record["method"] == "spatial" and record["n"] >= CARVE
    assert record["n"] + record["n_train"] + record["n_dropped"] == N_TRAIN
    assert meta["report_split"] == "test"
    final = json.loads((run / "final_eval.json").read_text())
    assert (final["split"], final["n_queries"], final["n_references"]) == ("test", N_TEST, N_TEST)
    assert final["selection_split"] == record


# ------------------------------------------------------------------------------------------------ evaluate


def test_evaluate_reports_the_test_split_with_the_brute_force_recall(trained, tmp_path):
    name, layout, run = trained
    best = run / "best.safetensors"
    out = tmp_path / "eval.json"
    # no --dataset / --data-root: the checkpoint names them
    assert evaluate_main(["--checkpoint", str(best), "--fov", str(FOV), "--shift-seeds", str(SEED), "--workers", "0",
                          "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["dataset"], report["data_root"], report["split"]) == (name, str(layout.root), "test")
    assert report["n_queries"] == report["n_references"] == N_TEST
    (row,) = report["results"]
    expected = brute_force_recall(best, name, layout.root)
    for key in ("R@1", "R@5", "R@10"):
        assert row[key] == pytest.approx(expected[key]), key
    assert report["by_fov"]["90"]["R@1"] == pytest.approx(expected["R@1"])


def test_evaluate_refuses_the_split_the_selection_was_carved_from(trained, capsys):
    _, _, run = trained
    code = evaluate_main(["--checkpoint", str(run / "best.safetensors"), "--split", "train", "--no-progress"])
    assert code == 2 and "carved from the 'train' split" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ build_db, localize


def test_build_db_holds_the_test_tiles_at_their_positions(trained, database):
    name, layout, _ = trained
    metadata = json.loads((database / "metadata.json").read_text())
    assert metadata["num_references"] == N_TEST
    assert metadata["source"]["dataset"] == name and metadata["source"]["split"] == "test"
    paths = (database / "paths.txt").read_text().splitlines()
    assert [Path(p) for p in paths] == [layout.root / TILE_PATHS[name].format(i) for i in layout.ids["test"]]
    latlon = np.load(database / "latlon.npy")
    # CVUSA: split_locations/all.csv; CVACT: ACT_data.mat's UTM through geoapp.data.cvact.utm_to_latlon
    np.testing.assert_allclose(latlon, layout.latlon["test"], rtol=0, atol=1e-9)
    (lat_lo, lat_hi), (lon_lo, lon_hi) = PLACES[name]
    assert np.all((lat_lo < latlon[:, 0]) & (latlon[:, 0] < lat_hi) & (lon_lo < latlon[:, 1]) & (latlon[:, 1] < lon_hi))


def test_localize_answers_each_photo_with_a_database_reference(trained, database, tmp_path):
    name, layout, run = trained
    best = run / "best.safetensors"
    config = ModelConfig.from_dict(read_metadata(best)["model_config"])
    photos = write_photos(name, layout.root, config, tmp_path / "photos")
    out = tmp_path / "answers.csv"
    assert localize_main(localize_args(photos, best, database, out)) == 0
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["file"], r["rank"], r["error"]) for r in rows] == [(str(p), "1", "") for p in photos]
    references = np.load(database / "latlon.npy")
    for row in rows:
        answer = np.array([float(row["lat"]), float(row["lon"])])
        # the CSV rounds to 1e-7 degrees (1 cm)
        assert np.any(np.all(np.abs(references - answer) <= 1e-7, axis=1)), row
        assert 0 <= float(row["heading_deg"]) < 360


# ----------------------------------------------------------------------------------- CVUSA without all.csv


def test_localize_writes_json_for_a_cvusa_copy_without_locations(tmp_path):
    # copies of the CVUSA subset often lack split_locations/all.csv: the database then holds nan positions
    layout = write_tiny_cvusa_layout(tmp_path / "cvusa", n_train=4, n_test=N_TEST, locations=False)
    config = ModelConfig(ground_height=HEIGHT, sat_height=HEIGHT, sat_width=WIDTH, base_channels=8, fov_deg=FOV)
    torch.manual_seed(0)
    checkpoint = save_model(tmp_path / "random.safetensors", build_model(config).eval())  # the weights do not matter
    database = tmp_path / "db"
    assert build_db_main(build_db_args(checkpoint, "cvusa", layout.root, database)) == 0
    assert np.isnan(np.load(database / "latlon.npy")).all()
    photos = write_photos("cvusa", layout.root, config, tmp_path / "photos")
    out = tmp_path / "answers.json"
    assert localize_main(localize_args(photos, checkpoint, database, out)) == 0
    rows = json.loads(out.read_text())
    assert [(r["file"], r["lat"], r["lon"]) for r in rows] == [(str(p), None, None) for p in photos]
    geojson = tmp_path / "answers.geojson"
    assert localize_main(localize_args(photos, checkpoint, database, geojson)) == 0
    assert [f["geometry"] for f in json.loads(geojson.read_text())["features"]] == [None] * len(photos)
