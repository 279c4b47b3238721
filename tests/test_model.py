"""Backbone, Coordinate Attention, ImageNet weight loading and checkpoints."""

import pytest
import torch
import torchvision

from geoapp.model import (
    CheckpointError,
    CoordAttention,
    ModelConfig,
    build_model,
    load_imagenet_weights,
    load_model,
    read_metadata,
    resnet18_ca,
    save_model,
)


@pytest.mark.parametrize("channels,expected", [(64, 1688), (128, 3352), (256, 6680), (512, 25648)])
def test_coord_attention_parameter_counts(channels, expected):
    assert sum(p.numel() for p in CoordAttention(channels).parameters()) == expected


def test_coord_attention_reference_names_and_gates():
    ca = CoordAttention(64)
    names = {n.split(".")[0] for n, _ in ca.named_parameters()}
    assert names == {"conv1", "bn1", "conv_h", "conv_w"}
    x = torch.randn(2, 64, 8, 12)
    out = ca(x)
    assert ca.a_h.shape == (2, 64, 8, 1) and ca.a_w.shape == (2, 64, 1, 12)
    torch.testing.assert_close(out, x * ca.a_h * ca.a_w)
    mask = ca.mask()
    assert mask.shape == (2, 8, 12)
    expected = (ca.a_h * ca.a_w).mean(dim=1)  # conventions §5: mean_c a_h(c,h) a_w(c,w)
    torch.testing.assert_close(mask, expected)
    assert float(mask.detach().min()) > 0 and float(mask.detach().max()) < 1


# input size -> the four stages' map sizes, as conventions §1 gives them
CONVENTION_SHAPES = {
    "polar": ((128, 512), [(32, 128), (16, 64), (8, 32), (4, 16)]),
    "70": ((128, 99), [(32, 25), (16, 13), (8, 7), (4, 4)]),
    "90": ((128, 128), [(32, 32), (16, 16), (8, 8), (4, 4)]),
}


@pytest.mark.parametrize("name", list(CONVENTION_SHAPES))
def test_stage_shapes_match_conventions(name):
    (h, w), stages = CONVENTION_SHAPES[name]
    net = resnet18_ca().eval()
    with torch.no_grad():
        maps = net(torch.randn(1, 3, h, w))
    assert [tuple(f.shape[-2:]) for f in maps.features] == stages
    assert [f.shape[1] for f in maps.features] == [64, 128, 256, 512]
    assert [tuple(m.shape[-2:]) for m in maps.masks] == stages


def test_plain_resnet18_baseline_matches_torchvision_layout():
    plain = resnet18_ca(use_ca=False)
    assert not any(".ca." in k for k in plain.state_dict())
    tv = {k for k in torchvision.models.resnet18().state_dict() if not k.startswith("fc.")}
    assert set(plain.state_dict()) == tv
    with torch.no_grad():
        assert plain(torch.randn(1, 3, 64, 64)).masks is None


def test_ground_and_satellite_branches_are_independent():
    model = build_model(ModelConfig())
    assert model.ground is not model.satellite
    shared = {id(p) for p in model.ground.parameters()} & {id(p) for p in model.satellite.parameters()}
    assert not shared


def test_config_validation_and_round_trip():
    cfg = ModelConfig(fov_deg=70, stages=(4,), align_mode="mask-sum")
    assert cfg.ground_width == 99 and ModelConfig(fov_deg=90).ground_width == 128
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="needs use_ca=True"):
        ModelConfig(use_ca=False, align_mode="mask-corr")
    with pytest.raises(ValueError, match="align_mode"):
        ModelConfig(align_mode="sliding")
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"fov": 90})
    gated = ModelConfig(align_mode="gate-corr", shared_window=True, gate_weight=0.2)
    assert ModelConfig.from_dict(gated.to_dict()) == gated
    with pytest.raises(ValueError, match=r"gate_weight must be >= 0 and needs an align_mode whose window scores are "
                       r"cosines \['gate-corr'\]"):
        ModelConfig(align_mode="feature", gate_weight=0.2)
    with pytest.raises(ValueError, match="gate_weight must be >= 0"):
        ModelConfig(align_mode="gate-corr", gate_weight=-1.0)


@pytest.fixture
def imagenet_file(tmp_path):
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    return path, state


def test_load_imagenet_weights_loads_every_backbone_tensor(imagenet_file):
    path, state = imagenet_file
    net = resnet18_ca()
    report = load_imagenet_weights(net, path)
    own = net.state_dict()
    for key in report.loaded:
        torch.testing.assert_close(own[key], state[key], rtol=0, atol=0)
    assert len(report.loaded) == len(state) - 2  # everything but fc.weight / fc.bias
    assert report.new == [k for k in own if ".ca." in k] and len(report.new) == 8 * 11  # 8 blocks x 11 CA tensors
    assert report.ignored == ["fc.weight", "fc.bias"]


def test_load_imagenet_weights_plain_baseline_has_no_new_keys(imagenet_file):
    path, _ = imagenet_file
    assert load_imagenet_weights(resnet18_ca(use_ca=False), path).new == []


