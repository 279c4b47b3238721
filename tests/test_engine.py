"""The localisation engine: top-k and headings equal a brute-force alignment of the whole gallery, the
two-stage search equals the exhaustive one when it re-ranks everything, and the first-stage descriptor computes
the score it documents."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from geoapp.angles import fov_width
from geoapp.data.fov import crop_fov
from geoapp.data.photo import DecodedPhoto
from geoapp.data.polar import polar_transform
from geoapp.data.transforms import to_tensor
from geoapp.model import ModelConfig, StageMaps, align_windows, match_maps, pair_headings
from geoapp.retrieval.build import TileFolderSource, build_database
from geoapp.retrieval.database import DatabaseError, ReferenceDatabase
from geoapp.retrieval.engine import Localizer
from geoapp.retrieval.index import FirstStageIndex, block_widths, compute_first_stage
from geoapp.retrieval.loading import LoadedCheckpoint
from geoapp.retrieval.prior import LocationPrior
from geoapp.retrieval.query import FieldOfViewUnknown, Placement, choose_placement, choose_prior, prepare_query
from geoapp.retrieval.search import gather_maps
from geoapp.testing import demo_model_config, make_random_tiles, random_checkpoint

CONFIG = demo_model_config()  # the served model: gate-corr, shared window, gate term, 64 x 256
N_TILES = 10


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    ckpt = random_checkpoint(root / "tiny.safetensors", CONFIG, seed=0)
    csv_path = make_random_tiles(root / "tiles", N_TILES, size=96, seed=3)
    source = TileFolderSource(csv_path.parent, csv_path, (CONFIG.sat_height, CONFIG.sat_width))
    db = build_database(source, ckpt, root / "db", chunk_size=4, batch_size=4, show_progress=False)
    return {"root": root, "ckpt": ckpt, "source": source, "db": db}


@pytest.fixture(scope="module")
def localizer(world):
    return Localizer(world["ckpt"], world["db"], device="cpu")


def _query(world, tile=4, shift=37):
    """A 90 deg crop (64 x 64, the model's grid) of a tile's polar image."""
    polar = polar_transform(np.asarray(world["source"].load(tile)[1]), CONFIG.sat_height, CONFIG.sat_width)
    return np.ascontiguousarray(crop_fov(polar, 90, shift))


def test_topk_and_headings_equal_brute_force_alignment(world, localizer):
    image = _query(world)
    result = localizer.localize(image, top_k=N_TILES)
    # brute force: the model's own alignment on the whole gallery at once, then a stable sort
    with torch.inference_mode():
        ground = localizer.model.encode_ground(to_tensor(image)[None])
    gallery = ReferenceDatabase.open(world["db"]).slice(0, N_TILES)
    full = match_maps(CONFIG, ground, gallery, chunk_size=None)
    order = np.argsort(full.distances[0].numpy(), kind="stable")
    assert [c.index for c in result.candidates] == order.tolist()
    assert np.allclose([c.distance for c in result.candidates], full.distances[0, order].numpy(), atol=1e-6)
    # the heading: the heading stage's offset refined below its column grid, pair by pair
    chosen = dataclasses.replace(full, offsets=full.offsets[0, order])
    headings = pair_headings(CONFIG, StageMaps.cat([ground] * N_TILES), gather_maps(gallery, order), chosen) % 360.0
    assert np.allclose([c.heading_deg for c in result.candidates], headings, atol=1e-3)  # fp16 vs fp32 window scores
    assert np.allclose([c.score for c in result.candidates], (1 + full.similarity[0, order].numpy()) / 2, atol=1e-6)
    assert [c.offsets for c in result.candidates] == [tuple(full.offsets[0, i].tolist()) for i in order]
    # the same query again gives the same answer
    again = localizer.localize(image, top_k=3)
    assert [(c.index, c.distance) for c in again.candidates] == [(c.index, c.distance) for c in result.candidates[:3]]


def test_result_carries_what_the_ui_shows(world, localizer):
    result = localizer.localize(_query(world), top_k=3)
    assert result.fov_deg == 90.0 and result.fov_source == "crop width" and result.projection == "crop"
    assert result.input_image.shape == (64, 64, 3)
    assert result.ground_mask.shape == (64, 64)
    assert result.device == "cpu" and result.search == "exhaustive" and result.elapsed_s > 0
    assert set(result.timings) == {"preprocess", "encode", "search", "results"}
    for rank, c in enumerate(result.candidates, start=1):
        assert c.rank == rank and 0 <= c.score <= 1 and 0 <= c.heading_deg < 360
        assert c.thumbnail.shape == (96, 96, 3) and c.satellite_mask.shape == (64, 256)
        assert c.path == world["source"].paths[c.index]
        assert (c.lat, c.lon) == tuple(world["source"].latlon[c.index])
        # the window at the heading stage (block 1: 16 of 64 columns) in polar-image columns
        assert c.window_width == 64 and c.window_offset == c.offsets[0] * 4
    text = localizer.describe()
    assert "tiny.safetensors" in text and "10 references" in text and "cpu" in text


def test_two_stage_reranking_everything_equals_exhaustive(world, localizer, monkeypatch):
    two = Localizer(world["ckpt"], world["db"], device="cpu", search="two-stage", rerank=N_TILES)
    # the exhaustive search may time fp32 as faster on this CPU; its fp16 first pass re-ranks in float64 like the
    # two-stage search, so that is the path whose distances must agree to the bit
    monkeypatch.setattr(localizer, "fast_search", True)  # the module's localizer: restored after this test
    # the build saved the FAISS index of the checkpoint's FoV: 90 deg = 4 of the 16 orientation blocks
    assert set(two.first_stage._index_files) == {4}
    for tile, shift in ((4, 37), (7, 200)):
        image = _query(world, tile, shift)
        a, b = localizer.localize(image, top_k=N_TILES), two.localize(image, top_k=N_TILES)
        assert [c.index for c in a.candidates] == [c.index for c in b.candidates]
        assert [c.distance for c in a.candidates] == [c.distance for c in b.candidates]
        assert [c.heading_deg for c in a.candidates] == [c.heading_deg for c in b.candidates]
    assert b.search.startswith("two-stage")


def test_two_stage_reranks_the_first_stage_candidates_exactly(world, localizer, monkeypatch):
    two = Localizer(world["ckpt"], world["db"], device="cpu", search="two-stage", rerank=4)
    # the exhaustive search's fp16 first pass re-ranks in float64 as the two-stage search does: equal to the bit
    monkeypatch.setattr(localizer, "fast_search", True)
    image = _query(world, 2, 100)
    with torch.inference_mode():
        ground = two.model.encode_ground(to_tensor(image)[None])
    candidates = set(two.first_stage.search(ground, 4)[0].tolist())
    exact = {c.index: c.distance for c in localizer.localize(image, top_k=N_TILES).candidates}
    got = two.localize(image, top_k=4).candidates
    assert {c.index for c in got} == candidates
    assert [c.distance for c in got] == sorted(exact[c.index] for c in got)


def test_first_stage_score_is_the_block_aligned_window_cosine(world):
    db = ReferenceDatabase.open(world["db"])
    # with as many PCA dims as sampled blocks the projection is exact on the database's blocks
    arrays = compute_first_stage(db.slice, N_TILES, CONFIG, dims=1000)
    index = FirstStageIndex(CONFIG, arrays["first_stage_projection"], arrays["first_stage_blocks"],
                            arrays["first_stage_energy"])
    localizer = Localizer(world["ckpt"], world["db"], device="cpu")
    with torch.inference_mode():
        ground = localizer.model.encode_ground(to_tensor(_query(world))[None])
    q, n = index.query_vector(ground)
    assert index.orientations == 16 and n == 4  # 90 deg of 16 blocks (22.5 deg each)
    scores = (index.window_vectors(slice(None), n) @ q[0]).reshape(N_TILES, index.orientations)
    # brute force: cosine-like score <g, window at offsets j * m_b> / |window| over the raw stage maps of the
    # stages with whole columns per block (the 256-wide model's block 4 has 8 columns for 16 blocks: left out)
    gallery = db.slice(0, N_TILES)
    widths = block_widths(CONFIG)
    assert widths == {1: 4, 2: 2, 3: 1}
    g = torch.cat([ground.features[s - 1][0].flatten() for s in widths])
    for r in range(N_TILES):
        for j in range(index.orientations):
            parts = []
            for s in widths:
                f = gallery.features[s - 1][r].float()
                w, big_w = ground.features[s - 1].shape[-1], f.shape[-1]
                parts.append(f[:, :, (j * widths[s] + torch.arange(w)) % big_w].flatten())
            window = torch.cat(parts)
            expected = float(g @ window / window.norm())
            assert scores[r, j] == pytest.approx(expected, rel=2e-3, abs=1e-3 * float(g.norm()))
    # and the FAISS search ranks references by their best orientation (up to 8-bit quantisation)
    best = scores.max(1)
    found = index.search(ground, N_TILES)[0]
    assert sorted(found.tolist()) == list(range(N_TILES))
    assert best[found[0]] >= best.max() - 0.02 * abs(best.max())


def test_prepare_query_projections():
    crop = np.full((64, 64, 3), 120, np.uint8)
    image, fov, source, projection = prepare_query(crop, CONFIG)
    assert (fov, source, projection) == (90.0, "crop width", "crop") and image.shape == (64, 64, 3)
    image, fov, _, _ = prepare_query(crop, CONFIG, fov_deg=70, projection="crop")
    assert image.shape == (64, fov_width(70, 256), 3)
    photo = np.full((300, 400, 3), 90, np.uint8)
    image, fov, source, projection = prepare_query(photo, CONFIG, fov_deg=65)
    assert (projection, source) == ("pinhole", "given") and image.shape == (64, fov_width(65, 256), 3)
    with pytest.raises(ValueError, match="field of view is unknown"):
        prepare_query(photo, CONFIG)
    with pytest.raises(ValueError, match="projection must be one of"):
        prepare_query(photo, CONFIG, fov_deg=60, projection="fisheye")


def test_the_query_policy_places_a_photo_by_its_exif_then_the_given_fov():
    rgb = np.full((300, 400, 3), 90, np.uint8)

    def camera(exif_fov):
        return DecodedPhoto(rgb, exif_fov_deg=exif_fov)

    # a plausible EXIF FoV wins; the given one is for photos without (the app's slider, the command line's --fov)
    assert choose_placement(camera(65.5), CONFIG, 80.0, "pinhole") == Placement("pinhole", 65.5, "exif")
    assert choose_placement(camera(65.5), CONFIG) == Placement("pinhole", 65.5, "exif")
    assert choose_placement(camera(None), CONFIG, 80.0) == Placement("pinhole", 80.0, "given")
    # an implausible one (outside 10-170 deg, ends included) gives way to the given one, which says so ...
    assert choose_placement(camera(173.4), CONFIG, 80.0) == Placement("pinhole", 80.0, "given", exif_fov_ignored=173.4)
    assert choose_placement(camera(10.0), CONFIG, 80.0).fov_source == "exif"
    assert choose_placement(camera(9.9), CONFIG, 80.0).fov_source == "given"
    # ... and without a given one the error names it
    with pytest.raises(FieldOfViewUnknown, match="implausible horizontal field of view of 173.4 deg") as info:
        choose_placement(camera(173.4), CONFIG)
    assert info.value.exif_fov_deg == 173.4
    with pytest.raises(FieldOfViewUnknown, match="no EXIF focal length") as info:
        choose_placement(camera(None), CONFIG)
    assert info.value.exif_fov_deg is None
    # a crop has no lens: the given FoV, else its width on the model's 64 x 256 grid (96 columns: 135 deg)
    crop = np.zeros((64, 96, 3), np.uint8)
    assert choose_placement(DecodedPhoto(crop, 65.5), CONFIG, 70.0, "crop") == Placement("crop", 70.0, "given")
    assert choose_placement(DecodedPhoto(crop, 65.5), CONFIG, None, "crop") == Placement("crop", 135.0, "crop width")
    assert choose_placement(DecodedPhoto(crop), CONFIG) == Placement("crop", 135.0, "crop width")  # auto
    assert choose_placement(DecodedPhoto(crop, 65.5), CONFIG).projection == "pinhole"  # auto: EXIF -> a camera's
    with pytest.raises(ValueError, match="must be 64 px high and at most 256 px wide"):
        choose_placement(camera(None), CONFIG, None, "crop")
    # the engine's preparation follows it
    image, fov, source, projection = prepare_query(camera(65.5), CONFIG, fov_deg=80.0)
    assert (fov, source, projection) == (65.5, "exif", "pinhole") and image.shape == (64, fov_width(65.5, 256), 3)


def test_the_query_policy_takes_the_given_prior_else_the_exif_gps():
    located = DecodedPhoto(np.zeros((32, 32, 3), np.uint8), exif_gps=(41.5, -93.6))
    given = LocationPrior(40.0, -75.0, 500.0)
    assert choose_prior(located, given, 1000.0) is given
    assert choose_prior(located, None, 1000.0) == LocationPrior(41.5, -93.6, 1000.0, source="exif")
    assert choose_prior(located) is None  # the EXIF GPS only when a radius asks for it
    assert choose_prior(DecodedPhoto(located.rgb), None, 1000.0) is None  # no GPS: every reference


def test_localizer_refuses_a_database_of_another_checkpoint(world, tmp_path):
    other = random_checkpoint(tmp_path / "other.safetensors", CONFIG, seed=5)
    with pytest.raises(DatabaseError, match="was built with checkpoint"):
        Localizer(other, world["db"], device="cpu")


def test_localizers_of_several_databases_share_one_loaded_checkpoint(world, localizer, tmp_path):
    loaded = LoadedCheckpoint.load(world["ckpt"], "cpu")
    few = build_database(world["source"], world["ckpt"], tmp_path / "few", limit=6, chunk_size=4, batch_size=4,
                         show_progress=False)
    whole, part = Localizer(loaded, world["db"]), Localizer(loaded, few)
    assert whole.model is part.model is loaded.model  # one model in memory
    assert whole.checkpoint_sha == part.checkpoint_sha == localizer.checkpoint_sha
    assert (len(whole.db), len(part.db)) == (N_TILES, 6)
    query = _query(world)
    # sharing the model changes nothing: the same answers as a localizer that loaded the checkpoint itself
    assert [c.index for c in whole.localize(query, top_k=3).candidates] == [
        c.index for c in localizer.localize(query, top_k=3).candidates]
    assert all(c.index < 6 for c in part.localize(query, top_k=3).candidates)
    other = LoadedCheckpoint.load(random_checkpoint(tmp_path / "other.safetensors", CONFIG, seed=5), "cpu")
    with pytest.raises(DatabaseError, match="was built with checkpoint"):
        Localizer(other, few)


def test_first_stage_orientations_are_22_5_degrees_where_the_stage_widths_allow():
    from geoapp.model import ModelConfig
    from geoapp.retrieval.index import num_orientations

    full, demo = ModelConfig(), ModelConfig(ground_height=64, sat_height=64, sat_width=256)
    assert num_orientations(full) == 16 and block_widths(full) == {1: 8, 2: 4, 3: 2, 4: 1}
    assert num_orientations(demo) == 16 and block_widths(demo) == {1: 4, 2: 2, 3: 1}  # block 4: 8 columns
    odd = ModelConfig(sat_width=384)  # 12 stage-4 columns: 16 blocks would not tile them
    assert num_orientations(odd) == 12 and block_widths(odd) == {1: 8, 2: 4, 3: 2, 4: 1}
    block4 = ModelConfig(stages=(4,), ground_height=64, sat_height=64, sat_width=256)  # no finer stage: 45 deg
    assert num_orientations(block4) == 8 and block_widths(block4) == {4: 1}
    with pytest.raises(ValueError, match="no stage"):
        block_widths(block4, orientations=16)


def test_gate_corr_database_stores_gates_and_topk_equals_brute_force(tmp_path, world):
    """A gate-corr model's database holds the CA column gates of its used stages; the engine's answer (with either
    search precision it may choose) equals the model's own alignment of the whole gallery."""
    config = ModelConfig(ground_height=64, sat_height=64, sat_width=256, align_mode="gate-corr", base_channels=16,
                         wrap_satellite=True, shared_window=False, gate_weight=0.0)  # every stage's gates stored
    ckpt = random_checkpoint(tmp_path / "gates.safetensors", config, seed=1)
    db_path = build_database(world["source"], ckpt, tmp_path / "db", chunk_size=4, batch_size=4, show_progress=False)
    db = ReferenceDatabase.open(db_path)
    assert [db.array(f"gates_{s}").shape for s in (1, 2, 3, 4)] == [(N_TILES, 16, 64), (N_TILES, 32, 32),
                                                                     (N_TILES, 64, 16), (N_TILES, 128, 8)]
    # the precomputed gate energies are those of the stored gates, and give the scores computed from the gates
    from geoapp.model.align import gate_energy

    stored = db.slice(0, N_TILES)
    for s in (1, 2, 3, 4):
        assert torch.equal(stored.gate_energy[s - 1], gate_energy(stored.gates[s - 1]))
    loc = Localizer(ckpt, db_path, device="cpu")
    with torch.inference_mode():
        g = loc.model.encode_ground(to_tensor(_query(world))[None])
        with_e = align_windows(g, stored, "gate-corr", config.stages)
        stored.gate_energy = None
        without = align_windows(g, stored, "gate-corr", config.stages)
    assert torch.equal(with_e.offsets, without.offsets)
    torch.testing.assert_close(with_e.distances, without.distances)
    assert set(loc.search_timings) == {"fp16 first pass", "fp32"}
    # the status line names the model's measured accuracy; a random checkpoint has none, and says so
    assert "model accuracy unknown" in loc.describe() and ("fp16-first-pass" in loc.describe()) == loc.fast_search
    image = _query(world)
    with torch.inference_mode():
        ground = loc.model.encode_ground(to_tensor(image)[None])
        full = align_windows(ground, db.slice(0, N_TILES), "gate-corr", config.stages, chunk_size=None)
    order = np.argsort(full.distances[0].numpy(), kind="stable")
    for fast in (True, False):
        loc.fast_search = fast
        result = loc.localize(image, top_k=N_TILES)
        assert [c.index for c in result.candidates] == order.tolist()
        assert np.allclose([c.distance for c in result.candidates], full.distances[0, order].numpy(), atol=1e-5)


def test_auto_search_takes_the_two_stage_search_from_its_threshold_on(world, monkeypatch):
    import geoapp.localize as cli
    from geoapp import search_options
    from geoapp.retrieval import loading

    db = ReferenceDatabase.open(world["db"])
    assert loading.choose_search("auto", db) == "exhaustive"  # 10 references, far below the threshold
    monkeypatch.setattr(loading, "TWO_STAGE_FROM", N_TILES)
    assert loading.choose_search("auto", db) == "two-stage"
    auto = Localizer(world["ckpt"], world["db"], device="cpu", rerank=N_TILES)
    assert auto.search_mode == "two-stage" and auto.localize(_query(world), top_k=3).search.startswith("two-stage")
    assert "its recall was not measured" in auto.search_text()  # the tiny database has no calibration
    assert loading.choose_search("exhaustive", db) == "exhaustive"
    with pytest.raises(ValueError, match="search must be one of"):
        loading.choose_search("fast", db)
    # one copy of the rule's numbers, read by the engine and the command line; --help does not load torch
    assert loading.SEARCH_MODES is search_options.SEARCH_MODES and search_options.TWO_STAGE_FROM == 5000
    probe = "import sys, geoapp.localize as c; c.parse_args(['x']); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          cwd=Path(cli.__file__).parent.parent).stdout.strip() == "False"


def test_a_database_without_a_first_stage_is_searched_exhaustively_or_refused(world, tmp_path, monkeypatch):
    from geoapp.retrieval import loading

    db_path = build_database(world["source"], world["ckpt"], tmp_path / "db", batch_size=4, first_stage_dims=0,
                             show_progress=False)
    monkeypatch.setattr(loading, "TWO_STAGE_FROM", 1)
    assert loading.choose_search("auto", ReferenceDatabase.open(db_path)) == "exhaustive"
    with pytest.raises(ValueError, match="has none .*--first-stage-dims"):
        Localizer(world["ckpt"], db_path, device="cpu", search="two-stage")
