"""Generator stages on the tiny dataset: vae_train, latents, mcdm_train (also on two
processes) and sample (the `generate` command: tests/test_generate_cli.py)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler
from PIL import Image

from conftest import section
from device_check import assert_runs_on, assert_runs_on_meta
from echomotion.data import TripletDataset
from echomotion.diffusion.loading import load_pipeline, sampling_scheduler
from echomotion.diffusion.params import MCDMModelParams, VAEModelParams
from echomotion.diffusion.vae import encode_frames
from echomotion.echonet import read_file_list
from echomotion.edes import Beats, contraction_curve, detect_ed_es
from echomotion.mafe.model import MAFE
from echomotion.mafe.params import MAFEModelParams
from echomotion.media import HEADER_HEIGHT, LABEL_WIDTH
from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter
from echomotion.tasks.latents.run import encode_videos
from echomotion.tasks.mcdm_train.params import MCDMTrainParams
from echomotion.tasks.mcdm_train.run import LatentClipDataset, known_heart_rates, train_mcdm
from echomotion.tasks.sample.run import EXTRA_COLUMNS, generate_videos, sample_dataset, time_matched
from echomotion.tasks.vae_train.run import train_vae
from echomotion.training.params import TrainParams
from echomotion.video import read_video

HERE = Path(__file__).resolve().parent
SEED = 5
TINY_MAFE = MAFEModelParams(
    embed_dim=2, depths=(1, 1, 1), num_heads=(1, 1), window_size=4, motion_ratio=1, reid_dim=4
)
VAE = section(
    "vae_train",
    model=VAEModelParams(block_out_channels=(8, 8, 16, 16), norm_num_groups=8),
    train=TrainParams(steps=2, batch_size=4, lr=1e-3, checkpoint_every=2, log_every=1),
    crop_size=32,
    scale_frames=16,
    eval_frames=8,
    encode_batch_size=16,
)
SAMPLE = section("sample",
    splits=("VAL", "TEST"), num_inference_steps=2, num_frames=6, window_overlap=1,
    preview_frames=4,
)  # fmt: skip


def mcdm_params(
    motion_dim: int,
    steps: int = 2,
    window_anchor: str = "any",
    time_ids: str = "signals",
    contraction: bool = False,
) -> MCDMTrainParams:
    return section("mcdm_train",
        model=MCDMModelParams(
            block_out_channels=(32, 32), motion_dim=motion_dim, num_frames=4,
            addition_time_embed_dim=8, time_ids=time_ids, contraction=contraction,
        ),
        train=TrainParams(
            steps=steps, batch_size=2, lr=1e-3, ema_decay=0.9, checkpoint_every=2, log_every=1
        ),
        frame_stride=2,  # 25 fps store -> 12.5 fps windows and videos
        window_anchor=window_anchor,  # "any": the tests below need no prepared videos
    )  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def write_features(videos_path: Path, mafe: MAFE, out: Path) -> None:
    """A features store with the contract's schema, from ``mafe`` on each triplet's ED/ES."""
    store = RaggedStore(videos_path)
    rows, motion = [], []
    with torch.no_grad():
        for v in TripletDataset(videos_path, splits=("TRAIN", "VAL", "TEST")).videos:
            row = store.row(int(v))
            pair = torch.from_numpy(store.video(int(v))[[row["ed"], row["es"]]]).float() / 255
            motion.append(mafe.motion_vector(pair[:1, None], pair[1:, None])[0].numpy())
            rows.append({k: row[k] for k in ("file_name", "split", "ef")} | {"video": int(v)})
    motion = np.stack(motion)  # (n, D)
    train = np.array([r["split"] == "TRAIN" for r in rows])
    attrs = {
        "motion_dim": motion.shape[1], "appearance_dim": 2, "schema": {},
        "motion_mean": motion[train].mean(0).tolist(),
        "motion_std": np.maximum(motion[train].std(0), 1e-6).tolist(),
    }  # fmt: skip
    arrays = {"motion": ((1, motion.shape[1]), "float32"), "appearance": ((1, 2), "float32")}
    with RaggedStoreWriter(out, arrays, attrs=attrs) as writer:
        for r, m in zip(rows, motion, strict=True):
            writer.append({"motion": m[None, None], "appearance": np.zeros((1, 1, 2))}, **r)


@pytest.fixture(scope="module")
def work(tiny_dataset, tmp_path_factory) -> dict:
    """vae_train, latents, a features store from a tiny random MAFE, and mcdm_train."""
    tmp = tmp_path_factory.mktemp("generator")
    paths = {"videos": tiny_dataset["videos"], "tmp": tmp}
    paths["vae_metrics"] = train_vae(
        paths["videos"], VAE, out_dir=tmp / "vae", log_file=tmp / "vae.tsv", seed=SEED,
        figure=tmp / "vae_reconstruction.png",
    )  # fmt: skip
    paths["latents_report"] = encode_videos(
        paths["videos"], tmp / "vae/model", tmp / "latents.zarr",
        section("latents", batch_size=32, shard_frames=256, chunk_frames=16),
    )  # fmt: skip
    torch.manual_seed(0)
    mafe = MAFE.from_params(TINY_MAFE).eval()
    mafe.save_pretrained(tmp / "mafe")
    write_features(paths["videos"], mafe, tmp / "features.zarr")
    paths["dim"] = mafe.motion_vector_dim
    paths["mcdm_metrics"] = train_mcdm(
        tmp / "latents.zarr", tmp / "features.zarr", tmp / "vae/model", mcdm_params(paths["dim"]),
        out_dir=tmp / "mcdm", log_file=tmp / "mcdm.tsv", seed=SEED,
    )  # fmt: skip
    return paths


def tsv_steps(path: Path) -> list[int]:
    with path.open() as f:
        return [int(row["step"]) for row in csv.DictReader(f, delimiter="\t")]


def test_vae_train_records_the_scaling_factor_and_scores_val(work):
    metrics, model_dir = work["vae_metrics"], work["tmp"] / "vae/model"
    scale = json.loads((model_dir / "config.json").read_text())["scaling_factor"]
    assert scale == pytest.approx(metrics["scaling_factor"]) and scale != 1.0
    assert AutoencoderKL.from_pretrained(model_dir).config.scaling_factor == pytest.approx(scale)
    assert np.isfinite(metrics["psnr"]) and 0 < metrics["ssim"] <= 1
    assert metrics["steps"] == 2 and metrics["val_frames"] == 8
    assert tsv_steps(work["tmp"] / "vae.tsv") == [1, 2]
    # VAL frames, their reconstructions and the error, 4 columns of 64x64 frames
    figure = np.asarray(Image.open(work["tmp"] / "vae_reconstruction.png"))
    assert figure.shape == (3 * 64 + 2 * 2, 4 * 64 + 3 * 2)
    videos = RaggedStore(work["videos"])
    val = np.flatnonzero(videos.table["split"].astype(str) == "VAL")
    assert any((figure[:64, :64] == f).all() for r in val for f in videos.video(int(r)))


def test_latents_are_aligned_with_the_videos(work):
    videos, latents = RaggedStore(work["videos"]), RaggedStore(work["tmp"] / "latents.zarr")
    np.testing.assert_array_equal(latents.offsets, videos.offsets)
    np.testing.assert_array_equal(latents.table["file_name"], videos.table["file_name"])
    np.testing.assert_array_equal(latents.table["split"], videos.table["split"])
    np.testing.assert_array_equal(latents.table["video"], np.arange(len(videos)))
    array = latents.array("latents")
    assert array.dtype == np.float16 and array.shape == (videos.offsets[-1], 4, 8, 8)
    vae = AutoencoderKL.from_pretrained(work["tmp"] / "vae/model").eval()
    assert latents.attrs["scaling_factor"] == pytest.approx(vae.config.scaling_factor)
    expected = encode_frames(vae, videos.video(3), batch_size=32)  # the stage's batches
    np.testing.assert_array_equal(latents.video(3, "latents"), expected)
    assert work["latents_report"]["frames"] == videos.offsets[-1]


def test_mcdm_train_saves_a_pipeline_with_the_motion_normalisation(work):
    metrics = work["mcdm_metrics"]
    assert metrics["steps"] == 2 and metrics["resumed_from"] == -1
    assert metrics["motion_dim"] == work["dim"] and metrics["fps"] == 12.5
    assert metrics["train_videos"] == len(TripletDataset(work["videos"]).videos)
    pipe = load_pipeline(work["tmp"] / "mcdm/pipeline", "ddim")
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.config.fps == 12.5
    assert pipe.vae.config.scaling_factor == pytest.approx(work["vae_metrics"]["scaling_factor"])
    attrs = RaggedStore(work["tmp"] / "features.zarr").attrs
    np.testing.assert_array_equal(pipe.config.motion_mean, np.float32(attrs["motion_mean"]))
    np.testing.assert_array_equal(pipe.config.motion_std, np.float32(attrs["motion_std"]))
    assert pipe.config.frame_size == [64, 64]
    saved = type(pipe.unet).from_pretrained(work["tmp"] / "mcdm/model")  # the EMA weights
    for a, b in zip(saved.parameters(), pipe.unet.parameters(), strict=True):
        assert torch.equal(a, b)


def test_mcdm_train_resumes_with_more_steps(work, tmp_path):
    out = tmp_path / "mcdm"
    shutil.copytree(work["tmp"] / "mcdm", out)
    shutil.copy(work["tmp"] / "mcdm.tsv", tmp_path / "mcdm.tsv")
    tmp = work["tmp"]
    metrics = train_mcdm(
        tmp / "latents.zarr", tmp / "features.zarr", tmp / "vae/model",
        mcdm_params(work["dim"], steps=3), out_dir=out, log_file=tmp_path / "mcdm.tsv", seed=SEED,
    )  # fmt: skip
    assert metrics["resumed_from"] == 2 and metrics["steps"] == 3
    assert tsv_steps(tmp_path / "mcdm.tsv") == [1, 2, 3]


def test_mcdm_train_rejects_a_motion_width_other_than_the_features(work, tmp_path):
    tmp = work["tmp"]
    with pytest.raises(ValueError, match=r"motion_dim \(7\) must equal"):
        train_mcdm(
            tmp / "latents.zarr", tmp / "features.zarr", tmp / "vae/model", mcdm_params(7),
            out_dir=tmp_path, log_file=tmp_path / "x.tsv", seed=SEED,
        )  # fmt: skip


def test_two_processes_share_mcdm_training_and_only_rank_0_writes(work, tmp_path):
    inputs, out, record = tmp_path / "inputs", tmp_path / "out", tmp_path / "record"
    for name in ("latents.zarr", "features.zarr"):
        shutil.copytree(work["tmp"] / name, inputs / name)
    shutil.copytree(work["tmp"] / "vae/model", inputs / "vae")
    (inputs / "params.json").write_text(mcdm_params(work["dim"], steps=2).model_dump_json())
    record.mkdir()
    env = os.environ | {"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(HERE / "_two_rank_mcdm.py"), str(inputs), str(out), str(record)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["steps"] for r in ranks] == [2, 2]
    assert ranks[0]["draws"] == ranks[1]["draws"] == [2, 2]  # both ranks took part
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients were averaged
    assert ranks[1]["writes"] == []
    assert (out / "pipeline/model_index.json").is_file() and (out / "train.tsv").is_file()
    for path in out.rglob("*"):
        if path.is_file() and path.suffix != ".safetensors":  # safetensors files are 0600
            assert path.stat().st_mode & 0o040, f"{path} not written by rank 0"


@pytest.fixture(scope="module")
def sampled(work) -> dict:
    tmp = work["tmp"]
    report = sample_dataset(
        tmp / "mcdm/pipeline", work["videos"], tmp / "features.zarr", tmp / "synthetic/echonet",
        tmp / "plots", SAMPLE, seed=SEED,
    )  # fmt: skip
    root = tmp / "synthetic/echonet"
    with (root / "FileList.csv").open(newline="") as f:
        first = next(csv.DictReader(f))["MotionSource"]
    names = RaggedStore(work["videos"]).table["file_name"].astype(str).tolist()
    return {
        "report": report, "root": root, "plots": tmp / "plots", "videos": work["videos"],
        "first_source": names.index(first),
    }  # fmt: skip


def test_sample_writes_a_valid_echonet_dataset(work, sampled):
    root, videos = sampled["root"], RaggedStore(work["videos"])
    records, rejects = read_file_list(root)
    assert rejects == [] and len(records) == 4 == sampled["report"]["videos"]
    with (root / "FileList.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert set(EXTRA_COLUMNS) <= set(rows[0])
    sources = {n: i for i, n in enumerate(videos.table["file_name"])}
    assert sorted(r["Mode"] for r in rows) == ["self", "self", "transfer", "transfer"]
    for row, record in zip(rows, records, strict=True):
        source = videos.row(sources[row["MotionSource"]])
        assert row["Synthetic"] == "1" and record.split == source["split"]
        assert row["ReferenceFrame"] == row["MotionStart"] == "0"  # windows start anywhere
        assert row["HeartRate"] == ""  # time_ids "signals": no heart-rate id
        assert record.ef == pytest.approx(source["ef"], abs=1e-4)
        same = row["AppearanceSource"] == row["MotionSource"]
        assert same == (row["Mode"] == "self")
        video = read_video(root / "Videos" / f"{record.file_name}.avi")
        assert video.frames.shape == (SAMPLE.num_frames, 64, 64) == (record.n_frames, 64, 64)
        assert video.fps == record.fps == 12.5  # the store's 25 fps / frame_stride 2
    assert (root / "VolumeTracings.csv").read_text().startswith("FileName,X1")


def train_with_prepared_videos(work, tmp_path, **options) -> dict:
    """One-step MCDM training with ``options`` that read the prepared videos: refused
    without them, then run with them into ``tmp_path / "mcdm"``; its metrics."""
    tmp, params = work["tmp"], mcdm_params(work["dim"], steps=1, **options)
    stores = (tmp / "latents.zarr", tmp / "features.zarr", tmp / "vae/model", params)
    with pytest.raises(ValueError, match="need the prepared videos"):
        train_mcdm(*stores, out_dir=tmp_path / "x", log_file=tmp_path / "x.tsv", seed=SEED)
    return train_mcdm(*stores, videos_path=work["videos"], out_dir=tmp_path / "mcdm",
                      log_file=tmp_path / "m.tsv", seed=SEED)  # fmt: skip


def test_ed_anchored_training_and_sampling_start_at_a_label_free_ed(work, tmp_path):
    """window_anchor 'ed': training windows start at detected ED frames, the pipeline says
    so, and the sample stage takes each reference at the appearance video's first such ED
    and compares each driver from its own (FileList ReferenceFrame / MotionStart)."""
    tmp, videos = work["tmp"], RaggedStore(work["videos"])
    metrics = train_with_prepared_videos(work, tmp_path, window_anchor="ed")
    assert 0 < metrics["ed_anchored_videos"] <= metrics["train_videos"]
    assert work["mcdm_metrics"]["ed_anchored_videos"] == 0  # windows that start anywhere
    pipe = load_pipeline(tmp_path / "mcdm/pipeline", "ddim")
    assert pipe.config.window_anchor == "ed"
    sample_dataset(tmp_path / "mcdm/pipeline", work["videos"], tmp / "features.zarr",
                   tmp_path / "syn", tmp_path / "plots", SAMPLE, seed=SEED)  # fmt: skip
    with (tmp_path / "syn/FileList.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    index = {n: i for i, n in enumerate(videos.table["file_name"].astype(str))}
    span = int((SAMPLE.num_frames - 1) / 12.5 * 25) + 1  # the window, in 25-fps frames

    def first_ed(name: str) -> int:
        found = Beats.detect(videos.video(index[name]), 25.0).window_anchors(span)
        return int(found[0]) if len(found) else 0

    assert any(first_ed(r["AppearanceSource"]) > 0 for r in rows)  # not the first frame
    for row in rows:
        assert int(row["ReferenceFrame"]) == first_ed(row["AppearanceSource"])
        assert int(row["MotionStart"]) == first_ed(row["MotionSource"])


def sample_recording_calls(work, tmp_path, monkeypatch):
    """Run the sample stage on the pipeline at ``tmp_path / "mcdm/pipeline"``, recording the
    (heart rate, contraction) each driver's generate call got; returns those calls, the
    FileList.csv rows and the drivers in order."""
    calls = []

    def recording(pipe, references, motion, params, seed, ef=None, heart_rate=None, curve=None):
        calls.append((heart_rate, curve))
        return generate_videos(pipe, references, motion, params, seed, ef, heart_rate, curve)

    monkeypatch.setattr("echomotion.tasks.sample.run.generate_videos", recording)
    sample_dataset(tmp_path / "mcdm/pipeline", work["videos"], work["tmp"] / "features.zarr",
                   tmp_path / "syn", tmp_path / "plots", SAMPLE, seed=SEED)  # fmt: skip
    with (tmp_path / "syn/FileList.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return calls, rows, list(dict.fromkeys(r["MotionSource"] for r in rows))


def test_heart_rate_training_and_sampling_use_label_free_heart_rates(work, tmp_path, monkeypatch):
    """time_ids 'heart_rate': each training window carries its video's heart rate from the
    detected EDs, the pipeline keeps their median, and the sample stage drives every video
    with its driver's own."""
    videos = RaggedStore(work["videos"])
    metrics = train_with_prepared_videos(work, tmp_path, time_ids="heart_rate")
    assert metrics["ed_anchored_videos"] == 0 and work["mcdm_metrics"]["heart_rate_bpm"] == 0
    train = np.flatnonzero(videos.table["split"].astype(str) == "TRAIN")
    rates = [Beats.detect(videos.video(v), 25.0).heart_rate for v in train]
    assert metrics["heart_rate_bpm"] == pytest.approx(np.nanmedian(rates))
    assert 40 < metrics["heart_rate_bpm"] < 150  # the tiny phantom's hearts
    pipe = load_pipeline(tmp_path / "mcdm/pipeline", "ddim")
    assert pipe.config.heart_rate == pytest.approx(metrics["heart_rate_bpm"])
    calls, rows, drivers = sample_recording_calls(work, tmp_path, monkeypatch)
    given = [rate for rate, _ in calls]
    index = {n: i for i, n in enumerate(videos.table["file_name"].astype(str))}
    expected = [Beats.detect(videos.video(index[n]), 25.0).heart_rate for n in drivers]
    assert given == pytest.approx(expected) and len(set(given)) > 1
    recorded = {r["MotionSource"]: float(r["HeartRate"]) for r in rows}  # the rate each used
    assert [recorded[n] for n in drivers] == pytest.approx(expected, abs=0.005)


