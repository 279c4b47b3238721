"""FCA window alignment against brute force, offset recovery and headings (conventions §5-6)."""

import numpy as np
import pytest
import torch

from geoapp.angles import heading_from_offset, heading_from_shift, true_offset
from geoapp.model import ALIGN_MODES, StageMaps, align_windows, crop_windows, multiscale_descriptor, window_scores

STAGE_DIMS = [(64, 32, 128), (128, 16, 64), (256, 8, 32), (512, 4, 16)]  # C, H, W of the polar branch


def _brute_force(ground, sat, mode, stages, offset_stage=None):
    """Double loop over pairs and offsets, conventions §5 formulas verbatim, float64. ``offset_stage``: every other
    stage takes that stage's offset at its own width, ``round(o * W / W_a) mod W``."""
    q_n, r_n = len(ground), len(sat)
    offsets = np.zeros((q_n, r_n, len(stages)), dtype=np.int64)
    dists = np.zeros((q_n, r_n))
    for q in range(q_n):
        for r in range(r_n):
            g_parts, s_parts = [], []
            order = sorted(stages, key=lambda s: s != offset_stage)  # the choosing stage first
            chosen = None
            for s in order:
                i = stages.index(s)
                G = ground.features[s - 1][q].double().numpy()
                S = sat.features[s - 1][r].double().numpy()
                Ms = sat.masks[s - 1][r].double().numpy() if sat.masks is not None else None
                Mg = ground.masks[s - 1][q].double().numpy() if ground.masks is not None else None
                As = sat.gates[s - 1][r].double().numpy() if sat.gates is not None else None
                Ag = ground.gates[s - 1][q].double().numpy() if ground.gates is not None else None
                w, W = G.shape[-1], S.shape[-1]
                best, best_o = -np.inf, 0
                for o in range(W):
                    cols = [(o + k) % W for k in range(w)]
                    if mode == "mask-corr":
                        score = sum(Mg[h, k] * Ms[h, cols[k]] for h in range(G.shape[1]) for k in range(w))
                    elif mode == "mask-sum":
                        score = sum(Ms[h, cols[k]] for h in range(G.shape[1]) for k in range(w))
                    elif mode == "gate-corr":  # cosine of the centred ground gates and the centred window
                        kg = Ag - Ag.mean(axis=1, keepdims=True)
                        ws = (As - As.mean(axis=1, keepdims=True))[:, cols]
                        score = float((kg * ws).sum()) / (np.linalg.norm(kg) * np.linalg.norm(ws))
                    elif mode == "feature":
                        score = float((G * S[:, :, cols]).sum())
                    else:  # a new member of the registry needs its score written out here
                        raise NotImplementedError(f"no brute-force score for alignment mode {mode!r}")
                    if score > best:  # strict: ties keep the lowest offset
                        best, best_o = score, o
                if chosen is not None:
                    best_o = int(np.floor(chosen[0] * W / chosen[1] + 0.5)) % W
                elif s == offset_stage:
                    chosen = (best_o, W)
                offsets[q, r, i] = best_o
                g_parts.append(G.ravel())
                s_parts.append(S[:, :, [(best_o + k) % W for k in range(w)]].ravel())
            g_vec = np.concatenate(g_parts)
            s_vec = np.concatenate(s_parts)
            dists[q, r] = np.linalg.norm(g_vec / np.linalg.norm(g_vec) - s_vec / np.linalg.norm(s_vec))
    return offsets, dists


def _random_maps(n, widths, seed, with_masks=True, small=True):
    """Integer-valued maps so every score is exact in float32 and ties really are ties."""
    gen = torch.Generator().manual_seed(seed)
    dims = [(4, 3, None), (6, 2, None)] if small else STAGE_DIMS
    feats, masks, gates = [], [], []
    for (c, h, _), w in zip(dims, widths):
        feats.append(torch.randint(-3, 4, (n, c, h, w), generator=gen).float())
        masks.append(torch.randint(0, 4, (n, h, w), generator=gen).float())
        gates.append(torch.randint(0, 9, (n, c, w), generator=gen).float() / 8)
    return StageMaps(feats, masks if with_masks else None, gates=gates if with_masks else None)


