"""Soft-margin triplet loss with batch-hard negatives (conventions §6)."""

import math

import numpy as np
import pytest
import torch

from geoapp.model import ModelConfig, build_model, hardest_negatives, soft_margin_triplet_loss


def test_batch_hard_picks_the_planted_hardest_negative():
    d = torch.tensor(
        [
            [0.1, 0.9, 0.4, 0.8],
            [0.7, 0.2, 0.6, 0.3],
            [0.5, 0.95, 0.3, 0.35],
            [0.9, 0.25, 0.45, 0.15],
        ]
    )
    rows, cols = hardest_negatives(d)
    assert rows.tolist() == pytest.approx([0.4, 0.3, 0.35, 0.25])
    assert cols.tolist() == pytest.approx([0.5, 0.25, 0.4, 0.3])
    alpha = 10.0
    expected_g2s = sum(math.log1p(math.exp(alpha * (p - n))) for p, n in zip([0.1, 0.2, 0.3, 0.15], rows.tolist())) / 4
    expected_s2g = sum(math.log1p(math.exp(alpha * (p - n))) for p, n in zip([0.1, 0.2, 0.3, 0.15], cols.tolist())) / 4
    assert soft_margin_triplet_loss(d, alpha).item() == pytest.approx(0.5 * (expected_g2s + expected_s2g), rel=1e-6)


def test_alpha_scales_the_margin():
    d = torch.tensor([[0.2, 1.0], [1.0, 0.2]])
    assert soft_margin_triplet_loss(d, alpha=20.0) < soft_margin_triplet_loss(d, alpha=10.0)
    with pytest.raises(ValueError, match="square"):
        soft_margin_triplet_loss(torch.zeros(2, 3))


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(ground_height=64, sat_height=64, sat_width=256),
        ModelConfig(ground_height=64, sat_height=64, sat_width=256, use_ca=False, align_mode="feature", stages=(4,)),
    ],
)
def test_loss_is_finite_positive_and_decreases_on_a_fixed_batch(cfg):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    ground = torch.randn(4, 3, 64, cfg.ground_width)
    sat = torch.randn(4, 3, 64, 256)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = soft_margin_triplet_loss(model(ground, sat).distances)
        assert torch.isfinite(loss) and loss.item() > 0
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.9, losses


def test_alignment_loss_prefers_the_true_window_and_trains_the_gates():
    """Logits peaked at the true offset give a lower loss than logits peaked elsewhere (two-hot target, so a
    fractional true offset shares its weight); through a gate-corr model the gradient reaches both branches' CA."""
    from geoapp.angles import true_offset
    from geoapp.training.objective import TrainForward, alignment_loss

    shifts = torch.tensor([0, 128, 300])
    W = 16
    good, bad = torch.zeros(3, W), torch.zeros(3, W)
    for i, shift in enumerate(shifts.tolist()):
        o = true_offset(shift, W)
        good[i, int(np.floor(o)) % W] = good[i, (int(np.floor(o)) + 1) % W] = 12.0
        bad[i, (int(round(o)) + 8) % W] = 12.0
    assert alignment_loss([good], shifts, 512).item() < 1.0 < alignment_loss([bad], shifts, 512).item()

    model = build_model(ModelConfig(ground_height=64, sat_height=64, sat_width=256, base_channels=16,
                                    align_mode="gate-corr", gate_weight=0.0, shared_window=False))
    _, logits = TrainForward(model, with_logits=True, window_choice="soft")(torch.randn(2, 3, 64, 64),
                                                                       torch.randn(2, 3, 64, 256))
    alignment_loss(logits, torch.tensor([10, 200]), 256).backward()
    assert model.satellite.layer4[1].ca.conv_w.weight.grad.abs().sum() > 0
    assert model.ground.layer1[1].ca.conv_w.weight.grad.abs().sum() > 0
    assert model.window_log_temperature.grad.abs().sum() > 0


def test_known_positive_window_crops_positives_at_their_true_window_and_negatives_at_the_argmax():
    """window choice ``known-positive``: off the diagonal the distances are the argmax's (as at inference); on it,
    each positive's distance is the one at its known window, round(o*) per stage."""
    from geoapp.angles import true_offset
    from geoapp.model.align import align_windows
    from geoapp.training.objective import TrainForward

    torch.manual_seed(0)
    model = build_model(ModelConfig(ground_height=64, sat_height=64, sat_width=256, base_channels=16,
                                    align_mode="gate-corr", shared_window=True, gate_weight=0.0)).eval()
    ground, sat, shifts = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 256), torch.tensor([0, 100, 230])
    with torch.no_grad():
        argmax, _ = TrainForward(model)(ground, sat)
        known, _ = TrainForward(model, window_choice="known-positive")(ground, sat, shifts, 256)
        g, s = model.encode_ground(ground), model.encode_satellite(sat)
    off_diagonal = ~torch.eye(3, dtype=torch.bool)
    assert torch.equal(known[off_diagonal], argmax[off_diagonal])
    for b in model.config.stages:
        width = s.features[b - 1].shape[-1]
        o = np.rint(true_offset(shifts.numpy(), width, 256)).astype(int) % width
        assert 0 <= o.min() and o.max() < width
    pos = align_windows(g, s, "gate-corr", model.config.stages, diagonal=True, window_offsets={
        b: torch.as_tensor(np.rint(true_offset(shifts.numpy(), s.features[b - 1].shape[-1], 256)).astype(int)
                           % s.features[b - 1].shape[-1]) for b in model.config.stages}).distances
    assert torch.allclose(known.diagonal(), pos, atol=1e-6)
    assert not torch.allclose(known.diagonal(), argmax.diagonal())  # random weights: the argmax is elsewhere
    with pytest.raises(ValueError, match="needs the crops' shifts"):
        TrainForward(model, window_choice="known-positive")(ground, sat)


