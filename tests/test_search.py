"""geoapp.retrieval.search: chunked top-k and true-match ranks equal a brute-force pass over the full distance
matrix, ties included, for chunk sizes that do not divide the gallery (conventions §5-7)."""

import dataclasses
import weakref

import numpy as np
import pytest
import torch

from geoapp.model import ModelConfig, StageMaps, align_windows
from geoapp.retrieval.metrics import ranks_from_distances
from geoapp.retrieval.search import gather_maps, topk_matches, true_match_ranks
from geoapp.retrieval.window_dots import fp16_window_dots

# small stand-ins for the four stages: (C, H, W) of the satellite map and the ground window width
DIMS = [(3, 4, 16, 4), (4, 3, 8, 2), (5, 2, 4, 1), (6, 1, 2, 1)]
STAGES = (1, 2, 3, 4)


def _maps(n, seed, ground):
    """Integer-valued maps: every score and distance is computed exactly, so equal inputs give equal distances
    whatever chunk they land in, and ties are real ties."""
    gen = torch.Generator().manual_seed(seed)
    feats, masks = [], []
    for c, h, w_sat, w_g in DIMS:
        w = w_g if ground else w_sat
        feats.append(torch.randint(0, 4, (n, c, h, w), generator=gen).float())
        masks.append(torch.randint(0, 3, (n, h, w), generator=gen).float())
    return StageMaps(feats, masks)


def _gallery_with_duplicates(n=23, seed=1):
    """A gallery in which some references are exact copies of others (equal distances = ties)."""
    base = _maps(n, seed, ground=False)
    copy_of = {5: 2, 11: 2, 17: 9, 22: 0}
    idx = torch.tensor([copy_of.get(i, i) for i in range(n)])
    return StageMaps([f[idx] for f in base.features], [m[idx] for m in base.masks])


class CountingGallery:
    """A gallery that is not a StageMaps: only len() and slice(), and it records the slices asked for."""

    def __init__(self, maps):
        self.maps = maps
        self.calls = []

    def __len__(self):
        return len(self.maps)

    def slice(self, start, stop):
        self.calls.append((start, stop))
        return self.maps.slice(start, stop)


def _config(mode):
    return ModelConfig(align_mode=mode, use_ca=mode != "feature", stages=STAGES, shared_window=False)


def _brute_force(ground, gallery, mode):
    full = align_windows(ground, gallery, mode, STAGES, chunk_size=None)
    return full, full.distances.numpy()


@pytest.mark.parametrize("mode", ["mask-corr", "feature"])
@pytest.mark.parametrize("chunk", [1, 5, 7, 23, 64])
def test_topk_equals_sorted_full_matrix_with_ties(mode, chunk):
    ground = _maps(4, 7, ground=True)
    maps = _gallery_with_duplicates()
    gallery = CountingGallery(maps)
    full, d = _brute_force(ground, maps, mode)
    k = 6
    top = topk_matches(_config(mode), ground, gallery, k=k, chunk_size=chunk)
    # brute force: stable sort of each row, so equal distances keep the lower gallery index first
    expected = np.argsort(d, axis=1, kind="stable")[:, :k]
    assert torch.equal(top.indices, torch.as_tensor(expected))
    assert torch.equal(top.distances, torch.as_tensor(np.take_along_axis(d, expected, 1)))
    rows = torch.arange(4)[:, None]
    assert torch.equal(top.offsets, full.offsets[rows, torch.as_tensor(expected)])
    assert np.array_equal(top.headings(), full.headings()[rows.numpy(), expected])
    # every reference was read exactly once, chunk by chunk
    assert gallery.calls == [(s, min(23, s + chunk)) for s in range(0, 23, chunk)]


def test_ties_really_occur_in_the_test_gallery():
    ground = _maps(4, 7, ground=True)
    _, d = _brute_force(ground, _gallery_with_duplicates(), "mask-corr")
    assert np.array_equal(d[:, 5], d[:, 2]) and np.array_equal(d[:, 11], d[:, 2])


def test_k_larger_than_gallery_returns_everything_sorted():
    ground = _maps(2, 3, ground=True)
    maps = _maps(5, 4, ground=False)
    top = topk_matches(_config("mask-corr"), ground, maps, k=50, chunk_size=2)
    _, d = _brute_force(ground, maps, "mask-corr")
    assert top.indices.shape == (2, 5)
    assert torch.equal(top.indices, torch.as_tensor(np.argsort(d, axis=1, kind="stable")))