@pytest.mark.parametrize("mode", list(ALIGN_MODES))
@pytest.mark.parametrize("ground_widths", [(3, 2), (7, 5)])
def test_all_modes_equal_brute_force_double_loop(mode, ground_widths):
    sat_widths = (8, 5)  # stage 2 has w == W at the second size: every window wraps
    ground = _random_maps(3, ground_widths, seed=1)
    sat = _random_maps(4, sat_widths, seed=2)
    # pad missing stages so StageMaps holds "four" stages like the backbone output; we use stages 1 and 2
    res = align_windows(ground, sat, mode=mode, stages=(1, 2), chunk_size=3)
    offsets, dists = _brute_force(ground, sat, mode, (1, 2))
    assert np.array_equal(res.offsets.numpy(), offsets)
    np.testing.assert_allclose(res.distances.numpy(), dists, rtol=1e-5, atol=1e-6)
    # windows past the right edge were exercised
    w0 = ground_widths[0]
    assert (offsets[..., 0] > sat_widths[0] - w0).any()
    # diagonal pairs equal the diagonal of the full matrix
    diag = align_windows(ground, sat.slice(0, 3), mode=mode, stages=(1, 2), diagonal=True)
    full = align_windows(ground, sat.slice(0, 3), mode=mode, stages=(1, 2))
    assert torch.equal(diag.offsets, full.offsets.diagonal(dim1=0, dim2=1).T)
    torch.testing.assert_close(diag.distances, full.distances.diagonal())


def test_ties_pick_the_lowest_offset():
    ground = StageMaps([torch.ones(1, 1, 1, 2)], [torch.ones(1, 1, 2)])
    sat = StageMaps([torch.ones(1, 1, 1, 6)], [torch.ones(1, 1, 6)])
    ground.gates, sat.gates = [torch.ones(1, 1, 2)], [torch.ones(1, 1, 6)]
    for mode in ALIGN_MODES:
        assert align_windows(ground, sat, mode=mode, stages=(1,)).offsets.item() == 0


def test_gate_corr_ignores_a_constant_ground_and_is_a_cosine():
    """A ground with the same gates in every column carries no direction: every offset scores exactly 0 (so the
    lowest offset wins), whatever the satellite; and scores of a real ground lie in [-1, 1]."""
    sat = _random_maps(3, (8, 5), seed=3)
    flat = StageMaps([torch.zeros(2, 4, 3, 3)], None, gates=[torch.full((2, 4, 3), 0.37)])
    scores = window_scores("gate-corr", flat.features[0], sat.features[0], flat.gates[0], sat.gates[0])
    assert scores.shape == (2, 3, 8) and torch.count_nonzero(scores) == 0
    ground = _random_maps(2, (3, 2), seed=4)
    scores = window_scores("gate-corr", ground.features[0], sat.features[0], ground.gates[0], sat.gates[0])
    assert float(scores.abs().max()) <= 1 + 1e-6 and float(scores.abs().max()) > 0.3


def test_soft_window_distances_reach_the_argmax_distances_and_train_the_gates():
    """With very high temperatures the soft window choice of training is the inference argmax; at a moderate
    temperature the triplet distances have a gradient with respect to the gates of both sides."""
    from geoapp.model.align import soft_window_distances

    ground = _random_maps(3, (3, 2), seed=9)
    sat = _random_maps(3, (8, 5), seed=10)
    hard = align_windows(ground, sat, mode="gate-corr", stages=(1, 2))
    soft, logits = soft_window_distances(ground, sat, "gate-corr", (1, 2), torch.full((4,), 1e4))
    torch.testing.assert_close(soft, hard.distances, rtol=1e-4, atol=1e-5)
    assert [lg.shape for lg in logits] == [(3, 8), (3, 5)]
    for m in ground.gates + sat.gates:
        m.requires_grad_(True)
    soft, _ = soft_window_distances(ground, sat, "gate-corr", (1, 2), torch.full((4,), 5.0))
    soft.diagonal().sum().backward()
    assert all(float(m.grad.abs().sum()) > 0 for m in ground.gates + sat.gates)


def test_training_path_equals_inference_path():
    torch.manual_seed(0)
    ground = _random_maps(3, (3, 2), seed=5)
    sat = _random_maps(4, (8, 5), seed=6)
    for m in ground.features + sat.features:
        m.requires_grad_(True)
    with_grad = align_windows(ground, sat, mode="mask-corr", stages=(1, 2))
    with torch.no_grad():
        no_grad = align_windows(ground, sat, mode="mask-corr", stages=(1, 2))
    torch.testing.assert_close(with_grad.distances.detach(), no_grad.distances)
    with_grad.distances.sum().backward()
    assert all(m.grad is not None and torch.isfinite(m.grad).all() for m in sat.features)


