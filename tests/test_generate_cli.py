"""The `python -m echomotion.cli.generate` command on a tiny untrained pipeline: duration at the
pipeline's frame rate, the container each suffix names, one-line errors, help text."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from test_edes import beating

from conftest import REPO, moving_blob_video
from echomotion.cli.generate import (
    appearance_frame,
    build_parser,
    driver_contraction,
    driver_detection,
    heart_rate,
    main,
    pipeline_config,
    read_frames,
)
from echomotion.diffusion.losses import build_scheduler
from echomotion.diffusion.params import MCDMModelParams, NoiseScheduleParams, VAEModelParams
from echomotion.diffusion.pipeline import MotionConditionedVideoPipeline
from echomotion.diffusion.unet import build_unet
from echomotion.diffusion.vae import build_vae
from echomotion.edes import contraction_curve, detect_ed_es
from echomotion.mafe.model import MAFE
from echomotion.mafe.params import MAFEModelParams
from echomotion.video import read_video, write_video

PIPELINE_FPS, SIZE = 12.5, 32
TINY_MAFE = MAFEModelParams(
    embed_dim=2, depths=(1, 1, 1), num_heads=(1, 1), window_size=4, motion_ratio=1, reid_dim=4
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> dict:
    """A saved tiny pipeline (12.5 fps, 32x32, window 4) and MAFE, and input videos."""
    tmp = tmp_path_factory.mktemp("generate")
    torch.manual_seed(0)
    mafe = MAFE.from_params(TINY_MAFE).eval()
    mafe.save_pretrained(tmp / "mafe")
    dim = mafe.motion_vector_dim
    unet = build_unet(MCDMModelParams(block_out_channels=(32, 32), motion_dim=dim, num_frames=4))
    vae = build_vae(VAEModelParams(block_out_channels=(8, 8, 16, 16), norm_num_groups=8))
    scheduler = build_scheduler(NoiseScheduleParams())
    pipe = MotionConditionedVideoPipeline(
        vae, unet.eval(), scheduler, fps=PIPELINE_FPS,
        motion_mean=[0.0] * dim, motion_std=[1.0] * dim, frame_size=[SIZE, SIZE],
    )  # fmt: skip
    pipe.save_pretrained(tmp / "pipeline")
    MotionConditionedVideoPipeline(
        vae, unet.eval(), scheduler, fps=PIPELINE_FPS,
        motion_mean=[0.0] * dim, motion_std=[1.0] * dim, frame_size=[SIZE, SIZE],
        cond_dropout=0.0,
    ).save_pretrained(tmp / "no_dropout")  # fmt: skip
    write_video(tmp / "a50.avi", moving_blob_video(50, seed=1, size=48), 50.0)  # 1 s at 50 fps
    write_video(tmp / "a8.avi", moving_blob_video(8, seed=2, size=48), 8.0)  # 1 s at 8 fps
    write_video(tmp / "a30.avi", moving_blob_video(21, seed=3, size=48), 30.0)  # 0.7 s
    write_video(tmp / "b.avi", moving_blob_video(3, seed=3), 25.0)
    write_video(tmp / "wide.avi", np.zeros((3, 32, 64), np.uint8), 25.0)
    (tmp / "broken.avi").write_bytes(b"RIFF not a video at all" * 10)
    base = ["--pipeline", str(tmp / "pipeline"), "--mafe", str(tmp / "mafe"), "--device", "cpu"]
    return {"tmp": tmp, "base": base}


def run(cli, out: str, motion="a50.avi", appearance="b.avi", extra=()) -> int:
    tmp = cli["tmp"]
    argv = ["--motion", str(tmp / motion), "--appearance", str(tmp / appearance),
            "--out", str(tmp / out), "--steps", "1", *cli["base"], *extra]  # fmt: skip
    return main(argv)


@pytest.mark.parametrize(("driver", "expected"), [("a50.avi", 13), ("a8.avi", 13), ("a30.avi", 9)])
def test_output_lasts_as_long_as_the_driver(cli, capsys, driver, expected):
    out = f"{driver}.out.avi"
    assert run(cli, out, motion=driver, extra=["--ed", "0", "--es", "3"]) == 0
    video = read_video(cli["tmp"] / out)
    assert video.fps == PIPELINE_FPS and video.frames.shape[1:] == (SIZE, SIZE)
    assert len(video.frames) == expected  # n / fps seconds, to half a frame
    assert "denoising" in capsys.readouterr().err  # the progress bar


def test_detected_ed_es_and_frames_option(cli):
    assert run(cli, "five.avi", extra=["--frames", "5"]) == 0
    assert read_video(cli["tmp"] / "five.avi").frames.shape == (5, SIZE, SIZE)


@pytest.mark.parametrize(
    ("suffix", "container", "codec"),
    [(".avi", "avi", "mjpeg"), (".mp4", "mov,mp4,m4a,3gp,3g2,mj2", "h264"),
     (".mkv", "matroska,webm", "ffv1")],
)  # fmt: skip
def test_each_suffix_writes_its_container(cli, suffix, container, codec):
    assert run(cli, f"c{suffix}", extra=["--frames", "3", "--ed", "0", "--es", "3"]) == 0
    with av.open(str(cli["tmp"] / f"c{suffix}")) as file:
        stream = file.streams.video[0]
        assert file.format.name == container and stream.codec_context.name == codec
        assert stream.average_rate == PIPELINE_FPS
        assert len(list(file.decode(stream))) == 3
    assert not list(cli["tmp"].glob(".*partial*"))


def test_gif_suffix_writes_a_gif(cli):
    assert run(cli, "c.gif", extra=["--frames", "3", "--ed", "0", "--es", "3"]) == 0
    gif = Image.open(cli["tmp"] / "c.gif")
    assert gif.format == "GIF" and gif.n_frames == 3 and gif.size == (SIZE, SIZE)
    assert gif.info["duration"] == 80  # ms per frame at 12.5 fps


def test_mp4_without_an_h264_encoder_fails_before_any_work(cli, capsys, monkeypatch):
    monkeypatch.setattr(av, "codecs_available", {"mjpeg"})
    assert run(cli, "none.mp4", motion="missing.avi") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "libx264" in err[0] and "write .avi" in err[0]


@pytest.mark.parametrize(
    ("motion", "appearance", "out", "extra", "message"),
    [
        ("missing.avi", "b.avi", "x.avi", [], "--motion " + "{tmp}/missing.avi: file not found"),
        ("a50.avi", "gone.avi", "x.avi", [], "--appearance {tmp}/gone.avi: file not found"),
        ("a50.avi", "broken.avi", "x.avi", [], "broken.avi: cannot decode"),
        ("wide.avi", "b.avi", "x.avi", [], "frames are 32x64 (HxW), the pipeline takes 32x32"),
        ("a50.avi", "b.avi", "x.mov", [], "unknown suffix '.mov'"),
        ("a50.avi", "b.avi", "x.avi", ["--ed", "3"], "--ed needs its partner"),
        ("a50.avi", "b.avi", "x.avi", ["--es", "3"], "--es needs its partner"),
        ("a50.avi", "b.avi", "x.avi", ["--ed", "3", "--es", "3"], "--ed 3 / --es 3"),
        ("a50.avi", "b.avi", "x.avi", ["--ed", "0", "--es", "50"], "--es 50: not a frame"),
        ("a50.avi", "b.avi", "x.avi", ["--ed", "-1", "--es", "3"], "--ed -1: not a frame"),
        ("a50.avi", "b.avi", "x.avi", ["--ed", "3", "--es", "4"], "ED 3 and ES 4 fall on one"),
        ("a50.avi", "b.avi", "x.avi", ["--appearance-frame", "9"], "--appearance-frame 9"),
        ("a50.avi", "b.avi", "x.avi", ["--guidance", "-1"], "--guidance: must be a finite"),
        ("a50.avi", "b.avi", "x.avi", ["--steps", "0"], "--steps: must be >= 1, got 0"),
        ("a50.avi", "b.avi", "x.avi", ["--heart-rate", "0"], "--heart-rate: must be > 0"),
        ("a50.avi", "b.avi", "x.avi", ["--heart-rate", "70"], "trained without the heart rate"),
        ("a50.avi", "b.avi", "x.avi", ["--frames", "0"], "--frames: must be >= 1, got 0"),
        ("a50.avi", "b.avi", "x.avi", ["--frames", "two"], "got 'two'"),
        ("a50.avi", "b.avi", "x.avi", ["--device", "gpu9"], "not a torch device: 'gpu9'"),
        ("a50.avi", "b.avi", "x.avi", ["--mafe", "nowhere"], "--mafe nowhere: no saved MAFE"),
        (
            "a50.avi",
            "b.avi",
            "x.avi",
            ["--pipeline", "nowhere"],
            "--pipeline nowhere: not a saved pipeline",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(cli, capsys, motion, appearance, out, extra, message):
    assert run(cli, out, motion, appearance, extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("python -m echomotion.cli.generate: error: ")
    assert message.format(tmp=cli["tmp"]) in err[0]
    assert not (cli["tmp"] / out).exists()


def test_guidance_on_a_pipeline_trained_without_motion_dropout_exits_2(cli, capsys):
    pipeline = cli["tmp"] / "no_dropout"
    assert run(cli, "g.avi", extra=["--pipeline", str(pipeline), "--guidance", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and f"--guidance 3.0: pipeline {pipeline}: guidance_scale 3.0 needs" in err[0]
    )
    assert not (cli["tmp"] / "g.avi").exists()
    assert run(cli, "g1.avi", extra=["--pipeline", str(pipeline), "--guidance", "1"]) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_exits_2(cli, capsys):
    assert run(cli, "x.avi", extra=["--device", "cuda"]) == 2
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err


def test_help_lists_every_option_with_help_and_defaults(capsys):
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for action in build_parser()._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.option_strings[0] in text
        assert " ".join(action.help.split()) in text, action.option_strings
        if action.default is not None:
            assert f"(default: {action.default})" in text, action.option_strings


def test_console_script_points_at_main():
    scripts = (REPO / "pyproject.toml").read_text().split("[project.scripts]\n")[1]
    assert scripts.split("\n[")[0].strip() == 'echomotion-generate = "echomotion.cli.generate:main"'


def test_generate_runs_as_a_module(cli):
    tmp = cli["tmp"]
    args = ["--motion", str(tmp / "missing.avi"), "--appearance", str(tmp / "b.avi"),
            "--out", str(tmp / "x.avi"), *cli["base"]]  # fmt: skip
    cmd = [sys.executable, "-m", "echomotion.cli.generate", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=Path(tmp))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "missing.avi: file not found" in done.stderr


def test_an_ed_anchored_pipeline_takes_the_appearance_at_its_first_label_free_ed(cli, tmp_path):
    pipeline = tmp_path / "ed_pipeline"
    shutil.copytree(cli["tmp"] / "pipeline", pipeline)
    index = pipeline / "model_index.json"
    index.write_text(index.read_text().replace('"window_anchor": "any"', '"window_anchor": "ed"'))
    write_video(tmp_path / "beat.avi", beating(n=60, period=20, phase0=7), 25.0)
    video = read_frames(tmp_path / "beat.avi", (SIZE, SIZE), "--appearance")

    def frame(*extra: str) -> int:
        argv = ["--motion", "m.avi", "--appearance", "beat.avi", "--out", "o.avi", *extra]
        args = build_parser().parse_args(argv)
        return appearance_frame(args, pipeline_config(args.pipeline), video)

    first_ed = int(detect_ed_es(video.frames, 25.0).ed_all.min())
    assert abs(first_ed - 7) <= 1 and frame("--pipeline", str(pipeline)) == first_ed
    assert frame("--pipeline", str(pipeline), "--appearance-frame", "2") == 2
    assert frame("--pipeline", str(cli["tmp"] / "pipeline")) == 0  # windows started anywhere
    assert run(cli, "ed.avi", appearance=str(tmp_path / "beat.avi"),
               extra=["--pipeline", str(pipeline)]) == 0  # fmt: skip


def test_a_heart_rate_pipeline_takes_the_drivers_label_free_heart_rate(cli, tmp_path):
    tmp, dim = cli["tmp"], MAFE.from_pretrained(cli["tmp"] / "mafe").motion_vector_dim
    model = MCDMModelParams(block_out_channels=(32, 32), motion_dim=dim, num_frames=4,
                            time_ids="heart_rate")  # fmt: skip
    vae = build_vae(VAEModelParams(block_out_channels=(8, 8, 16, 16), norm_num_groups=8))
    MotionConditionedVideoPipeline(
        vae, build_unet(model).eval(), build_scheduler(NoiseScheduleParams()), fps=PIPELINE_FPS,
        motion_mean=[0.0] * dim, motion_std=[1.0] * dim, frame_size=[SIZE, SIZE],
        time_ids="heart_rate", heart_rate=70.0,
    ).save_pretrained(tmp_path / "hr")  # fmt: skip
    write_video(tmp_path / "beat.avi", beating(n=90, period=20, phase0=3), 25.0)  # 75 bpm
    video = read_frames(tmp_path / "beat.avi", (SIZE, SIZE), "--motion")

    def rate(*extra: str) -> float | None:
        argv = ["--motion", "beat.avi", "--appearance", "b.avi", "--out", "o.avi", *extra]
        args = build_parser().parse_args(argv)
        return heart_rate(args, pipeline_config(args.pipeline), video, driver_detection(video))

    assert rate("--pipeline", str(tmp_path / "hr")) == pytest.approx(75.0, rel=0.06)
    assert rate("--pipeline", str(tmp_path / "hr"), "--heart-rate", "60") == 60.0
    assert rate("--pipeline", str(tmp / "pipeline")) is None  # no heart-rate id
    assert run(cli, "hr.avi", motion=str(tmp_path / "beat.avi"),
               extra=["--pipeline", str(tmp_path / "hr")]) == 0  # fmt: skip


def test_a_contraction_pipeline_takes_the_drivers_label_free_curve(cli, tmp_path):
    tmp, dim = cli["tmp"], MAFE.from_pretrained(cli["tmp"] / "mafe").motion_vector_dim
    model = MCDMModelParams(block_out_channels=(32, 32), motion_dim=dim, num_frames=4,
                            contraction=True)  # fmt: skip
    vae = build_vae(VAEModelParams(block_out_channels=(8, 8, 16, 16), norm_num_groups=8))
    MotionConditionedVideoPipeline(
        vae, build_unet(model).eval(), build_scheduler(NoiseScheduleParams()), fps=PIPELINE_FPS,
        motion_mean=[0.0] * dim, motion_std=[1.0] * dim, frame_size=[SIZE, SIZE],
        contraction=True,
    ).save_pretrained(tmp_path / "c")  # fmt: skip
    write_video(tmp_path / "beat.avi", beating(n=60, period=20, phase0=3), 25.0)
    video = read_frames(tmp_path / "beat.avi", (SIZE, SIZE), "--motion")
    detected = driver_detection(video)
    config = pipeline_config(tmp_path / "c")
    curve = driver_contraction(config, video, detected, 6, PIPELINE_FPS)
    full = contraction_curve(detected().signal)
    assert np.array_equal(curve, full[None, 0:12:2])  # from the first frame, at 12.5 fps
    assert driver_contraction(pipeline_config(tmp / "pipeline"), video, detected, 6, 12.5) is None
    assert run(cli, "c.avi", motion=str(tmp_path / "beat.avi"),
               extra=["--pipeline", str(tmp_path / "c")]) == 0  # fmt: skip