def test_contraction_training_and_sampling_use_the_label_free_curves(work, tmp_path, monkeypatch):
    """contraction: the pipeline says so, and the sample stage drives every video with its
    driver's contraction curve from the driver's start frame, at the pipeline's rate."""
    videos = RaggedStore(work["videos"])
    train_with_prepared_videos(work, tmp_path, contraction=True)
    pipe = load_pipeline(tmp_path / "mcdm/pipeline", "ddim")
    assert pipe.config.contraction and pipe.unet.config.in_channels == 9
    calls, _, drivers = sample_recording_calls(work, tmp_path, monkeypatch)
    given = [curve for _, curve in calls]
    index = {n: i for i, n in enumerate(videos.table["file_name"].astype(str))}
    assert len(given) == len(drivers) > 1
    for name, curve in zip(drivers, given, strict=True):
        full = contraction_curve(detect_ed_es(videos.video(index[name]), 25.0).signal)
        assert curve.shape == (1, SAMPLE.num_frames)
        assert np.array_equal(curve[0], full[: 2 * SAMPLE.num_frames : 2])  # MotionStart 0
    assert any(curve.any() for curve in given)


def test_unknown_heart_rates_take_the_median_or_a_fallback(caplog):
    rates = known_heart_rates(np.array([60.0, np.nan, 90.0, 100.0]))
    assert rates.tolist() == [60.0, 90.0, 90.0, 100.0]
    with caplog.at_level("WARNING"):
        assert known_heart_rates(np.array([np.nan, np.nan])).tolist() == [75.0, 75.0]
    assert "no training video has two detected EDs" in caplog.text


