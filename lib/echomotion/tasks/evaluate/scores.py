"""Realism, motion-fidelity and privacy scores of the synthetic set (EF: see ``ef.py``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from echomotion.evaluation.extractors import FeatureExtractor, extract, extract_probabilities
from echomotion.evaluation.frechet import frechet_distance
from echomotion.evaluation.inception_score import inception_score
from echomotion.evaluation.motion_fidelity import ed_es_or_detect
from echomotion.evaluation.motion_scores import (
    MotionInputs,
    motion_matrices,
    motion_summary,
    train_pairs,
)
from echomotion.evaluation.privacy import (
    flag,
    max_similarity,
    privacy_threshold,
    similarity_histogram,
    video_embeddings,
)
from echomotion.evaluation.synthetic import source_index
from echomotion.evaluation.videos import (
    VideoSet,
    draw_clips,
    draw_frames,
    gather_clips,
    gather_frames,
)
from echomotion.flow.classical import FlowProvider
from echomotion.stores.features import video_motion
from echomotion.stores.ragged import RaggedStore
from echomotion.tasks.evaluate.data import EvalData
from echomotion.tasks.evaluate.params import EvaluateParams, PrivacyParams, RealismParams

log = logging.getLogger(__name__)


def count_name(n: int) -> str:
    """StyleGAN-V's sample-count spelling: 50000 -> '50k', 2048 -> '2048'."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


# ----------------------------------------------------------------------------------- realism


IS_SPLITS = 10  # StyleGAN-V is50k: num_splits=10 (src/metrics/metric_main.py)


def _frechet_pair(
    extractor: FeatureExtractor, sets: dict[str, np.ndarray], batch: int, ddof: int = 1
):
    """Frechet distance of the synthetic and of the baseline items to the reference."""
    feats = {k: extract(extractor, v, batch) for k, v in sets.items()}
    return (
        frechet_distance(feats["synthetic"], feats["reference"], ddof),
        frechet_distance(feats["baseline"], feats["reference"], ddof),
    )


def _is_standard(params: RealismParams, name: str) -> bool:
    """Whether extractor ``name`` is a StyleGAN-V detector (its names, its covariance)."""
    detector = {"inception": params.inception, "i3d": params.i3d}.get(name)
    return detector is not None and detector.standard


def _prefix(params: RealismParams, name: str) -> str:
    """The metric-name prefix of extractor ``name``: none for StyleGAN-V's detectors."""
    return "" if _is_standard(params, name) else f"{name}_"


def _fvd_at_lengths(
    extractor: FeatureExtractor,
    sets: dict[str, tuple[VideoSet, int]],
    keys: dict[int, str],
    batch: int,
    ddof: int,
    rng: np.random.Generator,
) -> dict:
    """Clip distances at each length of ``keys`` (length -> metric name), drawn from the
    videos at least that long of each named (videos, count) set, as StyleGAN-V drops
    shorter real videos and generates clips of that length; a length that some set has no
    such video for is ``{"skipped": reason}``."""
    out: dict = {}
    for length, key in keys.items():
        long = {k: (v.subset(np.flatnonzero(v.lengths >= length)), n) for k, (v, n) in sets.items()}
        short = [
            f"{k} videos have at most {int(sets[k][0].lengths.max(initial=0))} frames"
            for k, (v, _) in long.items()
            if len(v) == 0
        ]
        if short:
            reason = f"{length}-frame clips need videos that long: {'; '.join(short)}"
            log.warning("%s skipped: %s", key, reason)
            out[key] = {"skipped": reason}
            continue
        clips = _draw(long, length, rng)
        out[key], out[f"{key}_real_baseline"] = _frechet_pair(extractor, clips, batch, ddof)
    return out