@pytest.mark.parametrize("chunk", [1, 4, 9, 23, 100])
def test_true_match_ranks_count_strictly_closer_references(chunk):
    ground = _maps(6, 11, ground=True)
    maps = _gallery_with_duplicates()
    # true references include duplicated ones (2 has copies at 5 and 11): a tie counts in the query's favour
    true_index = np.array([2, 5, 9, 0, 22, 13])
    full, d = _brute_force(ground, maps, "mask-corr")
    result = true_match_ranks(_config("mask-corr"), ground, CountingGallery(maps), true_index, chunk_size=chunk)
    expected = ranks_from_distances(torch.as_tensor(d), true_index)
    brute = [(d[q] < d[q, t]).sum() for q, t in enumerate(true_index)]
    assert np.array_equal(result.ranks, expected) and np.array_equal(result.ranks, brute)
    assert np.allclose(result.distances.numpy(), d[np.arange(6), true_index])
    assert torch.equal(result.offsets, full.offsets[torch.arange(6), torch.as_tensor(true_index)])


class OneChunkCheckingGallery(CountingGallery):
    """Records how many chunks it handed out were still alive when the next one was asked for."""

    def __init__(self, maps):
        super().__init__(maps)
        self.handed_out = []
        self.most_alive = 0

    def slice(self, start, stop):
        self.most_alive = max(self.most_alive, sum(ref() is not None for ref in self.handed_out))
        chunk = super().slice(start, stop)
        self.handed_out.append(weakref.ref(chunk))
        return chunk

    def gather(self, indices):  # the true references (not chunks)
        return gather_maps(self.maps, indices)


@pytest.mark.parametrize("search", ["true_match_ranks", "topk_matches"])
def test_a_search_holds_one_gallery_chunk_at_a_time(search):
    ground = _maps(3, 11, ground=True)
    gallery = OneChunkCheckingGallery(_gallery_with_duplicates())
    if search == "true_match_ranks":
        true_match_ranks(_config("mask-corr"), ground, gallery, [0, 1, 2], chunk_size=4)
    else:
        topk_matches(_config("mask-corr"), ground, gallery, k=3, chunk_size=4)
    assert gallery.calls == [(s, min(23, s + 4)) for s in range(0, 23, 4)] and gallery.most_alive == 0


def test_true_match_ranks_reject_bad_indices():
    ground = _maps(2, 1, ground=True)
    maps = _maps(4, 2, ground=False)
    with pytest.raises(ValueError, match="one true reference index per query"):
        true_match_ranks(_config("mask-corr"), ground, maps, [0], chunk_size=2)
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        true_match_ranks(_config("mask-corr"), ground, maps, [0, 4], chunk_size=2)


# ------------------------------------------------------------------------------- fp16 store: the fast top-k
# (channels, rows, satellite width, ground width) of each stage of a small four-stage model (widths halve per stage)
STAGE_SIZES = [(16, 4, 32, 8), (24, 3, 16, 4), (32, 2, 8, 2), (40, 1, 4, 1)]


def _relu_maps(n, seed, ground, dtype=torch.float32, near=None):
    """ReLU-like (non-negative, many zeros) random maps; ``near``: a gallery whose references are noisy copies of
    a few bases, so many similarities crowd around the best ones (the fp16 re-rank has real work to do)."""
    gen = torch.Generator().manual_seed(seed)
    feats, masks = [], []
    for b, (c, h, w_sat, w_g) in enumerate(STAGE_SIZES):
        w = w_g if ground else w_sat
        f = torch.relu(torch.randn(n, c, h, w, generator=gen))
        if near is not None:
            noise = 0.05 * torch.randn(n, c, h, w, generator=gen)
            f = torch.relu(near.features[b][torch.arange(n) % len(near)] + noise)
        feats.append(f.to(dtype))
        masks.append(torch.rand(n, h, w, generator=gen).to(dtype))
    return StageMaps(feats, masks)


def _spec_like_config(mode="mask-corr"):
    return ModelConfig(align_mode=mode, use_ca=True, stages=STAGES, shared_window=False)


def test_fp16_dots_stay_within_their_error_bound():
    ground = _relu_maps(3, 1, ground=True)
    gallery = _relu_maps(200, 2, ground=False, dtype=torch.float16)
    exact = align_windows(ground, gallery, "mask-corr", STAGES, chunk_size=None)
    fast = align_windows(ground, gallery, "mask-corr", STAGES, chunk_size=64, window_dots=fp16_window_dots)
    assert exact.similarity_error is None and fast.similarity_error is not None
    assert torch.equal(fast.offsets, exact.offsets)  # the offsets come from the masks, unchanged
    diff = (fast.similarity - exact.similarity).abs()
    assert (diff <= fast.similarity_error).all()
    # the bound is tight enough to be useful (about 1e-3) and the fp16 values really differ from fp32
    assert fast.similarity_error.max() < 2e-3 and diff.max() > 0


