"""A person sees how good the loaded model is: the first start flags a poor one, the status shows its metrics."""

import torch

from geoapp.app.bootstrap import report_quality
from geoapp.model import ModelConfig, build_model, read_metadata, save_model
from geoapp.model.checkpoint import QUALITY_FLOOR_R1, accuracy_text, measured_accuracy

TINY = ModelConfig(base_channels=8, ground_height=32, sat_height=32, sat_width=128)


def _checkpoint(path, r1, heading=40.0):
    torch.manual_seed(0)
    meta = {"train_config": {"fov": 90.0}, "report_split": "test", "final_eval_pairs": 1000,
            "final_eval": {"90": {"R@1": r1, "R@1_std": 0.8, "heading_median_deg": heading},
                           "70": {"R@1": r1 / 2, "heading_median_deg": heading}}}
    return save_model(path, build_model(TINY), meta)


def test_a_planted_poor_checkpoint_is_flagged_in_plain_words(tmp_path):
    lines = []
    acc = report_quality(_checkpoint(tmp_path / "poor.safetensors", 4.2), log=lines.append)
    assert acc["below_floor"] and acc["R@1"] == 4.2 and acc["fov"] == 90.0
    text = "\n".join(lines)
    assert "R@1 4.2 ± 0.8 % at 90°" in text and "1,000 test locations" in text
    assert "WARNING" in text and f"< {QUALITY_FLOOR_R1:.0f} %" in text and "What to do" in text


def test_a_good_checkpoint_is_reported_without_a_warning(tmp_path):
    lines = []
    acc = report_quality(_checkpoint(tmp_path / "good.safetensors", 61.5, 3.1), log=lines.append)
    assert not acc["below_floor"]
    assert lines == ["[geoapp] model measured R@1 61.5 ± 0.8 % at 90°, median heading error 3.1° on 1,000 test "
                     "locations"]


def test_an_unevaluated_checkpoint_says_its_accuracy_is_unknown(tmp_path):
    path = save_model(tmp_path / "raw.safetensors", build_model(TINY))
    meta = read_metadata(path)
    assert measured_accuracy(meta) is None
    assert "accuracy unknown" in accuracy_text(meta)
