"""Appearance (ReID) and self-mode SSIM of the synthetic videos (metrics groups
``appearance`` and ``ssim``), each beside its chance or mismatched figure."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from echomotion.evaluation.privacy import video_embeddings
from echomotion.evaluation.synthetic import source_index
from echomotion.evaluation.transfer import mean_ssim, nearer_fraction
from echomotion.evaluation.videos import VideoSet
from echomotion.tasks.evaluate.data import EvalData
from echomotion.tasks.evaluate.ef import skipped
from echomotion.tasks.evaluate.params import EvaluateParams

log = logging.getLogger(__name__)


def _of_mode(data: EvalData, mode: str) -> list[int]:
    return [i for i, r in enumerate(data.records) if r.mode == mode]


def appearance_scores(
    data: EvalData, reid: nn.Module, params: EvaluateParams, device: str | torch.device
) -> dict:
    """Per transfer-mode video whose two sources are real stored videos: is its ReID
    embedding (the encoder on ``device``) nearer to the appearance source than to the
    motion source (chance 0.5), and is the appearance source its nearest real TEST video
    (or source) of all (top-1)."""
    table, k, batch = data.store.table, params.transfer.frames_per_video, params.batch_size
    idx = _of_mode(data, "transfer")
    app = source_index(table["file_name"], [data.records[i].appearance_source for i in idx])
    mot = source_index(table["file_name"], [data.records[i].motion_source for i in idx])
    keep = [j for j in range(len(idx)) if app[j] >= 0 and mot[j] >= 0 and app[j] != mot[j]]
    if not keep:
        return {"transfer": skipped("no transfer-mode video with both sources in the store")}
    # 1. embeddings of the generated videos and of every real video involved
    gallery = np.unique(np.r_[data.split_rows("TEST"), app[keep], mot[keep]])
    real = video_embeddings(reid, VideoSet.from_store(data.store, gallery), k, batch, device=device)
    generated = data.synthetic.subset([idx[j] for j in keep])
    gen = video_embeddings(reid, generated, k, batch, device=device)
    where = {int(r): p for p, r in enumerate(gallery)}
    to_app = real[[where[int(app[j])] for j in keep]]
    to_mot = real[[where[int(mot[j])] for j in keep]]
    # 2. nearer to the appearance source than to the motion source; top-1 over the gallery
    top1 = gallery[(gen @ real.T).argmax(axis=1)] == app[keep]
    return {
        "transfer_nearer_appearance": nearer_fraction(gen, to_app, to_mot),
        "transfer_nearer_appearance_chance": 0.5,
        "transfer_similarity_appearance": float((gen * to_app).sum(1).mean()),
        "transfer_similarity_motion": float((gen * to_mot).sum(1).mean()),
        "transfer_appearance_top1": float(top1.mean()),
        "transfer_appearance_top1_chance": 1.0 / len(gallery),
        "transfer_n": len(keep),
    }


def ssim_scores(data: EvalData) -> dict:
    """Per self-mode video with its driver in the store: mean SSIM of time-matched frames
    against the driver from the frame the video started at (matched) and the mean of it
    against the other real TEST videos (mismatched)."""
    table = data.store.table
    idx = _of_mode(data, "self")
    drivers = source_index(table["file_name"], [data.records[i].motion_source for i in idx])
    test = [int(r) for r in data.split_rows("TEST")]
    real = {r: data.store.video(r) for r in {*test, *(int(d) for d in drivers if d >= 0)}}
    matched, mismatched = [], []
    for i, d in zip(idx, drivers, strict=True):
        others = [r for r in test if r != d]
        if d < 0 or not others:
            continue
        record, video = data.records[i], data.synthetic.read(i)
        fps = record.rate(float(table["fps"][d]))
        driving = real[int(d)][record.motion_start :]  # from the frame the video started at
        matched.append(mean_ssim(video, driving, fps, float(table["fps"][d])))
        mismatched.append(
            np.nanmean([mean_ssim(video, real[r], fps, float(table["fps"][r])) for r in others])
        )
    if not matched:
        return {"self": skipped("no self-mode video with its driver and other TEST videos")}
    matched, mismatched = np.array(matched), np.array(mismatched)
    return {
        "self_matched": float(np.nanmean(matched)),
        "self_mismatched": float(np.nanmean(mismatched)),
        "self_matched_above_mismatched": float((matched > mismatched).mean()),
        "self_n": len(matched),
    }
