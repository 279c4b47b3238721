"""The mask-based window alignment (FCA, ``gate-corr``) learns the heading on planted data.

Planted world: random panoramas whose columns carry the direction (smooth random colour profiles along the
azimuth); the "satellite" side is the panorama itself plus noise, the ground side a 90 deg crop at a random
shift, exactly conventions §4's crop rule. A tiny ResNet18_CA (8 channels at block 1) trained 120 steps with
the soft window choice and the alignment loss must read the crop's heading off its CA gates far better than
chance (a uniform guess has a median error of 90 deg), with each stage choosing its own window and with the
shared window (block 1 chooses for all).
"""

import numpy as np
import pytest
import torch

from geoapp.angles import angular_error, heading_from_shift
from geoapp.model import ModelConfig, build_model, soft_margin_triplet_loss
from geoapp.training.data import crop_batch
from geoapp.training.objective import TrainForward, alignment_loss

H, W, FOV = 32, 128, 90.0


def _panoramas(n: int, gen: torch.Generator) -> torch.Tensor:
    """n x H x W x 3 float panoramas: per channel a smooth circular profile along the width, plus row texture."""
    freqs = torch.arange(1, 6, dtype=torch.float32)
    phase = torch.rand(n, 3, 5, generator=gen) * 2 * np.pi
    amp = torch.randn(n, 3, 5, generator=gen) / freqs
    cols = torch.arange(W, dtype=torch.float32) / W * 2 * np.pi
    profile = (amp[..., None] * torch.cos(freqs[None, None, :, None] * cols + phase[..., None])).sum(2)  # n x 3 x W
    rows = torch.linspace(-1, 1, H)[None, None, :, None] * torch.randn(n, 3, 1, 1, generator=gen) * 0.3
    return (profile[:, :, None, :] + rows).permute(0, 2, 3, 1)  # n x H x W x 3


def _batch(n: int, gen: torch.Generator):
    panos = _panoramas(n, gen)
    shifts = torch.randint(0, W, (n,), generator=gen).numpy()
    ground = crop_batch(panos, shifts, W // 4).permute(0, 3, 1, 2).contiguous()
    sat = (panos + 0.1 * torch.randn(panos.shape, generator=gen)).permute(0, 3, 1, 2).contiguous()
    # the crop rule is defined on a 512-wide panorama: shift in W units -> 512 units
    return ground, sat, shifts * (512 // W)


@pytest.mark.parametrize("shared_window", [False, True])
def test_gate_corr_learns_the_heading_on_planted_data(shared_window):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cfg = ModelConfig(align_mode="gate-corr", base_channels=8, wrap_satellite=True, ground_height=H, sat_height=H,
                      sat_width=W, fov_deg=FOV, shared_window=shared_window, gate_weight=0.0)  # soft windows
    model = build_model(cfg)
    net = TrainForward(model, with_logits=True, window_choice="soft")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(120):
        ground, sat, shifts = _batch(16, gen)
        distances, logits = net(ground, sat)
        loss = soft_margin_triplet_loss(distances) + alignment_loss(logits, shifts, 512)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ground, sat, shifts = _batch(64, torch.Generator().manual_seed(123))
    with torch.no_grad():
        result = model.match(model.encode_ground(ground), model.encode_satellite(sat), diagonal=True)
    truth = heading_from_shift(shifts, FOV)
    errors = angular_error(result.headings(), truth)
    assert np.median(errors) < 15.0, np.median(errors)  # chance: 90 deg
    if shared_window:  # block 4 crops at block 1's azimuth: within one block-4 column (90 deg / 2 here) of the truth
        deep = angular_error(result.headings(4), truth)
        assert np.median(deep) <= 0.5 * 360 / (W // 32) + np.median(errors), np.median(deep)