def test_distance_equals_fmc_of_explicit_crops():
    ground = _random_maps(2, (3, 2), seed=7)
    sat = _random_maps(2, (8, 5), seed=8)
    res = align_windows(ground, sat, mode="mask-corr", stages=(1, 2), diagonal=True, return_crops=True)
    g_desc = multiscale_descriptor(ground.features[:2])
    s_desc = multiscale_descriptor(res.crops)
    torch.testing.assert_close(res.distances, (g_desc - s_desc).norm(dim=1), rtol=1e-5, atol=1e-6)
    for i in range(2):
        torch.testing.assert_close(
            res.crops[i], crop_windows(sat.features[i], res.offsets[:, i], ground.features[i].shape[-1])
        )


@pytest.mark.parametrize("fov,ground_widths", [(90, (32, 16, 8, 4)), (70, (25, 13, 7, 4))])
@pytest.mark.parametrize("mode", list(ALIGN_MODES))
def test_shifted_copy_is_recovered_at_the_exact_offset_in_every_stage(fov, ground_widths, mode):
    """Satellite maps are circular shifts whose true window holds the ground map; full-size shapes per stage."""
    gen = torch.Generator().manual_seed(11)
    shift = 333  # pano-512 units; the true offset is (512 - shift) / 512 * W_b
    g_feats, g_masks, s_feats, s_masks, s_gates, g_gates, expected = [], [], [], [], [], [], []
    for (c, h, W), w in zip(STAGE_DIMS, ground_widths):
        o_true = int(round(true_offset(shift, W)))
        expected.append(o_true)
        sat = 0.3 * torch.randn(1, c, h, W, generator=gen)
        mask = 0.1 + 0.1 * torch.rand(1, h, W, generator=gen)
        cols = (o_true + torch.arange(w)) % W
        sat[..., cols] = torch.randn(1, c, h, w, generator=gen)
        mask[..., cols] = 0.8 + 0.1 * torch.rand(1, h, w, generator=gen)
        gates = torch.rand(1, c, W, generator=gen)
        s_feats.append(sat)
        s_masks.append(mask)
        s_gates.append(gates)
        g_feats.append(sat[..., cols].clone())
        g_masks.append(mask[..., cols].clone())
        g_gates.append(gates[..., cols].clone())
    res = align_windows(StageMaps(g_feats, g_masks, gates=g_gates), StageMaps(s_feats, s_masks, gates=s_gates),
                        mode=mode)
    assert res.offsets[0, 0].tolist() == expected
    # the heading read at the finest stage is within half a block-1 column of the crop's true heading
    err = abs((res.headings()[0, 0] - heading_from_shift(shift, fov) + 180) % 360 - 180)
    assert err <= 360 / 128 / 2 + 1e-9


@pytest.mark.parametrize(
    "offset,w,W,heading",
    [(0, 32, 128, -135.0), (96, 32, 128, 135.0), (120, 32, 128, -157.5), (8, 4, 16, 45.0), (0, 128, 512, -135.0)],
)
def test_heading_from_offset_hand_computed(offset, w, W, heading):
    assert heading_from_offset(offset, w, W) == pytest.approx(heading)


def test_heading_from_true_offset_equals_crop_heading():
    for shift in (0, 1, 100, 256, 400, 511):
        for w, W, fov in ((128, 512, 90.0), (32, 128, 90.0)):
            assert heading_from_offset(true_offset(shift, W), w, W) == pytest.approx(heading_from_shift(shift, fov))


def test_precomputed_column_energy_and_column_major_store_give_the_same_result():
    """A database stores maps column-major (R x W x C x H, fp16) with precomputed column energies."""
    from geoapp.model.align import column_energy

    ground = _random_maps(2, (3, 2), seed=21)
    sat = _random_maps(5, (8, 5), seed=22)
    plain = align_windows(ground, sat, mode="mask-corr", stages=(1, 2))
    stored = StageMaps(
        [f.permute(0, 3, 1, 2).contiguous().half().permute(0, 2, 3, 1) for f in sat.features],
        [m.half() for m in sat.masks],
    )
    stored.col_energy = [column_energy(f) for f in stored.features]
    fast = align_windows(ground, stored, mode="mask-corr", stages=(1, 2), chunk_size=2)
    assert torch.equal(plain.offsets, fast.offsets)
    torch.testing.assert_close(plain.distances, fast.distances)