@pytest.mark.parametrize("gate_weight", [0.0, 0.3])
def test_hardest_negative_windows_crop_negatives_where_their_descriptors_match_best(gate_weight):
    """window choice ``hardest-negative``: the diagonal is known-positive's; off it every pair sits at the feature
    correlation's best window (the window DSM would choose: the hardest negative a feature model trains on), and with
    a gate weight the gate term is read at that window."""
    from geoapp.model.align import align_windows, attention, window_scores
    from geoapp.training.objective import TrainForward

    torch.manual_seed(1)
    model = build_model(ModelConfig(ground_height=64, sat_height=64, sat_width=256, base_channels=16,
                                    align_mode="gate-corr", shared_window=True, gate_weight=gate_weight)).eval()
    ground, sat, shifts = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 256), torch.tensor([0, 100, 230, 17])
    with torch.no_grad():
        known, _ = TrainForward(model, window_choice="known-positive")(ground, sat, shifts, 256)
        hard, _ = TrainForward(model, window_choice="hardest-negative")(ground, sat, shifts, 256)
        g, s = model.encode_ground(ground), model.encode_satellite(sat)
    off = ~torch.eye(4, dtype=torch.bool)
    assert torch.equal(hard.diagonal(), known.diagonal())
    feat = align_windows(g, s, "feature", model.config.stages)
    if gate_weight == 0:
        torch.testing.assert_close(hard[off], feat.distances[off])
        assert not torch.allclose(hard[off], known[off])  # the feature correlation picks other windows
    else:
        sc = window_scores("gate-corr", g.features[0], s.features[0], attention(g, "gate-corr", 1),
                           attention(s, "gate-corr", 1))
        gate = sc.gather(-1, feat.offsets[..., 0:1]).squeeze(-1)
        want = torch.sqrt(2 - 2 * (feat.similarity + gate_weight * gate) / (1 + gate_weight))
        torch.testing.assert_close(hard[off], want[off], rtol=1e-5, atol=1e-5)


def test_hardest_margin_adds_the_descriptors_loss_at_the_hardest_windows_to_the_known_positive_loss():
    """window choice ``hardest-margin``: the step's triplet loss is known-positive's (argmax windows, gate term) plus
    the loss of the descriptor alone with each positive at its known window and each negative where the feature
    correlation matches it best."""
    from geoapp.angles import true_offset
    from geoapp.model.align import align_windows
    from geoapp.training.objective import TrainForward, triplet_loss

    torch.manual_seed(2)
    model = build_model(ModelConfig(ground_height=64, sat_height=64, sat_width=256, base_channels=16,
                                    align_mode="gate-corr", shared_window=True, gate_weight=0.2)).eval()
    ground, sat, shifts = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 256), torch.tensor([0, 100, 230, 17])
    with torch.no_grad():
        known, _ = TrainForward(model, window_choice="known-positive")(ground, sat, shifts, 256)
        both, _ = TrainForward(model, window_choice="hardest-margin")(ground, sat, shifts, 256)
        g, s = model.encode_ground(ground), model.encode_satellite(sat)
    searched, margin = both.terms
    assert torch.equal(searched, known)
    stages = model.config.stages
    offsets = {b: torch.as_tensor(np.rint(true_offset(shifts.numpy(), s.features[b - 1].shape[-1], 256)).astype(int)
                                  % s.features[b - 1].shape[-1]) for b in stages}
    positives = align_windows(g, s, "gate-corr", stages, diagonal=True, offset_stage=1, window_offsets=offsets)
    hardest = align_windows(g, s, "feature", stages).distances
    off = ~torch.eye(4, dtype=torch.bool)
    torch.testing.assert_close(margin.diagonal(), positives.distances)
    torch.testing.assert_close(margin[off], hardest[off])
    assert not torch.allclose(margin[off], align_windows(g, s, "gate-corr", stages, offset_stage=1).distances[off])
    want = soft_margin_triplet_loss(known, 10.0) + soft_margin_triplet_loss(margin, 10.0)
    torch.testing.assert_close(triplet_loss(both, 10.0), want)
    assert triplet_loss(both, 10.0) > triplet_loss(known, 10.0)