def _inception_scores(extractor, frames: dict[str, np.ndarray], key: str, batch: int) -> dict:
    """StyleGAN-V's Inception Score (mean, std over 10 splits) of the synthetic frames, and
    of the baseline frames (``..._real_baseline``)."""
    if len(frames["synthetic"]) < IS_SPLITS:
        return {key: {"skipped": f"{len(frames['synthetic'])} frames, fewer than {IS_SPLITS}"}}
    out = {}
    for name, suffix in (("synthetic", ""), ("baseline", "_real_baseline")):
        probs = extract_probabilities(extractor, frames[name], batch)
        out[f"{key}_mean{suffix}"], out[f"{key}_std{suffix}"] = inception_score(probs, IS_SPLITS)
    return out


def _draw(
    sets: dict[str, tuple[VideoSet, int | None]], length: int | None, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Frames (``length`` None) or clips drawn from each named (videos, count) set."""
    if length is None:
        return {k: gather_frames(v, draw_frames(v, n, rng)) for k, (v, n) in sets.items()}
    return {k: gather_clips(v, draw_clips(v, n, length, rng), length) for k, (v, n) in sets.items()}


def realism_scores(
    data: EvalData,
    extractors: dict[str, FeatureExtractor],
    params: EvaluateParams,
    rng: np.random.Generator,
    skipped: dict[str, tuple[str, str]] | None = None,
) -> dict:
    """FID-style (frame extractors) and FVD-style (clip extractors) distances of the
    synthetic set and of the real baseline split to the real reference split.

    ``skipped``: extractor name -> (kind "frame" | "clip", reason) of extractors that are
    not available (e.g. the EF network without EF labels); their metric is
    ``{"skipped": reason}`` under its usual name. With ``realism.fvd_frames`` the I3D
    distance is taken at each of those clip lengths (drawn after every other draw, so the
    other distances do not change), and ``realism.inception_score`` adds the IS."""
    p, length = params.realism, params.clip_frames
    reference, baseline = data.split(p.reference_split), data.split(p.baseline_split)
    # 1. frames: as many for the synthetic as for the baseline set; clips likewise
    n = min(p.n_frames, int(data.synthetic.lengths.sum()), int(baseline.lengths.sum()))
    frames = _draw(
        {
            "synthetic": (data.synthetic, n),
            "baseline": (baseline, n),
            "reference": (reference, p.max_reference_frames),
        },
        None,
        rng,
    )
    clips = _draw(
        {
            "synthetic": (data.synthetic, p.n_clips),
            "baseline": (baseline, p.n_clips),
            "reference": (reference, p.reference_clips),
        },
        length,
        rng,
    )
    # 2. one Frechet distance per extractor, named as in StyleGAN-V
    out: dict[str, float] = {
        "n_frames_used": n,
        "n_clips_used": p.n_clips,
        "n_reference_frames": len(frames["reference"]),
    }
    full = "_full" if p.max_reference_frames is None else ""  # every reference frame

    def key_of(name: str, kind: str, frames_per_clip: int = length) -> str:
        if kind == "frame":
            return f"{_prefix(p, name)}fid{count_name(p.n_frames)}{full}"
        return f"{_prefix(p, name)}fvd{count_name(p.n_clips)}_{frames_per_clip}f"

    at_lengths = p.fvd_frames is not None and "i3d" in extractors  # I3D at its own lengths
    for name, extractor in extractors.items():
        if at_lengths and name == "i3d":
            continue
        key, items = key_of(name, extractor.kind), frames if extractor.kind == "frame" else clips
        ddof = 0 if _is_standard(p, name) else 1
        out[key], out[f"{key}_real_baseline"] = _frechet_pair(
            extractor, items, params.batch_size, ddof
        )
    for name, (kind, reason) in (skipped or {}).items():
        out[key_of(name, kind)] = {"skipped": reason}
    # 3. StyleGAN-V's fvd2048_16f / _128f: the I3D at each of fvd_frames; is50k
    if at_lengths:
        sets = {"synthetic": (data.synthetic, p.n_clips), "baseline": (baseline, p.n_clips),
                "reference": (reference, p.reference_clips)}  # fmt: skip
        keys = {n: key_of("i3d", "clip", n) for n in p.fvd_frames}
        ddof = 0 if _is_standard(p, "i3d") else 1
        out |= _fvd_at_lengths(extractors["i3d"], sets, keys, params.batch_size, ddof, rng)
    if p.inception_score:
        key = f"{_prefix(p, 'inception')}is{count_name(p.n_frames)}"
        out |= _inception_scores(extractors["inception"], frames, key, params.batch_size)
    return out


# ------------------------------------------------------------------------------------ motion


def _pairs(videos: list[np.ndarray], eds_es: list[tuple[int, int]]) -> tuple[np.ndarray, ...]:
    """ED frames (N, H, W) and ES frames (N, H, W)."""
    ed = np.stack([v[a] for v, (a, _) in zip(videos, eds_es, strict=True)])
    es = np.stack([v[b] for v, (_, b) in zip(videos, eds_es, strict=True)])
    return ed, es


def _motion_items(data: EvalData, features: RaggedStore) -> list[dict]:
    """Per synthetic video with a known motion source: its ED/ES and the driving video's
    (each driving video read, and its ED/ES found, once however many videos it drives)."""
    table, items = data.store.table, []
    in_features = source_index(features.table["file_name"], [r.motion_source for r in data.records])
    in_store = source_index(table["file_name"], [r.motion_source for r in data.records])
    drivers: dict[int, tuple[np.ndarray, tuple[int, int] | None]] = {}  # store row -> video, pair
    for i, record in enumerate(data.records):
        if in_features[i] < 0 or in_store[i] < 0:
            continue
        s = int(in_store[i])
        if s not in drivers:
            video = data.store.video(s)
            ed, es, rate = int(table["ed"][s]), int(table["es"][s]), float(table["fps"][s])
            drivers[s] = video, ed_es_or_detect(video, ed, es, rate)
        driving, drive_pair = drivers[s]
        fps = record.rate(float(table["fps"][s]))
        generated = data.synthetic.read(i)
        gen_pair = ed_es_or_detect(generated, record.ed, record.es, fps)
        if gen_pair is None or drive_pair is None:
            continue
        items.append(
            {
                "index": i,
                "feature": int(in_features[i]),
                "generated": generated,
                "gen_pair": gen_pair,
                "source": s,
                "driving": driving,
                "drive_pair": drive_pair,
            }
        )
    return items


def _distinct_drivers(items: list[dict]) -> tuple[list[dict], np.ndarray]:
    """One item per distinct driving video (the first that has it), and per item the
    position of its driver among them: each driver is scored once, not once per mode."""
    _, first, inverse = np.unique(
        [it["source"] for it in items], return_index=True, return_inverse=True
    )
    return [items[k] for k in first], inverse


def motion_scores(
    data: EvalData,
    features_path: Path,
    mafe: nn.Module,
    provider: FlowProvider,
    batch: int,
    device: str | torch.device,
) -> tuple[dict[str, float], list[dict]]:
    """MAFE cosine and ED->ES flow EPE, matched vs mismatched, and driver retrieval, over
    all videos and per mode (``transfer_*``, ``self_*``), and per-video rows; the same
    cosine and retrieval by identity-free vectors (:func:`still_cosine`: the ``still_*``
    keys). MAFE runs on ``device``; a flow network runs where ``provider`` holds it."""
    features = RaggedStore(features_path)
    items = _motion_items(data, features)
    out = {"n_videos": len(items), "n_skipped": len(data.records) - len(items)}
    if len(items) < 1:
        log.warning("no synthetic video has a motion source in %s and an ED/ES pair", features_path)
        return out, []
    sources = [data.records[it["index"]].motion_source for it in items]
    # 1. generated ED/ES pairs vs their conditioning vectors (MAFE cosine) and vs the
    #    driving ED/ES pairs (identity-free cosine, flow EPE), each distinct driver once;
    #    `driver` maps the items to their driver's column
    drivers, driver = _distinct_drivers(items)
    inputs = MotionInputs(
        generated=_pairs([it["generated"] for it in items], [it["gen_pair"] for it in items]),
        condition=video_motion(features)[[it["feature"] for it in items]],
        condition_stats=(features.attrs["motion_mean"], features.attrs["motion_std"]),
        driving=_pairs([d["driving"] for d in drivers], [d["drive_pair"] for d in drivers]),
        train=train_pairs(data.store),
    )
    cos, cos_still, epe = motion_matrices(inputs, mafe, provider, batch, device)
    cos_still, epe = cos_still[:, driver], epe[:, driver]
    appearance = [data.records[it["index"]].appearance_source for it in items]
    out |= motion_summary(cos, cos_still, epe, sources, appearance)
    # 2. the same within each mode (rows and columns of that mode's videos only)
    modes = np.array([data.records[it["index"]].mode for it in items])
    for mode in ("transfer", "self"):
        sub = np.flatnonzero(modes == mode)
        if len(sub):
            block = np.ix_(sub, sub)
            summary = motion_summary(
                cos[block], cos_still[block], epe[block], [sources[k] for k in sub],
                [appearance[k] for k in sub],
            )  # fmt: skip
            out |= {f"{mode}_{k}": v for k, v in summary.items()} | {f"{mode}_n_videos": len(sub)}
    rows = [
        {
            "file_name": data.records[it["index"]].file_name,
            "motion_source": src,
            "cosine": float(c),
            "still_cosine": float(c_still),
            "flow_epe": float(e),
            "gen_ed": it["gen_pair"][0],
            "gen_es": it["gen_pair"][1],
            "mode": data.records[it["index"]].mode,
        }
        for it, src, c, c_still, e in zip(
            items, sources, np.diagonal(cos), np.diagonal(cos_still), np.diagonal(epe), strict=True
        )
    ]
    return out, rows


# ----------------------------------------------------------------------------------- privacy


def privacy_scores(
    data: EvalData,
    encoder: nn.Module,
    params: PrivacyParams,
    batch: int,
    device: str | torch.device,
) -> tuple[dict[str, float], list[dict], list[dict]]:
    """EchoNet-Synthetic's ReID rule (the encoder on ``device``): metrics, per-video rows
    and histogram rows."""
    train_set = data.split("TRAIN")
    train, test, synthetic = (
        video_embeddings(encoder, videos, params.frames_per_video, batch, device=device)
        for videos in (train_set, data.split("TEST"), data.synthetic)
    )
    # 1. threshold from real held-out videos, then flag the synthetic ones above it
    real_max, _ = max_similarity(test, train)
    threshold = privacy_threshold(real_max, params.percentile)
    syn_max, nearest = max_similarity(synthetic, train)
    flagged = flag(syn_max, threshold)
    metrics = {
        "threshold": threshold,
        "percentile": params.percentile,
        "flagged_fraction": float(flagged.mean()),
        "n_flagged": int(flagged.sum()),
        "n_synthetic": len(flagged),
        "similarity_mean": float(syn_max.mean()),
        "real_test_similarity_mean": float(real_max.mean()),
    }
    rows = [
        {
            "file_name": n,
            "nearest_train": train_set.names[j],
            "similarity": float(s),
            "flagged": bool(f),
        }
        for n, j, s, f in zip(data.synthetic.names, nearest, syn_max, flagged, strict=True)
    ]
    hist = similarity_histogram(
        {"synthetic": syn_max, "real_test": real_max}, params.histogram_bins
    )
    return metrics, rows, hist


def unflagged(rows: list[dict], filter_flagged: bool) -> set[str]:
    """Names of the synthetic videos kept in the private copy."""
    return {r["file_name"] for r in rows if not (filter_flagged and r["flagged"])}