def test_sample_writes_previews_and_metrics(sampled):
    report = sampled["report"]
    assert report["motion_sources"] == 2 and report["transfer"] == report["self"] == 2
    assert report["frames_per_video"] == SAMPLE.num_frames
    # per source a driver, a self and a transfer row; columns: label, reference, 4 frames
    grid = np.asarray(Image.open(sampled["plots"] / "grid.png"))
    assert grid.shape == (HEADER_HEIGHT + 6 * 64 + 5 * 2, LABEL_WIDTH + 5 * 64 + 5 * 2)
    gif = Image.open(sampled["plots"] / "samples.gif")
    assert gif.n_frames == SAMPLE.num_frames
    assert gif.size == (LABEL_WIDTH + 2 * 64 + 2 * 2, 6 * 64 + 5 * 2)
    # the driver row has no reference (blank); the self row's reference is the driver's frame 0
    videos = RaggedStore(sampled["videos"])
    ref_left, top = LABEL_WIDTH + 2, HEADER_HEIGHT
    assert (grid[top : top + 64, ref_left : ref_left + 64] == 255).all()
    self_ref = grid[top + 66 : top + 130, ref_left : ref_left + 64]
    assert np.array_equal(self_ref, videos.video(sampled["first_source"])[0])


def test_time_matched_driver_frames():
    video = np.arange(10)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    assert time_matched(video, 25.0, 12.5, 4)[:, 0, 0].tolist() == [0, 2, 4, 6]
    assert time_matched(video, 25.0, 12.5, 8)[:, 0, 0].tolist() == [0, 2, 4, 6, 8]
    assert time_matched(video, 25.0, 0.0, 3)[:, 0, 0].tolist() == [0, 1, 2]


