"""Segment providers for the segment-guided flow loss.

A provider maps uint8 frames (B, H, W) to integer label maps (B, H, W) int64, 0 = ignore
(outside the ultrasound sector or too small), 1..K = segments. UnSAMFlow uses SAM masks
(:class:`SamSegments`) plus MedSAM box prompts (:class:`MedSamBoxSegments`);
:class:`ClassicalSegments` is the weight-free default: dark blood pools and tissue regions
inside the sector, the tissue split on a coarse grid so each piece moves roughly affinely.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from echomotion.flow.params import MEDSAM_ECHO_BOXES, SegmentParams


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


def _segment_anything(name: str) -> Any:
    """The optional package ``segment_anything``, with a message naming ``name`` if absent."""
    try:
        import segment_anything
    except ImportError as err:
        raise ImportError(
            f"{name} needs the optional package 'segment_anything' "
            "(pip install segment-anything) and a local checkpoint; "
            "or set segments.method=classical"
        ) from err
    return segment_anything


def load_sam(checkpoint: str | Path, model_type: str, device: str, name: str = "SAM") -> Any:
    """A SAM model of ``model_type`` (vit_b/l/h) built by ``sam_model_registry`` with the
    weights of the LOCAL file ``checkpoint`` (loaded with ``weights_only``), in eval mode.
    MedSAM's weights are a vit_b checkpoint of the same layout."""
    registry = _segment_anything(name).sam_model_registry
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{name} checkpoint {checkpoint} does not exist")
    sam = registry[model_type](checkpoint=None)
    sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return sam.to(device).eval()


class SamSegments:
    """Segment Anything automatic masks (optional ``segment_anything`` package, local weights).

    Masks are painted largest first, so smaller masks nested in larger ones stay visible.
    """

    def __init__(self, checkpoint: str | Path, model_type: str = "vit_b", device: str = "cpu"):
        generator_cls = _segment_anything("SamSegments").SamAutomaticMaskGenerator
        self.generator = generator_cls(load_sam(checkpoint, model_type, device))

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


class MedSamBoxSegments:
    """MedSAM masks of fixed box prompts (LabelfreeMCDM ``MedSAM/MedSAM_echo.py``).

    Each frame is resized to ``image_size`` (bicubic), min-max scaled to [0, 1] and encoded
    once; each box (x0, y0, x1, y1, in pixels of a ``box_frame``-pixel frame) prompts the mask
    decoder (single mask); sigmoid > 0.5 after bilinear resizing to the frame is the mask.
    Label k is box k; later boxes are painted over earlier ones where they overlap.

    ``model``: anything with SAM's ``image_encoder``, ``prompt_encoder`` (called with
    ``points``, ``boxes``, ``masks``; ``get_dense_pe()``) and ``mask_decoder`` (called with
    ``image_embeddings``, ``image_pe``, ``sparse_prompt_embeddings``,
    ``dense_prompt_embeddings``, ``multimask_output``) - MedSAM's vit_b SAM, see
    :meth:`from_checkpoint`.
    """

    def __init__(
        self,
        model: Any,
        boxes: Sequence[Sequence[int]] = MEDSAM_ECHO_BOXES,
        box_frame: int = 112,
        image_size: int = 1024,
    ):
        self.model, self.image_size = model, image_size
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / box_frame  # fractions

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        boxes: Sequence[Sequence[int]] = MEDSAM_ECHO_BOXES,
        device: str = "cpu",
    ) -> MedSamBoxSegments:
        """MedSAM (a vit_b SAM) with the weights of the local file ``checkpoint``."""
        return cls(load_sam(checkpoint, "vit_b", device, name="MedSAM"), boxes)

    def preprocess(self, frame: np.ndarray) -> torch.Tensor:
        """(1, 3, S, S) float in [0, 1]: bicubic resize, uint8, min-max scaling (MedSAM)."""
        size = (self.image_size, self.image_size)
        big = cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC).astype(np.float32)
        big = (big - big.min()) / max(float(big.max() - big.min()), 1e-8)
        return torch.from_numpy(big)[None, None].expand(1, 3, *size).contiguous()

    @torch.no_grad()
    def masks(self, frame: np.ndarray) -> np.ndarray:
        """Boolean masks (n_boxes, H, W) of one uint8 frame (H, W)."""
        device = next(self.model.parameters()).device
        embedding = self.model.image_encoder(self.preprocess(frame).to(device))
        boxes = torch.as_tensor(self.boxes * self.image_size, dtype=torch.float32, device=device)
        sparse, dense = self.model.prompt_encoder(points=None, boxes=boxes[:, None], masks=None)
        logits, _ = self.model.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )  # (n_boxes, 1, h, w) low-resolution logits
        prob = F.interpolate(torch.sigmoid(logits), frame.shape, mode="bilinear")
        return (prob[:, 0] > 0.5).cpu().numpy()

    def label(self, frame: np.ndarray, start: int = 1) -> np.ndarray:
        """Label map (H, W) int64 of one uint8 frame: box k -> label ``start + k``."""
        labels = np.zeros(frame.shape, dtype=np.int64)
        for k, mask in enumerate(self.masks(frame)):
            labels[mask] = start + k
        return labels

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Label maps (B, H, W) int64 of uint8 frames (B, H, W)."""
        return np.stack([self.label(f) for f in np.asarray(frames)])


class CombinedSegments:
    """SAM automatic labels with the MedSAM box masks painted over them as new labels."""

    def __init__(self, sam: SegmentProvider, medsam: MedSamBoxSegments):
        self.sam, self.medsam = sam, medsam

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Label maps (B, H, W) int64 of uint8 frames (B, H, W)."""
        frames = np.asarray(frames)
        labels = self.sam(frames)
        for i, frame in enumerate(frames):
            boxes = self.medsam.label(frame, start=int(labels[i].max()) + 1)
            labels[i] = np.where(boxes > 0, boxes, labels[i])
        return labels


def make_segment_provider(params: SegmentParams, device: str = "cpu") -> SegmentProvider:
    """The provider ``params.method`` names."""
    if params.method == "classical":
        return ClassicalSegments(params)
    sam = params.sam_checkpoint, params.sam_model_type, device
    if params.method == "sam":
        return SamSegments(*sam)
    medsam = MedSamBoxSegments.from_checkpoint(
        params.medsam_checkpoint, params.medsam_boxes, device
    )
    return medsam if params.method == "medsam" else CombinedSegments(SamSegments(*sam), medsam)
