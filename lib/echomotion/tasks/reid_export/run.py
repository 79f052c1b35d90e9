"""Stage ``reid_export``: ED/ES pseudo appearance labels and held-out retrieval scores."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from echomotion.data import TripletDataset, to_tensor
from echomotion.device import resolve_device
from echomotion.params import Params, write_used_params
from echomotion.reid.identities import IdentityFrames, identity_frames, read_identities
from echomotion.reid.metrics import rank1_and_map
from echomotion.reid.model import ReIDModel, load_reid_encoder
from echomotion.stage import write_json
from echomotion.stores import videos as videos_store
from echomotion.stores.pseudo_reid import write_reid_store
from echomotion.stores.videos import frames_store
from echomotion.tasks.reid_export.params import ReIDExportParams

logger = logging.getLogger(__name__)


ALL_SPLITS = ("TRAIN", "VAL", "TEST")


def load_encoder(model_dir: str | Path) -> ReIDModel:
    """The trained encoder of ``model_dir`` (save_pretrained form, either method), in eval
    mode."""
    return load_reid_encoder(model_dir)


def untrained_like(model: ReIDModel, seed: int) -> ReIDModel:
    """An encoder of the same class and config initialised as training started (same
    ``seed``)."""
    torch.manual_seed(seed)
    return type(model).from_config(model.config).eval()


@torch.no_grad()
def embed_frames(model: ReIDModel, frames: np.ndarray, batch_size: int) -> np.ndarray:
    """(N, H, W) uint8 frames -> (N, D) float32 L2-normalised embeddings (eval mode), computed
    on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    parts = [
        model.embed(to_tensor(frames[s : s + batch_size]).to(device)).cpu()
        for s in range(0, len(frames), batch_size)
    ]
    return torch.cat(parts).numpy().astype(np.float32)


def pixel_embeddings(frames: np.ndarray, size: int) -> np.ndarray:
    """Raw-pixel baseline: frames average-pooled to ``size x size``, flattened (N, size^2)."""
    pooled = F.adaptive_avg_pool2d(to_tensor(frames), size)  # (N, 1, size, size)
    return pooled.flatten(1).numpy()


def check_disjoint(train_names: list[str], heldout_names: list[str]) -> None:
    """Raise if a held-out video was a training identity."""
    overlap = sorted(set(train_names) & set(heldout_names))
    if overlap:
        raise ValueError(
            f"{len(overlap)} held-out videos were training identities, e.g. {overlap[:3]}"
        )


def heldout_metrics(
    model: ReIDModel, untrained: ReIDModel, heldout: IdentityFrames, params: ReIDExportParams
) -> dict[str, Any]:
    """Rank-1 / mAP of the trained encoder, the untrained one and raw pixels, plus chance.

    Query = each held-out frame; gallery = all other held-out frames (self excluded).
    """
    embeddings = {
        "trained": embed_frames(model, heldout.frames, params.batch_size),
        "untrained": embed_frames(untrained, heldout.frames, params.batch_size),
        "pixels": pixel_embeddings(heldout.frames, params.pixel_size),
    }
    ids = heldout.identities
    scores = {
        k: rank1_and_map(e, ids, e, ids, exclude_same_index=True) for k, e in embeddings.items()
    }
    metrics: dict[str, Any] = {k: {"rank1": s["rank1"], "mAP": s["mAP"]} for k, s in scores.items()}
    first = scores["trained"]  # the chance levels depend on the labels only
    metrics["chance"] = {"rank1": first["chance_rank1"], "mAP": first["chance_mAP"]}
    metrics["heldout"] = {
        "splits": list(params.eval_splits),
        "n_videos": len(heldout.videos),
        "n_frames": len(heldout.frames),
        "n_queries": first["n_queries"],
    }
    return metrics


