"""Segment providers for the segment-guided flow loss.

A provider maps uint8 frames (B, H, W) to integer label maps (B, H, W) int64, 0 = ignore
(outside the ultrasound sector or too small), 1..K = segments. UnSAMFlow uses SAM masks;
:class:`ClassicalSegments` is the weight-free default: dark blood pools and tissue regions
inside the sector, the tissue split on a coarse grid so each piece moves roughly affinely.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch

from .params import SegmentParams


class SegmentProvider(Protocol):
    """``provider(frames)``: uint8 (B, H, W) -> int64 labels (B, H, W), 0 = ignore."""

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...


def sector_mask(frame: np.ndarray) -> np.ndarray:
    """Boolean (H, W) ultrasound fan: convex hull of the largest nonzero region.

    Blood pools are dark but not zero while the background outside the fan is; the hull
    keeps pools that touch the fan's edge inside it. A median filter (not a blur, which would
    grow the fan) removes isolated nonzero specks outside it first.
    """
    nonzero = (cv2.medianBlur(frame, 5) > 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(nonzero, connectivity=8)
    if n <= 1:
        return np.zeros(frame.shape, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    points = cv2.findNonZero((labels == largest).astype(np.uint8))
    hull = np.zeros(frame.shape, dtype=np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    # the rasterized polygon edge reaches one pixel past the fan; take it back
    return cv2.erode(hull, np.ones((3, 3), np.uint8)).astype(bool)


def dark_threshold(values: np.ndarray, method: str, percentile: float) -> float:
    """Intensity below which a smoothed in-sector pixel counts as blood pool."""
    if method == "percentile":
        return float(np.percentile(values, percentile))
    thr, _ = cv2.threshold(values.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(thr)


def components(mask: np.ndarray, min_area: int) -> list[np.ndarray]:
    """Boolean masks of the 8-connected components of ``mask`` with at least ``min_area`` px."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [labels == i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]


def grid_cells(shape: tuple[int, int], n: int) -> np.ndarray:
    """Cell index (H, W) of an ``n`` x ``n`` grid over the frame."""
    h, w = shape
    rows = np.arange(h)[:, None] * n // h
    cols = np.arange(w)[None, :] * n // w
    return rows * n + cols


class ClassicalSegments:
    """Blood pools and tissue pieces from thresholding and morphology; needs no weights."""

    def __init__(self, params: SegmentParams | None = None):
        self.params = params or SegmentParams()

    def regions(self, frame: np.ndarray) -> list[np.ndarray]:
        """Boolean masks of one frame's segments: blood pools first, then tissue pieces."""
        p = self.params
        sector = sector_mask(frame)
        if not sector.any():
            return []
        blurred = cv2.GaussianBlur(frame, (0, 0), p.smooth_sigma)
        thr = dark_threshold(blurred[sector], p.threshold, p.dark_percentile)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        dark = ((blurred <= thr) & sector).astype(np.uint8)
        dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, kernel)  # drop speckle-sized holes
        dark = cv2.morphologyEx(dark, cv2.MORPH_CLOSE, kernel)
        pools = components(dark.astype(bool) & sector, p.min_area)
        tissue = sector & ~dark.astype(bool)
        cells = grid_cells(frame.shape, p.tissue_grid)
        pieces = [
            piece
            for cell in range(p.tissue_grid**2)
            for piece in components(tissue & (cells == cell), p.min_area)
        ]
        return pools + pieces

    def label(self, frame: np.ndarray) -> np.ndarray:
        """Label map (H, W) int64 of one uint8 frame."""
        labels = np.zeros(frame.shape, dtype=np.int64)
        for k, region in enumerate(self.regions(frame), start=1):
            labels[region] = k
        return labels

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Label maps (B, H, W) int64 of uint8 frames (B, H, W)."""
        frames = np.asarray(frames)
        if frames.ndim != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 (B, H, W) frames, got {frames.dtype} {frames.shape}")
        return np.stack([self.label(f) for f in frames])


class SamSegments:
    """Segment Anything automatic masks (optional ``segment_anything`` package, local weights).

    Masks are painted largest first, so smaller masks nested in larger ones stay visible.
    """

    def __init__(self, checkpoint: str | Path, model_type: str = "vit_b", device: str = "cpu"):
        try:
            from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
        except ImportError as err:
            raise ImportError(
                "SamSegments needs the optional package 'segment_anything' "
                "(pip install segment-anything) and a local checkpoint; "
                "or set segments.method=classical"
            ) from err
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"SAM checkpoint {checkpoint} does not exist")
        sam = sam_model_registry[model_type](checkpoint=None)
        sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        self.generator = SamAutomaticMaskGenerator(sam.to(device).eval())

    def label(self, frame: np.ndarray) -> np.ndarray:
        """Label map (H, W) int64 of one uint8 frame."""
        rgb = np.repeat(frame[..., None], 3, axis=-1)  # SAM's encoder takes RGB
        masks = sorted(self.generator.generate(rgb), key=lambda m: m["area"], reverse=True)
        labels = np.zeros(frame.shape, dtype=np.int64)
        for k, mask in enumerate(masks, start=1):
            labels[mask["segmentation"]] = k
        return labels

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Label maps (B, H, W) int64 of uint8 frames (B, H, W)."""
        return np.stack([self.label(f) for f in np.asarray(frames)])


def make_segment_provider(params: SegmentParams, device: str = "cpu") -> SegmentProvider:
    """The provider ``params.method`` names."""
    if params.method == "sam":
        return SamSegments(params.sam_checkpoint, params.sam_model_type, device)
    return ClassicalSegments(params)
