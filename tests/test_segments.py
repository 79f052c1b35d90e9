"""Segment providers: classical blood-pool/tissue segments and the optional SAM provider."""

from __future__ import annotations

import importlib.util
import os

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from echomotion.flow.params import SegmentParams
from echomotion.flow.segments import (
    ClassicalSegments,
    SamSegments,
    make_segment_provider,
    sector_mask,
)

HAS_SAM = importlib.util.find_spec("segment_anything") is not None
SIZE = 112


def fan() -> np.ndarray:
    """Boolean ultrasound sector: apex at the top centre, +-35 degrees, radius 105."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    angle = np.degrees(np.arctan2(xx - SIZE / 2, yy + 2))
    return (np.abs(angle) < 35) & (np.hypot(xx - SIZE / 2, yy + 2) < 105)


def pools() -> list[np.ndarray]:
    """Two dark chambers inside the fan; the second touches the fan's lower edge."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    left = ((xx - 45) / 9) ** 2 + ((yy - 50) / 16) ** 2 < 1
    right = ((xx - 68) / 9) ** 2 + ((yy - 90) / 14) ** 2 < 1
    return [left & fan(), right & fan()]


def echo_frame(seed: int = 0) -> np.ndarray:
    """Speckled tissue (~130) in the fan, dark pools (~15), exact zero outside: uint8 (H, W)."""
    rng = np.random.default_rng(seed)
    img = rng.normal(130, 35, (SIZE, SIZE))
    for pool in pools():
        img[pool] = rng.normal(15, 8, pool.sum())
    img = np.clip(img, 1, 255) * fan()
    return img.astype(np.uint8)


def test_sector_mask_is_the_fan():
    mask = sector_mask(echo_frame())
    iou = (mask & fan()).sum() / (mask | fan()).sum()
    assert iou > 0.95


@pytest.mark.parametrize("threshold", ["otsu", "percentile"])
def test_classical_segments_find_pools_and_tissue(threshold):
    frames = np.stack([echo_frame(0), echo_frame(1)])
    labels = ClassicalSegments(SegmentParams(threshold=threshold, dark_percentile=20))(frames)
    assert labels.shape == frames.shape and labels.dtype == np.int64
    for lab in labels:
        assert not lab[~fan()].any()  # nothing outside the sector
        pool_labels = []
        for pool in pools():
            values, counts = np.unique(lab[pool], return_counts=True)
            assert values[np.argmax(counts)] > 0 and counts.max() > 0.8 * pool.sum()
            pool_labels.append(values[np.argmax(counts)])
        assert pool_labels[0] != pool_labels[1]  # each pool is its own segment
        tissue = fan() & ~pools()[0] & ~pools()[1]
        assert (lab[tissue] > 0).mean() > 0.8
        assert not set(np.unique(lab[tissue])) <= set(pool_labels)  # tissue has own segments


def test_tissue_grid_controls_how_finely_tissue_is_split():
    frame = echo_frame()[None]
    coarse = ClassicalSegments(SegmentParams(tissue_grid=1))(frame).max()
    fine = ClassicalSegments(SegmentParams(tissue_grid=4))(frame).max()
    assert fine > coarse + 3


def test_blank_frames_and_bad_input():
    assert not ClassicalSegments()(np.zeros((1, 32, 32), dtype=np.uint8)).any()
    with pytest.raises(ValueError, match="uint8"):
        ClassicalSegments()(np.zeros((1, 32, 32), dtype=np.float32))


def test_segment_params_select_the_provider():
    assert isinstance(make_segment_provider(SegmentParams()), ClassicalSegments)
    with pytest.raises(ValidationError, match="sam_checkpoint"):
        SegmentParams(method="sam")
    with pytest.raises(ValidationError):
        SegmentParams(method="watershed")


@pytest.mark.skipif(HAS_SAM, reason="segment_anything is installed")
def test_sam_without_the_package_raises_a_clear_error(tmp_path):
    params = SegmentParams(method="sam", sam_checkpoint=str(tmp_path / "sam.pth"))
    with pytest.raises(ImportError, match="segment_anything"):
        make_segment_provider(params)


@pytest.mark.skipif(
    not HAS_SAM or not os.environ.get("ECHOMOTION_SAM_CHECKPOINT"),
    reason="needs the optional segment_anything package and ECHOMOTION_SAM_CHECKPOINT",
)
def test_sam_segments_label_an_echo_frame():
    sam = SamSegments(os.environ["ECHOMOTION_SAM_CHECKPOINT"])
    frame = cv2.GaussianBlur(echo_frame(), (0, 0), 1.0)
    labels = sam(frame[None])
    assert labels.shape == (1, SIZE, SIZE) and labels.max() >= 2
