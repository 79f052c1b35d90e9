"""Video files in and out with PyAV (scikit-video does not work with numpy 2).

Frames inside the project are grayscale uint8 arrays of shape (T, H, W).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

log = logging.getLogger(__name__)

# FFmpeg writes its version into containers ("Lavf...") and MJPEG frames ("Lavc...")
# unless told to be bit-exact: without these flags the same frames give other bytes
# under another FFmpeg build, and every content hash downstream changes.
BITEXACT_MUXER = {"fflags": "+bitexact"}
BITEXACT_ENCODER = {"flags": "+bitexact"}


class VideoReadError(ValueError):
    """A video file that cannot be used: missing, empty, unreadable or truncated."""


@dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray  # (T, H, W) uint8, at the requested rate
    fps: float  # source frame rate (the one given, else the container's; 0.0 if none)
    declared_frames: int  # frame count in the container header (0 if unknown)
    decoded_frames: int  # frames decoded from the file
    source_indices: np.ndarray  # (T,) index of each returned frame in the file
    target_fps: float | None = None  # the rate of ``frames``; None: the source rate
    source_size: tuple[int, int] = (0, 0)  # (height, width) of the frames in the file
    all_frames: np.ndarray | None = None  # (decoded_frames, H, W) uint8 with keep_all, else None


def resample_indices(n: int, fps: float, target_fps: float | None) -> np.ndarray:
    """Source frame index of each output frame when resampling ``n`` frames to ``target_fps``."""
    if target_fps is None or math.isclose(fps, target_fps):
        return np.arange(n)
    n_out = math.floor((n - 1) * target_fps / fps + 1e-9) + 1
    return np.minimum(np.round(np.arange(n_out) * fps / target_fps).astype(np.int64), n - 1)


def read_video(
    path: str | Path,
    size: tuple[int, int] | None = None,
    target_fps: float | None = None,
    fps: float | None = None,
    upsample: bool = True,
    keep_all: bool = False,
) -> DecodedVideo:
    """Decode ``path`` to grayscale uint8, resampled to ``target_fps`` if given.

    ``upsample=False`` keeps a video slower than ``target_fps`` at its own rate (it is
    still downsampled when faster); ``DecodedVideo.target_fps`` says which rate was used.
    ``keep_all=True`` also returns every decoded frame at the source rate
    (``DecodedVideo.all_frames``) from the same pass; ``frames`` are then rows of it, the
    same bytes as without it.

    ``size`` = (height, width) rescales while decoding (swscale, area filter). ``fps``
    overrides the container's frame rate (EchoNet's FileList states it). Every frame is
    decoded (codecs need it) but only the kept ones are converted. Raises
    :class:`VideoReadError` naming the file and the reason when the file is missing,
    empty, not a video, or ends before the frame count its header declares.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: file is empty (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: no video stream")
            stream = container.streams.video[0]
            fps = fps or float(stream.average_rate or stream.guessed_rate or 0.0)
            declared = int(stream.frames or 0)
            if target_fps is not None and not fps:
                raise VideoReadError(f"{path}: frame rate unknown, cannot resample")
            if not upsample and target_fps is not None and _slower(fps, target_fps):
                target_fps = None
            video = _decode(path, container, stream, size, fps, target_fps, declared, keep_all)
            shape = (int(stream.codec_context.height), int(stream.codec_context.width))
            return replace(video, target_fps=target_fps, source_size=shape)
    except VideoReadError:
        raise
    except (av.FFmpegError, ValueError, OSError) as err:
        raise VideoReadError(f"{path}: cannot decode ({err})") from err


def _slower(fps: float, target_fps: float) -> bool:
    return fps < target_fps and not math.isclose(fps, target_fps)


def _decode(path, container, stream, size, fps, target_fps, declared, keep_all) -> DecodedVideo:
    # frames to convert: every index the resampling can pick (indices are increasing)
    wanted = set(resample_indices(max(declared, 1) * 2 + 10_000, fps or 1.0, target_fps).tolist())
    reformat: dict = {"format": "gray"}
    reformatter = VideoReformatter()  # one swscale context for the whole video
    frames, kept, n = [], [], 0
    try:
        for frame in container.decode(stream):
            if keep_all or n in wanted:  # keep_all: every frame, resampled below by indexing
                if size is not None and (frame.height, frame.width) != tuple(size):
                    reformat.update(height=size[0], width=size[1], interpolation="AREA")
                frames.append(reformatter.reformat(frame, **reformat).to_ndarray())
                kept.append(n)
            n += 1
    except (av.FFmpegError, ValueError) as err:
        raise VideoReadError(f"{path}: cannot decode after {n} frames ({err})") from err
    if n == 0:
        raise VideoReadError(f"{path}: no decodable frames")
    if declared and n < declared:
        raise VideoReadError(f"{path}: truncated: header declares {declared} frames, decoded {n}")
    source = resample_indices(n, fps or 1.0, target_fps)
    positions = np.searchsorted(np.asarray(kept), source)
    converted = np.stack(frames)
    everything = converted if keep_all else None
    return DecodedVideo(converted[positions], fps, declared, n, source, all_frames=everything)


def write_video(path: str | Path, frames: np.ndarray, fps: float, codec: str = "mjpeg") -> None:
    """Write uint8 frames, (T, H, W) grayscale or (T, H, W, 3) RGB, as an AVI like
    EchoNet-Dynamic's (3-channel).

    ``codec`` is ``mjpeg`` (lossy, as the public archive) or ``ffv1`` (lossless).
    The file is written next to its final name and renamed, so a crash leaves no
    half-written video. Muxer and encoder run with FFmpeg's ``bitexact`` flags, so the
    file carries no library version tags and its bytes depend on the frames alone.
    """
    frames = np.asarray(frames)
    rgb_input = frames.ndim == 4 and frames.shape[-1] == 3
    if not (frames.ndim == 3 or rgb_input) or frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be (T, H, W) or (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    rate = Fraction(fps).limit_denominator(1000)  # exact: 8.33 fps stays 25/3, not 8
    with av.open(str(tmp), mode="w", format="avi", options=BITEXACT_MUXER) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.thread_count = 1  # identical bytes on every run
        stream.codec_context.options = dict(BITEXACT_ENCODER)
        if codec == "mjpeg":
            stream.pix_fmt = "yuvj420p"
            stream.codec_context.qmin = stream.codec_context.qmax = 2
        else:
            stream.pix_fmt = "yuv420p" if codec != "ffv1" else "yuv444p"
        for frame in frames:
            rgb = frame if rgb_input else np.repeat(frame[:, :, None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
