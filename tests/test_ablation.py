"""geoapp.training.ablation: the runs it launches differ only in the ablated flags, and its tables read the
run folders that python -m geoapp.train writes."""

import json
from types import SimpleNamespace

from geoapp.train import config_from_args
from geoapp.training.ablation import RECIPE, ROWS, recipe_command, recipe_table, run_command, seeds_table, table


def _train_config(cmd):
    cfg, _ = config_from_args(cmd[3:])  # drop "python -m geoapp.train"
    return SimpleNamespace(**cfg.flat())  # every field by its flag's name


def test_rows_resolve_to_the_paper_ablation_and_share_everything_else(tmp_path):
    cfgs = {row: _train_config(run_command(row, 70.0, 500, tmp_path, "data/synth")) for row in ROWS}
    assert (cfgs["resnet18"].use_ca, cfgs["resnet18"].align_mode, tuple(cfgs["resnet18"].stages)) == (
        False, "feature", (4,))
    assert (cfgs["ca"].use_ca, cfgs["ca"].align_mode, tuple(cfgs["ca"].stages)) == (True, "feature", (4,))
    assert (cfgs["ca-fca"].align_mode, tuple(cfgs["ca-fca"].stages)) == ("gate-corr", (4,))
    assert (cfgs["ca-fca-fmc"].align_mode, tuple(cfgs["ca-fca-fmc"].stages)) == ("gate-corr", (1, 2, 3, 4))
    assert (cfgs["ca-maskfca-fmc"].align_mode, tuple(cfgs["ca-maskfca-fmc"].stages)) == ("mask-corr", (1, 2, 3, 4))
    # the demo's shared window (block 1's gates place every stage's window) in its rows; feature alignment has none
    assert {row: cfg.shared_window for row, cfg in cfgs.items()} == {
        "resnet18": False, "ca": False, "ca-fca": True, "ca-fca-fmc": True, "ca-fca-fmc-cos": True,
        "ca-fca-own-fmc": False, "ca-maskfca-fmc": True, "ca-fmc": False, "fmc": False}
    # the demo's gate term counts in its gate-corr rows; the paper's score row and the other modes have none
    assert {row: cfg.gate_weight for row, cfg in cfgs.items() if cfg.gate_weight} == {
        "ca-fca": 0.2, "ca-fca-fmc": 0.2, "ca-fca-own-fmc": 0.2}
    for cfg in cfgs.values():
        assert (cfg.fov, cfg.max_steps, cfg.max_minutes, cfg.batch_size, cfg.align_loss) == (70.0, 500, 0.0, 32, 0.3)
    ablated = {"use_ca", "align_mode", "stages", "shared_window", "gate_weight", "out"}
    # --train-fov: trained once at 90 deg, evaluated at both FoVs of the table
    once = _train_config(run_command("ca", 90.0, 1000, tmp_path, "data/synth", [90.0, 70.0]))
    assert (once.fov, once.eval_fovs, once.max_steps) == (90.0, (90.0, 70.0), 1000)
    base = {k: v for k, v in vars(cfgs["ca-fca-fmc"]).items() if k not in ablated}
    for cfg in cfgs.values():
        assert {k: v for k, v in vars(cfg).items() if k not in ablated} == base


def test_recipe_variants_change_one_setting_each(tmp_path):
    demo = _train_config(recipe_command("demo", 3.0, tmp_path, "data/synth"))
    assert demo.max_minutes == 3.0
    changed = {name: {k for k, v in vars(_train_config(recipe_command(name, 3.0, tmp_path, "data/synth"))).items()
                      if v != getattr(demo, k) and k != "out"} for name in RECIPE}
    assert changed == {"demo": set(), "bf16": {"precision"}, "batch16": {"batch_size"},
                       "batch64": {"batch_size"}, "fullres": {"height", "sat_width"}}


def test_tables_read_the_run_folders(tmp_path):
    run = tmp_path / "ca-fmc-90"
    run.mkdir()
    metrics = {"R@1": 39.04, "R@5": 64.3, "R@10": 72.3, "R@1%": 72.3, "heading_median_deg": 4.22,
               "heading_within_10deg": 64.3}
    (run / "final_eval.json").write_text(json.dumps({"by_fov": {"90": metrics}}))
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 500, "elapsed_s": 270.0,
                                                   "pairs_per_s": 60.0}) + "\n")
    text = table(tmp_path, ["ca-fmc", "ca"], [90.0])
    assert "| +CA+FMC | 90° | 90° | 39.0 | 64.3 | 72.3 | 4.2° | 64.3% | 4.5 |" in text
    assert "| +CA | 90° | 90° | not run |" in text
    # --train-fov: one run trained at 90 deg serves every FoV row; its shift-seed spread is shown beside R@1
    metrics70 = dict(metrics, **{"R@1": 24.91, "R@1_std": 1.62})
    (run / "final_eval.json").write_text(json.dumps({"by_fov": {"90": metrics, "70": metrics70}}))
    text = table(tmp_path, ["ca-fmc"], [90.0, 70.0, 60.0], train_fov=90.0)
    assert "| +CA+FMC | 90° | 70° | 24.9 ± 1.6 | 64.3 |" in text
    assert "| +CA+FMC | 90° | 60° | not evaluated at this FoV |" in text
    (tmp_path / "recipe-demo").mkdir()
    (tmp_path / "recipe-demo" / "final_eval.json").write_text(json.dumps({"by_fov": {"90": metrics}}))
    records = [{"kind": "train", "step": s, "pairs_per_s": p} for s, p in ((20, 58.0), (340, 62.0))]
    # a recipe is a choice: its table reads the best record of the validation split, not the test split's figures
    records += [{"kind": "val", "step": s, "R@1": r1, "R@5": 60.0 + r1 / 10, "R@10": 70.0, "heading_median_deg": 3.0}
                for s, r1 in ((200, 30.5), (340, 41.25))]
    (tmp_path / "recipe-demo" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    text = recipe_table(tmp_path, ["demo", "bf16"])
    assert "| demo preset: precision auto, batch 32, 64x256 | 340 | 60 | 41.2 | 64.1 | 70.0 | 3.0° |" in text
    assert "val R@1" in text and "| bf16 autocast | not run |" in text


def test_seeds_table_gives_mean_and_std_over_training_seeds(tmp_path):
    runs = []
    for seed, r1 in enumerate((43.4, 41.2, 40.5)):
        run = tmp_path / f"fca-s{seed}"
        run.mkdir()
        m = {"R@1": r1, "R@10": 70.0 + seed, "heading_median_deg": 2.8125, "heading_within_10deg": 73.0}
        (run / "final_eval.json").write_text(json.dumps({"by_fov": {"90": m}}))
        runs.append(run)
    text = seeds_table(runs + [tmp_path / "fca-s3"], [90.0, 70.0])
    # mean 41.70, sample std 1.51 (ddof 1); R@10 71.0 ± 1.0; one line per FoV, the missing run named
    assert "| 90° | 3 | 41.7 ± 1.5 | 71.0 ± 1.0 | 2.8 ± 0.0 | 73.0 ± 0.0 | 43.4, 41.2, 40.5 |" in text
    assert "| 70° | 0 |" in text and "not finished" in text and "fca-s3" in text
