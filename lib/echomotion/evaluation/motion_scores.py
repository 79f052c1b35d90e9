"""The motion measures of generated videos against their drivers, on ED/ES frame pairs.

Three views of one question, does a generated video move as its driver does: MAFE's
motion vector of the generated pair against the vector it was conditioned on (cosine);
the identity-free vector (:func:`still_cosine`) against the driving pair's; and the
re-extracted ED->ES flow field against the driver's (end-point error). Each is scored as
matched against mismatched and as driver retrieval beside its chance level
(:func:`motion_summary`). ``evaluate`` scores the generated videos with them and
``transfer_oracle`` exact phantom transfers, so the two sets of numbers compare.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from echomotion.evaluation.motion_fidelity import (
    cosine_matrix,
    ed_es_or_detect,
    epe_matrix,
    matched_and_mismatched,
    motion_vectors,
    pair_flows,
    retrieval_top1,
    standardise,
)
from echomotion.flow.classical import FlowProvider
from echomotion.stores.ragged import RaggedStore

log = logging.getLogger(__name__)


def nanmean(values: np.ndarray) -> float:
    """Mean of the finite values (NaN when there is none: a single motion source)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def retrieval_summary(
    similarity: np.ndarray, sources: list[str], appearance: list[str]
) -> dict[str, float]:
    """Driver retrieval top-1 of a square (generated x driver) similarity matrix, also with
    each row's appearance source left out of the gallery, each beside its chance level."""
    drivers = len(set(sources))
    left_out = np.array([a != s and a in sources for s, a in zip(sources, appearance, strict=True)])
    return {
        "retrieval_top1": retrieval_top1(similarity, sources),
        "retrieval_top1_chance": 1.0 / drivers,
        "retrieval_top1_without_appearance": retrieval_top1(similarity, sources, appearance),
        "retrieval_top1_without_appearance_chance": float(
            np.mean(1.0 / (drivers - left_out)) if drivers > 1 else 1.0
        ),
    }


def _vector_summary(cos: np.ndarray, sources: list[str], appearance: list[str]) -> dict[str, float]:
    """Matched and mismatched cosine, and :func:`retrieval_summary`, of a square
    (generated x driver) cosine matrix."""
    cos_matched, cos_other = matched_and_mismatched(cos, sources)
    return {
        "cosine_matched": float(cos_matched.mean()),
        "cosine_mismatched": nanmean(cos_other),
    } | retrieval_summary(cos, sources, appearance)


def motion_summary(
    cos: np.ndarray, cos_still: np.ndarray, epe: np.ndarray, sources: list[str],
    appearance: list[str],
) -> dict[str, float]:  # fmt: skip
    """:func:`_vector_summary` of the conditioning vectors, that of the identity-free
    vectors (keys prefixed ``still_``), matched and mismatched flow EPE, and driver
    retrieval by the re-extracted ED->ES flow field (the driver whose flow is nearest,
    keys prefixed ``flow_``), of square (generated x driver) matrices.

    The flow field is motion only: a transfer-mode video has its appearance source's
    identity, which MAFE's vectors carry and its flow does not, so the flow finds the
    driver where the vectors find the appearance source."""
    epe_matched, epe_other = matched_and_mismatched(epe, sources)
    still = _vector_summary(cos_still, sources, appearance)
    flow = retrieval_summary(-epe, sources, appearance)
    return (
        _vector_summary(cos, sources, appearance)
        | {f"still_{k}": v for k, v in still.items()}
        | {
            "flow_epe_matched": float(epe_matched.mean()),
            "flow_epe_mismatched": nanmean(epe_other),
        }
        | {f"flow_{k}": v for k, v in flow.items()}
    )


def area_curve_distance(
    generated: np.ndarray, generated_fps: float, driver: np.ndarray, driver_fps: float
) -> float:
    """Mean absolute difference of two LV-area curves, each relative to its largest value
    (the end-diastolic area), at the generated curve's times within the driver's span (the
    driver's curve interpolated there linearly). Relative areas hold how much and when the
    LV contracts and nothing of its size, so a transfer video's curve can match its
    driver's though its heart is another's."""
    t = np.arange(len(generated)) / generated_fps
    t_driver = np.arange(len(driver)) / driver_fps
    common = t <= t_driver[-1] + 1e-9
    ours = generated[common]
    theirs = np.interp(t[common], t_driver, driver)
    return float(np.abs(ours / max(ours.max(), 1e-9) - theirs / max(theirs.max(), 1e-9)).mean())


