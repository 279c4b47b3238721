"""The benchmark scripts run end to end (tiny settings) and report every figure they promise."""

from geoapp.bench import model as bench_model


def test_bench_model_reports_every_figure(tmp_path, capsys):
    out = bench_model.main(
        [
            "--repeats",
            "1",
            "--train-repeats",
            "1",
            "--train-batch",
            "2",
            "--sat-batch",
            "2",
            "--gallery",
            "4",
            "--json",
            str(tmp_path / "model.json"),
        ]
    )
    for variant in ("resnet18_ca", "resnet18"):
        assert set(out[variant]) == {"ground_ms_70", "ground_ms_90", "satellite_img_per_s"}
        assert all(v > 0 for v in out[variant].values())
        assert out["train_step_s"][variant] > 0
    assert len(out["align_us_per_pair"]) == 14 and all(v > 0 for v in out["align_us_per_pair"].values())
    printed = capsys.readouterr().out
    assert "CA/plain" in printed and "us/pair" in printed and "gate-corr stages 1234, fp16 dots" in printed
    assert (tmp_path / "model.json").exists()


def test_bench_data_reports_every_figure(tmp_path, capsys):
    from geoapp.bench import data as bench_data

    out = bench_data.main(
        [
            "--repeats",
            "2",
            "--train",
            "12",
            "--test",
            "12",
            "--workers",
            "0",
            "--batch-size",
            "4",
            "--batches",
            "2",
            "--json",
            str(tmp_path / "data.json"),
        ]
    )
    assert out["polar_ms_750"] > 0 and out["polar_ms_1200"] > 0
    assert out["synth"]["locations"] == 24 and out["synth"]["render_locations_per_s"] > 0
    assert out["loader"]["train_samples_per_s"] > 0 and out["loader"]["eval_samples_per_s"] > 0
    assert "locations/s" in capsys.readouterr().out
