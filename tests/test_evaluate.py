"""Evaluation: block-wise ranks over an encoded gallery agree with a brute-force full distance matrix;
mean +- std over the report shift seeds, and no report on the split that chose the checkpoint."""

import json

import numpy as np
import pytest
import torch
from tiny_world import write_tiny_cvusa

from geoapp.angles import angular_error, heading_from_offset, heading_from_shift
from geoapp.data.fov import crop_fov, eval_shifts
from geoapp.data.geo import haversine_m
from geoapp.data.transforms import to_tensor
from geoapp.evaluate import main
from geoapp.model import ModelConfig, build_model, load_model, save_model, window_scores
from geoapp.retrieval.metrics import ranks_from_distances, recall_from_ranks
from geoapp.retrieval.search import topk_matches, true_match_ranks
from geoapp.testing import random_checkpoint
from geoapp.training.data import PairImages, open_split
from geoapp.training.evaluation import encode_gallery, evaluate_model, format_table, match_block, subset_indices

CFG = ModelConfig(ground_height=32, sat_height=32, sat_width=128, fov_deg=90.0, align_mode="mask-corr",
                  shared_window=False)  # each stage its own window from the masks, as the brute force below


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = write_tiny_cvusa(tmp_path_factory.mktemp("tiny_eval"), n_train=4, n_val=10, seed=1)
    torch.manual_seed(0)
    model = build_model(CFG).eval()
    ds = open_split("synth", root, "test", 90, 32, 128, train=False)
    return root, model, ds, PairImages(ds, cache="yes")


def brute_force(model, ds, fov, seed, positions):
    """Full Q x R distance matrix from independently made crops (the dataset's crop_fov and to_tensor)."""
    shifts = eval_shifts(len(ds), seed, width=128)[positions]
    crops = [crop_fov(ds.load_panorama(int(i)), fov, int(s)) for i, s in zip(positions, shifts)]
    ground = torch.stack([to_tensor(c) for c in crops])
    sat = torch.stack([to_tensor(ds.load_polar(int(i))) for i in positions])
    m = build_model(model.config.with_fov(fov)).eval()
    m.load_state_dict(model.state_dict())
    with torch.no_grad():
        res = m(ground, sat)
        g, s = m.encode_ground(ground), m.encode_satellite(sat)
    ranks = ranks_from_distances(res.distances)
    diag = np.arange(len(positions))
    # the heading below the column grid: the vertex of the parabola through the true pair's window scores at its
    # chosen offset and both neighbours (block 1, the heading stage)
    cfg = m.config
    scores = window_scores(cfg.align_mode, g.features[0], s.features[0], g.masks[0], s.masks[0], diagonal=True)
    scores = scores.double().numpy()
    offsets = res.offsets[diag, diag, 0].numpy()
    width = scores.shape[1]
    left, mid, right = (scores[diag, (offsets + d) % width] for d in (-1, 0, 1))
    curvature = left - 2 * mid + right
    fraction = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1), 0.0)
    fine = offsets + np.clip(fraction, -0.5, 0.5)
    headings = heading_from_offset(fine, g.features[0].shape[-1], width)
    errors = angular_error(headings, heading_from_shift(shifts, fov, 128))
    return ranks, errors


def test_eval_shifts_are_the_datasets_fixed_shifts(setup):
    _, _, ds, _ = setup
    assert np.array_equal(eval_shifts(len(ds), 2019, width=128), ds.fixed_shifts)
    assert [ds[i]["shift"] for i in range(3)] == list(ds.fixed_shifts[:3])


