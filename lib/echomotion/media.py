"""Previews of generated videos: a labelled PNG grid of frames and an animated GIF."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

LABEL_WIDTH = 120  # pixels of the row-label column


HEADER_HEIGHT = 14  # pixels of the column-title row


@dataclass(frozen=True)
class PreviewRow:
    """One labelled row of a preview: ``video`` ``(T, H, W)`` and the ``reference`` frame
    ``(H, W)`` it was generated from (None for a real video)."""

    label: str
    video: np.ndarray
    reference: np.ndarray | None = None


def _text(image: np.ndarray, text: str, x: int, y: int) -> None:
    """Black text with its baseline at ``(x, y)`` on a white uint8 image (in place)."""
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.33, 0, 1, cv2.LINE_AA)


def _label_cell(lines: list[str], height: int) -> np.ndarray:
    cell = np.full((height, LABEL_WIDTH), 255, dtype=np.uint8)
    for i, line in enumerate(lines):
        _text(cell, line, 2, 12 + 12 * i)
    return cell


def _row_image(row: PreviewRow, frames: list[int], gap: int) -> np.ndarray:
    """Label, reference (or blank) and the picked frames of one row, side by side."""
    h, w = row.video.shape[1:]
    label = _label_cell(row.label.split("\n"), h)
    reference = row.reference if row.reference is not None else np.full((h, w), 255, np.uint8)
    video = _fit(row.video, max(frames) + 1)
    return _stack([label, reference, *(video[t] for t in frames)], gap, axis=1)


def labelled_grid(rows: list[PreviewRow], n_columns: int, fps: float, gap: int = 2) -> np.ndarray:
    """PNG image: a title row, then per row its label, its reference frame and
    ``n_columns`` frames at the same times for every row (spread over the shortest row)."""
    length = min(len(r.video) for r in rows)
    frames = np.linspace(0, length - 1, n_columns).round().astype(int).tolist()
    body = _stack([_row_image(r, frames, gap) for r in rows], gap, axis=0)
    header = np.full((HEADER_HEIGHT, body.shape[1]), 255, dtype=np.uint8)
    w = rows[0].video.shape[2]
    titles = ["reference", *(f"t={t / fps:.2f}s" if fps > 0 else f"frame {t}" for t in frames)]
    for c, title in enumerate(titles):
        _text(header, title, LABEL_WIDTH + gap + c * (w + gap) + 2, HEADER_HEIGHT - 3)
    return np.concatenate([header, body])


def labelled_video(rows: list[PreviewRow], gap: int = 2) -> np.ndarray:
    """GIF frames ``(T, H', W')``: every row's label, reference and video at time t."""
    n = max(len(r.video) for r in rows)
    return np.stack(
        [
            _stack(
                [_row_image(PreviewRow(r.label, r.video, r.reference), [t], gap) for r in rows],
                gap,
                axis=0,
            )
            for t in range(n)
        ]
    )


def _fit(video: np.ndarray, n: int) -> np.ndarray:
    """``video`` ``(T, H, W)`` cut or padded (last frame repeated) to ``n`` frames."""
    if len(video) >= n:
        return video[:n]
    return np.concatenate([video, np.repeat(video[-1:], n - len(video), axis=0)])


def _stack(images: list[np.ndarray], gap: int, axis: int) -> np.ndarray:
    """Images joined along ``axis`` with white ``gap``-pixel separators."""
    shape = list(images[0].shape)
    shape[axis] = gap
    sep = np.full(shape, 255, dtype=np.uint8)
    parts = [p for image in images for p in (image, sep)][:-1]
    return np.concatenate(parts, axis=axis)


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
