"""Video files written by the project: bytes that depend on the frames alone."""

from __future__ import annotations

import numpy as np
import pytest

from echomotion.video import read_video, write_video


@pytest.mark.parametrize("codec", ["mjpeg", "ffv1"])
def test_written_video_carries_no_ffmpeg_version_and_is_byte_identical(tmp_path, codec):
    frames = (np.random.default_rng(0).random((6, 32, 40)) * 255).astype(np.uint8)
    write_video(tmp_path / "a.avi", frames, fps=25, codec=codec)
    write_video(tmp_path / "b.avi", frames, fps=25, codec=codec)
    data = (tmp_path / "a.avi").read_bytes()
    assert b"Lavf" not in data and b"Lavc" not in data, "FFmpeg version tag in the file"
    assert data == (tmp_path / "b.avi").read_bytes()
    back = read_video(tmp_path / "a.avi")
    assert back.frames.shape == frames.shape


def test_a_fractional_frame_rate_is_written_exactly(tmp_path):
    """8.33 fps (25/3) stays 25/3, not round(8.33) = 8: the clip keeps its duration."""
    frames = np.zeros((4, 16, 16), np.uint8)
    write_video(tmp_path / "slow.avi", frames, fps=25 / 3)
    assert read_video(tmp_path / "slow.avi").fps == pytest.approx(25 / 3)


def test_rgb_frames_are_written_as_they_are(tmp_path):
    rgb = np.zeros((3, 16, 24, 3), np.uint8)
    rgb[..., 0] = 200  # red: gray would give about 60
    write_video(tmp_path / "rgb.avi", rgb, fps=25, codec="ffv1")
    gray = read_video(tmp_path / "rgb.avi").frames
    assert gray.shape == (3, 16, 24) and 40 < gray.mean() < 80


def test_upsample_false_keeps_a_slow_video_at_its_rate_and_still_downsamples(tmp_path):
    frames = (np.random.default_rng(1).random((10, 16, 16)) * 255).astype(np.uint8)
    write_video(tmp_path / "slow.avi", frames, fps=10, codec="ffv1")
    kept = read_video(tmp_path / "slow.avi", target_fps=25, upsample=False)
    assert kept.target_fps is None and len(kept.frames) == 10 and kept.source_size == (16, 16)
    repeated = read_video(tmp_path / "slow.avi", target_fps=25)
    assert repeated.target_fps == 25 and len(repeated.frames) == 23
    down = read_video(tmp_path / "slow.avi", target_fps=5, upsample=False)
    assert down.target_fps == 5 and len(down.frames) == 5
