"""The benchmark scripts run end to end (tiny settings) and report every figure they promise, each checked against a
planted case with a known answer: a clock whose every timed span lasts a known time, an allocation of a known size,
a gallery whose true ranks are known."""

import pytest

from geoapp.bench import model as bench_model
from geoapp.bench.__main__ import SUBCOMMANDS
from geoapp.bench.__main__ import main as bench_main

pytest_plugins = ["app_fixtures"]  # the tiny world, model and database (the answers benchmark)


class PlantedClock:
    """Stands in for a benchmark module's ``time``: every ``perf_counter()`` call is ``step`` seconds after the last,
    so a span timed by two consecutive calls lasts exactly ``step``, whatever the code in between costs."""

    def __init__(self, step: float, start: float = 100.0):
        self.step, self.now = step, start

    def perf_counter(self) -> float:
        self.now += self.step
        return self.now


class ScriptedClock:
    """Stands in for a benchmark module's ``time``: ``perf_counter()`` returns the given readings in turn."""

    def __init__(self, readings):
        self.readings = iter(readings)

    def perf_counter(self) -> float:
        return next(self.readings)


def test_bench_model_times_the_median_of_the_repeats_after_the_warm_up(monkeypatch):
    calls = []
    # three timed runs of 0.3, 0.1 and 0.2 s; the warm-up is not timed
    monkeypatch.setattr(bench_model, "time", ScriptedClock([10.0, 10.3, 11.0, 11.1, 12.0, 12.2]))
    assert bench_model._median_seconds(lambda: calls.append(1), repeats=3) == pytest.approx(0.2)
    assert len(calls) == 4


def test_bench_model_reports_every_figure(tmp_path, capsys, monkeypatch):
    step = 0.004  # every timed run lasts 4 ms
    monkeypatch.setattr(bench_model, "time", PlantedClock(step))
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
        # milliseconds of one ground query; images per second of a batch of 2; seconds of a training step
        assert out[variant] == pytest.approx({"ground_ms_70": 4.0, "ground_ms_90": 4.0, "satellite_img_per_s": 500.0})
        assert out["train_step_s"][variant] == pytest.approx(step)
    # one query against the gallery of 4: a quarter of the run per pair
    assert len(out["align_us_per_pair"]) == 16
    assert all(v == pytest.approx(1e6 * step / 4) for v in out["align_us_per_pair"].values())
    assert {"gate-corr shared stages 1234", "gate-corr shared stages 1234, fp16 dots"} <= set(out["align_us_per_pair"])
    printed = capsys.readouterr().out
    assert "CA/plain" in printed and "gate-corr stages 1234, fp16 dots" in printed
    assert "ground branch, 70 deg, batch 1 (ms)" in printed and "        4.00       4.00      1.00" in printed
    assert "1000.00 us/pair  (10000 ms per 10,000 references)" in printed
    assert (tmp_path / "model.json").exists()


def test_bench_data_reports_every_figure(tmp_path, capsys, monkeypatch):
    import json

    from geoapp.bench import data as bench_data

    monkeypatch.setattr(bench_data, "time", PlantedClock(0.5))  # every timed span lasts half a second
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
            "--keep",
            str(tmp_path / "world"),
            "--json",
            str(tmp_path / "data.json"),
        ]
    )
    assert (out["polar_ms_750"], out["polar_ms_1200"]) == (500.0, 500.0)
    # 24 locations in half a second; the rendering rate is the one the generator recorded in its manifest
    manifest = json.loads((tmp_path / "world" / "dataset.json").read_text())
    assert out["synth"]["locations"] == 24 and out["synth"]["overall_locations_per_s"] == pytest.approx(48.0)
    assert out["synth"]["render_locations_per_s"] == manifest["timing"]["render_locations_per_s"]
    assert out["synth"]["world_s"] == manifest["timing"]["world_s"]
    # after the start-up batch, 2 timed batches of 4 samples in half a second, from each split's 12
    assert out["loader"] == pytest.approx({"train_samples_per_s": 16.0, "eval_samples_per_s": 16.0})
    printed = capsys.readouterr().out
    assert "500.00 ms/image" in printed and "overall 48.0 locations/s" in printed and "train 16 samples/s" in printed
    assert json.loads((tmp_path / "data.json").read_text()) == json.loads(json.dumps(out))