def test_load_imagenet_weights_names_missing_and_wrong_keys(imagenet_file, tmp_path):
    path, state = imagenet_file
    missing = dict(state)
    del missing["layer3.1.bn2.running_var"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing from the file: \['layer3.1.bn2.running_var'\]"):
        load_imagenet_weights(resnet18_ca(), tmp_path / "missing.pth")

    renamed = dict(state)
    renamed["layer9.0.conv1.weight"] = renamed.pop("layer1.0.conv1.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(ValueError, match=r"layer9.0.conv1.weight"):
        load_imagenet_weights(resnet18_ca(), tmp_path / "renamed.pth")

    shaped = dict(state)
    shaped["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(shaped, tmp_path / "shaped.pth")
    with pytest.raises(ValueError, match=r"wrong shape: \['conv1.weight"):
        load_imagenet_weights(resnet18_ca(), tmp_path / "shaped.pth")

    with pytest.raises(FileNotFoundError, match="not found"):
        load_imagenet_weights(resnet18_ca(), tmp_path / "nope.pth")


def _small_config(**kw):
    return ModelConfig(ground_height=64, sat_height=64, sat_width=256, **kw)


def test_checkpoint_rebuilds_its_model_and_outputs(tmp_path):
    torch.manual_seed(1)
    cfg = _small_config(fov_deg=70, stages=(2, 4), align_mode="mask-sum")
    model = build_model(cfg).eval()
    path = save_model(tmp_path / "m.safetensors", model, {"metrics": {"R@1": 12.5}})
    meta = read_metadata(path)
    assert meta["model_config"] == cfg.to_dict() and meta["metrics"] == {"R@1": 12.5}
    assert meta["code_revision"] and meta["command"]
    loaded, _ = load_model(path)
    assert loaded.config == cfg
    g = torch.randn(2, 3, 64, cfg.ground_width)
    s = torch.randn(3, 3, 64, 256)
    with torch.no_grad():
        a, b = model(g, s), loaded(g, s)
    torch.testing.assert_close(a.distances, b.distances, rtol=0, atol=0)
    assert torch.equal(a.offsets, b.offsets)


def test_checkpoint_errors_are_specific(tmp_path):
    model = build_model(_small_config())
    path = save_model(tmp_path / "m.safetensors", model)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(tmp_path / "cut.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "absent.safetensors")
    # a file whose weights come from a model without CA but whose config says CA
    import json

    from safetensors.torch import save_file

    plain = build_model(_small_config(use_ca=False, align_mode="feature"))
    meta = read_metadata(path)
    save_file(
        {k: v.contiguous() for k, v in plain.state_dict().items()},
        str(tmp_path / "mix.safetensors"),
        metadata={"geoapp": json.dumps(meta)},
    )
    with pytest.raises(CheckpointError, match=r"missing \['ground.layer1.0.ca"):
        load_model(tmp_path / "mix.safetensors")
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files


def test_wrapped_satellite_branch_follows_a_roll_of_the_polar_image():
    """With circular width padding, rolling the polar input by 32 columns (the total stride) rolls every stage's
    features, masks and gates by 32 / stride columns; with zero padding the edge columns differ."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 256)
    for wrap in (True, False):
        branch = resnet18_ca(base_channels=16, wrap=wrap).eval()
        with torch.no_grad():
            a, b = branch(x), branch(torch.roll(x, 32, dims=3))
        for s in range(4):
            k = 32 // (4 * 2**s)  # stage strides 4, 8, 16, 32
            diffs = [float((torch.roll(m[s], k, dims=-1) - n[s]).abs().max())
                     for m, n in ((a.features, b.features), (a.masks, b.masks), (a.gates, b.gates))]
            if wrap:
                assert max(diffs) < 1e-4, (s, diffs)
            elif s == 0:
                assert diffs[0] > 1e-2  # zero padding: the seam columns see different neighbours


def test_narrow_model_scales_every_stage_and_keeps_the_spec_layout():
    cfg = ModelConfig(base_channels=32, ground_height=64, sat_height=64, sat_width=256, align_mode="gate-corr")
    model = build_model(cfg).eval()
    with torch.no_grad():
        maps = model.encode_satellite(torch.randn(1, 3, 64, 256))
    assert [tuple(f.shape[1:]) for f in maps.features] == [(32, 16, 64), (64, 8, 32), (128, 4, 16), (256, 2, 8)]
    assert [tuple(g.shape[1:]) for g in maps.gates] == [(32, 64), (64, 32), (128, 16), (256, 8)]
    full = sum(p.numel() for p in resnet18_ca().parameters())
    narrow = sum(p.numel() for p in model.ground.parameters())
    assert 0.2 < narrow / full < 0.3  # convolutions scale with the square of the width
    with pytest.raises(ValueError, match="base_channels"):
        ModelConfig(base_channels=12)



def test_the_default_model_is_the_method_and_each_mode_brings_its_defaults():
    """``ModelConfig()`` is the method (FCA by the column gates, block 1's window shared, the gate term); another
    alignment, or no CA, resolves the fields left at None to its own defaults, and a saved config records them."""
    method = ModelConfig()
    assert (method.align_mode, method.shared_window, method.gate_weight) == ("gate-corr", True, 0.2)
    assert method.window_stage == 1 and method.alignment.name == "gate-corr"
    plain = ModelConfig(use_ca=False)
    assert (plain.align_mode, plain.shared_window, plain.gate_weight) == ("feature", False, 0.0)
    masks = ModelConfig(align_mode="mask-corr")
    assert (masks.shared_window, masks.gate_weight) == (True, 0.0)
    saved = masks.to_dict()
    assert saved["shared_window"] is True and saved["gate_weight"] == 0.0
    assert ModelConfig.from_dict(saved) == masks
