"""Evaluation (issue 4): block-wise ranks over an encoded gallery agree with a brute-force full distance matrix."""

import json

import numpy as np
import pytest
import torch
from tiny_world import write_tiny_cvusa

from geoapp.data.fov import angular_error, crop_fov, eval_shifts, heading_from_shift
from geoapp.data.transforms import to_tensor
from geoapp.evaluate import evaluate_model, format_table, main, subset_indices
from geoapp.model import ModelConfig, build_model, save_model
from geoapp.retrieval.metrics import ranks_from_distances, recall_from_ranks
from geoapp.training.data import PairImages, open_split

CFG = ModelConfig(ground_height=32, sat_height=32, sat_width=128, fov_deg=90.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = write_tiny_cvusa(tmp_path_factory.mktemp("tiny_eval"), n_train=4, n_val=10, seed=1)
    torch.manual_seed(0)
    model = build_model(CFG).eval()
    ds = open_split("synth", root, "val", 90, 32, 128, train=False)
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
    ranks = ranks_from_distances(res.distances)
    diag = np.arange(len(positions))
    errors = angular_error(res.headings()[diag, diag], heading_from_shift(shifts, fov, 128))
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
        assert row["heading_median_deg"] == pytest.approx(float(np.median(errors)))
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
    assert "70 deg" in format_table(report)


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
    assert set(report["by_fov"]) == {"70", "90"} and report["n_queries"] == 6 and report["split"] == "val"
    assert "R@1%" in capsys.readouterr().out
