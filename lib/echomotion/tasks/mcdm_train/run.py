"""Stage ``mcdm_train``: the motion-conditioned video UNet on windows of TRAIN latents.

Runs on one process or many (``accelerate launch --multi_gpu``, ``torchrun``): every
process holds the latents and motion vectors in memory; only rank 0 writes files.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from echomotion.device import process_state
from echomotion.diffusion.conditioning import ef_token
from echomotion.diffusion.loading import MotionNormalizer
from echomotion.diffusion.losses import build_scheduler, mcdm_loss
from echomotion.diffusion.params import ReferenceFrame, ShortVideos, WindowAnchor
from echomotion.diffusion.pipeline import MotionConditionedVideoPipeline
from echomotion.diffusion.unet import build_unet
from echomotion.diffusion.vae import load_vae
from echomotion.edes import Beats
from echomotion.params import Params
from echomotion.stage import finish_training
from echomotion.stores import features as features_store
from echomotion.stores import latents as latents_store
from echomotion.stores import videos as videos_store
from echomotion.stores.features import video_motion
from echomotion.stores.latents import all_latents
from echomotion.stores.ragged import RaggedStore
from echomotion.tasks.mcdm_train.params import MCDMTrainParams
from echomotion.training.checkpoint import save_pretrained, write_dir_atomically
from echomotion.training.fingerprint import fresh_checkpoints
from echomotion.training.loop import train_section

logger = logging.getLogger(__name__)


class LatentClipDataset(Dataset):
    """Random windows of ``n_frames`` latents taken every ``stride`` frames, one item per video.

    Item: ``latents`` ``(T, C, h, w)`` float32 (a random window), ``ref_latent``
    ``(C, h, w)`` (the window's first frame when ``reference`` is ``"window_start"``, else a
    random frame of the same video), ``motion`` ``(D,)`` (the video's conditioning token) and
    ``fps`` ``()`` (the window's frame rate: the video's fps / ``stride``), with
    ``heart_rate`` (per item, beats per minute) ``heart_rate`` ``()``, and with ``contraction``
    (per item, the label-free curve over the video's frames,
    :func:`echomotion.edes.contraction_curve`) ``contraction`` ``(T,)``, the window's. With
    ``short_videos="pad"`` also ``frame_mask`` ``(T,)``: 1 for real frames, 0 for the zero
    latents that pad a window past the video's end.

    The start is uniform over the full windows of the video; with ``random_phase`` the
    phase (start modulo ``stride``) is drawn first and then the start on that frame grid,
    as the official loader does (LabelfreeMCDM ``common/datasets.py`` l.232-242). With
    ``anchors`` (per item, the frames a full window may start at: label-free ED frames,
    :meth:`echomotion.edes.Beats.window_anchors`) the start is drawn from the item's anchors; an
    item without any falls back to the uniform draw.
    Randomness comes from the global torch generator, which the training loop seeds per item.
    """

    def __init__(
        self,
        latents: np.ndarray,
        offsets: np.ndarray,
        videos: np.ndarray,
        motion: torch.Tensor,
        fps: np.ndarray,
        n_frames: int,
        stride: int = 1,
        reference: ReferenceFrame = "window_start",
        short_videos: ShortVideos = "drop",
        random_phase: bool = False,
        anchors: list[np.ndarray] | None = None,
        heart_rate: np.ndarray | None = None,
        contraction: list[np.ndarray] | None = None,
    ):
        span = window_span(n_frames, stride)
        lengths = offsets[videos + 1] - offsets[videos]
        if short_videos == "drop" and (lengths < span).any():
            raise ValueError(f"videos {videos[lengths < span].tolist()} are < {span} frames")
        if not len(videos) == len(motion) == len(fps):
            raise ValueError(f"{len(videos)} videos, {len(motion)} motions, {len(fps)} fps")
        self.latents, self.offsets, self.videos = latents, offsets, videos
        self.motion, self.fps, self.n_frames = motion, fps, n_frames
        self.stride, self.reference = stride, reference
        self.short_videos, self.random_phase = short_videos, random_phase
        if anchors is not None:
            if len(anchors) != len(videos):
                raise ValueError(f"{len(videos)} videos, {len(anchors)} anchor lists")
            if random_phase:
                raise ValueError("window anchors and random_phase both choose the start")
            for video, frames in zip(videos, anchors, strict=True):
                length = offsets[video + 1] - offsets[video]
                if len(frames) and (frames.min() < 0 or frames.max() > length - span):
                    raise ValueError(f"video {video}: anchors {frames.tolist()} leave no full "
                                     f"{span}-frame window in its {length} frames")  # fmt: skip
        if heart_rate is not None and (
            len(heart_rate) != len(videos) or not np.all(np.asarray(heart_rate) > 0)
        ):
            raise ValueError(f"{len(videos)} videos need as many positive heart rates")
        if contraction is not None:
            lengths = [offsets[v + 1] - offsets[v] for v in videos]
            if [len(c) for c in contraction] != lengths:
                raise ValueError(f"contraction curves must have the videos' lengths {lengths}")
        self.anchors, self.heart_rate, self.contraction = anchors, heart_rate, contraction

    def __len__(self) -> int:
        return len(self.videos)

    def window(self, length: int, anchors: np.ndarray | None = None) -> tuple[int, int]:
        """(first frame, real frames) of a random window of a ``length``-frame video (one of
        ``anchors`` when given and not empty); the window's frames are ``first + stride * i``
        for ``i < real frames`` (< n_frames: padded).
        """
        n, stride = self.n_frames, self.stride
        if anchors is not None and len(anchors):
            return int(anchors[int(torch.randint(0, len(anchors), ()))]), n
        span = window_span(n, stride)
        if not self.random_phase:
            if length >= span:
                return int(torch.randint(0, length - span + 1, ())), n
            return 0, -(-length // stride)  # a short video: all of it, from its first frame
        # phase first (kept within the full windows when short windows are dropped), then
        # the start among the window positions on that grid
        phases = min(stride, length - span + 1 if self.short_videos == "drop" else length)
        phase = int(torch.randint(0, phases, ())) if phases > 1 else 0  # stride 1: no draw
        on_grid = -(-(length - phase) // stride)  # frames phase, phase + stride, ... < length
        if on_grid <= n:
            return phase, on_grid
        return phase + stride * int(torch.randint(0, on_grid - n + 1, ())), n

    def residual_scale(self) -> float:
        """``1 / RMS`` of the differences between each frame of a window and its first frame,
        over every window of every video (a short video: its one window): the scale that
        gives the MCDM's residual target unit RMS (``MCDMModelParams.residual``)."""
        span, total, count = window_span(self.n_frames, self.stride), 0.0, 0
        for video in self.videos:
            frames = self.latents[self.offsets[video] : self.offsets[video + 1]]
            starts = max(len(frames) - span + 1, 1)
            first = frames[:starts].astype(np.float64)
            for lag in range(self.stride, min(span, len(frames)), self.stride):
                diff = frames[lag : lag + starts].astype(np.float64) - first[: len(frames) - lag]
                total, count = total + float(np.square(diff).sum()), count + diff.size
        if total == 0:
            raise ValueError("the training windows do not change over time: no residual scale")
        return float(np.sqrt(count / total))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        video = self.videos[index]
        first, length = int(self.offsets[video]), int(np.diff(self.offsets[video : video + 2])[0])
        offset, real = self.window(length, None if self.anchors is None else self.anchors[index])
        start = first + offset
        ref = first + int(torch.randint(0, length, ()))
        if self.reference == "window_start":
            ref = start
        end = start + window_span(real, self.stride)
        item = {
            "latents": torch.from_numpy(self.latents[start : end : self.stride]).float(),
            "ref_latent": torch.from_numpy(self.latents[ref]).float(),
            "motion": self.motion[index],
            "fps": torch.tensor(float(self.fps[index]) / self.stride),
        }
        if self.heart_rate is not None:
            item["heart_rate"] = torch.tensor(float(self.heart_rate[index]))
        if self.contraction is not None:
            curve = self.contraction[index][offset : offset + end - start : self.stride]
            item["contraction"] = torch.zeros(self.n_frames)
            item["contraction"][: len(curve)] = torch.from_numpy(np.asarray(curve, np.float32))
        if self.short_videos == "pad":
            item["latents"], item["frame_mask"] = pad_window(item["latents"], self.n_frames)
        return item


def pad_window(window: torch.Tensor, n_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``window`` ``(t, C, h, w)`` zero-padded at the end to ``n_frames``, and its frame
    mask ``(n_frames,)`` (1 = real frame), as the official loader pads short latent windows."""
    missing = n_frames - len(window)
    padding = window.new_zeros((missing, *window.shape[1:]))
    mask = torch.cat([torch.ones(len(window)), torch.zeros(missing)])
    return torch.cat([window, padding]), mask


def window_span(n_frames: int, stride: int) -> int:
    """Stored frames a window of ``n_frames`` taken every ``stride`` frames covers."""
    return (n_frames - 1) * stride + 1


@dataclass(frozen=True)
class ClipData:
    """The training set and what the saved pipeline needs to know about it."""

    dataset: LatentClipDataset
    normalizer: MotionNormalizer
    fps: float  # median frame rate of the training videos (the pipeline's default fps id)
    residual_scale: float | None = None  # 1 / RMS of the window residuals, when diffused
    heart_rate: float | None = None  # median training heart rate (the pipeline's default id)

    @property
    def anchored_videos(self) -> int:
        """Videos whose windows start at a detected ED (``window_anchor: ed``)."""
        anchors = self.dataset.anchors
        return 0 if anchors is None else sum(len(a) > 0 for a in anchors)


def _feature_rows(features: RaggedStore, latents: RaggedStore, splits: tuple[str, ...]):
    """Feature rows of ``splits`` and their videos, checked against the latents table."""
    rows = np.flatnonzero(np.isin(features.table["split"].astype(str), splits))
    videos = features.table["video"][rows].astype(np.int64)
    for row, video in zip(rows, videos, strict=True):
        ours, theirs = features.table["file_name"][row], latents.table["file_name"][video]
        if ours != theirs:
            raise ValueError(
                f"features row {row} ({ours}) points at latents video {video} ({theirs}): "
                "the stores come from different prepared datasets"
            )
    return rows, videos


def _with_ef(features: RaggedStore, rows: np.ndarray, path: str | Path) -> np.ndarray:
    """The ``rows`` whose video has an EF label; those without are left out and named."""
    ef = features.table["ef"][rows].astype(np.float64)
    missing = np.isnan(ef)
    if missing.all():
        raise ValueError(
            f"{path}: mcdm_train.model.condition_ef needs EF labels, and none of the "
            f"{len(rows)} training videos has one (label-free data: set condition_ef false)"
        )
    if missing.any():
        names = features.table["file_name"][rows[missing]].astype(str).tolist()
        logger.warning("%d videos without EF left out (condition_ef): %s", len(names), names)
    return rows[~missing]


def label_free_beats(
    videos_path: str | Path, latents: RaggedStore, videos: np.ndarray
) -> list[Beats]:
    """The label-free beats (:class:`echomotion.edes.Beats`: ED detection once per video)
    of the prepared videos at ``videos_path`` that are latents videos ``videos``."""
    store = RaggedStore(videos_path)
    beats = []
    for video in videos:
        name = latents.table["file_name"][video]
        if store.table["file_name"][video] != name:
            raise ValueError(f"{videos_path}: video {video} is not {name} of the latents store")
        beats.append(Beats.detect(store.video(int(video)), float(store.table["fps"][video])))
    return beats


def ed_anchors(beats: list[Beats], names: np.ndarray, span: int) -> list[np.ndarray]:
    """Each video's ED window starts for ``span``-frame windows; the videos without one
    (any start is then drawn) named in a warning."""
    anchors = [b.window_anchors(span) for b in beats]
    if missing := [str(n) for n, a in zip(names, anchors, strict=True) if not len(a)]:
        logger.warning(
            "%d videos without a detected ED: any window start %s", len(missing), missing
        )
    return anchors


def heart_rates(beats: list[Beats], names: np.ndarray) -> np.ndarray:
    """Each video's label-free heart rate (bpm), the unknown ones (named in a warning) set
    by :func:`known_heart_rates`."""
    rates = np.asarray([b.heart_rate for b in beats], np.float64)
    if unknown := [str(n) for n, r in zip(names, rates, strict=True) if np.isnan(r)]:
        logger.warning("%d videos with fewer than two detected EDs: no heart rate %s",
                       len(unknown), unknown)  # fmt: skip
    return known_heart_rates(rates)


FALLBACK_HEART_RATE_BPM = 75.0  # a resting adult's; only when no training video has a rate


def known_heart_rates(rates: np.ndarray) -> np.ndarray:
    """``rates`` with the unknown (NaN) ones set to the median of the known ones, or all to
    :data:`FALLBACK_HEART_RATE_BPM` (with a warning: the id then carries nothing) when no
    video has two detected EDs."""
    known = rates[np.isfinite(rates)]
    if known.size == 0:
        logger.warning(
            "time_ids 'heart_rate': no training video has two detected EDs (clips shorter "
            "than two beats?); every window gets %g bpm, so the id carries nothing",
            FALLBACK_HEART_RATE_BPM,
        )
        return np.full(len(rates), FALLBACK_HEART_RATE_BPM)
    return np.where(np.isfinite(rates), rates, np.median(known))


def _normalizer(features: RaggedStore, frame_size, normalize: bool) -> MotionNormalizer:
    """The TRAIN statistics of the features store, or identity statistics (raw motion)."""
    if normalize:
        return MotionNormalizer.from_attrs(features.attrs, frame_size)
    return MotionNormalizer.identity(int(features.attrs["motion_dim"]), frame_size)


def load_clip_data(
    latents_path: str | Path,
    features_path: str | Path,
    n_frames: int,
    splits: tuple[str, ...] = ("TRAIN",),
    stride: int = 1,
    reference: ReferenceFrame = "window_start",
    *,
    short_videos: ShortVideos = "drop",
    random_phase: bool = False,
    normalize_motion: bool = True,
    condition_ef: bool = False,
    residual: bool = False,
    window_anchor: WindowAnchor = "any",
    videos_path: str | Path | None = None,
    heart_rate: bool = False,
    contraction: bool = False,
) -> ClipData:
    """Latent windows (``n_frames`` every ``stride`` frames) of the videos of ``splits``
    that have a motion vector and are long enough (all, with ``short_videos="pad"``), and
    an EF label when ``condition_ef``; motion normalised with the features store's TRAIN
    statistics unless ``normalize_motion`` is False, then ``EF / 100`` prepended when
    ``condition_ef``. ``ClipData.fps`` is the windows' median frame rate; with ``residual``,
    ``ClipData.residual_scale`` is the dataset's :meth:`LatentClipDataset.residual_scale`.
    With ``window_anchor="ed"`` windows start at label-free ED frames of the prepared videos
    at ``videos_path``, and with ``heart_rate`` each item carries its video's label-free
    heart rate (:func:`label_free_beats`; unknown: the median), and ``ClipData.heart_rate``
    is their median; with ``contraction`` each item carries its window's label-free
    contraction curve (:attr:`echomotion.edes.Beats.contraction`)."""
    latents = RaggedStore(latents_path).load("latents")
    features = RaggedStore(features_path).load("motion")
    rows, videos = _feature_rows(features, latents, splits)
    span = window_span(n_frames, stride)
    if short_videos == "drop":
        long_enough = latents.lengths()[videos] >= span
        if not long_enough.all():
            logger.warning("%d videos shorter than %d frames left out", (~long_enough).sum(), span)
        rows, videos = rows[long_enough], videos[long_enough]
    if len(rows) == 0:
        raise ValueError(f"{features_path}: no {splits} video with motion and >= {span} frames")
    if condition_ef:
        rows = _with_ef(features, rows, features_path)
        videos = features.table["video"][rows].astype(np.int64)
    normalizer = _normalizer(features, latents.attrs["frame_size"], normalize_motion)
    motion = normalizer(video_motion(features)[rows])  # (n, D)
    if condition_ef:
        ef = torch.from_numpy(features.table["ef"][rows].astype(np.float32))
        motion = ef_token(motion, ef)  # (n, 1 + D)
    fps = latents.table["fps"][videos]
    anchors = rates = curves = None
    if window_anchor == "ed" or heart_rate or contraction:
        if videos_path is None:
            raise ValueError(
                "window_anchor 'ed', heart rates and contraction need the prepared videos"
            )
        beats = label_free_beats(videos_path, latents, videos)
        names = latents.table["file_name"][videos].astype(str)
        anchors = ed_anchors(beats, names, span) if window_anchor == "ed" else None
        rates = heart_rates(beats, names) if heart_rate else None
        curves = [b.contraction for b in beats] if contraction else None
    dataset = LatentClipDataset(
        all_latents(latents),
        latents.offsets,
        videos,
        motion,
        fps,
        n_frames,
        stride,
        reference,
        short_videos,
        random_phase,
        anchors,
        rates,
        curves,
    )
    scale = dataset.residual_scale() if residual else None
    rate = None if rates is None else float(np.median(rates))
    return ClipData(dataset, normalizer, float(np.median(fps)) / stride, scale, rate)


def save_pipeline(pipe: MotionConditionedVideoPipeline, path: Path):
    """``save_pretrained`` (self-contained: motion statistics in ``model_index.json`` and the
    loader module), written to a temporary folder and renamed."""
    write_dir_atomically(Path(path), partial(save_pretrained, pipe))


def train_mcdm(
    latents_path: str | Path,
    features_path: str | Path,
    vae_dir: str | Path,
    params: MCDMTrainParams,
    *,
    videos_path: str | Path | None = None,
    out_dir: str | Path,
    log_file: str | Path,
    seed: int,
) -> dict[str, float]:
    """Train the MCDM; rank 0 writes ``out_dir/pipeline`` (VAE + EMA UNet + DDPM scheduler).

    Returns the metrics: ``steps``, ``resumed_from`` (-1: fresh start), last curve
    ``loss`` (NaN when no step was run), ``train_videos``, ``motion_dim``, ``fps``,
    ``residual_scale`` (0 when the latents themselves are diffused), ``ed_anchored_videos``,
    ``heart_rate_bpm`` (the median training heart rate, the pipeline's default heart-rate
    id; 0 without ``time_ids: heart_rate``).
    """
    # 1. data and a check of the conditioning width
    data = load_clip_data(
        latents_path,
        features_path,
        params.model.num_frames,
        stride=params.frame_stride,
        reference=params.reference,
        short_videos=params.short_videos,
        random_phase=params.random_phase,
        normalize_motion=params.normalize_motion,
        condition_ef=params.model.condition_ef,
        residual=params.model.residual,
        window_anchor=params.window_anchor,
        videos_path=videos_path,
        heart_rate=params.model.time_ids == "heart_rate",
        contraction=params.model.contraction,
    )
    if data.normalizer.dim != params.model.motion_dim:
        raise ValueError(
            f"mcdm_train.model.motion_dim ({params.model.motion_dim}) must equal the motion_dim "
            f"of {features_path} ({data.normalizer.dim})"
        )
    # 2. train
    torch.manual_seed(seed)
    unet = build_unet(params.model)
    scheduler = build_scheduler(params.schedule)
    result = train_section(
        unet,
        data.dataset,
        partial(
            mcdm_loss,
            scheduler=scheduler,
            params=params.loss,
            time_ids=params.model.time_ids,
            residual_scale=data.residual_scale,
            motion_tokens=params.model.motion_tokens,
            fixed_columns=int(params.model.condition_ef),
        ),
        params,
        out_dir=out_dir,
        seed=seed,
        log_file=log_file,
        name="mcdm",
    )
    # 3. the sampling pipeline, from the final (EMA) weights
    if process_state().is_main_process:
        pipe = MotionConditionedVideoPipeline(
            vae=load_vae(vae_dir),
            unet=unet.eval(),
            scheduler=scheduler,
            fps=data.fps,
            reference=params.reference,
            motion_mean=data.normalizer.mean.tolist(),
            motion_std=data.normalizer.std.tolist(),
            frame_size=list(data.normalizer.frame_size),
            time_ids=params.model.time_ids,
            condition_ef=params.model.condition_ef,
            residual_scale=data.residual_scale,
            cond_dropout=params.loss.cond_dropout,
            motion_tokens=params.model.motion_tokens,
            window_anchor=params.window_anchor,
            heart_rate=data.heart_rate,
            contraction=params.model.contraction,
        )
        save_pipeline(pipe, Path(out_dir) / "pipeline")
    process_state().wait_for_everyone()
    last = result.last_row.get("loss", math.nan)
    return {
        "steps": result.step,
        "resumed_from": -1 if result.resumed_from is None else result.resumed_from,
        "loss": last,
        "train_videos": len(data.dataset),
        "motion_dim": data.normalizer.dim,
        "fps": data.fps,
        "residual_scale": data.residual_scale or 0.0,
        "ed_anchored_videos": data.anchored_videos,
        "heart_rate_bpm": data.heart_rate or 0.0,
    }


OUT = "models/mcdm"


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    fresh_checkpoints("mcdm_train", f"{OUT}/checkpoints")
    metrics = train_mcdm(
        latents_store.PATH,
        features_store.PATH,
        "models/vae/model",
        params.mcdm_train,
        videos_path=videos_store.PATH,
        out_dir=OUT,
        log_file="plots/mcdm_train/train.tsv",
        seed=params.mcdm_train.train.seed_or(params.shared.seed),
    )
    finish_training(
        params.mcdm_train, f"{OUT}/params_used.json", "metrics/mcdm_train.json", metrics
    )