def test_clip_windows_take_every_stride_frame_from_the_reference():
    latents = np.arange(30, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2))
    offsets = np.array([0, 12, 30])
    motion = torch.zeros(2, 3)
    data = LatentClipDataset(
        latents, offsets, np.array([0, 1]), motion, np.array([25.0, 50.0]), 4, stride=3
    )
    torch.manual_seed(0)
    for index, (first, end) in enumerate([(0, 12), (12, 30)]):
        for _ in range(20):
            item = data[index]
            frames = item["latents"][:, 0, 0, 0]
            assert (frames.diff() == 3).all() and first <= frames[0] and frames[-1] < end
            assert item["ref_latent"][0, 0, 0] == frames[0]  # window_start
    assert data[1]["fps"].item() == pytest.approx(50.0 / 3)
    with pytest.raises(ValueError, match=r"videos \[0\] are < 13 frames"):
        LatentClipDataset(latents, offsets, np.array([0]), motion[:1], np.array([25.0]), 5, 3)
    anywhere = LatentClipDataset(
        latents, offsets, np.array([1]), motion[:1], np.array([25.0]), 4, 3, "random"
    )
    refs = {int(anywhere[0]["ref_latent"][0, 0, 0]) for _ in range(60)}
    assert len(refs) > 10 and min(refs) >= 12 and max(refs) < 30


