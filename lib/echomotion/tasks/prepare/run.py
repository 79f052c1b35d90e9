"""The ``prepare`` stage: any EchoNet-Dynamic-layout root -> one sharded video store.

Steps: 1. validate FileList.csv (bad rows become rejects), 2. read VolumeTracings.csv
for ED/ES, 3. decode each video with PyAV to grayscale at the target size, 4. resample
to the target frame rate (a video below it: ``low_fps`` policy), 5. append it to the
store, 6. write the rejects file. accepted + rejected = rows of FileList.csv, always.

Steps 3-4 (and the ED/ES detector) run in ``workers`` processes when it is above 1; the
results come back in FileList order, so the store and rejects are byte-identical to one
process.

With ``native_frames`` the same decode also keeps every source frame: they are written
as the nested store ``<store>/native`` (:data:`NATIVE_SCHEMA`): the same videos in the
same order, at the source rate and the same size, with the exact traced ED/ES. The
resampled store's bytes do not change.

The report also says what was done to the data: ED/ES origins, how many videos were
upsampled / downsampled / kept at their rate and by which factor, and histograms of the
accepted videos' source frame rates and frame sizes (:func:`source_histograms`).
"""

from __future__ import annotations

import csv
import logging
import math
import multiprocessing
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from echomotion.echonet import (
    VIDEOS,
    Reject,
    TracedFrames,
    VideoRecord,
    read_file_list,
    read_tracings,
)
from echomotion.edes import EdEs, detect_ed_es, mean_error, nearest_error
from echomotion.params import Params, write_used_params
from echomotion.stage import write_json
from echomotion.stores.ragged import RaggedStoreWriter
from echomotion.stores.videos import (
    open_native_writer,
    open_writer,
)
from echomotion.tasks.prepare.params import PrepareParams
from echomotion.video import VideoReadError, read_video, resample_indices

__all__ = [
    "FPS_BINS",
    "PrepareReport",
    "map_frame",
    "prepare_dataset",
    "resample_indices",
    "source_histograms",
    "write_source_plots",
]


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareReport:
    rows: int
    accepted: int
    rejected: int
    frames: int
    without_ef: int
    without_ed_es: int
    ed_es_from_tracings: int
    ed_es_from_detector: int
    detector_vs_tracings_ed_frames: float  # mean distance, traced ED -> nearest detected ED
    detector_vs_tracings_es_frames: float
    # what resampling did: stored fps / source fps > 1 (upsampled), < 1 (downsampled)
    upsampled: int = 0
    downsampled: int = 0
    kept_source_rate: int = 0  # stored at the source rate (same rate, native policy, no target)
    below_target_kept_native: int = 0  # of those: below target_fps, kept by low_fps=native
    upsample_factor_median: float = math.nan  # stored / source fps over the upsampled videos
    upsample_factor_max: float = math.nan
    downsample_factor_median: float = math.nan  # source / stored fps over the downsampled
    downsample_factor_max: float = math.nan
    source_fps_min: float = math.nan
    source_fps_max: float = math.nan
    fps_histogram: dict[str, int] = field(default_factory=dict)  # source fps bin -> videos
    frame_size_histogram: dict[str, int] = field(default_factory=dict)  # "HxW" -> videos

    def as_dict(self) -> dict:
        return asdict(self)


# source frame-rate bins of the report and plots/prepare/source_fps.csv: [lo, hi) fps
FPS_BINS = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, math.inf)


def _fps_bin(fps: float) -> str:
    i = int(np.searchsorted(FPS_BINS, fps, side="right")) - 1
    lo, hi = FPS_BINS[max(i, 0)], FPS_BINS[max(i, 0) + 1]
    return f"{lo:g}+" if math.isinf(hi) else f"{lo:g}-{hi:g}"


def source_histograms(
    fps: list[float], sizes: list[tuple[int, int]]
) -> tuple[dict[str, int], dict[str, int]]:
    """Videos per source-fps bin (every bin of :data:`FPS_BINS`, in order) and per source
    frame size ``"HxW"`` (most frequent first; ``"unknown"`` when the header has none)."""
    by_fps = {_fps_bin(lo): 0 for lo in FPS_BINS[:-1]}
    for f in fps:
        by_fps[_fps_bin(f)] += 1
    counts = Counter(f"{h}x{w}" if h and w else "unknown" for h, w in sizes)
    by_size = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return by_fps, by_size


