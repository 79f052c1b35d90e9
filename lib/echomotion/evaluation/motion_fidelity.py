"""Motion fidelity: does a generated video move like the video that drove it?

Two measures, each beside its mismatched-pair figure (a generated video against other
driving videos) that gives its scale:

- MAFE motion vectors re-extracted from the generated video's ED/ES pair, cosine
  similarity to the conditioning vector (the motion source's vector of features.zarr).
  Vectors are standardised with the store's TRAIN mean/std first (as the diffusion model
  sees them), otherwise pooled post-activation features all point the same way.
- Flow end-point error between the generated video's ED->ES flow and the driving video's
  ED->ES flow, from the same flow provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from echomotion.data import to_tensor
from echomotion.edes import detect_ed_es
from echomotion.evaluation.extractors import batches

if TYPE_CHECKING:  # the flow package imports config, which imports the stage sections
    from echomotion.flow.classical import FlowProvider


def standardise(vectors: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(vectors - mean) / std, guarding zero std."""
    std = np.maximum(np.asarray(std, float), 1e-8)
    return (np.asarray(vectors, float) - np.asarray(mean, float)) / std


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity (N, M) between the rows of ``a`` (N, D) and ``b`` (M, D)."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def epe_matrix(flows_a: np.ndarray, flows_b: np.ndarray) -> np.ndarray:
    """Mean end-point error (N, M) between every flow of ``flows_a`` (N, 2, H, W) and of
    ``flows_b`` (M, 2, H, W)."""
    if flows_a.shape[1:] != flows_b.shape[1:]:
        raise ValueError(f"flow shapes differ: {flows_a.shape[1:]} vs {flows_b.shape[1:]}")
    rows = [np.linalg.norm(flows_b - f[None], axis=1).mean(axis=(1, 2)) for f in flows_a]
    return np.stack(rows)


def matched_and_mismatched(matrix: np.ndarray, sources: Sequence[str]) -> tuple[np.ndarray, ...]:
    """Per row ``i`` of a square matrix (generated i vs conditioning j): the matched value
    ``matrix[i, i]`` and the mean over columns whose source differs from row i's (NaN when
    every column shares it)."""
    sources = np.asarray(sources)
    other = sources[:, None] != sources[None, :]  # (N, N)
    sums = np.where(other, matrix, 0.0).sum(axis=1)
    counts = other.sum(axis=1)
    mismatched = np.divide(sums, counts, out=np.full(len(sums), np.nan), where=counts > 0)
    return np.diagonal(matrix).copy(), mismatched


def retrieval_top1(
    similarity: np.ndarray, sources: Sequence[str], exclude: Sequence[str] | None = None
) -> float:
    """Fraction of rows whose most similar column has the row's own source. With
    ``exclude`` (one source per row), row i ignores the columns of source ``exclude[i]``
    unless that is its own source: the driver is then retrieved among the videos that
    are neither the appearance source nor itself, so a generated video cannot be matched
    to its appearance source by the identity a motion vector also carries."""
    sources = np.asarray(sources)
    if exclude is not None:
        hidden = (sources[None, :] == np.asarray(exclude)[:, None]) & (
            sources[None, :] != sources[:, None]
        )  # (N, N)
        similarity = np.where(hidden, -np.inf, similarity)
    return float((sources[similarity.argmax(axis=1)] == sources).mean())


def ed_es_or_detect(frames: np.ndarray, ed: int, es: int, fps: float) -> tuple[int, int] | None:
    """(ED, ES) when both index ``frames`` and differ, else the label-free detector's pair;
    None when neither gives one."""
    n = len(frames)
    if 0 <= ed < n and 0 <= es < n and ed != es:
        return ed, es
    found = detect_ed_es(frames, fps)
    return (
        (found.ed, found.es) if found.ed >= 0 and found.es >= 0 and found.ed != found.es else None
    )


@torch.no_grad()
def motion_vectors(
    mafe: nn.Module,
    first: np.ndarray,
    second: np.ndarray,
    batch_size: int,
    *,
    device: str | torch.device,
    subtract_still: bool | None = None,
) -> np.ndarray:
    """MAFE motion vectors (N, D) of uint8 frame pairs ``first``, ``second`` (N, H, W), MAFE
    moved to and run on ``device``; ``subtract_still`` overrides MAFE's own setting (``None``:
    the model's, and any module with ``motion_vector(a, b)`` will do)."""
    mafe.to(device).eval()
    options = {} if subtract_still is None else {"subtract_still": subtract_still}
    out = []
    for a, b in zip(batches(first, batch_size), batches(second, batch_size), strict=True):
        out.append(mafe.motion_vector(to_tensor(a).to(device), to_tensor(b).to(device), **options))
    return torch.cat(out).cpu().double().numpy()


def pair_flows(provider: FlowProvider, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Flow first -> second (N, 2, H, W) of uint8 frame pairs, from ``provider``."""
    return np.asarray(provider(np.ascontiguousarray(first), np.ascontiguousarray(second)))
