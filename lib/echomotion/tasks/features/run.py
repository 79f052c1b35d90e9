"""Stage ``features``: per-video motion and appearance vectors, and what they encode.

Every triplet video's ED/ES pair goes through the trained MAFE once; the pooled motion
and appearance features (:meth:`MAFE.motion_vector`, :meth:`MAFE.appearance_vector`, here
from one shared backbone pass) are stored in ``features.zarr`` with the TRAIN mean and
standard deviation of the motion vectors (the diffusion model conditions on the
standardised vector).

The method's claim, measured: motion vectors should carry the heart's function and
appearance vectors its identity. ``ef_probe``: closed-form ridge regression of EF on the
standardised vectors (alpha chosen on VAL, refit on TRAIN + VAL), R-squared on TEST.
``identity_retrieval``: the ED/ES vector of each video is a query; the gallery holds the
vectors of shifted pairs (ED + k, ES + k) of every video; rank-1 (cosine, standardised
vectors) against its chance level.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from echomotion.data import TripletDataset, to_tensor
from echomotion.device import resolve_device
from echomotion.evaluation.probes import ef_probe, identity_retrieval
from echomotion.mafe.model import MAFE, load_mafe
from echomotion.params import Params, write_used_params
from echomotion.stage import write_json
from echomotion.stores import videos as videos_store
from echomotion.stores.features import train_stats, write_features
from echomotion.stores.ragged import RaggedStore
from echomotion.stores.videos import frames_store
from echomotion.tasks.features.params import FeaturesParams

logger = logging.getLogger(__name__)


ALL_SPLITS = ("TRAIN", "VAL", "TEST")


Pair = tuple[int, int, int]  # (video index in videos.zarr, frame a, frame b)


def pair_vectors(model: MAFE, img0: Tensor, img1: Tensor) -> tuple[Tensor, Tensor]:
    """(motion (B, Dm), appearance (B, Da)) of frame pairs (B, 1, H, W), one backbone pass
    (:meth:`MAFE.vectors`): the values of ``model.motion_vector`` and, without flip TTA,
    of ``model.appearance_vector`` (with it, equal up to float rounding)."""
    return model.vectors(img0, img1)


@torch.no_grad()
def compute_vectors(
    model: MAFE, store: RaggedStore, pairs: list[Pair], batch_size: int, desc: str = "features"
) -> tuple[np.ndarray, np.ndarray]:
    """Motion (N, Dm) and appearance (N, Da) float32 vectors of frame pairs of the store,
    computed on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    motion, appearance = [], []
    for start in tqdm(range(0, len(pairs), batch_size), desc=desc, unit="batch"):
        chunk = pairs[start : start + batch_size]
        frames = np.stack([store.video(v)[[a, b]] for v, a, b in chunk])  # (B, 2, H, W)
        x = to_tensor(frames).to(device)  # (B, 2, 1, H, W)
        m, a = pair_vectors(model, x[:, 0], x[:, 1])
        motion.append(m.float().cpu().numpy())
        appearance.append(a.float().cpu().numpy())
    return np.concatenate(motion), np.concatenate(appearance)


def ed_es_pairs(dataset: TripletDataset) -> list[Pair]:
    """The (video, ED, ES) pair of every video of a triplet dataset, in store order."""
    table = dataset.table
    return [(int(v), int(table["ed"][v]), int(table["es"][v])) for v in dataset.videos]


def shifted_pairs(pairs: list[Pair], lengths: np.ndarray, shifts: tuple[int, ...]) -> list[Pair]:
    """(video, a + k, b + k) for each pair and shift k, each index clipped to its video."""
    out = []
    for video, a, b in pairs:
        last = int(lengths[video]) - 1
        out += [(video, min(max(a + k, 0), last), min(max(b + k, 0), last)) for k in shifts]
    return out


def export_features(
    videos_path: str | Path,
    model_dir: str | Path,
    out_path: str | Path,
    params: FeaturesParams,
    device: str | torch.device = "cpu",
) -> dict:
    """Write the vectors of every triplet video to ``out_path`` and return the metrics;
    MAFE runs on ``device``."""
    # 1. the triplet videos and the trained model
    dataset = TripletDataset(videos_path, splits=ALL_SPLITS)
    store, table, videos = dataset.store, dataset.table, dataset.videos
    model = load_mafe(model_dir).to(device)
    # 2. ED/ES vectors -> the store
    pairs = ed_es_pairs(dataset)
    motion, appearance = compute_vectors(model, store, pairs, params.batch_size)
    write_features(out_path, table, videos, motion, appearance)
    # 3. what the vectors encode: EF (ridge) and identity (retrieval of shifted pairs)
    shifted = shifted_pairs(pairs, dataset.lengths, params.retrieval_shifts)
    g_motion, g_appearance = compute_vectors(model, store, shifted, params.batch_size, "gallery")
    split, ef = table["split"][videos].astype(str), table["ef"][videos].astype(np.float64)
    ids, gallery_ids = videos, np.repeat(videos, len(params.retrieval_shifts))
    metrics: dict = {
        "n_videos": len(videos),
        "motion_dim": motion.shape[1],
        "appearance_dim": appearance.shape[1],
    }
    for name, x, g in (("motion", motion, g_motion), ("appearance", appearance, g_appearance)):
        mean, std = train_stats(x, split)
        metrics[f"ef_probe_{name}"] = ef_probe(x.astype(np.float64), ef, split, params.ridge_alphas)
        metrics[f"retrieval_{name}"] = identity_retrieval(x, g, ids, gallery_ids, mean, std)
    logger.info("features: %s", metrics)
    return metrics


OUT = "data/features.zarr"


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    metrics = export_features(
        frames_store(videos_store.PATH, params.shared.pseudo_label_frames),
        "models/mafe/model",
        OUT,
        params.features,
        device=resolve_device(params.shared.device),
    )
    write_used_params(params.features, "data/features_params_used.json")
    write_json("metrics/features.json", metrics)