@torch.no_grad()
def triplet_embeddings(
    model: ReIDModel, videos_path: str | Path, batch_size: int
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Table rows and (V, 2, D) ED/ES embeddings of the triplet videos, in store order
    (computed on the model's device)."""
    model.eval()
    device = next(model.parameters()).device
    triplets = TripletDataset(videos_path, splits=ALL_SPLITS, in_memory=False)
    table, rows, parts = triplets.table, [], []
    for batch in DataLoader(triplets, batch_size=max(1, batch_size // 2)):
        n = len(batch["video"])
        pair = torch.cat([batch["img0"], batch["img1"]]).to(device)
        emb = model.embed(pair).cpu()  # (2n, D): ED then ES
        parts.append(torch.stack([emb[:n], emb[n:]], dim=1))  # (n, 2, D)
        keys = zip(batch["video"].tolist(), batch["t0"].tolist(), batch["t1"].tolist(), strict=True)
        rows += [_row(table, video, ed, es) for video, ed, es in keys]
    dim = model.config.embedding_dim
    emb = torch.cat(parts).numpy() if parts else np.zeros((0, 2, dim), np.float32)
    return rows, emb.astype(np.float32)


def _row(table: dict[str, np.ndarray], video: int, ed: int, es: int) -> dict[str, Any]:
    name, split = str(table["file_name"][video]), str(table["split"][video])
    return {"file_name": name, "video": video, "split": split, "ed": ed, "es": es}


def pair_cosines(emb: np.ndarray) -> dict[str, float]:
    """Mean cosine of each video's ED and ES embeddings, and of ED embeddings of
    different videos: phase invariance against identity separation."""
    ed, es = emb[:, 0].astype(np.float64), emb[:, 1].astype(np.float64)
    cross = ed @ ed.T  # (V, V)
    off = ~np.eye(len(ed), dtype=bool)
    return {
        "ed_es_same_video": float((ed * es).sum(axis=1).mean()) if len(ed) else float("nan"),
        "ed_other_videos": float(cross[off].mean()) if len(ed) > 1 else float("nan"),
    }


def export_reid(
    videos_path: str | Path,
    model_root: str | Path,
    out_path: str | Path,
    params: ReIDExportParams,
    seed: int,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Write the ED/ES embedding store and return the retrieval metrics.

    ``model_root`` is the training out_dir (``model/`` and ``identities.json``); ``seed``
    is the training seed, which rebuilds the untrained baseline's initial weights. The
    encoders run on ``device``.
    """
    # 1. The trained encoder and the identities it was trained on.
    model_root = Path(model_root)
    model = load_encoder(model_root / "model").to(device)
    train_names = read_identities(model_root)
    if len(train_names) != model.config.num_identities:
        raise ValueError(
            f"{model_root}: {len(train_names)} identities listed, the model has "
            f"{model.config.num_identities} classes"
        )
    # 2. Held-out retrieval (identities never seen in training) against two baselines.
    heldout = identity_frames(videos_path, params.eval_splits, params.eval_frames)
    check_disjoint(train_names, heldout.file_names)
    untrained = untrained_like(model, seed).to(device)  # initialised on the CPU, as training
    metrics = heldout_metrics(model, untrained, heldout, params)
    # 3. The pseudo labels: ED and ES embeddings of every triplet video.
    rows, emb = triplet_embeddings(model, videos_path, params.batch_size)
    write_reid_store(out_path, rows, emb)
    logger.info("wrote %s: %d videos; trained %s", out_path, len(rows), metrics["trained"])
    return metrics | {
        "n_train_identities": len(train_names),
        "n_exported": len(rows),
        "cosine": pair_cosines(emb),
    }


OUT = "data/pseudo/reid.zarr"


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    metrics = export_reid(
        frames_store(videos_store.PATH, params.shared.pseudo_label_frames),
        "models/reid",
        OUT,
        params.reid_export,
        seed=params.shared.seed,
        device=resolve_device(params.shared.device),
    )
    write_used_params(params.reid_export, "data/pseudo/reid_params_used.json")
    write_json("metrics/reid.json", metrics)
