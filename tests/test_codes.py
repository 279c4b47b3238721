"""Compact reference stores (``build_db --store int8|int4|compact``, geoapp.retrieval.codes): they decode to values
within half a quantisation step of the fp16 store's, the engine answers through them like through the fp16 store,
the format records its store kind, and a database of another format version is refused with both versions."""

import json

import numpy as np
import pytest
import torch

from geoapp.data.fov import crop_fov
from geoapp.data.polar import polar_transform
from geoapp.model import StageMaps
from geoapp.model.align import column_energy, gate_energy
from geoapp.retrieval.build import TileFolderSource, build_database
from geoapp.retrieval.codes import (
    FP16,
    STORES,
    CodedStage,
    DeferredMaps,
    GatheredStage,
    decode_features,
    encode_features,
    pack,
    store_kind,
    unpack,
)
from geoapp.retrieval.database import FORMAT_VERSION, DatabaseError, ReferenceDatabase
from geoapp.retrieval.engine import Localizer
from geoapp.retrieval.search import IndexedGallery, topk_matches
from geoapp.testing import demo_model_config, make_random_tiles, random_checkpoint

CONFIG = demo_model_config()  # the served model: gate-corr, shared window, gate term, 64 x 256
N_TILES = 12
# |similarity(int8 store) - similarity(fp16 store)| of every answered pair stays below this (a cosine-type score in
# [-1, 1]; measured here: ~1e-3 for int8). The per-value bound is exact: half a step plus the fp16 rounding.
INT8_SIMILARITY_BOUND = 0.01
OTHER_STORES = [name for name, kind in STORES.items() if kind is not FP16]  # each compared with the fp16 store
CODED_FEATURES = [name for name, kind in STORES.items() if kind.feature_bits is not None]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("codes")
    ckpt = random_checkpoint(root / "tiny.safetensors", CONFIG, seed=0)
    csv_path = make_random_tiles(root / "tiles", N_TILES, size=96, seed=5)
    source = TileFolderSource(csv_path.parent, csv_path, (CONFIG.sat_height, CONFIG.sat_width))
    dbs = {store: build_database(source, ckpt, root / f"db_{store}", chunk_size=5, batch_size=4,
                                 show_progress=False, first_stage_dims=8, store=store)
           for store in STORES}
    return {"root": root, "ckpt": ckpt, "source": source, "dbs": dbs}


def _query(world, tile, shift):
    polar = polar_transform(np.asarray(world["source"].load(tile)[1]), CONFIG.sat_height, CONFIG.sat_width)
    return np.ascontiguousarray(crop_fov(polar, 90, shift))


def test_pack_round_trip():
    codes = torch.randint(0, 16, (3, 5, 7, 8), dtype=torch.uint8)
    assert torch.equal(unpack(pack(codes, 4), 4), codes)
    assert pack(codes, 4).shape == (3, 5, 7, 4)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_codes_are_within_half_a_step(bits):
    x = torch.rand(6, 16, 32, 8).half() * 5
    x[0, :, 3] = 0  # an all-zero channel
    codes, step = encode_features(x, bits)
    dec = decode_features(codes, step, bits).float()
    s = step.float()[:, None, :, None]
    # half a step, the step's own float16 rounding (|x| <= levels * step * (1 + 2^-11)), the result's rounding
    assert ((dec - x.float()).abs() <= s * (0.5 + (2**bits - 1) * 2**-11) + dec.abs() * 2**-11 + 1e-7).all()
    assert (dec[0, :, 3] == 0).all()
    with pytest.raises(ValueError, match="non-negative"):
        encode_features(-x, bits)


@pytest.mark.parametrize("store", OTHER_STORES)
def test_store_decodes_near_the_fp16_store_and_its_energies_are_the_decoded_ones(world, store):
    fp16, q = ReferenceDatabase.open(world["dbs"]["fp16"]), ReferenceDatabase.open(world["dbs"][store])
    kind = STORES[store]
    a, b = fp16.slice(0, N_TILES), q.slice(0, N_TILES)
    for s in range(4):
        bits = kind.bits(s + 1)
        assert b.features[s].dtype == torch.float16 and b.features[s].shape == a.features[s].shape
        peak = a.features[s].float().amax(dim=(2, 3), keepdim=True)  # N x C x 1 x 1
        step = 0 if bits is None else peak / (2**bits - 1)  # float16 features are the fp16 store's
        assert ((b.features[s].float() - a.features[s].float()).abs() <= step * 0.51 + 1e-3 * (bits is not None)).all()
        assert torch.equal(b.col_energy[s], column_energy(b.features[s]))
        mask_error = 0.5 / 255 + 1e-3 if kind.coded_attention else 0.0
        assert (b.masks[s].float() - a.masks[s].float()).abs().max() <= mask_error
    assert (b.gates[0].float() - a.gates[0].float()).abs().max() <= (0.01 if kind.coded_attention else 0.0)
    assert torch.equal(b.gate_energy[0], gate_energy(b.gates[0]))
    gathered = q.gather([7, 2])
    assert torch.equal(gathered.features[0], b.features[0][[7, 2]])
    # the thumbnail is a JPEG of the same picture
    diff = np.abs(q.thumbnail(3).astype(int) - fp16.thumbnail(3).astype(int)).mean()
    assert q.thumbnail(3).shape == (96, 96, 3) and diff < 12