@pytest.mark.parametrize("mode", ["mask-corr", "feature"])
def test_matrix_product_path_equals_conv1d_path(mode):
    """A few queries take the matrix-product route, many take conv1d: same scores (integer values: exactly),
    also on a column-major fp16 gallery as a database stores it."""
    from geoapp.model.align import GEMM_MAX_QUERIES

    gen = torch.Generator().manual_seed(3)
    n_q = GEMM_MAX_QUERIES + 2
    ground_mask = torch.randint(0, 4, (n_q, 3, 5), generator=gen).float()
    sat_mask = torch.randint(0, 4, (7, 3, 11), generator=gen).half()
    feats_g = torch.randint(0, 4, (n_q, 2, 3, 5), generator=gen).float()
    feats_s = torch.randint(0, 4, (7, 11, 2, 3), generator=gen).half().permute(0, 2, 3, 1)  # R x C x H x W view
    many = window_scores(mode, feats_g, feats_s, ground_mask, sat_mask)  # conv1d
    few = window_scores(mode, feats_g[:3], feats_s, ground_mask[:3], sat_mask)  # matrix product
    assert few.shape == (3, 7, 11)
    assert torch.equal(few, many[:3])


@pytest.mark.parametrize("sat_widths", [(8, 4), (8, 5)])
def test_shared_window_places_every_stage_at_the_choosing_stages_azimuth(sat_widths):
    """``offset_stage``: stage 1's gates choose, stage 2 crops at the same azimuth; brute force agrees, all pairs,
    chunked and diagonal, and stage 1's own offsets are those of the unshared search."""
    from geoapp.model.align import scale_offsets

    ground = _random_maps(3, (3, 2), seed=21)
    sat = _random_maps(5, sat_widths, seed=22)
    want_off, want_d = _brute_force(ground, sat, "gate-corr", (1, 2), offset_stage=1)
    res = align_windows(ground, sat, mode="gate-corr", stages=(1, 2), chunk_size=2, offset_stage=1)
    np.testing.assert_array_equal(res.offsets.numpy(), want_off)
    np.testing.assert_allclose(res.distances.numpy(), want_d, rtol=1e-5, atol=1e-6)
    own = align_windows(ground, sat, mode="gate-corr", stages=(1, 2))
    np.testing.assert_array_equal(res.offsets[..., 0].numpy(), own.offsets[..., 0].numpy())
    np.testing.assert_array_equal(res.offsets[..., 1].numpy(), scale_offsets(res.offsets[..., 0], 8, sat_widths[1]))
    diag = align_windows(ground, sat.slice(0, 3), mode="gate-corr", stages=(1, 2), diagonal=True, offset_stage=1)
    np.testing.assert_array_equal(diag.offsets.numpy(), np.stack([want_off[i, i] for i in range(3)]))
    with pytest.raises(ValueError, match="offset_stage 3 is not one of the used stages"):
        align_windows(ground, sat, mode="gate-corr", stages=(1, 2), offset_stage=3)
    with pytest.raises(ValueError, match="needs an attention mode"):
        align_windows(ground, sat, mode="feature", stages=(1, 2), offset_stage=1)


def test_scale_offsets_takes_the_nearest_column_circularly():
    from geoapp.model.align import offset_pooling, scale_offsets

    got = scale_offsets(torch.tensor([0, 3, 4, 5, 12, 60, 63]), 64, 8).tolist()
    assert got == [0, 0, 1, 1, 2, 0, 0]  # 4 -> 0.5 -> 1 (halves round up); 60 -> 7.5 -> 8 = 0 (wraps)
    pool = offset_pooling(64, 8)
    assert pool.shape == (64, 8) and pool.sum(1).eq(1).all() and pool.sum(0).eq(8).all()


def test_shared_soft_window_distances_reach_the_shared_argmax_and_train_only_the_choosing_gates():
    from geoapp.model.align import soft_window_distances

    ground = _random_maps(3, (3, 2), seed=9)
    sat = _random_maps(3, (8, 4), seed=10)
    hard = align_windows(ground, sat, mode="gate-corr", stages=(1, 2), offset_stage=1)
    soft, logits = soft_window_distances(ground, sat, "gate-corr", (1, 2), torch.full((4,), 1e4), offset_stage=1)
    torch.testing.assert_close(soft, hard.distances, rtol=1e-4, atol=1e-5)
    assert [lg.shape for lg in logits] == [(3, 8)]  # only the stage that chooses has window logits
    for m in ground.gates + sat.gates:
        m.requires_grad_(True)
    soft, _ = soft_window_distances(ground, sat, "gate-corr", (1, 2), torch.full((4,), 5.0), offset_stage=1)
    soft.diagonal().sum().backward()
    assert all(float(m.grad.abs().sum()) > 0 for m in (ground.gates[0], sat.gates[0]))
    assert all(m.grad is None for m in (ground.gates[1], sat.gates[1]))  # stage 2's gates choose nothing


