"""The first stage's index choice: the compressed inverted-file index keeps the true reference among the top M of
a planted gallery as the flat one does, the size rule picks as documented, and stored blocks stay memory-mapped."""

import faiss
import numpy as np
import pytest

from geoapp.retrieval import index as ix
from geoapp.retrieval.index import FirstStageIndex, compressed_lists, is_memory_mapped, use_compressed
from geoapp.testing import demo_model_config

CONFIG = demo_model_config()
REFS, O, D, N_BLOCKS, M = 3000, 16, 32, 4, 20


@pytest.fixture(scope="module")
def planted():
    """Random blocks and queries that are noisy copies of a window of a known reference (the planted truth)."""
    rng = np.random.default_rng(0)
    blocks = rng.standard_normal((REFS, O, D)).astype(np.float16)
    energy = (blocks.astype(np.float32) ** 2).sum(-1) * rng.uniform(1.0, 1.5, (REFS, O)).astype(np.float32)
    truth = rng.choice(REFS, 24, replace=False)
    turns = rng.integers(0, O, len(truth))
    cols = (turns[:, None] + np.arange(N_BLOCKS)[None, :]) % O
    q = blocks[truth[:, None], cols].astype(np.float32)  # Q x n x D
    q += 0.6 * rng.standard_normal(q.shape).astype(np.float32)
    projection = np.zeros((D, 8), np.float32)  # not used: the queries are given as vectors
    return {"blocks": blocks, "energy": energy, "projection": projection, "truth": truth,
            "queries": q.reshape(len(truth), -1)}


def _index(planted, compressed):
    return FirstStageIndex(CONFIG, planted["projection"], planted["blocks"], planted["energy"], compressed=compressed)


def test_compressed_index_keeps_the_planted_reference_as_the_flat_one_does(planted):
    flat, small = _index(planted, False), _index(planted, True)
    assert isinstance(small.faiss_index(N_BLOCKS), faiss.IndexIVF)
    assert isinstance(flat.faiss_index(N_BLOCKS), faiss.IndexScalarQuantizer)
    got_flat = flat.search_vectors(planted["queries"], N_BLOCKS, M)
    got_small = small.search_vectors(planted["queries"], N_BLOCKS, M)
    kept_flat = [t in c for t, c in zip(planted["truth"], got_flat)]
    kept_small = [t in c for t, c in zip(planted["truth"], got_small)]
    assert all(kept_flat) and kept_small == kept_flat
    for q, cand in zip(planted["queries"], got_small):
        assert len(cand) == M == len(set(cand.tolist()))
        scores = small.exact_scores(cand, q)  # ordered by the exact first-stage score, best first
        assert np.all(np.diff(scores) <= 1e-6)


def test_exact_scores_equal_the_window_vectors_inner_products(planted):
    index = _index(planted, False)
    refs = np.array([3, 17, 2999])
    q = planted["queries"][0]
    expected = (index.window_vectors(refs, N_BLOCKS) @ q).reshape(len(refs), O).max(1)
    assert np.allclose(index.exact_scores(refs, q), expected, rtol=1e-5, atol=1e-5)


def test_the_size_rule_picks_the_flat_index_up_to_the_threshold(planted, monkeypatch):
    assert not use_compressed(ix.COMPRESSED_ABOVE) and use_compressed(ix.COMPRESSED_ABOVE + 1)
    assert not _index(planted, None).compressed  # 3,000 references: the exact flat index
    monkeypatch.setattr(ix, "COMPRESSED_ABOVE", REFS - 1)
    index = _index(planted, None)
    assert index.compressed and isinstance(index.faiss_index(N_BLOCKS), faiss.IndexIVF)
    assert compressed_lists(1_000_000 * 16) == (1024, 64)  # a million references, 16 orientations
    assert compressed_lists(REFS * O) == (256, 16)
    assert compressed_lists(10) == (16, 1)


def test_memory_mapped_blocks_stay_mapped_and_are_not_counted_as_ram(planted, tmp_path):
    np.save(tmp_path / "blocks.npy", planted["blocks"])
    np.save(tmp_path / "energy.npy", planted["energy"])
    blocks = np.load(tmp_path / "blocks.npy", mmap_mode="c")
    energy = np.load(tmp_path / "energy.npy", mmap_mode="c")
    index = FirstStageIndex(CONFIG, planted["projection"], blocks, energy, compressed=True)
    assert is_memory_mapped(index.blocks) and np.shares_memory(index.blocks, blocks)
    assert index.mapped_bytes == blocks.nbytes + energy.nbytes
    assert index.ram_bytes == planted["projection"].nbytes
    built = index.faiss_index(N_BLOCKS)
    assert index.ram_bytes > planted["projection"].nbytes + built.ntotal * built.code_size
    in_ram = _index(planted, True)
    assert not is_memory_mapped(in_ram.blocks)
    assert in_ram.ram_bytes >= planted["blocks"].nbytes + planted["energy"].nbytes