def test_sampling_is_seeded(work):
    pipe = load_pipeline(work["tmp"] / "mcdm/pipeline", "dpmsolver++")
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    refs = RaggedStore(work["videos"]).video(0)[:2]
    motion = torch.ones(1, work["dim"])  # raw: the pipeline normalises it
    params = section("sample", num_inference_steps=2, num_frames=4)
    first, again = (generate_videos(pipe, refs, motion, params, seed=1) for _ in range(2))
    other = generate_videos(pipe, refs, motion, params, seed=2)
    assert first.shape == (2, 4, 64, 64) and np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_sampling_scheduler_keeps_the_training_schedule():
    config = DDIMScheduler(prediction_type="v_prediction", beta_schedule="linear").config
    dpm = sampling_scheduler(config, "dpmsolver++")
    assert dpm.config.algorithm_type == "dpmsolver++"
    assert dpm.config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="scheduler must be one of"):
        sampling_scheduler(config, "euler")


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_vae_and_mcdm_folders_are_byte_identical_when_trained_again(work, tmp_path):
    """Same inputs, params and seed, another folder: every file of the VAE and MCDM
    out_dirs (checkpoints with optimizer state, final models, pipeline) has the same
    bytes, so DVC's content hashes of these outputs reproduce."""
    again = tmp_path / "again"
    train_vae(work["videos"], VAE, out_dir=again / "vae", log_file=again / "vae.tsv", seed=SEED)
    train_mcdm(
        work["tmp"] / "latents.zarr", work["tmp"] / "features.zarr", work["tmp"] / "vae/model",
        mcdm_params(work["dim"]), out_dir=again / "mcdm", log_file=again / "mcdm.tsv", seed=SEED,
    )  # fmt: skip
    for name in ("vae", "mcdm"):
        first, second = folder_bytes(work["tmp"] / name), folder_bytes(again / name)
        assert sorted(first) == sorted(second)
        differ = [k for k in first if first[k] != second[k]]
        assert not differ, f"{name}: files differ between two identical runs: {differ}"


