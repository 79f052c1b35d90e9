"""Stage ``sample``: a synthetic EchoNet-Dynamic-format dataset from the trained MCDM.

Every video of ``params.splits`` that has a motion vector is a motion source. It drives
a ``self`` video (its own first frame) and ``params.transfer_sources`` transfer-mode
videos, ``transfer``, ``transfer2``, ... (appearance = the first frame of each of the next
videos of those splits, in store order, wrapping around): one motion on several anatomies,
so a transfer measure is not one pairing's. The labels (EF, ESV, EDV) are the motion
source's: the motion carries the cardiac function.
With ``params.protocol`` "official" (the LabelfreeMCDM evaluation protocol) the sources
are sorted by file name and each drives one ``self`` video whose reference is a random
frame (seeded) of the same video; ``params.max_sources`` keeps the first N sources.

A pipeline trained on windows that start at end-diastole (``mcdm_train.window_anchor``
"ed") gets its reference frames at a label-free ED of the appearance video
(:meth:`echomotion.edes.Beats.window_anchors`), and the driving video is compared from its own
first such ED. ``FileList.csv`` records both frames (``ReferenceFrame``, ``MotionStart``).
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from echomotion.device import resolve_device
from echomotion.diffusion.loading import load_pipeline
from echomotion.diffusion.pipeline import MotionConditionedVideoPipeline
from echomotion.echonet import FILE_LIST, FILE_LIST_COLUMNS, TRACING_COLUMNS, TRACINGS, VIDEOS
from echomotion.edes import Beats, heart_rate_or_default
from echomotion.media import PreviewRow, labelled_grid, labelled_video, save_gif, save_png
from echomotion.params import Params, write_used_params
from echomotion.stage import write_json
from echomotion.stores import features as features_store
from echomotion.stores import videos as videos_store
from echomotion.stores.features import video_motion
from echomotion.stores.ragged import RaggedStore
from echomotion.stores.videos import frame_size
from echomotion.tasks.sample.params import SampleParams
from echomotion.video import resample_indices, write_video

logger = logging.getLogger(__name__)


EXTRA_COLUMNS = (
    "Synthetic", "MotionSource", "AppearanceSource", "Mode", "ReferenceFrame", "MotionStart",
    "HeartRate",
)  # fmt: skip


def transfer_key(k: int) -> str:
    """The name of a motion source's ``k``-th (0-based) transfer video: ``transfer``,
    ``transfer2``, ``transfer3``, ... (its file name's suffix)."""
    return "transfer" if k == 0 else f"transfer{k + 1}"


def mode_of(key: str) -> str:
    """The ``Mode`` of a synthetic video named by ``key``: ``transfer`` for every
    :func:`transfer_key`, else the key itself (``self``)."""
    return "transfer" if key.startswith("transfer") else key


@dataclass(frozen=True)
class Source:
    """One motion source: its video (index in videos.zarr), its feature row and the
    appearance videos of its synthetic videos, and their reference frames (absent: the
    first frame), by key (``self``, :func:`transfer_key`); ``motion_start``: the frame of
    the motion source its synthetic videos are compared from."""

    video: int
    feature_row: int
    appearance: dict[str, int]
    reference_frame: dict[str, int] = field(default_factory=dict)
    motion_start: int = 0


def plan_sources(
    videos: RaggedStore, features: RaggedStore, splits: tuple[str, ...], transfers: int = 1
) -> list[Source]:
    """The motion sources of ``splits`` in store order, with their appearance videos: its
    own (``self``) and the ``transfers`` videos of ``splits`` that follow it in store order,
    wrapping around (fewer where the splits hold fewer other videos)."""
    pool = [int(v) for v in np.flatnonzero(np.isin(videos.table["split"].astype(str), splits))]
    sources, n = [], min(transfers, len(pool) - 1)
    for row in np.flatnonzero(np.isin(features.table["split"].astype(str), splits)):
        video = int(features.table["video"][row])
        if features.table["file_name"][row] != videos.table["file_name"][video]:
            raise ValueError(f"features row {row} does not match videos.zarr video {video}")
        at = pool.index(video)
        following = [pool[(at + 1 + k) % len(pool)] for k in range(n)]
        modes = {"self": video} | {transfer_key(k): v for k, v in enumerate(following)}
        sources.append(Source(video, int(row), modes))
    if n < transfers:
        logger.warning("%d videos in %s: %d transfer video(s) per motion source, not %d",
                       len(pool), splits, n, transfers)  # fmt: skip
    return sources


def plan_official(
    videos: RaggedStore, features: RaggedStore, splits: tuple[str, ...], seed: int
) -> list[Source]:
    """The official evaluation protocol (LabelfreeMCDM ``TensorMotionSet`` with
    ``sample_motion.py``): the motion sources of ``splits`` sorted by file name, each the
    appearance of its own ``self`` video, the reference a random frame of it (seeded)."""
    rows = np.flatnonzero(np.isin(features.table["split"].astype(str), splits))
    rows = sorted(rows, key=lambda r: str(features.table["file_name"][r]))
    rng, lengths, sources = np.random.default_rng(seed), videos.lengths(), []
    for row in rows:
        video = int(features.table["video"][row])
        if features.table["file_name"][row] != videos.table["file_name"][video]:
            raise ValueError(f"features row {row} does not match videos.zarr video {video}")
        frame = int(rng.integers(lengths[video]))
        sources.append(Source(video, int(row), {"self": video}, {"self": frame}, frame))
    return sources


class VideoBeats:
    """The label-free beats (:class:`echomotion.edes.Beats`) of the videos of a store,
    detected on first use and kept: a driver's ED anchor and heart rate come from one
    detection."""

    def __init__(self, videos: RaggedStore):
        self.videos, self._beats = videos, {}

    def __call__(self, video: int) -> Beats:
        if video not in self._beats:
            fps = float(self.videos.table["fps"][video])
            self._beats[video] = Beats.detect(self.videos.video(video), fps)
        return self._beats[video]


def at_end_diastole(sources: list[Source], beats: VideoBeats, span_seconds: float):
    """``sources`` with every reference frame at the first label-free ED of its video from
    which ``span_seconds`` fit (:meth:`echomotion.edes.Beats.window_anchors`; none
    detected: the first frame), and each motion source compared from its own such ED."""

    def anchor(video: int) -> int:
        video_beats = beats(video)
        fps = video_beats.fps
        span = math.floor(span_seconds * fps) + 1 if fps > 0 else 1
        found = video_beats.window_anchors(span)
        return int(found[0]) if len(found) else 0

    return [
        replace(s, reference_frame={m: anchor(v) for m, v in s.appearance.items()},
                motion_start=anchor(s.video))
        for s in sources
    ]  # fmt: skip


def plan(
    videos: RaggedStore,
    features: RaggedStore,
    params: SampleParams,
    seed: int,
    window_anchor: str = "any",
    fps: float = 0.0,
    beats: VideoBeats | None = None,
):
    """The motion sources of ``params.protocol``, the first ``params.max_sources`` of them;
    for a pipeline trained on ED-anchored windows (``window_anchor`` "ed", the pipeline's
    frame rate ``fps``) with their reference frames at ED (:func:`at_end_diastole`, from
    ``beats``, the videos' detected beats)."""
    if params.protocol == "official":
        sources = plan_official(videos, features, params.splits, seed)
    else:
        sources = plan_sources(videos, features, params.splits, params.transfer_sources)
    sources = sources[: params.max_sources]
    if window_anchor == "ed" and params.protocol != "official":
        span = (params.num_frames - 1) / fps if fps > 0 else 0.0
        sources = at_end_diastole(sources, beats or VideoBeats(videos), span)
    return sources


def generate_videos(
    pipe: MotionConditionedVideoPipeline,
    references: np.ndarray,
    motion: torch.Tensor,
    params: SampleParams,
    seed: int,
    ef: float | None = None,
    heart_rate: float | None = None,
    contraction: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 videos ``(B, T, H, W)``, one per reference frame ``(B, H, W)``, all driven by
    the raw ``motion`` ``(1, D)`` (the pipeline normalises it) and, for a pipeline trained
    with EF, by the driver's ``ef`` (percent), for one trained with the heart rate, by the
    driver's ``heart_rate`` (bpm; None: the pipeline's default), for one trained with the
    contraction, by the driver's ``contraction`` ``(1, num_frames)``; deterministic given
    ``seed``."""
    return pipe(
        reference=references,
        motion=motion,
        ef=ef,
        heart_rate=heart_rate,
        contraction=contraction,
        num_frames=params.num_frames,
        window_overlap=params.window_overlap,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        noise_aug_strength=params.noise_aug_strength,
        generator=torch.Generator().manual_seed(seed),
    ).frames


def driver_heart_rate(
    pipe: MotionConditionedVideoPipeline, beats: VideoBeats, video: int
) -> float | None:
    """The label-free heart rate (bpm) of the driving ``video`` when the pipeline conditions
    on it (``time_ids: heart_rate``), else None; None also (the pipeline's training median
    is used, and the video named) when fewer than two EDs are detected in it."""
    if pipe.config.get("time_ids") != "heart_rate":
        return None
    name = str(beats.videos.table["file_name"][video])
    return heart_rate_or_default(beats(video).heart_rate, name)


def driver_contraction(
    pipe: MotionConditionedVideoPipeline, beats: VideoBeats, source: Source, n: int
) -> np.ndarray | None:
    """The label-free contraction ``(1, n)`` of the driving video from its ``motion_start``
    at the pipeline's frame rate when the pipeline conditions on it, else None."""
    if not pipe.config.get("contraction", False):
        return None
    fps = float(pipe.config.fps or 0.0)
    return beats(source.video).contraction_from(source.motion_start, n, fps)[None]


def driver_ef(pipe: MotionConditionedVideoPipeline, features: RaggedStore, row: int):
    """The EF (percent) of features ``row``'s video when the pipeline conditions on EF
    (``mcdm_train.model.condition_ef``), else None; ValueError naming a video without EF."""
    if not pipe.config.get("condition_ef"):
        return None
    ef = float(features.table["ef"][row])
    if math.isnan(ef):
        name = features.table["file_name"][row]
        raise ValueError(f"motion source {name} has no EF; the pipeline conditions on EF")
    return ef


def _label(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


def file_list_row(
    name: str,
    video: np.ndarray,
    fps: float,
    source: dict,
    appearance: str,
    mode: str,
    frames: tuple[int, int] = (0, 0),
    heart_rate: float | None = None,
) -> dict:
    """The FileList.csv row of a synthetic video (labels carried from the motion ``source``;
    ``frames``: the appearance video's reference frame and the motion source's frame the
    video is compared from; ``heart_rate``: the heart-rate id (bpm) it was drawn with, empty
    for a pipeline without one)."""
    return {
        "FileName": name,
        "EF": _label(source["ef"]),
        "ESV": _label(source["esv"]),
        "EDV": _label(source["edv"]),
        "FrameHeight": video.shape[1],
        "FrameWidth": video.shape[2],
        "FPS": f"{fps:g}",
        "NumberOfFrames": len(video),
        "Split": source["split"],
        "Synthetic": 1,
        "MotionSource": source["file_name"],
        "AppearanceSource": appearance,
        "Mode": mode,
        "ReferenceFrame": frames[0],
        "MotionStart": frames[1],
        "HeartRate": "" if heart_rate is None else f"{heart_rate:.2f}",
    }


def write_tables(root: Path, rows: list[dict]) -> None:
    """FileList.csv (EchoNet columns + :data:`EXTRA_COLUMNS`) and a header-only
    VolumeTracings.csv (synthetic videos have no tracings)."""
    with (root / FILE_LIST).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*FILE_LIST_COLUMNS, *EXTRA_COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    with (root / TRACINGS).open("w", newline="") as f:
        csv.writer(f).writerow(TRACING_COLUMNS)


def time_matched(video: np.ndarray, fps: float, target_fps: float, n: int) -> np.ndarray:
    """At most ``n`` frames of ``video`` (at ``fps``) resampled to ``target_fps`` from its
    first frame (the first ``n`` frames if either rate is unknown)."""
    if fps <= 0 or target_fps <= 0:
        return video[:n]
    return video[resample_indices(len(video), fps, target_fps)[:n]]


def preview_rows(
    driver: np.ndarray, driver_name: str, synthetic: dict[str, tuple[np.ndarray, np.ndarray, str]]
) -> list[PreviewRow]:
    """Rows of one motion source: the driving video, then each synthetic video with its
    reference frame; ``synthetic``: key (``self``, ``transfer``, ``transfer2``, ...) ->
    (video, reference, appearance file name)."""
    rows = [PreviewRow(f"driver\n{driver_name[:14]}", driver)]
    for mode, (video, reference, appearance) in synthetic.items():
        rows.append(PreviewRow(f"{mode}\nref {appearance[:14]}", video, reference))
    return rows


def write_previews(rows: list[PreviewRow], plots_dir: Path, params, fps: float):
    """``grid.png`` (label, reference and frames per row) and ``samples.gif`` (the same
    rows animated), one block of rows per motion source."""
    save_png(labelled_grid(rows, params.preview_frames, fps), plots_dir / "grid.png")
    save_gif(labelled_video(rows), plots_dir / "samples.gif", fps if fps > 0 else 25.0)


def _check_frame_size(videos: RaggedStore, trained: tuple[int, int]) -> None:
    size = frame_size(videos)
    if size != tuple(trained):
        raise ValueError(f"videos are {size}, the pipeline was trained on {tuple(trained)}")


def sample_dataset(
    pipeline_dir: str | Path,
    videos_path: str | Path,
    features_path: str | Path,
    out_root: str | Path,
    plots_dir: str | Path,
    params: SampleParams,
    seed: int,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Write the synthetic dataset to ``out_root`` (EchoNet layout, replaced whole) and
    ``grid.png`` / ``samples.gif`` to ``plots_dir``, the pipeline running on ``device``
    (the noise is drawn on the CPU, so a seed gives the same noise on every device);
    return counts and timings."""
    # 1. model, data and plan
    pipe = load_pipeline(pipeline_dir, params.scheduler).to(device)
    videos, features = RaggedStore(videos_path), RaggedStore(features_path).load("motion")
    _check_frame_size(videos, pipe.config.frame_size)
    fps = float(pipe.config.fps or 0.0)
    anchor = pipe.config.get("window_anchor", "any")
    beats = VideoBeats(videos)  # each driver's EDs detected once: anchor and heart rate
    sources = plan(videos, features, params, seed, anchor, fps, beats)
    motions = torch.as_tensor(video_motion(features))  # (n_videos, D), raw
    out_root, plots_dir = Path(out_root), Path(plots_dir)
    tmp = out_root.with_name(f".{out_root.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / VIDEOS).mkdir(parents=True)
    # 2. generate, source by source
    rows, previews, start = [], [], time.perf_counter()
    for source in tqdm(sources, desc="sample", unit="source"):
        info = videos.row(source.video)
        keys = list(source.appearance)  # self, transfer, transfer2, ...
        refs = np.stack(
            [videos.video(source.appearance[k])[source.reference_frame.get(k, 0)] for k in keys]
        )  # (k, H, W)
        motion = motions[source.feature_row][None]  # (1, D)
        ef = driver_ef(pipe, features, source.feature_row)  # None: a label-free model
        rate = driver_heart_rate(pipe, beats, source.video)  # None: no id, or not detected
        drawn_at = pipe.config.get("heart_rate") if rate is None else rate  # what was used
        curve = driver_contraction(pipe, beats, source, params.num_frames)  # (1, T) | None
        synthetic = generate_videos(
            pipe, refs, motion, params, seed + source.video, ef, rate, curve
        )
        for key, video in zip(keys, synthetic, strict=True):
            name = f"{info['file_name']}_{key}"
            write_video(tmp / VIDEOS / f"{name}.avi", video, fps or info["fps"], params.codec)
            appearance = str(videos.table["file_name"][source.appearance[key]])
            frames = (source.reference_frame.get(key, 0), source.motion_start)
            rows.append(
                file_list_row(
                    name, video, fps or info["fps"], info, appearance, mode_of(key), frames,
                    drawn_at,
                )
            )  # fmt: skip
        if len(previews) < params.preview_sources:
            driving = videos.video(source.video)[source.motion_start :]
            driver = time_matched(driving, info["fps"], fps, params.num_frames)
            names = [str(videos.table["file_name"][source.appearance[k]]) for k in keys]
            shown = {k: (v, r, n) for k, v, r, n in zip(keys, synthetic, refs, names, strict=True)}
            previews.append(preview_rows(driver, str(info["file_name"]), shown))
    seconds = time.perf_counter() - start
    # 3. tables, then the dataset replaces any previous one at once
    write_tables(tmp, rows)
    shutil.rmtree(out_root, ignore_errors=True)
    tmp.rename(out_root)
    if previews:
        write_previews([row for rows in previews for row in rows], plots_dir, params, fps)
    logger.info("wrote %d synthetic videos to %s in %.1f s", len(rows), out_root, seconds)
    return {
        "motion_sources": len(sources),
        "videos": len(rows),
        "transfer": sum(r["Mode"] == "transfer" for r in rows),
        "self": sum(r["Mode"] == "self" for r in rows),
        "frames_per_video": params.num_frames,
    }


OUT = "data/synthetic"


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    report = sample_dataset(
        "models/mcdm/pipeline",
        videos_store.PATH,
        features_store.PATH,
        f"{OUT}/echonet",
        "plots/sample",
        params.sample,
        seed=params.shared.seed,
        device=resolve_device(params.shared.device),
    )
    write_used_params(params.sample, f"{OUT}/params_used.json")
    write_json("metrics/sample.json", report)
