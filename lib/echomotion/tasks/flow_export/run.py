"""Stage ``flow_export``: mid->ED and mid->ES pseudo flow of every triplet video.

The store (``data/pseudo/flow.zarr``) holds one entry per triplet video, in the order of
``TripletDataset(videos, splits=("TRAIN", "VAL", "TEST")).videos``; see :data:`FLOW_SCHEMA`.
The metrics score the network, DIS, Farneback and zero flow against the phantom's truth.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from echomotion.data import TripletDataset, midway
from echomotion.device import resolve_device
from echomotion.flow.classical import (
    DISFlow,
    FarnebackFlow,
    FlowProvider,
    NetworkFlow,
    make_flow_provider,
)
from echomotion.flow.pwc import PWCLite, load_model
from echomotion.flow.truth import load_truth_pairs, score_provider
from echomotion.params import Params, write_used_params
from echomotion.stage import write_json
from echomotion.stores import phantom_truth as phantom_truth_store
from echomotion.stores import videos as videos_store
from echomotion.stores.pseudo_flow import FLOW_SCHEMA, open_writer
from echomotion.stores.ragged import RaggedStore
from echomotion.stores.videos import frame_size, frames_store
from echomotion.tasks.flow_export.params import FlowExportParams

log = logging.getLogger(__name__)


SPLITS = ("TRAIN", "VAL", "TEST")


def triplet_frames(store: RaggedStore, videos: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Frames (n, 3, H, W) uint8 [ED, mid, ES] of ``videos`` and their table rows."""
    frames, rows = [], []
    for v in videos:
        ed, es = int(store.table["ed"][v]), int(store.table["es"][v])
        mid = midway(ed, es)
        frames.append(store.video(int(v))[[ed, mid, es]])
        row = {"file_name": str(store.table["file_name"][v]), "video": int(v)}
        rows.append(row | {"split": str(store.table["split"][v]), "ed": ed, "mid": mid, "es": es})
    return np.stack(frames), rows


def pseudo_flows(provider: FlowProvider, frames: np.ndarray) -> np.ndarray:
    """(n, 4, H, W) float16 [mid->ED, mid->ES] of triplet frames (n, 3, H, W)."""
    ed, mid, es = frames[:, 0], frames[:, 1], frames[:, 2]
    flows = np.concatenate([provider(mid, ed), provider(mid, es)], axis=1)  # (n, 4, H, W)
    return flows.astype(np.float16)


def write_flow_store(
    videos_path: str | Path, provider: FlowProvider, out_path: str | Path, attrs: dict, batch: int
) -> int:
    """Pseudo flow of every triplet video, ``batch`` videos per provider call; returns n."""
    store = RaggedStore(videos_path)
    videos = TripletDataset(videos_path, splits=SPLITS, in_memory=False).videos
    with open_writer(out_path, frame_size(store), attrs) as writer:
        for start in tqdm(range(0, len(videos), batch), desc="flow_export", unit="batch"):
            frames, rows = triplet_frames(store, videos[start : start + batch])
            for flow, row in zip(pseudo_flows(provider, frames), rows, strict=True):
                writer.append({"flow": flow[None]}, **row)
    return len(videos)


def flow_metrics(
    videos_path: str | Path, truth_path: str | Path, model: PWCLite | None, params: FlowExportParams
) -> dict[str, Any]:
    """EPE tables of the network (when trained), DIS, Farneback and zero flow on VAL pairs."""
    pairs = load_truth_pairs(videos_path, truth_path, "VAL")
    if pairs is None:
        return {"ground_truth": False}
    providers: dict[str, FlowProvider | None] = {
        "dis": DISFlow(params.provider.dis_preset),
        "farneback": FarnebackFlow(),
        "zero": None,
    }
    if model is not None:
        providers = {"network": NetworkFlow(model, params.provider.batch_size)} | providers
    epe = {name: score_provider(p, pairs) for name, p in providers.items()}
    return {"ground_truth": True, "n_val_videos": len(pairs) // 2, "epe": epe}


def export_flow(
    videos_path: str | Path,
    model_dir: str | Path,
    truth_path: str | Path,
    params: FlowExportParams,
    out_path: str | Path,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Write the pseudo-flow store with ``params.provider``; return the stage's metrics.

    The network is loaded from ``model_dir`` when it holds one, on ``device``: the
    "network" provider needs it, the classical ones use it only to add its row to the
    metrics.
    """
    # 1. providers: the chosen one for the store; the trained network if there is one
    model = load_model(model_dir)
    model = model.to(device) if model is not None else None
    provider = make_flow_provider(params.provider, model)

    # 2. the store, in triplet order
    method = params.provider.method
    attrs = {"provider": params.provider.model_dump(mode="json"), "schema": FLOW_SCHEMA}
    n = write_flow_store(videos_path, provider, out_path, attrs, params.provider.batch_size)

    # 3. EPE of every provider against the phantom's truth, when there is some
    metrics = flow_metrics(videos_path, truth_path, model, params)
    return {"provider": method, "n_videos": n, **metrics}


OUT = "data/pseudo"


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    metrics = export_flow(
        frames_store(videos_store.PATH, params.shared.pseudo_label_frames),
        "models/flow/model",
        phantom_truth_store.PATH,
        params.flow_export,
        f"{OUT}/flow.zarr",
        device=resolve_device(params.shared.device),
    )
    write_used_params(params.flow_export, f"{OUT}/flow_params_used.json")
    write_json("metrics/flow.json", metrics)
