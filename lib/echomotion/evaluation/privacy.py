"""Privacy: is a synthetic video too close to a training video?

EchoNet-Synthetic's rule (Reynaud et al. 2024): embed videos with a re-identification
network (here the pipeline's ReID encoder; a video's embedding is the normalised mean of
its frame embeddings), take each video's maximum cosine similarity to the TRAIN videos,
and set the threshold at a high percentile (95th) of the real TEST-to-TRAIN maxima: a
synthetic video more similar to some training video than 95% of unseen real videos are
is flagged as a possible copy, and can be filtered out of the synthetic dataset.
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from echomotion.data import to_tensor
from echomotion.echonet import FILE_LIST, TRACINGS, VIDEOS
from echomotion.evaluation.extractors import batches
from echomotion.evaluation.videos import VideoSet

log = logging.getLogger(__name__)


@torch.no_grad()
def video_embeddings(
    encoder: nn.Module,
    videos: VideoSet,
    frames_per_video: int,
    batch_size: int,
    *,
    device: str | torch.device,
) -> np.ndarray:
    """(N, D) unit embeddings: the normalised mean of the ReID embeddings of
    ``frames_per_video`` evenly spaced frames of each video, the encoder moved to and run
    on ``device``."""
    encoder.to(device).eval()
    out = []
    for v in range(len(videos)):
        frames = videos.read(v)
        pick = np.linspace(0, len(frames) - 1, min(frames_per_video, len(frames))).round()
        emb = torch.cat(
            [
                encoder.embed(to_tensor(b).to(device))
                for b in batches(frames[pick.astype(int)], batch_size)
            ]
        )
        out.append(F.normalize(emb.mean(dim=0), dim=0))
    return torch.stack(out).cpu().double().numpy()


def max_similarity(query: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each unit row of ``query`` (N, D): the largest cosine similarity to a row of
    ``gallery`` (M, D) and that row's index."""
    sim = query @ gallery.T  # (N, M)
    nearest = sim.argmax(axis=1)
    return sim[np.arange(len(query)), nearest], nearest


def privacy_threshold(real_max_similarity: np.ndarray, percentile: float = 95.0) -> float:
    """The ``percentile`` of real held-out videos' maximum similarity to TRAIN."""
    return float(np.percentile(np.asarray(real_max_similarity, float), percentile))


def flag(similarity: np.ndarray, threshold: float) -> np.ndarray:
    """True where a video is strictly more similar than ``threshold`` (a possible copy)."""
    return np.asarray(similarity) > threshold


def similarity_histogram(
    groups: dict[str, np.ndarray], bins: int, lo: float = -1.0, hi: float = 1.0
) -> list[dict[str, float]]:
    """Rows (bin centre, one count column per group) of a shared histogram, for plots."""
    edges = np.linspace(lo, hi, bins + 1)
    counts = {k: np.histogram(np.clip(v, lo, hi), bins=edges)[0] for k, v in groups.items()}
    centres = (edges[:-1] + edges[1:]) / 2
    return [
        {"similarity": float(c), **{k: int(n[i]) for k, n in counts.items()}}
        for i, c in enumerate(centres)
    ]


def write_filtered_dataset(source: Path, target: Path, keep: set[str]) -> int:
    """Copy the EchoNet-layout dataset ``source`` to ``target`` keeping only the videos
    named in ``keep`` (FileList rows, tracings and files); return the number kept.

    ``target`` is written under a temporary name and renamed when complete.
    """
    source, target = Path(source), Path(target)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / VIDEOS).mkdir(parents=True)
    kept = _filter_csv(source / FILE_LIST, tmp / FILE_LIST, keep)
    if (source / TRACINGS).is_file():
        _filter_csv(source / TRACINGS, tmp / TRACINGS, keep)
    for name in kept:
        shutil.copy2(source / VIDEOS / f"{name}.avi", tmp / VIDEOS / f"{name}.avi")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    log.info("wrote %s: %d videos kept", target, len(kept))
    return len(kept)


def _filter_csv(src: Path, dst: Path, keep: set[str]) -> list[str]:
    """Copy the rows of ``src`` whose FileName (with or without .avi) is in ``keep``;
    return the kept names in order, once each."""
    with src.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["FileName"].removesuffix(".avi") in keep]
        columns = reader.fieldnames or []
    with dst.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return list(dict.fromkeys(r["FileName"].removesuffix(".avi") for r in rows))