def test_bench_answers_measures_calibration_prior_and_views(tiny_world, tiny_checkpoint, tiny_database, tmp_path):
    """The answers benchmark on the tiny world: every figure present and consistent with its queries."""
    import shutil

    from geoapp.bench.answers import calibration_study, draw_figures, format_report, prior_study, views_study
    from geoapp.retrieval.calibrate import fit_calibration, write_calibration
    from geoapp.retrieval.engine import Localizer
    from geoapp.training.precision import cpu_description

    db = tmp_path / "db"
    shutil.copytree(tiny_database, db)
    write_calibration(db, fit_calibration(tiny_checkpoint, "synth", tiny_world, gallery_size=16, split="train",
                                          distractor_split="test", device="cpu", progress=False))
    localizer = Localizer(tiny_checkpoint, db, device="cpu")
    calibration = calibration_study(localizer, progress=False)
    assert calibration["queries"] == 12 and set(calibration["by_fov"]) == {"90", "70"}
    for row in calibration["by_fov"].values():
        assert 0 <= row["ECE_tile"] <= 100 and 0 <= row["R@1"] <= 100
        assert sum(b["n"] for b in row["reliability_tile"]) == 12
        assert row["risk_coverage"][0]["coverage"] == 1.0 and row["risk_coverage"][0]["accuracy"] * 100 == (
            pytest.approx(row["R@1"]))
    views = views_study(localizer, counts=(1, 2), size=6, progress=False)
    assert [r["photos"] for r in views["rows"]] == [1, 2] and views["queries"] == 6
    prior = prior_study(localizer, radii=(None, 200.0), size=6, progress=False)
    none, near = prior["rows"]
    assert none["mean_references_searched"] == 12 and 0 < near["mean_references_searched"] < 12
    figures = draw_figures(calibration, tmp_path / "figures")
    assert [f.name for f in figures] == ["reliability.png", "risk_coverage.png"]
    assert all(f.stat().st_size > 1000 for f in figures)
    text = format_report({"cpu": cpu_description(), "calibration": calibration, "prior": prior, "views": views})
    assert "| 90° |" in text and "| 200 m |" not in text and "| 0.2 km |" in text and "| 2 |" in text


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_listed_benchmark_answers_under_its_own_name(name, capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the dispatcher sets the chosen benchmark's argv
    with pytest.raises(SystemExit) as done:
        bench_main([name, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m geoapp.bench {name} ")


def test_the_benchmark_dispatcher_lists_the_benchmarks_and_refuses_others(capsys):
    assert bench_main([]) == 2 and bench_main(["--help"]) == 0
    assert bench_main(["nonesuch"]) == 2
    captured = capsys.readouterr()
    assert "unknown benchmark 'nonesuch'" in captured.err
    assert captured.out.count("usage: python -m geoapp.bench {" + ",".join(SUBCOMMANDS) + "}") == 2


def _tiny_stage_dims():
    """(C, H, W) of the satellite maps of ``geoapp.bench.memory.TINY`` (16 base channels, polar 32 x 128)."""
    return [(16 * 2**i, 32 // 4 // 2**i, 128 // 4 // 2**i) for i in range(4)]


def test_bench_memory_peak_counts_an_allocation_of_known_size():
    import mmap

    from geoapp.bench import memory

    size = 96 << 20

    def touch_pages():
        # a fresh anonymous mapping, every page written: resident whatever the allocator keeps
        buf = mmap.mmap(-1, size)
        for offset in range(0, size, mmap.PAGESIZE):
            buf[offset] = 1
        buf.close()
        return "done"

    resettable = memory.reset_peak()
    before = sum(memory.resident_parts().values())
    result, _, peak = memory._timed_peak(touch_pages)
    assert result == "done" and peak >= before + size * 0.95
    if resettable:  # the mapping is gone: a phase that allocates nothing peaks near where it started
        _, _, idle = memory._timed_peak(lambda: None)
        assert idle < before + size / 2


def test_bench_memory_reports_peak_memory_and_the_gallery_size(tmp_path, capsys, monkeypatch):
    from geoapp.bench import memory

    monkeypatch.setattr(memory, "time", PlantedClock(0.25))  # every phase lasts a quarter of a second
    out = memory.main(["--references", "50", "--queries", "8", "--tiny", "--batch-size", "16", "--chunk-size", "16",
                       "--seed-references", "8", "--spool-dir", str(tmp_path)])
    # spooled: fp16 features and float32 energies, attention (masks, gates of every stage: each its own window) in
    # float32
    per_ref = sum(c * h * w * 2 + w * 4 + h * w * 4 + c * w * 4 + w * 4 for c, h, w in _tiny_stage_dims())
    assert out["bytes_per_reference"] == per_ref and out["gallery_bytes"] == 50 * per_ref
    # the float32 StageMaps (features, masks, gates) the evaluation used to hold in memory
    assert out["float32_in_memory_bytes"] == 50 * 4 * sum(c * h * w + h * w + c * w for c, h, w in _tiny_stage_dims())
    assert out["queries"] == 8 and out["references"] == 50
    assert out["seconds"] == {"encode seed batch": 0.25, "store gallery": 0.25, "rank queries": 0.25}
    # each phase's peak holds at least the model and what the process had before it (a few hundred MB)
    assert set(out["peak_rss_bytes"]) == set(out["seconds"])
    assert all(v >= 50e6 for v in out["peak_rss_bytes"].values())
    assert out["peak_rss_max_bytes"] == max(out["peak_rss_bytes"].values())
    assert out["target_met"] is (out["peak_rss_max_bytes"] <= 4e9)
    printed = capsys.readouterr().out
    assert "peak RSS" in printed and "target <= 4 GB" in printed and out["cpu"]["torch_capability"] in printed
    assert not list(tmp_path.glob("geoapp-gallery-*"))  # the spooled gallery is removed


def test_bench_gpu_without_cuda_says_so_and_exits_0():
    import os
    import subprocess
    import sys

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-m", "geoapp.bench", "gpu"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no CUDA device is available" in done.stdout


def test_bench_gpu_figures_on_the_cpu(tmp_path, monkeypatch):
    """The GPU benchmark's measurements run on any device: here on the CPU at a tiny size, each timed span lasting
    a quarter of a second, so every figure follows from the counts asked for."""
    import argparse

    from geoapp.bench import gpu
    from geoapp.training.presets import resolve_config

    monkeypatch.setattr(gpu, "time", PlantedClock(0.25))
    cfg = resolve_config("paper-cvusa-90", {"height": 32, "sat_width": 128, "base_channels": 16})
    args = argparse.Namespace(batch=4, references=20, eval_batch=8, chunk_size=8, spool_dir=str(tmp_path))
    out = gpu.measure(cfg, gpu.torch.device("cpu"), args, steps=1, queries=2)
    assert out["precision"] == "fp32"
    assert {k for k, _, _ in gpu.ROWS} <= set(out)
    assert out["train_s_per_step"] == pytest.approx(0.25)  # one timed step
    assert out["satellite_img_per_s"] == pytest.approx(8 / 0.25)  # one batch of 8
    assert out["ranking_us_per_pair"] == pytest.approx(0.25 / (2 * 20) * 1e6)  # 2 queries x 20 references
    assert out["search_ms_per_query"] == pytest.approx(250.0)


def test_bench_search_counts_the_bytes_a_query_reads():
    from geoapp.bench.search import bytes_per_query
    from geoapp.model import ModelConfig

    config = ModelConfig(align_mode="gate-corr", shared_window=True, fov_deg=90.0)  # stages 1-4, block 1's gates
    per_ref = {"features_1.npy": 400.0, "features_2.npy": 200.0, "features_3.npy": 100.0, "features_4.npy": 100.0,
               "gates_1.npy": 64.0, "gate_energy_1.npy": 16.0, "col_energy_1.npy": 8.0, "col_energy_2.npy": 4.0,
               "col_energy_3.npy": 2.0, "col_energy_4.npy": 2.0, "thumbnails.npy": 9999.0, "masks_1.npy": 999.0}
    # a quarter of every stage's columns (90 deg), all of the gates and energies, nothing the UI alone reads
    assert bytes_per_query(config, per_ref) == 800.0 / 4 + 64 + 16 + 16


def test_bench_search_two_stage_ranks_on_a_planted_gallery():
    """Query q's true reference is q, at distance 0.5 from it; the first stage keeps planted candidates."""
    import numpy as np
    import torch

    from geoapp.bench.search import two_stage_ranks
    from geoapp.retrieval.metrics import recall_from_ranks

    dist = torch.ones(4, 6)
    dist[torch.arange(4), torch.arange(4)] = 0.5
    dist[1, 5] = 0.2  # closer to query 1 than its own, and kept: rank 1
    dist[2, 4], dist[2, 5] = 0.1, 0.3  # closer to query 2, but only reference 4 is kept: rank 1
    kept = {0: [0, 1, 2], 1: [5, 1, 3], 2: [2, 4, 0], 3: [0, 1, 2]}  # query 3's true reference is missed

    class Queries:
        def __len__(self):
            return 4

        def slice(self, start, stop):
            return start

    class FirstStage:
        def search(self, query, m):
            return [np.array(kept[query][:m])]

    ranks, found = two_stage_ranks(FirstStage(), Queries(), dist, 3)
    assert ranks.tolist() == [0, 1, 1, 6] and found == 75.0  # a missed tile ranks last (the gallery size)
    assert recall_from_ranks(ranks, 6, ks=(1, 5), top_percent=None) == pytest.approx({"R@1": 25.0, "R@5": 75.0})
    ranks, found = two_stage_ranks(FirstStage(), Queries(), dist, 1)  # only each query's first candidate
    assert ranks.tolist() == [0, 6, 0, 6] and found == 50.0


def test_bench_search_times_a_given_checkpoint_under_its_own_file_names(tiny_checkpoint, tmp_path, capsys,
                                                                         monkeypatch):
    from geoapp.bench import search as bench_search

    monkeypatch.setattr(bench_search, "time", PlantedClock(0.25))  # every timed span lasts a quarter of a second
    bench_search.main(["--only", "latency", "--checkpoint", str(tiny_checkpoint), "--sizes", "24,48",
                       "--physical", "48", "--build-tiles", "8", "--queries", "2", "--rerank", "8",
                       "--chunk-sweep", "16,64", "--work", str(tmp_path)])
    printed = capsys.readouterr().out
    stem = tiny_checkpoint.stem
    assert (tmp_path / f"{stem}_seed_db").is_dir() and (tmp_path / f"{stem}_gallery_48").is_dir()
    assert not list(tmp_path.glob("random_full_*"))  # the given checkpoint is timed: no random model is made
    assert f"model: {tiny_checkpoint}" in printed
    # 8 tiles built in a quarter of a second; the store holds the largest size asked
    assert "build (real path, 8 random 750x750 JPEG tiles" in printed and "CPU): 31 ms per tile" in printed
    assert "physical store: 48 references, store fp16" in printed
    # the sweep runs on the largest real gallery timed exhaustively, with every chunk size asked
    assert "exhaustive chunk-size sweep on 48 refs (median ms): 16: 250, 64: 250; using --chunk-size" in printed
    assert "sum of a 512 MB tensor): 2.1 GB/s" in printed  # 2^29 bytes in a quarter of a second
    # one row per size asked: exhaustive and two-stage median / p90, first stage, setup (two spans)
    rows = [line.split() for line in printed.splitlines() if line.strip().startswith(("24 ", "48 "))]
    assert [r[0] for r in rows] == ["24", "48"]
    assert all(r[1:9] == ["250", "/", "250", "250", "/", "250", "250", "0.5"] for r in rows)


# --------------------------------------------------------------------------------------------- bench serve


def test_bench_serve_arithmetic_on_planted_runs():
    from geoapp.bench.serve import Run, parse_engine_timings, stage_shares, summarize

    timings = parse_engine_timings("model X · searched 10 of 10 references · query took 0.09 s (preprocess 1 ms, "
                                   "encode 20 ms, search 60 ms, results 9 ms)")
    assert timings == pytest.approx({"total": 0.09, "preprocess": 0.001, "encode": 0.02, "search": 0.06,
                                     "results": 0.009})
    assert parse_engine_timings("no timings here") is None
    # ten answers of 0.1 ... 1.0 s (in any order) and two dropped ones, in 4 s, with 1.5 s of server CPU
    run = Run(round_trips=[0.1 * k for k in (3, 1, 10, 2, 5, 4, 7, 6, 9, 8)], errors=["OSError: closed"] * 2,
              engine=[timings] * 10, wall_s=4.0, cpu_s=1.5, others_s=0.4)
    real = summarize(run)
    assert (real["answered"], real["dropped"], real["errors"]) == (10, 2, {"OSError: closed": 2})
    assert real["answers_per_s"] == pytest.approx(2.5) and real["cpu_ms_per_answer"] == pytest.approx(150.0)
    assert real["p50_s"] == pytest.approx(0.55) and real["p90_s"] == pytest.approx(0.91)  # linear interpolation
    assert real["mean_s"] == pytest.approx(0.55) and real["engine_ms"]["search"] == pytest.approx(60.0)
    assert real["others_cores"] == pytest.approx(0.1)  # 0.4 s of other work over 4 s
    assert real["engine_share"] == pytest.approx(90 / 550)
    bare = summarize(Run(round_trips=[0.2, 0.3], wall_s=0.5, cpu_s=0.04))
    assert "engine_ms" not in bare and bare["cpu_ms_per_answer"] == pytest.approx(20.0)
    shares = stage_shares(real, bare)
    assert shares == pytest.approx({"engine": 90 / 550, "gradio": 250 / 550, "rest": 210 / 550})
    assert summarize(Run(errors=["x"], wall_s=1.0))["answered"] == 0  # nothing answered: no figure, no crash


def test_bench_serve_reads_a_process_cpu_time():
    import os
    import time

    from geoapp.bench.serve import cpu_seconds, machine_busy_seconds

    before, own, busy = cpu_seconds(os.getpid()), time.process_time(), machine_busy_seconds()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn 0.3 s of CPU
        pass
    burnt = time.process_time() - own
    assert cpu_seconds(os.getpid()) - before == pytest.approx(burnt, abs=0.05)
    assert machine_busy_seconds() - busy >= burnt - 0.05  # the machine was busy at least with this process


@pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # Gradio's pandas calls, not ours
def test_bench_serve_bare_app_answers_like_the_real_one(app_server, app_context, tmp_path):
    """The bare app, built from the running app's /config and one of its answers, has the same /localize
    parameters and answers with the same outputs, shaped the same (every picture a file)."""
    from gradio_client import Client, handle_file

    from geoapp.app.handlers import PHOTO_TYPES
    from geoapp.app.screenshot import free_port
    from geoapp.bench.serve import build_bare_app, interface_spec, output_shape

    photo = handle_file(str(app_context.examples.path(app_context.examples.examples[0])))
    real = Client(app_server, verbose=False)
    answer = real.predict(photo, 90.0, list(PHOTO_TYPES)[1], api_name="/localize")
    spec = interface_spec(app_server, answer, tmp_path / "answer")
    bare_app = build_bare_app(spec, concurrency=1)
    bare_app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        bare = Client(bare_app.local_url, verbose=False)
        parameters = [(q["parameter_name"], q["parameter_has_default"], q["parameter_default"])
                      for c in (real, bare) for q in c.view_api(return_format="dict", print_info=False)
                      ["named_endpoints"]["/localize"]["parameters"]]
        half = len(parameters) // 2
        assert parameters[:half] == parameters[half:]
        again = bare.predict(photo, 90.0, list(PHOTO_TYPES)[1], api_name="/localize")
    finally:
        bare_app.close()
    assert output_shape(list(again)) == output_shape(list(answer))
    assert "file" in str(output_shape(list(answer)))  # the gallery's pictures are files in both
    assert again[-1] == answer[-1]  # the fixed values are the real answer's
    assert output_shape([{"b": 1, "a": [answer[0][0]["image"], "x"]}]) == [{"a": ["file", "str"], "b": "int"}]


def test_bench_serve_drives_the_app_and_the_bare_app(tiny_checkpoint, tiny_database, tmp_path, monkeypatch, capsys):
    """End to end on the tiny world: the app and the bare app each started, warmed up and driven by two clients."""
    from geoapp.app.screenshot import free_port
    from geoapp.bench import serve

    monkeypatch.setenv("GEOAPP_HOME", str(tmp_path / "home"))  # the app's example cache goes there
    port = free_port()
    out = serve.main(["--checkpoint", str(tiny_checkpoint), "--reference-db", str(tiny_database), "--clients", "2",
                      "--queries", "2", "--warmup", "1", "--port", str(port), "--follow", "views",
                      "--json", str(tmp_path / "serve.json")])
    for app in ("app", "app_views", "bare"):
        run = out[app][2]
        assert (run["answered"], run["dropped"]) == (4, 0), run
        assert run["cpu_ms_per_answer"] > 0 and 0 < run["p50_s"] <= run["p90_s"]
    assert "engine_ms" in out["app"][2] and "engine_ms" not in out["bare"][2]
    assert set(out["app"][2]["shares"]) == {"engine", "gradio", "rest"}
    printed = capsys.readouterr().out
    assert "# geoapp serve benchmark" in printed and "torch capability" in printed
    assert "warning" not in printed  # the bare app answered like the real one
    assert (tmp_path / "serve.json").is_file()