def test_fp16_dots_are_ignored_where_they_do_not_apply():
    ground = _relu_maps(2, 1, ground=True)
    fp32 = _relu_maps(30, 2, ground=False)
    assert align_windows(ground, fp32, "mask-corr", STAGES, window_dots=fp16_window_dots).similarity_error is None
    fp16 = _relu_maps(30, 2, ground=False, dtype=torch.float16)
    assert align_windows(ground, fp16, "feature", STAGES, window_dots=fp16_window_dots).similarity_error is None


@pytest.mark.parametrize("mode", ["mask-corr", "mask-sum"])
@pytest.mark.parametrize("chunk", [7, 64, 500])
def test_fast_topk_equals_the_fp32_topk_on_a_crowded_fp16_gallery(mode, chunk):
    ground = _relu_maps(3, 5, ground=True)
    bases = _relu_maps(4, 6, ground=False)
    gallery = _relu_maps(300, 7, ground=False, dtype=torch.float16, near=bases)
    gallery = CountingGallery(gallery)
    exact = topk_matches(_spec_like_config(mode), ground, gallery, k=10, chunk_size=chunk, fast=False)
    fast = topk_matches(_spec_like_config(mode), ground, gallery, k=10, chunk_size=chunk, fast=True)
    assert torch.equal(fast.indices, exact.indices)
    assert torch.equal(fast.offsets, exact.offsets)
    torch.testing.assert_close(fast.distances, exact.distances, rtol=0, atol=1e-6)
    # the crowd makes the fp16 bound matter: many near-ties around the top ten
    sims = align_windows(ground, gallery.maps, mode, STAGES, chunk_size=None).similarity
    kth = sims.sort(dim=1, descending=True).values[:, 9:10]
    assert ((sims - kth).abs() < 2e-3).sum(1).min() >= 2


def test_fast_topk_with_the_gate_term_equals_the_fp32_topk():
    """A gate_weight model's search: the fp16 first pass and its exact re-rank give the fp32 answer (the gate term is
    computed the same way in both passes, so the dots' error bound still covers the similarity)."""
    gen = torch.Generator().manual_seed(11)
    ground = _relu_maps(3, 5, ground=True)
    bases = _relu_maps(4, 6, ground=False)
    gallery = _relu_maps(300, 7, ground=False, dtype=torch.float16, near=bases)
    for maps, width in ((ground, 1), (gallery, 0)):
        maps.gates = [torch.rand(len(maps), c, w_g if width else w_sat, generator=gen).to(maps.features[0].dtype)
                      for c, _, w_sat, w_g in STAGE_SIZES]
    config = ModelConfig(align_mode="gate-corr", stages=STAGES, shared_window=True, gate_weight=0.5)
    exact = topk_matches(config, ground, gallery, k=10, chunk_size=64, fast=False)
    fast = topk_matches(config, ground, gallery, k=10, chunk_size=64, fast=True)
    assert fast.similarity is not None and torch.equal(fast.indices, exact.indices)
    torch.testing.assert_close(fast.distances, exact.distances, rtol=0, atol=1e-6)
    plain = topk_matches(dataclasses.replace(config, gate_weight=0.0), ground, gallery, k=10, chunk_size=64)
    assert not torch.equal(plain.indices, exact.indices)  # the gate term re-ranks


def test_a_one_photo_search_aligns_chunks_sized_for_its_alignment_mode(monkeypatch):
    import geoapp.retrieval.search as search_module
    from geoapp.search_options import SEARCH_CHUNKS

    read = []

    class Gallery:
        def __len__(self):
            return 5000

        def slice(self, start, stop):
            read.append((start, stop))

    monkeypatch.setattr(search_module, "match_maps", lambda *args, **kwargs: None)
    for config, chunk in ((ModelConfig(align_mode="gate-corr", shared_window=True), SEARCH_CHUNKS["attention"]),
                          (ModelConfig(align_mode="feature", shared_window=False), SEARCH_CHUNKS["features"])):
        read.clear()
        list(search_module.gallery_chunks(config, None, Gallery()))
        assert read[0] == (0, chunk) and read[-1][1] == 5000 and len(read) == -(-5000 // chunk)
    assert SEARCH_CHUNKS["features"] < SEARCH_CHUNKS["attention"]  # feature mode holds float32 copies of its chunk