@pytest.mark.parametrize("mode", ["gate-corr", "feature"])
def test_given_offsets_give_the_fmc_distance_of_crops_at_those_offsets(mode):
    """``align_windows(window_offsets=)`` (training's known positive windows) uses exactly the offsets it is given,
    in the inference and the training path, and its distance is the FMC distance of explicit crops there."""
    ground = _random_maps(3, (3, 2), seed=5)
    sat = _random_maps(3, (8, 5), seed=6)
    given = {1: torch.tensor([7, 0, 3]), 2: torch.tensor([4, 2, 0])}
    res = align_windows(ground, sat, mode=mode, stages=(1, 2), diagonal=True, window_offsets=given)
    assert res.offsets[:, 0].tolist() == [7, 0, 3] and res.offsets[:, 1].tolist() == [4, 2, 0]
    for i in range(3):
        g = torch.cat([ground.features[s - 1][i].flatten() for s in (1, 2)])
        c = torch.cat([crop_windows(sat.features[s - 1][i : i + 1], given[s][i : i + 1],
                                    ground.features[s - 1].shape[-1]).flatten() for s in (1, 2)])
        expected = (g / g.norm() - c / c.norm()).norm()
        assert res.distances[i].item() == pytest.approx(expected.item(), abs=1e-5)
    trained = align_windows(StageMaps([f.requires_grad_() for f in ground.features], ground.masks, gates=ground.gates),
                            sat, mode=mode, stages=(1, 2), diagonal=True, window_offsets=given)
    assert torch.allclose(trained.distances, res.distances, atol=1e-5)
    with pytest.raises(ValueError, match="diagonal pairs and one tensor per used stage"):
        align_windows(ground, sat, mode=mode, stages=(1, 2), window_offsets=given)
    with pytest.raises(ValueError, match="one tensor per used stage"):
        align_windows(ground, sat, mode=mode, stages=(1, 2), diagonal=True, window_offsets={1: given[1]})


def _gate_cosine(ground, sat, q, r, stage, offset):
    """The gate-corr cosine of pair (q, r) at ``offset`` of ``stage``, conventions §5 style, float64."""
    Ag = ground.gates[stage - 1][q].double().numpy()
    As = sat.gates[stage - 1][r].double().numpy()
    w, W = Ag.shape[-1], As.shape[-1]
    kg = Ag - Ag.mean(axis=1, keepdims=True)
    ws = (As - As.mean(axis=1, keepdims=True))[:, [(offset + k) % W for k in range(w)]]
    return float((kg * ws).sum()) / (np.linalg.norm(kg) * np.linalg.norm(ws))