def map_frame(index: int, source: np.ndarray) -> int:
    """Output index whose source frame is nearest to ``index`` (-1 stays unknown)."""
    if index < 0:
        return -1
    return int(np.argmin(np.abs(source - index)))


@dataclass(frozen=True)
class _Loaded:
    frames: np.ndarray  # (T, size, size) uint8 at the stored rate
    fps: float  # source fps
    source: np.ndarray  # (T,) source frame of each stored frame
    target: float | None  # stored rate; None: the source rate
    shape: tuple[int, int]  # source (height, width), (0, 0) when unknown
    all_frames: np.ndarray | None = None  # (n, size, size) uint8 at the source rate


def _load(root: Path, record: VideoRecord, params: PrepareParams) -> _Loaded:
    """Decode, check and resample one video."""
    video = read_video(
        root / VIDEOS / f"{record.file_name}.avi",
        size=(params.size, params.size),
        target_fps=params.target_fps,
        fps=record.fps,
        upsample=params.low_fps == "repeat",
        keep_all=params.native_frames,
    )
    n = video.decoded_frames
    if record.n_frames is not None and n < record.n_frames:
        raise VideoReadError(f"truncated: FileList declares {record.n_frames} frames, decoded {n}")
    fps, source = video.fps, video.source_indices
    if not fps:
        raise VideoReadError("frame rate unknown (no FPS in FileList nor in the file)")
    if len(source) < params.min_frames:
        raise VideoReadError(
            f"too few frames: {len(source)} after resampling to {video.target_fps} fps "
            f"(minimum {params.min_frames})"
        )
    return _Loaded(video.frames, fps, source, video.target_fps, video.source_size, video.all_frames)


# (ed, es, where they come from, the detector's result) of one stored video
EdEsResult = tuple[int, int, str, EdEs]


def _ed_es(
    frames: np.ndarray, fps: float, traced: TracedFrames, source: np.ndarray, mode: str
) -> EdEsResult:
    """(ed, es, source of them, detector result) for one resampled video."""
    detected = detect_ed_es(frames, fps)
    ed, es = map_frame(traced.ed, source), map_frame(traced.es, source)
    if mode == "tracings" and ed >= 0 and es >= 0 and ed != es:
        return ed, es, "tracings", detected
    if detected.ed >= 0:
        return detected.ed, detected.es, "detector", detected
    return -1, -1, "none", detected


def _process(
    root: Path, record: VideoRecord, traced: TracedFrames, params: PrepareParams
) -> tuple[_Loaded, EdEsResult] | Reject:
    """Decode one video and find its ED/ES, or the reason it is rejected (runs in a
    worker process when ``params.workers`` > 1)."""
    try:
        loaded = _load(root, record, params)
    except VideoReadError as err:
        reason = str(err).replace(str(root / VIDEOS) + "/", "")
        return Reject(record.file_name, record.row, reason)
    stored_fps = loaded.target or loaded.fps
    return loaded, _ed_es(loaded.frames, stored_fps, traced, loaded.source, params.ed_es)


def _decoded(
    root: Path, records: list[VideoRecord], tracings, params: PrepareParams
) -> Iterator[tuple[VideoRecord, tuple[_Loaded, EdEsResult] | Reject]]:
    """(record, :func:`_process` result) of every record, in order. With several workers
    at most 2 x workers videos are in flight, so memory stays bounded."""
    jobs = ((r, tracings.by_video.get(r.file_name, TracedFrames())) for r in records)
    if params.workers == 1:
        yield from ((r, _process(root, r, traced, params)) for r, traced in jobs)
        return
    # spawn: the parent may hold threads (store writer, tqdm, torch) that fork would copy
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(params.workers, mp_context=context)
    pending: deque = deque()  # (record, future) in FileList order
    try:
        for record, traced in jobs:
            pending.append((record, pool.submit(_process, root, record, traced, params)))
            if len(pending) > 2 * params.workers:
                record, future = pending.popleft()
                yield record, future.result()
        while pending:
            record, future = pending.popleft()
            yield record, future.result()
    finally:  # also when the caller stops early (an error, an interrupt)
        pool.shutdown(cancel_futures=True)


