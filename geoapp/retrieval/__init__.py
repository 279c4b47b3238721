"""Matching ground queries against satellite references: chunked search, ranks and recall metrics."""

from .metrics import recall_at_k, recall_from_ranks
from .search import Gallery, TopK, gallery_chunks, topk_matches, true_match_ranks

__all__ = ["Gallery", "TopK", "gallery_chunks", "recall_at_k", "recall_from_ranks", "topk_matches", "true_match_ranks"]