@pytest.mark.parametrize("subset", [None, [0, 3, 4, 8, 9]])
def test_blockwise_evaluation_matches_brute_force(setup, subset):
    _, model, ds, images = setup
    positions = np.arange(len(ds)) if subset is None else np.array(subset)
    report = evaluate_model(model, images, [90, 70], shift_seeds=(2019, 5), indices=subset, batch_size=3,
                            chunk_size=2)
    assert report["n_queries"] == report["n_references"] == len(positions)
    assert len(report["results"]) == 4
    for row in report["results"]:
        ranks, errors = brute_force(model, ds, row["fov"], row["shift_seed"], positions)
        expected = recall_from_ranks(ranks, n_refs=len(positions))
        for key, value in expected.items():
            assert row[key] == pytest.approx(value), (row["fov"], row["shift_seed"], key)
        assert row["heading_median_deg"] == pytest.approx(float(np.median(errors)), abs=1e-3)  # float32 maps
        assert row["heading_within_10deg"] == pytest.approx(float(np.mean(errors <= 10) * 100))
        assert row["heading_within_22.5deg"] == pytest.approx(float(np.mean(errors <= 22.5) * 100))
        # sane ranges
        assert 0 <= row["R@1"] <= row["R@5"] <= row["R@10"] <= 100
        assert row["R@1%"] == row["R@1"]  # fewer than 100 references: k = 1
        assert 0 <= row["heading_median_deg"] <= 180
        assert row["heading_within_10deg"] <= row["heading_within_22.5deg"]
    summary = report["by_fov"]["70"]
    both = [r["R@5"] for r in report["results"] if r["fov"] == 70]
    assert summary["R@5"] == pytest.approx(np.mean(both))
    assert summary["R@5_std"] == pytest.approx(np.std(both, ddof=1))
    table = format_table(report)
    assert "70 deg" in table and f"{summary['R@5']:.2f} ± {summary['R@5_std']:.2f}" in table
    assert "mean ± std over the shift seeds" in table


def test_spooled_gallery_ranks_like_the_float32_gallery_in_memory(setup, tmp_path):
    """The evaluation's compact gallery (float16 features on disk, read 3 references at a time) gives the ranks,
    top-1 and R@1 of the float32 gallery held in memory, on a random tiny model."""
    _, _, ds, images = setup
    model, _ = load_model(random_checkpoint(tmp_path / "random.safetensors", CFG, seed=4))
    n = len(ds)
    shifts = eval_shifts(n, 2019, width=128)
    ground = torch.stack([to_tensor(crop_fov(ds.load_panorama(i), 90, int(shifts[i]))) for i in range(n)])
    with torch.no_grad():
        g = model.encode_ground(ground)
        in_memory = model.encode_satellite(torch.stack([to_tensor(ds.load_polar(i)) for i in range(n)]))
    truth = np.arange(n)
    expected = true_match_ranks(CFG, g, in_memory, truth, chunk_size=n)
    with encode_gallery(model, images, truth, "cpu", batch_size=4, spool_dir=tmp_path) as spooled:
        chunk = spooled.slice(0, 3)
        assert chunk.features[0].dtype == torch.float16 and chunk.masks[0].dtype == torch.float32
        ranks, by_stage, _ = match_block(CFG, g, spooled, truth, chunk_size=3)
        top1 = topk_matches(CFG, g, spooled, k=1, chunk_size=3).indices
    assert np.array_equal(ranks, expected.ranks)
    assert np.array_equal(by_stage[1], expected.result.headings(1))  # the same windows
    assert torch.equal(top1, topk_matches(CFG, g, in_memory, k=1, fast=False).indices)
    report = evaluate_model(model, images, chunk_size=3, spool_dir=tmp_path)
    assert report["results"][0]["R@1"] == recall_from_ranks(expected.ranks, n_refs=n)["R@1"]
    assert not list(tmp_path.glob("geoapp-gallery-*"))  # the spool is removed afterwards


def test_subset_indices_are_evenly_spread():
    assert list(subset_indices(100, 5)) == [0, 25, 50, 74, 99]
    assert list(subset_indices(7, 0)) == list(range(7)) == list(subset_indices(7, 50))


