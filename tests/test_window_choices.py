"""Every training window choice of the registry: the config and the objective apply the same rule, and a training
step with it computes a finite loss whose gradient reaches the model, on a tiny model."""

import pytest
import torch

from geoapp.model import ALIGN_MODES, ModelConfig, build_model
from geoapp.training.config import TrainConfig
from geoapp.training.objective import TrainForward, triplet_loss
from geoapp.training.window_choices import WINDOW_CHOICES, window_choice

CHOICES = list(WINDOW_CHOICES.values())


def test_the_registry_is_keyed_by_name_and_refuses_unknown_names():
    assert all(window_choice(name) is choice for name, choice in WINDOW_CHOICES.items())
    with pytest.raises(ValueError, match=r"unknown window choice 'best'; choose one of \('argmax'"):
        window_choice("best")
    with pytest.raises(ValueError, match="window_choice must be one of"):
        TrainConfig(window_choice="best")


@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: c.name)
@pytest.mark.parametrize("mode", list(ALIGN_MODES.values()), ids=str)
def test_the_config_and_the_objective_apply_one_rule(choice, mode):
    values = dict(window_choice=choice.name, align_mode=mode.name, use_ca=mode.is_fca, gate_weight=0.0)
    model = build_model(ModelConfig(align_mode=mode.name, use_ca=mode.is_fca, gate_weight=0.0, base_channels=8,
                                    ground_height=32, sat_height=32, sat_width=128))
    problem = choice.problem(mode, 0.0)
    assert (problem is None) == (not choice.soft or mode.cosine_scores)
    if problem:
        with pytest.raises(ValueError, match="window_choice"):
            TrainConfig.from_dict(values)
        with pytest.raises(ValueError, match="window_choice"):
            TrainForward(model, window_choice=choice)
    else:
        assert TrainConfig.from_dict(values).window_choice == choice.name
        TrainForward(model, window_choice=choice.name)


@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: c.name)
def test_a_step_with_every_choice_trains_the_model(choice):
    torch.manual_seed(0)
    model = build_model(ModelConfig(base_channels=8, ground_height=32, sat_height=32, sat_width=128,
                                    gate_weight=0.0 if choice.soft else None)).train()
    net = TrainForward(model, with_logits=True, window_choice=choice)
    ground, sat = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 128)
    shifts = torch.tensor([0, 40, 100])
    if choice.known_positives:
        with pytest.raises(ValueError, match="needs the crops' shifts"):
            net(ground, sat)
    distances, logits = net(ground, sat, shifts, 128)
    assert hasattr(distances, "terms") == choice.descriptor_margin  # a second triplet term of its own
    loss = triplet_loss(distances, alpha=10.0)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.ground.parameters() if p.grad is not None]
    assert grads and max(float(g.abs().max()) for g in grads) > 0
    assert len(logits) == 1  # the shared window: only block 1 chooses
    temperature = model.window_log_temperature
    assert temperature.requires_grad  # the logits of the alignment loss reach it with every choice
