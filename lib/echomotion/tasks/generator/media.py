"""Previews of generated videos: a PNG grid of frames and an animated GIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _fit(video: np.ndarray, n: int) -> np.ndarray:
    """``video`` ``(T, H, W)`` cut or padded (last frame repeated) to ``n`` frames."""
    if len(video) >= n:
        return video[:n]
    return np.concatenate([video, np.repeat(video[-1:], n - len(video), axis=0)])


def frame_grid(videos: list[np.ndarray], n_columns: int, gap: int = 2) -> np.ndarray:
    """One row per video ``(T, H, W)``, ``n_columns`` frames spread evenly over its length."""
    height, width = videos[0].shape[1:]
    rows = []
    for video in videos:
        picks = np.linspace(0, len(video) - 1, n_columns).round().astype(int)
        row = np.full((height, n_columns * (width + gap) - gap), 255, dtype=np.uint8)
        for c, t in enumerate(picks):
            row[:, c * (width + gap) : c * (width + gap) + width] = video[t]
        rows.append(row)
    return _stack(rows, gap, axis=0)


def _stack(images: list[np.ndarray], gap: int, axis: int) -> np.ndarray:
    """Images joined along ``axis`` with white ``gap``-pixel separators."""
    shape = list(images[0].shape)
    shape[axis] = gap
    sep = np.full(shape, 255, dtype=np.uint8)
    parts = [p for image in images for p in (image, sep)][:-1]
    return np.concatenate(parts, axis=axis)


def tiled_video(rows: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Videos ``(T, H, W)`` tiled as ``rows`` of equal-length rows -> ``(T, H', W')``."""
    n = max(len(v) for row in rows for v in row)
    frames = []
    for t in range(n):
        lines = [_stack([_fit(v, n)[t] for v in row], gap, axis=1) for row in rows]
        frames.append(_stack(lines, gap, axis=0))
    return np.stack(frames)


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write a grayscale uint8 ``(H, W)`` image."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode="L").save(path, optimize=False)


def save_gif(frames: np.ndarray, path: str | Path, fps: float) -> None:
    """Write grayscale uint8 frames ``(T, H, W)`` as a looping GIF."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f, mode="L") for f in frames]
    duration = round(1000 / fps) if fps > 0 else 40
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)