def _row(record: VideoRecord, ed_es: EdEsResult, fps: float, source: np.ndarray, target):
    ed, es, origin, detected = ed_es
    return {
        "file_name": record.file_name,
        "split": record.split,
        "ef": record.ef,
        "esv": record.esv,
        "edv": record.edv,
        "fps": float(target or fps),
        "source_fps": float(fps),
        "n_frames": len(source),
        "ed": ed,
        "es": es,
        "ed_es_source": origin,
        "ed_auto": detected.ed,
        "es_auto": detected.es,
        "source_row": record.row,
    }


def _native_row(
    row: dict, ed_es: EdEsResult, traced: TracedFrames, loaded: _Loaded, mode: str
) -> dict:
    """The table row of a video's source-rate frames: its resampled ``row`` with the
    source rate, the source frame count and ED/ES as source frame indices. Traced ED/ES
    are used as they are (clipped to the video); the detector's frames map back to the
    source frames they show."""
    n, source = len(loaded.all_frames), loaded.source
    _, _, _, detected = ed_es
    ed, es = map_frame(traced.ed, np.arange(n)), map_frame(traced.es, np.arange(n))
    origin = "tracings"
    if not (mode == "tracings" and ed >= 0 and es >= 0 and ed != es):
        found = detected.ed >= 0
        ed, es = (int(source[detected.ed]), int(source[detected.es])) if found else (-1, -1)
        origin = "detector" if found else "none"
    auto = [int(source[i]) if i >= 0 else -1 for i in (detected.ed, detected.es)]
    return row | {
        "fps": float(loaded.fps),
        "n_frames": n,
        "ed": ed,
        "es": es,
        "ed_es_source": origin,
        "ed_auto": auto[0],
        "es_auto": auto[1],
    }


def _native_writer(
    writer: RaggedStoreWriter, root: Path, params: PrepareParams
) -> AbstractContextManager[RaggedStoreWriter | None]:
    """The writer of the nested source-rate store (inside the store being written, so
    both appear together), or None without ``native_frames``."""
    if not params.native_frames:
        return nullcontext(None)
    return open_native_writer(writer, params.shard_frames, params.chunk_frames, root)


def prepare_dataset(
    root: str | Path, params: PrepareParams, store_path: str | Path, rejects_path: str | Path
) -> PrepareReport:
    """Validate, decode and store every usable video of ``root``; list the rest."""
    root = Path(root)
    records, rejects = read_file_list(root, params.ef_range)
    tracings = read_tracings(root, {r.file_name for r in records})
    accepted = without_ef = without_ed_es = 0
    origins: dict[str, int] = {"tracings": 0, "detector": 0, "none": 0}
    agreement: list[tuple[float, float]] = []
    rates: list[tuple[float, float]] = []  # (source fps, stored fps) per accepted video
    shapes: list[tuple[int, int]] = []
    with open_writer(
        store_path, params.size, params.shard_frames, params.chunk_frames, root
    ) as writer, _native_writer(writer, root, params) as native:  # fmt: skip
        with closing(_decoded(root, records, tracings, params)) as results:
            bar = tqdm(results, desc="prepare", total=len(records), unit="video")
            for record, result in bar:
                if isinstance(result, Reject):
                    rejects.append(result)
                    continue
                loaded, ed_es = result
                fps, source = loaded.fps, loaded.source
                row = _row(record, ed_es, fps, source, loaded.target)
                writer.append({"frames": loaded.frames}, **row)
                traced = tracings.by_video.get(record.file_name, TracedFrames())
                if native is not None:
                    native_row = _native_row(row, ed_es, traced, loaded, params.ed_es)
                    native.append({"frames": loaded.all_frames}, **native_row)
                rates.append((fps, loaded.target or fps))
                shapes.append(loaded.shape)
                accepted += 1
                without_ef += math.isnan(record.ef)
                without_ed_es += row["ed"] < 0 or row["es"] < 0
                origins[row["ed_es_source"]] += 1
                if traced.ed >= 0 and traced.es >= 0:
                    agreement.append(_agreement(traced, source, ed_es[3]))
        n_frames = writer.offsets[-1]
    write_rejects(rejects, rejects_path)
    report = PrepareReport(
        rows=accepted + len(rejects),
        accepted=accepted,
        rejected=len(rejects),
        frames=int(n_frames),
        without_ef=without_ef,
        without_ed_es=without_ed_es,
        ed_es_from_tracings=origins["tracings"],
        ed_es_from_detector=origins["detector"],
        detector_vs_tracings_ed_frames=mean_error([a[0] for a in agreement]),
        detector_vs_tracings_es_frames=mean_error([a[1] for a in agreement]),
        **_resampling(rates, shapes, params),
    )
    log.info("prepare: %s", report.as_dict())
    return report