def test_cli_writes_a_report(setup, tmp_path, capsys):
    root, model, _, _ = setup
    ckpt = save_model(tmp_path / "m.safetensors", model, {"train_config": {"dataset": "synth", "data_root": str(root)}})
    out = tmp_path / "eval.json"
    args = ["--checkpoint", str(ckpt), "--fov", "70", "90", "--size", "6", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert set(report["by_fov"]) == {"70", "90"} and report["n_queries"] == 6 and report["split"] == "test"
    # default: 2019 (conventions §4) first, then 2020 and 2021; per-seed rows and mean +- std per metric
    assert report["shift_seeds"] == [2019, 2020, 2021] and len(report["results"]) == 6
    assert [r["shift_seed"] for r in report["results"] if r["fov"] == 90] == [2019, 2020, 2021]
    r1 = [r["R@1"] for r in report["results"] if r["fov"] == 90]
    assert report["by_fov"]["90"]["R@1"] == pytest.approx(np.mean(r1))
    assert report["by_fov"]["90"]["R@1_std"] == pytest.approx(np.std(r1, ddof=1))
    captured = capsys.readouterr()
    assert "R@1%" in captured.out and "split 'test'" in captured.out and " ± " in captured.out
    assert "does not record which split chose it" in captured.err  # a checkpoint that predates the record
    assert main(args[:-2] + ["--shift-seeds", "2019"]) == 0  # one seed still possible: no std
    assert "+-" not in capsys.readouterr().out and "_std" not in json.dumps(report["results"])


@pytest.mark.parametrize("selection, split", [("test", "test"), ({"carved_from": "train", "method": "spatial",
                                                                   "n": 3}, "train")])
def test_cli_refuses_the_split_that_chose_the_checkpoint(setup, tmp_path, capsys, selection, split):
    root, model, _, _ = setup
    meta = {"train_config": {"dataset": "synth", "data_root": str(root)}, "selection_split": selection,
            "report_split": "test"}
    ckpt = save_model(tmp_path / "m.safetensors", model, meta)
    args = ["--checkpoint", str(ckpt), "--split", split, "--fov", "90", "--shift-seeds", "2019", "--no-progress",
            "--out", str(tmp_path / "eval.json")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error: the checkpoint was chosen on" in err and "--allow-selection-split" in err
    assert not (tmp_path / "eval.json").exists()
    assert main(args + ["--allow-selection-split"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: the checkpoint was chosen on" in err and "NOT held-out figures" in err
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["selection_split_evaluated"] is True and report["selection_split"] == selection
    # another dataset root is not the selection split, whatever its name
    other = dict(meta, train_config={"dataset": "synth", "data_root": str(tmp_path / "elsewhere")})
    ckpt = save_model(tmp_path / "other.safetensors", model, other)
    assert main(["--checkpoint", str(ckpt), "--dataset", "synth", "--data-root", str(root), "--split", split,
                 "--fov", "90", "--shift-seeds", "2019", "--no-progress"]) == 0


def test_cli_gate_weight_overrides_the_checkpoints_similarity(setup, tmp_path, capsys):
    root, model, _, _ = setup
    meta = {"train_config": {"dataset": "synth", "data_root": str(root)}}
    torch.manual_seed(3)
    gated = build_model(ModelConfig(ground_height=32, sat_height=32, sat_width=128, align_mode="gate-corr",
                                    shared_window=True, gate_weight=0.0)).eval()
    ckpt = save_model(tmp_path / "g.safetensors", gated, meta)
    base = ["--checkpoint", str(ckpt), "--size", "10", "--no-progress", "--shift-seeds", "2019"]
    assert main(base + ["--out", str(tmp_path / "a.json")]) == 0
    assert main(base + ["--gate-weight", "0.5", "--out", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert (a["model_config"]["gate_weight"], b["model_config"]["gate_weight"]) == (0.0, 0.5)
    # the gate term moves no window, so the headings are the same
    assert a["results"][0]["heading_median_deg"] == b["results"][0]["heading_median_deg"]
    plain = save_model(tmp_path / "m.safetensors", model, meta)  # a mask-corr model has no gate cosines
    capsys.readouterr()
    assert main(["--checkpoint", str(plain), "--gate-weight", "0.5", "--no-progress"]) == 2
    assert "--gate-weight 0.5" in capsys.readouterr().err


@pytest.fixture(scope="module")
def placed(tmp_path_factory):
    """12 test pairs due east of each other, 30 m apart, on 128 m tiles (the tiny CVUSA layout's positions)."""
    root = write_tiny_cvusa(tmp_path_factory.mktemp("tiny_places"), n_train=4, n_val=12, seed=3, spacing_m=30.0,
                            tile_metres=128.0)
    torch.manual_seed(2)
    model = build_model(CFG).eval()
    ds = open_split("synth", root, "test", 90, 32, 128, train=False)
    return root, model, ds, PairImages(ds, cache="yes")


def test_recall_by_place_matches_a_brute_force_walk(placed):
    _, model, ds, images = placed
    latlon = ds.satellite_locations
    assert np.isfinite(latlon).all()
    metres = haversine_m(latlon[:, None, 0], latlon[:, None, 1], latlon[None, :, 0], latlon[None, :, 1])
    assert metres[0, 1] == pytest.approx(30.0, abs=0.01)
    report = evaluate_model(model, images, [90, 70], shift_seeds=(2019, 7), batch_size=5, chunk_size=4,
                            place_m=64.0)
    assert report["place_metres"] == 64.0
    positions = np.arange(len(ds))
    for row in report["results"]:
        # brute force: the whole Q x R distance matrix, each query's full ranking walked over the distance matrix
        shifts = eval_shifts(len(ds), row["shift_seed"], width=128)
        ground = torch.stack([to_tensor(crop_fov(ds.load_panorama(i), row["fov"], int(shifts[i]))) for i in positions])
        sat = torch.stack([to_tensor(ds.load_polar(i)) for i in positions])
        m = build_model(model.config.with_fov(row["fov"])).eval()
        m.load_state_dict(model.state_dict())
        with torch.no_grad():
            distances = m(ground, sat).distances.numpy()
        found = np.zeros((len(ds), 10), dtype=bool)
        for q in positions:
            places = []
            for ref in np.argsort(distances[q], kind="stable"):
                if all(metres[ref, p] >= 64.0 for p in places):
                    places.append(ref)
            hits = [p == q or metres[p, q] < 64.0 for p in places[:10]]
            found[q] = np.logical_or.accumulate(hits + [hits[-1]] * (10 - len(hits)))
        for k in (1, 5, 10):
            assert row[f"R@{k} place"] == pytest.approx(found[:, k - 1].mean() * 100), (row["fov"], k)
            assert row[f"R@{k} place"] >= row[f"R@{k}"]
    assert any(row["R@1 place"] > row["R@1"] for row in report["results"])  # a neighbour counts by place
    summary = report["by_fov"]["90"]
    both = [r["R@5 place"] for r in report["results"] if r["fov"] == 90]
    assert summary["R@5 place"] == pytest.approx(np.mean(both))
    assert summary["R@5 place_std"] == pytest.approx(np.std(both, ddof=1))
    table = format_table(report)
    assert "R@5 pl." in table and "within 64 m of it among the first k distinct places" in table
    assert "R@5 pl." not in format_table(evaluate_model(model, images, [90], indices=[0, 4, 8]))


def test_cli_reports_recall_by_place_where_the_split_has_positions(placed, setup, tmp_path, capsys):
    root, model, _, _ = placed
    ckpt = save_model(tmp_path / "m.safetensors", model, {"train_config": {"dataset": "synth", "data_root": str(root)}})
    base = ["--checkpoint", str(ckpt), "--fov", "90", "--shift-seeds", "2019", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "auto.json")]) == 0  # auto: half the 128 m tiles
    report = json.loads((tmp_path / "auto.json").read_text())
    assert report["place_metres"] == 64.0 and "R@5 place" in report["by_fov"]["90"]
    assert main(base + ["--places", "20", "--out", str(tmp_path / "near.json")]) == 0
    near = json.loads((tmp_path / "near.json").read_text())
    # 20 m: every tile (30 m apart) is a place of its own and only the true one counts, as by tile
    assert near["place_metres"] == 20.0
    assert all(near["by_fov"]["90"][f"R@{k} place"] == near["by_fov"]["90"][f"R@{k}"] for k in (1, 5, 10))
    assert main(base + ["--places", "off", "--out", str(tmp_path / "off.json")]) == 0
    assert "place_metres" not in json.loads((tmp_path / "off.json").read_text())
    capsys.readouterr()
    for bad in ("-3", "near"):
        with pytest.raises(SystemExit):
            main(base + ["--places", bad])
        assert "--places must be a distance in metres" in capsys.readouterr().err
    # a split without positions: auto reports none and says so; a distance given is refused
    unplaced_root = setup[0]
    ckpt = save_model(tmp_path / "u.safetensors", model,
                      {"train_config": {"dataset": "synth", "data_root": str(unplaced_root)}})
    plain = ["--checkpoint", str(ckpt), "--fov", "90", "--shift-seeds", "2019", "--no-progress", "--size", "4"]
    assert main(plain + ["--out", str(tmp_path / "u.json")]) == 0
    assert "no recall by place: the 'test' split records no tile positions" in capsys.readouterr().err
    assert "place_metres" not in json.loads((tmp_path / "u.json").read_text())
    assert main(plain + ["--places", "64"]) == 2
    assert "recall by place needs the tiles' positions" in capsys.readouterr().err
