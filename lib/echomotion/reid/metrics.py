"""Retrieval metrics (rank-1, mAP) with their chance levels under random ranking.

Protocol of the ReID stage: every frame of a held-out video is a query; the gallery is
all held-out frames (other videos and the other frames of the same video), the query
itself excluded (``exclude_same_index=True`` with query = gallery). Similarity is cosine.
Queries without any positive in the gallery are left out of every average.

Chance levels are exact expectations for a uniformly random ranking of a gallery of
``n`` items holding ``m`` positives: rank-1 = ``m / n``; average precision (derived from
``E[rel_i rel_j] = m (m-1) / (n (n-1))`` for ``i != j``)::

    E[AP] = (m - 1) / (n - 1) + H_n (n - m) / (n (n - 1)),   H_n = sum_{i<=n} 1 / i

(``E[AP] = 1`` when ``n = 1``), averaged over the same queries as the measured values.
"""

from __future__ import annotations

import numpy as np


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def expected_random_ap(n_positives: np.ndarray, n_gallery: np.ndarray) -> np.ndarray:
    """Exact expected AP of a uniformly random ranking (``m`` positives among ``n``)."""
    m = np.asarray(n_positives, dtype=np.float64)
    n = np.asarray(n_gallery, dtype=np.float64)
    n_max = int(n.max(initial=1))
    harmonic_table = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n_max + 1))])
    harmonic = harmonic_table[n.astype(int)]
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = (m - 1) / (n - 1) + harmonic * (n - m) / (n * (n - 1))
    return np.where(n == 1, 1.0, ap)


def _ranked_matches(
    sim: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray, self_cols: np.ndarray | None
) -> np.ndarray:
    """(q, n) boolean matches of each query's ranked gallery, the query itself dropped."""
    if self_cols is not None:
        sim[np.arange(len(sim)), self_cols] = -np.inf  # sorts last, then cut off
    order = np.argsort(-sim, axis=1, kind="stable")  # (q, G)
    matches = gallery_ids[order] == query_ids[:, None]  # (q, G)
    return matches[:, :-1] if self_cols is not None else matches


def rank1_and_map(
    query_emb: np.ndarray,
    query_ids: np.ndarray,
    gallery_emb: np.ndarray,
    gallery_ids: np.ndarray,
    exclude_same_index: bool = False,
    chunk: int = 512,
) -> dict[str, float]:
    """Cosine-similarity retrieval: rank-1, mAP and their random-ranking chance levels.

    query_emb: (Q, D); gallery_emb: (G, D). ``exclude_same_index``: query ``i`` is gallery
    item ``i`` (Q == G) and is removed from its own ranking. Queries are processed in chunks
    of ``chunk`` rows. Returns rank1, mAP, chance_rank1, chance_mAP, n_queries (used).
    """
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    if exclude_same_index and len(query_emb) != len(gallery_emb):
        raise ValueError(
            f"exclude_same_index needs query = gallery, got {len(query_emb)} queries "
            f"and {len(gallery_emb)} gallery items"
        )
    q, g = _normalise(query_emb), _normalise(gallery_emb)
    hits, aps, n_pos = [], [], []
    for s in range(0, len(q), chunk):
        cols = np.arange(s, min(s + chunk, len(q))) if exclude_same_index else None
        matches = _ranked_matches(
            q[s : s + chunk] @ g.T, query_ids[s : s + chunk], gallery_ids, cols
        )
        m = matches.sum(axis=1)  # (q,)
        precision = np.cumsum(matches, axis=1) / np.arange(1, matches.shape[1] + 1)  # (q, n)
        aps.append((precision * matches).sum(axis=1) / np.maximum(m, 1))
        hits.append(matches[:, 0])
        n_pos.append(m)
    m, n = np.concatenate(n_pos), len(g) - int(exclude_same_index)
    used = m > 0
    if not used.any():
        raise ValueError("no query has a positive in the gallery")
    return {
        "rank1": float(np.concatenate(hits)[used].mean()),
        "mAP": float(np.concatenate(aps)[used].mean()),
        "chance_rank1": float((m[used] / n).mean()),
        "chance_mAP": float(expected_random_ap(m[used], np.full(used.sum(), n)).mean()),
        "n_queries": int(used.sum()),
    }