def test_int8_store_answers_like_the_fp16_store(world):
    fp16 = Localizer(world["ckpt"], world["dbs"]["fp16"], device="cpu", search="exhaustive")
    int8 = Localizer(world["ckpt"], world["dbs"]["int8"], device="cpu", search="exhaustive")
    worst = 0.0
    for tile in range(N_TILES):
        query = _query(world, tile, shift=17 * tile)
        a = fp16.localize(query, fov_deg=90, top_k=3, projection="crop")
        b = int8.localize(query, fov_deg=90, top_k=3, projection="crop")
        assert b.candidates[0].index == a.candidates[0].index
        worst = max(worst, float(np.abs(a.similarities - b.similarities).max()))
        assert b.candidates[0].thumbnail.shape == (96, 96, 3)
        assert b.candidates[0].satellite_mask is not None
    assert worst <= INT8_SIMILARITY_BOUND


def test_metadata_records_the_store_and_the_sizes(world):
    sizes = {}
    for store, path in world["dbs"].items():
        db = ReferenceDatabase.open(path)
        meta = json.loads((path / "metadata.json").read_text())
        assert meta["store"] == store == db.store.name and meta["format_version"] == FORMAT_VERSION
        assert all(f["bytes"] == (path / name).stat().st_size for name, f in meta["files"].items())
        assert ("thumbnails.jpg.bin" in meta["files"]) == db.store.jpeg_thumbnails
        assert ("thumbnails.npy" in meta["files"]) != db.store.jpeg_thumbnails
        sizes[store] = meta["layout"]["bytes_per_reference"]
    assert sizes["compact"] < sizes["int4"] < sizes["int8"] < sizes["fp16"] / 2


# the metadata's words for the arrays, as databases built before the store kinds were objects wrote them: a database
# keeps describing itself in them
FP16_WORDS = {"features": "features_<b>.npy: float16, R x W_b x C_b x H_b (column-major per reference; StageMaps view "
                          "= permute(0, 2, 3, 1))",
              "masks": "masks_<b>.npy: float16, R x H_b x W_b",
              "gates": "gates_<b>.npy: float16, R x C_b x W_b (the stages that choose windows)",
              "thumbnails": "thumbnails.npy: uint8 R x 96 x 96 x 3"}
COMPACT_WORDS = {"features": "features_<b>.npy: uint8 codes of [2, 2, 2, 4] bits (stages 1-4), R x W_b x "
                             "C_b*H_b*bits/8 (each column packed), feature_scale_<b>.npy float16 R x C_b steps; see "
                             "geoapp.retrieval.codes",
                 "masks": "masks_<b>.npy: uint8 codes, R x H_b x W_b",
                 "gates": "gates_<b>.npy: uint8 codes, R x C_b x W_b (the stages that choose windows)",
                 "thumbnails": "thumbnails.jpg.bin: JPEGs, thumbnail_offsets.npy: int64 R + 1 offsets"}


@pytest.mark.parametrize(("store", "words"), [("fp16", FP16_WORDS), ("compact", COMPACT_WORDS)])
def test_the_layout_words_are_the_ones_databases_always_wrote(world, store, words):
    layout = json.loads((world["dbs"][store] / "metadata.json").read_text())["layout"]
    assert {k: layout[k] for k in words} == words
    assert STORES[store].describe(use_ca=False)["masks"] is None


def test_a_store_is_looked_up_by_name_and_an_unknown_name_lists_the_known_ones():
    assert all(store_kind(name) is kind and store_kind(kind) is kind for name, kind in STORES.items())
    with pytest.raises(ValueError, match=r"store must be one of \('fp16', 'int8', 'int4', 'compact'\), got 'int3'"):
        store_kind("int3")