def curve_summary(distance: np.ndarray, sources: list[str], appearance: list[str]) -> dict:
    """Matched and mismatched LV-area curve distance (:func:`area_curve_distance`) and
    driver retrieval by it (:func:`retrieval_summary`), of a square (generated x driver)
    distance matrix."""
    matched, other = matched_and_mismatched(distance, sources)
    return {
        "curve_distance_matched": float(matched.mean()),
        "curve_distance_mismatched": nanmean(other),
    } | {f"curve_{k}": v for k, v in retrieval_summary(-distance, sources, appearance).items()}


def train_pairs(store: RaggedStore) -> tuple[np.ndarray, np.ndarray]:
    """ED and ES frames (N, H, W) of the real TRAIN videos of ``store`` with an ED/ES pair
    (traced, else detected); empty arrays when there is none."""
    table, pairs = store.table, []
    for s in np.flatnonzero(table["split"].astype(str) == "TRAIN"):
        video = store.video(int(s))
        ed, es, fps = int(table["ed"][s]), int(table["es"][s]), float(table["fps"][s])
        pair = ed_es_or_detect(video, ed, es, fps)
        if pair is not None:
            pairs.append((video[pair[0]], video[pair[1]]))
    if not pairs:
        return np.empty((0, 0, 0), np.uint8), np.empty((0, 0, 0), np.uint8)
    return np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])


def still_cosine(
    mafe: nn.Module,
    generated: tuple[np.ndarray, np.ndarray],
    driving: tuple[np.ndarray, np.ndarray],
    train: tuple[np.ndarray, np.ndarray],
    batch: int,
    device: str | torch.device,
) -> np.ndarray:
    """Cosine (N, M) of the N generated ED/ES pairs' identity-free motion vectors against
    the M driving pairs', standardised with the statistics of the ``train`` pairs (the
    real TRAIN videos', :func:`train_pairs`; fewer than two: the drivers' own).

    Identity-free: MAFE's vectors with ``subtract_still``, each pair's vector minus those of
    its still pairs, which takes out most of the identity (README, "Disentanglement"). The
    conditioning vectors carry the driver's identity, and a transfer-mode video has its
    appearance source's, so retrieval by them cannot find the driver even when the motion is
    transferred; by these it can.
    """
    gen = motion_vectors(mafe, *generated, batch, device=device, subtract_still=True)
    drive = motion_vectors(mafe, *driving, batch, device=device, subtract_still=True)
    if len(train[0]) > 1:
        stats = motion_vectors(mafe, *train, batch, device=device, subtract_still=True)
        mean, std = stats.mean(axis=0), stats.std(axis=0)
    else:  # no real TRAIN pair: the drivers' own statistics
        log.warning("no real TRAIN ED/ES pair: identity-free motion standardised by the drivers")
        mean, std = drive.mean(axis=0), drive.std(axis=0)
    return cosine_matrix(standardise(gen, mean, std), standardise(drive, mean, std))


@dataclass(frozen=True)
class MotionInputs:
    """What the motion measures compare: N generated ED/ES pairs, each with its raw
    conditioning vector (``condition`` (N, D), standardised by ``condition_stats``, the
    features store's mean and std), M driving ED/ES pairs, and the real TRAIN pairs that
    standardise the identity-free vectors (:func:`train_pairs`)."""

    generated: tuple[np.ndarray, np.ndarray]
    condition: np.ndarray
    condition_stats: tuple[Sequence[float], Sequence[float]]
    driving: tuple[np.ndarray, np.ndarray]
    train: tuple[np.ndarray, np.ndarray]


def motion_matrices(
    inputs: MotionInputs,
    mafe: nn.Module,
    provider: FlowProvider,
    batch: int,
    device: str | torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The matrices :func:`motion_summary` reads: MAFE cosine (N, N) of the generated
    pairs against their conditioning vectors, identity-free cosine (N, M) against the
    driving pairs (:func:`still_cosine`) and ED->ES flow EPE (N, M) against them."""
    mean, std = inputs.condition_stats
    cos = cosine_matrix(
        standardise(motion_vectors(mafe, *inputs.generated, batch, device=device), mean, std),
        standardise(inputs.condition, mean, std),
    )
    cos_still = still_cosine(mafe, inputs.generated, inputs.driving, inputs.train, batch, device)
    epe = epe_matrix(pair_flows(provider, *inputs.generated), pair_flows(provider, *inputs.driving))
    return cos, cos_still, epe
