"""Recall metrics (conventions §7) on planted distance matrices: ranks, ties in the query's favour, R@1%."""

import numpy as np
import pytest
import torch

from geoapp.retrieval.metrics import ranks_from_distances, recall_at_k, recall_from_ranks, top_percent_k


def planted(ranks, n_refs: int, seed: int = 0) -> torch.Tensor:
    """A Q x R matrix whose diagonal (true) reference has exactly ``ranks[q]`` references strictly closer."""
    rng = np.random.default_rng(seed)
    d = np.empty((len(ranks), n_refs))
    for q, r in enumerate(ranks):
        others = [j for j in range(n_refs) if j != q]
        rng.shuffle(others)
        d[q, others[:r]] = rng.uniform(0.0, 0.9, r)  # closer than the true one (1.0)
        d[q, others[r:]] = rng.uniform(1.1, 2.0, n_refs - 1 - r)
        d[q, q] = 1.0
    return torch.tensor(d)


def test_ranks_and_recall_on_planted_matrix():
    ranks = [0, 0, 1, 4, 5, 9, 10, 11]
    d = planted(ranks, n_refs=20)
    assert ranks_from_distances(d).tolist() == ranks
    rec = recall_at_k(d)
    assert rec["R@1"] == pytest.approx(100 * 2 / 8)
    assert rec["R@5"] == pytest.approx(100 * 4 / 8)  # ranks 0, 0, 1, 4
    assert rec["R@10"] == pytest.approx(100 * 6 / 8)  # + 5, 9
    assert rec["R@1%"] == pytest.approx(100 * 2 / 8)  # N = 20 < 100 -> k = 1, same as R@1


def test_ties_count_in_the_query_favour():
    # query 0: another reference at exactly the true distance -> still rank 0 (a hit at R@1)
    # query 1: two references strictly closer and one tied -> rank 2
    d = torch.tensor([[0.5, 0.5, 0.9, 1.0], [0.1, 0.7, 0.2, 0.7]])
    assert ranks_from_distances(d).tolist() == [0, 2]
    assert recall_at_k(d, ks=(1, 3))["R@1"] == 50.0
    assert recall_at_k(d, ks=(1, 3))["R@3"] == 100.0
    # all references tied with the true one: every query is a hit
    assert recall_at_k(torch.ones(5, 5))["R@1"] == 100.0


def test_true_index_other_than_diagonal():
    d = torch.tensor([[0.3, 0.1, 0.2], [0.0, 0.5, 0.4]])
    assert ranks_from_distances(d, true_index=[1, 2]).tolist() == [0, 1]
    assert recall_at_k(d, ks=(1, 2), true_index=[1, 2]) == {"R@1": 50.0, "R@2": 100.0, "R@1%": 50.0}


@pytest.mark.parametrize("n,k", [(8884, 88), (8800, 88), (100, 1), (199, 1), (200, 2), (99, 1), (5, 1), (1, 1)])
def test_top_percent_k(n, k):
    assert top_percent_k(n) == k


def test_r_at_1_percent_uses_floor_of_n_over_100():
    n = 8884
    ranks = np.array([0, 50, 87, 88, 89, 5000])  # rank < 88 is a hit
    rec = recall_from_ranks(ranks, n_refs=n)
    assert rec["R@1%"] == pytest.approx(100 * 3 / 6)
    assert rec["R@10"] == pytest.approx(100 * 1 / 6)
    # N < 100 -> k = 1: R@1% equals R@1
    small = recall_from_ranks(np.array([0, 1, 2, 0]), n_refs=50)
    assert small["R@1%"] == small["R@1"] == 50.0


def test_recall_from_ranks_rejects_empty():
    with pytest.raises(ValueError):
        recall_from_ranks(np.array([], dtype=int), n_refs=10)