@pytest.mark.parametrize("offset_stage", [1, None])
def test_gate_weight_adds_the_attention_agreement_at_the_chosen_window(offset_stage):
    """``gate_weight`` λ: sim = (cos_FMC + λ gate) / (1 + λ), gate = the gate-corr cosine at the chosen window (the
    mean over the choosing stages without a shared window); the windows and headings do not move."""
    ground = _random_maps(3, (3, 2), seed=31)
    sat = _random_maps(4, (8, 5), seed=32)
    plain = align_windows(ground, sat, mode="gate-corr", stages=(1, 2), offset_stage=offset_stage)
    lam = 0.4
    res = align_windows(ground, sat, mode="gate-corr", stages=(1, 2), offset_stage=offset_stage, gate_weight=lam,
                        chunk_size=3)
    assert torch.equal(res.offsets, plain.offsets)
    choosing = (1,) if offset_stage else (1, 2)
    for q in range(3):
        for r in range(4):
            gate = np.mean([_gate_cosine(ground, sat, q, r, s, int(plain.offsets[q, r, (1, 2).index(s)]))
                            for s in choosing])
            want = (float(plain.similarity[q, r]) + lam * gate) / (1 + lam)
            assert float(res.similarity[q, r]) == pytest.approx(want, abs=1e-5)
            assert float(res.distances[q, r]) == pytest.approx(np.sqrt(2 - 2 * want), abs=1e-5)
    # the ranking changes where the attention agrees: the gate term is not a constant shift
    gates = (res.similarity * (1 + lam) - plain.similarity) / lam
    assert float(gates.max() - gates.min()) > 0.1
    # given windows (training's known positives): the gate term is read at those offsets
    given = {1: torch.tensor([7, 0, 3]), 2: torch.tensor([4, 2, 0])}
    diag = align_windows(ground, sat.slice(0, 3), mode="gate-corr", stages=(1, 2), diagonal=True,
                         offset_stage=offset_stage, window_offsets=given, gate_weight=lam)
    base = align_windows(ground, sat.slice(0, 3), mode="gate-corr", stages=(1, 2), diagonal=True,
                         offset_stage=offset_stage, window_offsets=given)
    for i in range(3):
        gate = np.mean([_gate_cosine(ground, sat, i, i, s, int(given[s][i])) for s in choosing])
        assert float(diag.similarity[i]) == pytest.approx((float(base.similarity[i]) + lam * gate) / (1 + lam),
                                                          abs=1e-5)
    # the gates learn from the pair similarity in training: the term carries a gradient to them
    g = StageMaps(ground.features, ground.masks, gates=[a.clone().requires_grad_() for a in ground.gates])
    align_windows(g, sat, mode="gate-corr", stages=(1, 2), offset_stage=offset_stage, gate_weight=lam
                  ).similarity.sum().backward()
    assert float(g.gates[0].grad.abs().sum()) > 0
    with pytest.raises(ValueError, match=r"needs an align_mode whose window scores are cosines \['gate-corr'\]"):
        align_windows(ground, sat, mode="mask-corr", stages=(1, 2), gate_weight=lam)
    with pytest.raises(ValueError, match="must be >= 0"):
        align_windows(ground, sat, mode="gate-corr", stages=(1, 2), gate_weight=-0.1)


@pytest.mark.parametrize("fraction", [-0.4, -0.25, 0.0, 0.1, 0.3, 0.45])
def test_the_heading_is_refined_below_the_column_grid_on_planted_data(fraction):
    """The photo's gates are the tile's gates sampled at a known fractional offset t. Every channel is a sinusoid of
    16 columns' period (random phase and amplitude) and the window is 16 columns wide, so every window has the same
    energy and the gate-corr score is exactly cos(2 pi (o - t) / 16): its peaks are t + 16 k. The refined offset is
    t (mod 16) within 0.1 column, where the argmax alone is off by the fraction."""
    from geoapp.model.align import best_offsets, refined_headings

    width, w, period, channels, true_o = 64, 16, 16, 12, 21 + fraction
    rng = np.random.default_rng(5)
    amplitude, phase = rng.uniform(0.05, 0.2, (channels, 1)), rng.uniform(0, 2 * np.pi, (channels, 1))

    def gates(cols):
        return torch.tensor(0.5 + amplitude * np.cos(2 * np.pi * cols / period + phase), dtype=torch.float32)[None]

    sat_gates, ground_gates = gates(np.arange(width)), gates(true_o + np.arange(w))
    ground = StageMaps([torch.ones(1, channels, 2, w)], None, gates=[ground_gates])  # the score reads gates only
    sat = StageMaps([torch.ones(1, channels, 2, width)], None, gates=[sat_gates])
    scores = window_scores("gate-corr", ground.features[0], sat.features[0], ground_gates, sat_gates, diagonal=True)
    offsets = best_offsets(scores)

    def error(offset):  # columns from the planted offset, modulo the signal's period
        return abs((offset - true_o + period / 2) % period - period / 2)

    assert error(int(offsets[0])) == pytest.approx(abs(fraction), abs=1e-6)  # the argmax: the nearest column
    refined = refined_headings("gate-corr", 1, ground, sat, offsets, w, width)
    assert error((refined[0] + 180.0) / 360.0 * width - w / 2.0) < 0.1


def test_peak_fraction_is_the_parabola_vertex_and_zero_without_a_peak():
    from geoapp.model.align import peak_fraction

    cols = torch.arange(10, dtype=torch.float64)
    parabola = -(cols - 4.3) ** 2  # vertex at 4.3: the argmax is 4, the fraction 0.3
    assert abs(float(peak_fraction(parabola[None], torch.tensor([4]))) - 0.3) < 1e-12
    flat = torch.zeros(1, 10)
    assert float(peak_fraction(flat, torch.tensor([2]))) == 0.0
    wrapped = -torch.minimum((cols - 0.2) % 10, (0.2 - cols) % 10) ** 2  # vertex at 0.2 across the wrap
    assert abs(float(peak_fraction(wrapped[None], torch.tensor([0]))) - 0.2) < 1e-12
