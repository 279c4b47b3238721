"""Every alignment of the registry keeps the contract the rest of the code relies on: what it reads, the shapes it
returns, the configurations it allows, its defaults, and that the command lines offer it by its name."""

import pytest
import torch

from geoapp.model import ALIGN_MODES, ModelConfig, StageMaps, align_mode, window_scores
from geoapp.model.align_modes import gate_weight_problem
from geoapp.search_options import SEARCH_CHUNKS, search_chunk
from geoapp.train import config_from_args

MODES = list(ALIGN_MODES.values())


def _maps(n: int, width: int, seed: int) -> StageMaps:
    gen = torch.Generator().manual_seed(seed)
    return StageMaps([torch.randn(n, 4, 3, width, generator=gen).relu()],
                     [torch.rand(n, 3, width, generator=gen)], gates=[torch.rand(n, 4, width, generator=gen)])


def test_the_registry_is_keyed_by_name_and_refuses_unknown_names():
    assert all(align_mode(name) is mode for name, mode in ALIGN_MODES.items())
    assert all(align_mode(mode) is mode for mode in MODES)
    with pytest.raises(ValueError, match=r"unknown alignment mode 'sliding'; choose one of \('gate-corr'"):
        align_mode("sliding")


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_a_mode_reads_what_it_says_and_scores_every_offset(mode):
    ground, sat = _maps(2, 3, seed=1), _maps(5, 8, seed=2)
    want = {"gates": ground.gates[0], "masks": ground.masks[0], None: None}[mode.attention]
    assert mode.attention_of(ground, 1) is want
    scores = window_scores(mode, ground.features[0], sat.features[0], mode.attention_of(ground, 1),
                           mode.attention_of(sat, 1))
    assert scores.shape == (2, 5, 8) and torch.isfinite(scores).all()
    assert torch.equal(scores[0], scores[1]) != mode.reads_photo  # only a photo-blind score repeats across photos
    if mode.cosine_scores:
        assert scores.abs().max() <= 1 + 1e-6
    diagonal = window_scores(mode, ground.features[0], sat.slice(0, 2).features[0], mode.attention_of(ground, 1),
                             mode.attention_of(sat.slice(0, 2), 1), diagonal=True)
    torch.testing.assert_close(diagonal, scores[:, :2].diagonal(dim1=0, dim2=1).T)


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_a_mode_brings_its_defaults_and_its_rules_to_the_model_config(mode):
    cfg = ModelConfig(align_mode=mode.name)
    assert cfg.alignment is mode
    assert cfg.shared_window == mode.is_fca == mode.default_shared_window
    assert cfg.gate_weight == mode.default_gate_weight and (cfg.gate_weight > 0) == mode.cosine_scores
    if mode.is_fca:
        with pytest.raises(ValueError, match="needs use_ca=True"):
            ModelConfig(align_mode=mode.name, use_ca=False)
    else:
        assert ModelConfig(align_mode=mode.name, use_ca=False).alignment is mode
        with pytest.raises(ValueError, match="shared_window needs an attention align_mode"):
            ModelConfig(align_mode=mode.name, shared_window=True)
    assert (gate_weight_problem(0.5, mode) is None) == mode.cosine_scores
    assert search_chunk(mode) == SEARCH_CHUNKS["attention" if mode.is_fca else "features"]


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_the_training_command_offers_every_mode_by_name(mode):
    cfg, _ = config_from_args(["--preset", "demo-quick", "--align-mode", mode.name])
    assert cfg.model.alignment is mode and cfg.model.shared_window == mode.is_fca
    assert cfg.model.gate_weight == mode.default_gate_weight
