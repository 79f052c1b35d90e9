"""Ground-truth flow of the phantom's mid->ED / mid->ES pairs, and EPE tables of providers.

A prepared video's stored frame ``k`` shows source frame ``resample_indices(n_source,
source_fps, fps)[k]`` of the phantom video of the same file name; the truth flow between two
source frames is :func:`echomotion.phantom.flow_between`, resized (vectors scaled) to the
prepared size when the two sizes differ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from echomotion.data import midway
from echomotion.flow.classical import FlowProvider
from echomotion.flow.metrics import end_point_error
from echomotion.flow.ops import resize_flow
from echomotion.phantom.anatomy import LABELS
from echomotion.phantom.motion import flow_between
from echomotion.stores.ragged import RaggedStore
from echomotion.video import resample_indices

log = logging.getLogger(__name__)


PAIRS = ("mid_ed", "mid_es")  # flow from the mid frame to ED, then to ES


REGIONS = ("all", "sector", "lv")  # every pixel, truth label > 0, truth label LV


@dataclass(frozen=True)
class TruthPairs:
    """Frame pairs with their true flow, pair ``i`` from ``frames_a[i]`` to ``frames_b[i]``.

    ``frames_a``, ``frames_b``: uint8 (N, H, W); ``flow``: float32 (N, 2, H, W) flow_ab;
    ``labels``: uint8 (N, H, W) truth labels of frame a; ``kind``: the pair's name in
    :data:`PAIRS`; ``file_names``: (N,) the video of each pair.
    """

    frames_a: np.ndarray
    frames_b: np.ndarray
    flow: np.ndarray
    labels: np.ndarray
    kind: np.ndarray
    file_names: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)


def _source_frames(video_row: dict, n_source: int) -> np.ndarray:
    """Source (phantom) frame index of every stored frame of a prepared video."""
    return resample_indices(n_source, float(video_row["source_fps"]), float(video_row["fps"]))


def _resized_truth(
    disp: np.ndarray, labels: np.ndarray, src_a: int, src_b: int, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """True flow (2, H, W) from source frame a to b and a's labels (H, W), at ``size``."""
    flow = torch.from_numpy(flow_between(disp[src_a], disp[src_b]))[None]  # (1, 2, h, w)
    flow = resize_flow(flow, size)[0].numpy()
    lab = cv2.resize(labels[src_a], size[::-1], interpolation=cv2.INTER_NEAREST)
    return flow.astype(np.float32), lab


def video_truth_pairs(
    videos: RaggedStore, truth: RaggedStore, video: int, truth_video: int
) -> list[tuple]:
    """(frame a, frame b, flow, labels, kind) of the mid->ED and mid->ES pairs of ``video``."""
    row = videos.row(video)
    ed, es = int(row["ed"]), int(row["es"])
    mid, frames = midway(ed, es), videos.video(video)
    disp = truth.video(truth_video, "displacement")  # (n, 2, h, w)
    labels = truth.video(truth_video, "labels")  # (n, h, w)
    src = _source_frames(row, len(disp))
    out = []
    for kind, target in zip(PAIRS, (ed, es), strict=True):
        flow, lab = _resized_truth(disp, labels, src[mid], src[target], frames.shape[1:])
        out.append((frames[mid], frames[target], flow, lab, kind))
    return out


def load_truth_pairs(
    videos_path: str | Path,
    truth_path: str | Path,
    split: str = "VAL",
    max_videos: int | None = None,
) -> TruthPairs | None:
    """Truth pairs of the ``split`` videos with known ED/ES (at most ``max_videos``).

    None when the truth store is missing or holds none of these videos (real data).
    """
    truth_path = Path(truth_path)
    if not (truth_path / "zarr.json").is_file():
        log.info("no ground-truth store at %s", truth_path)
        return None
    videos, truth = RaggedStore(videos_path), RaggedStore(truth_path)
    index = {str(name): i for i, name in enumerate(truth.table["file_name"])}
    t = videos.table
    known = (t["ed"] >= 0) & (t["es"] >= 0) & (np.abs(t["ed"] - t["es"]) >= 2)
    chosen = [
        v
        for v in np.flatnonzero(known & (t["split"].astype(str) == split))
        if str(t["file_name"][v]) in index
    ][:max_videos]
    if not chosen:
        log.info("%s holds no %s video of %s: no ground truth", truth_path, split, videos_path)
        return None
    rows = [
        p
        for v in chosen
        for p in video_truth_pairs(videos, truth, int(v), index[str(t["file_name"][v])])
    ]
    a, b, flow, labels, kind = (np.stack(c) for c in zip(*rows, strict=True))
    names = np.repeat([str(t["file_name"][v]) for v in chosen], len(PAIRS))
    return TruthPairs(a, b, flow, labels, kind, names)


def region_masks(labels: np.ndarray) -> dict[str, np.ndarray | None]:
    """Boolean masks (N, H, W) of :data:`REGIONS` from truth labels (None = every pixel)."""
    return {"all": None, "sector": labels > 0, "lv": labels == LABELS["LV"]}


def epe_table(flow: np.ndarray, pairs: TruthPairs) -> dict[str, dict[str, float]]:
    """EPE of ``flow`` (N, 2, H, W) per pair kind and region, plus their mean over kinds.

    Pixels of all pairs of a kind are pooled (every pair has the same size).
    """
    table = {}
    for kind in PAIRS:
        sel = pairs.kind == kind
        masks = region_masks(pairs.labels[sel])
        table[kind] = {r: end_point_error(flow[sel], pairs.flow[sel], m) for r, m in masks.items()}
    table["mean"] = {r: float(np.mean([table[k][r] for k in PAIRS])) for r in REGIONS}
    return table


def score_provider(provider: FlowProvider | None, pairs: TruthPairs) -> dict:
    """:func:`epe_table` of a provider's flows on ``pairs`` (None: zero flow)."""
    if provider is None:
        return epe_table(np.zeros_like(pairs.flow), pairs)
    return epe_table(provider(pairs.frames_a, pairs.frames_b), pairs)