@pytest.mark.parametrize("version", [1, FORMAT_VERSION + 1])
def test_other_format_version_is_refused_naming_both(world, tmp_path, version):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(world["dbs"]["fp16"], old)
    meta = json.loads((old / "metadata.json").read_text())
    meta["format_version"] = version
    meta.pop("store")
    (old / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(DatabaseError, match=rf"version {version} .*version {FORMAT_VERSION}.*build_db"):
        ReferenceDatabase.open(old)


def test_unknown_store_is_refused(world, tmp_path):
    import shutil

    odd = tmp_path / "odd"
    shutil.copytree(world["dbs"]["int8"], odd)
    meta = json.loads((odd / "metadata.json").read_text())
    meta["store"] = "int3"
    (odd / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(DatabaseError, match="unknown store kind 'int3'"):
        ReferenceDatabase.open(odd)


@pytest.mark.parametrize("store", STORES)
def test_cli_store_option(world, tmp_path, capsys, store):
    from geoapp.build_db import main

    out = tmp_path / "cli_db"
    tiles = world["root"] / "tiles"
    args = ["--checkpoint", str(world["ckpt"]), "--tiles", str(tiles), "--locations", str(tiles / "tiles.csv"),
            "--out", str(out), "--limit", "3", "--store", store]
    assert main(args) == 0
    assert ReferenceDatabase.open(out).store is STORES[store]


def test_cli_refuses_an_unknown_store_naming_the_known_ones(world, tmp_path, capsys):
    from geoapp.build_db import main

    with pytest.raises(SystemExit):
        main(["--checkpoint", str(world["ckpt"]), "--tiles", "t", "--locations", "t.csv", "--out", str(tmp_path),
              "--store", "int3"])
    err = capsys.readouterr().err
    assert "--store: invalid choice" in err and "int3" in err and all(name in err for name in STORES)


@pytest.mark.parametrize("store", CODED_FEATURES)
def test_search_decodes_only_window_columns_and_gives_the_decoded_store_answer(world, store):
    """The search reads a coded store's windows through ``CodedStage.window_rows``, bit for bit the columns of the
    whole decoded map; its top-k equals the plain fp32 search over the eagerly decoded maps."""
    db = ReferenceDatabase.open(world["dbs"][store])
    maps = db.slice(0, N_TILES)
    coded = maps.features[0]
    assert isinstance(coded, CodedStage) and coded._decoded is None  # nothing decoded by slicing
    n, c, h, w = coded.shape
    rows = torch.tensor([0, 5, w + 3, 7 * w + w - 1])
    whole = coded.decoded().permute(0, 3, 1, 2).reshape(n * w, c * h)
    assert torch.equal(coded.window_rows(rows), whole[rows])

    loc = Localizer(world["ckpt"], world["dbs"][store], device="cpu", search="exhaustive")
    ground = loc.encode(_query(world, 4, 77))
    eager = StageMaps([f.decoded() if isinstance(f, CodedStage) else f for f in maps.features],
                      [m.decoded() for m in maps.masks], maps.col_energy, maps.gates, maps.gate_energy)
    lazy = topk_matches(CONFIG, ground, db, 5, chunk_size=5, fast=True)
    exact = topk_matches(CONFIG, ground, eager, 5, chunk_size=5, fast=False)
    assert torch.equal(lazy.indices, exact.indices)
    assert torch.allclose(lazy.distances, exact.distances, atol=1e-6)


@pytest.mark.parametrize("store", STORES)
def test_gathered_references_read_their_windows_from_the_store(world, store):
    """A gather (a re-rank's candidates) stays a view of the store: its window columns are the store's rows of those
    references, bit for bit what the eager gather's maps hold, and the gathered search answers as before."""
    db = ReferenceDatabase.open(world["dbs"][store])
    picked = [7, 2, 11]
    gathered = db.gather(picked).features[0]
    assert isinstance(gathered, GatheredStage) and gathered._decoded is None
    n, c, h, w = gathered.shape
    rows = torch.tensor([0, w + 5, 2 * w + w - 1, 3])
    eager = db.slice(0, N_TILES).features[0][torch.tensor(picked)]
    eager = eager.decoded() if isinstance(eager, CodedStage) else eager
    whole = eager.permute(0, 3, 1, 2).reshape(n * w, c * h)
    assert torch.equal(gathered.window_rows(rows), whole[rows])
    assert torch.equal(gathered.decoded(), eager)
    loc = Localizer(world["ckpt"], world["dbs"][store], device="cpu", search="exhaustive")
    ground = loc.encode(_query(world, 2, 150))
    sub = topk_matches(CONFIG, ground, IndexedGallery(db, np.array(picked)), 3, chunk_size=5, fast=True)
    plain = StageMaps([f.decoded() if isinstance(f, DeferredMaps) else f for f in db.gather(picked).features],
                      None, db.gather(picked).col_energy, db.gather(picked).gates, db.gather(picked).gate_energy)
    exact = topk_matches(CONFIG, ground, plain, 3, chunk_size=5, fast=False)
    assert torch.equal(sub.indices, exact.indices)
    assert torch.allclose(sub.distances, exact.distances, atol=1e-6)
