"""``--precision auto`` chooses by measurement, never slower than fp32."""

import pytest
import torch

from geoapp.model import ModelConfig
from geoapp.training import precision as P

CPU = torch.device("cpu")
TINY = ModelConfig(base_channels=8, ground_height=32, sat_height=32, sat_width=128)


@pytest.mark.parametrize("timings,expected", [
    ({"fp32": 1.0, "bf16": 12.0}, "fp32"),  # emulated bf16 (AVX2): 12x slower
    ({"fp32": 1.0, "bf16": 0.6}, "bf16"),  # native bf16 (AVX-512 BF16 / AMX)
    ({"fp32": 1.0, "bf16": 1.0}, "fp32"),  # a tie keeps full precision
])
def test_auto_takes_the_measured_fastest(monkeypatch, timings, expected):
    asked = []

    def fake(config, precision, device, give_up_s):
        asked.append(precision)
        return timings[precision]

    monkeypatch.setattr(P, "measure_precision", fake)
    lines = []
    chosen, record = P.choose_precision("auto", CPU, TINY, log=lines.append)
    assert chosen == expected and record["chosen"] == expected and asked == ["fp32", "bf16"]
    assert record["seconds_per_probe_step"] == timings
    assert record["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert expected in lines[0] and "fp32 1000 ms" in lines[0]


def test_explicit_precision_is_not_measured(monkeypatch):
    monkeypatch.setattr(P, "measure_precision", lambda *a: pytest.fail("measured an explicit precision"))
    assert P.choose_precision("bf16", CPU, TINY)[0] == "bf16"
    assert P.choose_precision("fp32", CPU, TINY)[1] == {"requested": "fp32", "chosen": "fp32", "how": "given"}
    with pytest.raises(ValueError, match="fp16"):
        P.choose_precision("fp16", CPU, TINY)


def test_real_probe_times_a_step_and_leaves_the_rng_alone():
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    seconds = P.time_train_steps(TINY, "fp32", CPU, batch=2, steps=1)
    assert 0 < seconds < 30
    assert torch.equal(torch.rand(3), before)
