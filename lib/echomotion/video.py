"""Video files in and out with PyAV (scikit-video does not work with numpy 2).

Frames inside the project are grayscale uint8 arrays of shape (T, H, W).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)


class VideoReadError(ValueError):
    """A video file that cannot be used: missing, empty, unreadable or truncated."""


@dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray  # (T, H, W) uint8
    fps: float  # frame rate stored in the container (0.0 if it has none)
    declared_frames: int  # frame count in the container header (0 if unknown)


def read_video(path: str | Path, size: tuple[int, int] | None = None) -> DecodedVideo:
    """Decode every frame of ``path`` to grayscale uint8.

    ``size`` = (height, width) rescales while decoding (swscale, area filter).
    Raises :class:`VideoReadError` naming the file and the reason when the file is
    missing, empty, not a video, or ends before the frame count its header declares.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: file is empty (0 bytes)")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            declared = int(stream.frames or 0)
            reformat = {"format": "gray"}
            if size is not None:
                reformat.update(height=size[0], width=size[1], interpolation="AREA")
            for frame in container.decode(stream):
                frames.append(frame.reformat(**reformat).to_ndarray())
    except VideoReadError:
        raise
    except (av.FFmpegError, ValueError, OSError) as err:
        got = f" after {len(frames)} frames" if frames else ""
        raise VideoReadError(f"{path}: cannot decode{got} ({err})") from err
    if not frames:
        raise VideoReadError(f"{path}: no decodable frames")
    if declared and len(frames) < declared:
        raise VideoReadError(
            f"{path}: truncated: header declares {declared} frames, decoded {len(frames)}"
        )
    return DecodedVideo(np.stack(frames), fps, declared)


def write_video(path: str | Path, frames: np.ndarray, fps: float, codec: str = "mjpeg") -> None:
    """Write (T, H, W) uint8 grayscale frames as an AVI like EchoNet-Dynamic's (3-channel).

    ``codec`` is ``mjpeg`` (lossy, as the public archive) or ``ffv1`` (lossless).
    The file is written next to its final name and renamed, so a crash leaves no
    half-written video.
    """
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W) uint8, got {frames.shape} {frames.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    rate = round(fps)
    with av.open(str(tmp), mode="w", format="avi") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames.shape[1:]
        stream.thread_count = 1  # identical bytes on every run
        if codec == "mjpeg":
            stream.pix_fmt = "yuvj420p"
            stream.codec_context.qmin = stream.codec_context.qmax = 2
        else:
            stream.pix_fmt = "yuv420p" if codec != "ffv1" else "yuv444p"
        for gray in frames:
            rgb = np.repeat(gray[:, :, None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