def _stats(values: list[float], name: str) -> dict[str, float]:
    if not values:
        return {f"{name}_median": math.nan, f"{name}_max": math.nan}
    return {f"{name}_median": float(np.median(values)), f"{name}_max": float(max(values))}


def _resampling(
    rates: list[tuple[float, float]], shapes: list[tuple[int, int]], params: PrepareParams
) -> dict:
    """The report's resampling counts, factors and histograms."""
    up = [stored / src for src, stored in rates if stored > src and not math.isclose(stored, src)]
    down = [src / stored for src, stored in rates if stored < src and not math.isclose(stored, src)]
    kept = [src for src, stored in rates if math.isclose(stored, src)]
    target = params.target_fps
    native = [f for f in kept if target and f < target and not math.isclose(f, target)]
    sources = [src for src, _ in rates]
    fps_hist, size_hist = source_histograms(sources, shapes)
    return {
        "upsampled": len(up),
        "downsampled": len(down),
        "kept_source_rate": len(kept),
        "below_target_kept_native": len(native),
        **_stats(up, "upsample_factor"),
        **_stats(down, "downsample_factor"),
        "source_fps_min": float(min(sources)) if sources else math.nan,
        "source_fps_max": float(max(sources)) if sources else math.nan,
        "fps_histogram": fps_hist,
        "frame_size_histogram": size_hist,
    }


def write_source_plots(report: PrepareReport, plots_dir: str | Path) -> None:
    """``source_fps.csv`` (fps_bin, videos) and ``frame_size.csv`` (frame_size, videos):
    the report's histograms as DVC bar plots."""
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    for name, column, hist in (
        ("source_fps.csv", "fps_bin", report.fps_histogram),
        ("frame_size.csv", "frame_size", report.frame_size_histogram),
    ):
        with (plots_dir / name).open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([column, "videos"])
            writer.writerows(hist.items())


def _agreement(traced: TracedFrames, source: np.ndarray, detected) -> tuple[float, float]:
    """Frames from each traced ED / ES to the nearest ED / ES the detector found (any cycle:
    a tracing marks one cycle of several)."""
    ed = nearest_error(np.array([map_frame(traced.ed, source)]), detected.ed_all)
    es = nearest_error(np.array([map_frame(traced.es, source)]), detected.es_all)
    return (float(ed[0]) if ed.size else math.nan, float(es[0]) if es.size else math.nan)


def write_rejects(rejects: list[Reject], path: str | Path) -> None:
    """CSV of every unusable row: FileName, row (line in FileList.csv), reason."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["FileName", "row", "reason"])
        for r in sorted(rejects, key=lambda r: r.row):
            writer.writerow([r.file_name, r.row, r.reason])
    for r in rejects:
        log.warning("rejected %s (row %d): %s", r.file_name or "<empty>", r.row, r.reason)


OUT = "data/prepared"


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    report = prepare_dataset(
        params.data.root, params.prepare, f"{OUT}/videos.zarr", f"{OUT}/rejects.csv"
    )
    write_used_params(params.prepare, f"{OUT}/params_used.json")
    write_json("metrics/prepare.json", report.as_dict())
    write_source_plots(report, "plots/prepare")