def test_latents_encode_on_the_given_device(work, tmp_path):
    """The VAE and every frame batch on the stage's device (meta: nothing left on the CPU)."""
    params = section("latents", batch_size=32, shard_frames=256, chunk_frames=16)

    def run(device):
        out = tmp_path / f"{device}.zarr"
        return encode_videos(work["videos"], work["tmp"] / "vae/model", out, params, device)

    report = assert_runs_on("cpu", run)
    assert report == work["latents_report"]
    assert_runs_on_meta(run)


def test_sample_runs_the_pipeline_on_the_given_device(work, sampled, tmp_path):
    """VAE, UNet and every latent on the stage's device (meta: nothing left on the CPU);
    the noise comes from a CPU generator, so the videos do not depend on the device."""
    tmp = work["tmp"]

    def run(device):
        root, plots = tmp_path / device / "echonet", tmp_path / device / "plots"
        return sample_dataset(
            tmp / "mcdm/pipeline", work["videos"], tmp / "features.zarr", root, plots, SAMPLE,
            seed=SEED, device=device,
        )  # fmt: skip

    assert assert_runs_on("cpu", run) == sampled["report"]
    written = sorted((tmp_path / "cpu/echonet/Videos").iterdir())
    assert [p.read_bytes() for p in written] == [
        (sampled["root"] / "Videos" / p.name).read_bytes() for p in written
    ]
    assert_runs_on_meta(run)
