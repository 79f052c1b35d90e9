"""The StyleGAN-V protocol: its detectors (local file or one cached download, offline with
TorchScript stand-ins of the same call signature), fvd at several clip lengths, the
Inception Score, StyleGAN-V's metric names, and the official sampling protocol."""

from __future__ import annotations

import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from scipy.stats import entropy
from torch import Tensor, nn

from conftest import REPO, section
from echomotion.cli.preset import load_preset
from echomotion.evaluation import detectors
from echomotion.evaluation.extractors import TorchScriptFeatures, extract_probabilities
from echomotion.evaluation.frechet import frechet_distance, gaussian_stats
from echomotion.evaluation.inception_score import inception_score
from echomotion.evaluation.params import TorchScriptExtractorParams
from echomotion.evaluation.videos import VideoSet
from echomotion.params import validate_params
from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter
from echomotion.tasks.evaluate.data import EvalData
from echomotion.tasks.evaluate.params import RealismParams
from echomotion.tasks.evaluate.scores import realism_scores

pytestmark = pytest.mark.usefixtures("one_thread")

INCEPTION_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
    "inception-2015-12-05.pt"
)
I3D_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"


class InceptionStandIn(nn.Module):
    """StyleGAN2-ADA's Inception call: uint8 (N, 3, H, W), resized inside; pooled features
    with ``return_features``, else softmax probabilities (``no_output_bias`` drops the bias)."""

    def __init__(self):
        super().__init__()
        self.output = nn.Linear(12, 5)

    def forward(
        self, img: Tensor, return_features: bool = False, no_output_bias: bool = False
    ) -> Tensor:
        if img.dtype != torch.uint8 or img.shape[1] != 3:
            raise ValueError("expects uint8 RGB")
        x = F.interpolate(img.float(), size=[29, 29], mode="bilinear", align_corners=False)
        features = F.adaptive_avg_pool2d((x - 128.0) / 128.0, 2).flatten(1)  # (N, 12)
        if return_features:
            return features
        bias = torch.zeros_like(self.output.bias) if no_output_bias else self.output.bias
        return torch.softmax(F.linear(features, self.output.weight, bias), dim=1)


class I3DStandIn(nn.Module):
    """StyleGAN-V's I3D call: uint8 (N, 3, T, H, W); ``rescale`` to [-1, 1], ``resize``."""

    def forward(
        self, x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> Tensor:
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError("expects (N, 3, T, H, W)")
        if rescale:
            if x.dtype != torch.uint8:
                raise ValueError("rescale expects uint8")
            x = x.float() / 255.0 * 2.0 - 1.0
        if resize:
            x = F.interpolate(x, size=[x.shape[2], 12, 12], mode="trilinear", align_corners=False)
        return F.adaptive_avg_pool3d(x, [2, 2, 2]).flatten(1)  # (N, 24)


def save_script(module: nn.Module, path) -> str:
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(module), str(path))
    return str(path)


# ----------------------------------------------------------------------- download and cache


class CountingOpener:
    """The real opener (file:// URLs only: no network) counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, url, timeout=None):
        assert url.startswith("file://"), url
        self.calls += 1
        return urllib.request.urlopen(url, timeout=timeout)


@pytest.fixture
def published(tmp_path):
    """A stand-in Inception 'published' at a file:// URL, with its sha256."""
    src = tmp_path / "server" / "inception-2015-12-05.pt"
    src.parent.mkdir()
    save_script(InceptionStandIn(), src)
    return SimpleNamespace(url=src.as_uri(), sha256=detectors.sha256_of(src))


def params_of(**kw) -> TorchScriptExtractorParams:
    return TorchScriptExtractorParams(size=None, value_range="uint8", **kw)


def test_download_once_into_the_cache_then_reuse(published, tmp_path, monkeypatch):
    opener = CountingOpener()
    monkeypatch.setattr(detectors, "open_url", opener)
    cache = tmp_path / "cache"
    params = params_of(url=published.url, sha256=published.sha256, cache_dir=str(cache))
    first = detectors.detector_file(params)
    assert first == cache / "inception-2015-12-05.pt" and opener.calls == 1
    assert detectors.detector_file(params) == first and opener.calls == 1  # cache reused
    assert sorted(p.name for p in cache.iterdir()) == ["inception-2015-12-05.pt"]  # no temp
    net = TorchScriptFeatures(params.model_copy(update={"call_kwargs": {"return_features": True}}),
                              "frame", "cpu")  # fmt: skip
    assert net(torch.rand(2, 1, 9, 9)).shape == (2, 12) and opener.calls == 1


def test_cache_location_follows_the_environment(published, tmp_path, monkeypatch):
    monkeypatch.setattr(detectors, "open_url", CountingOpener())
    monkeypatch.setenv("ECHOMOTION_CACHE", str(tmp_path / "env"))
    assert detectors.detector_file(params_of(url=published.url)).parent == tmp_path / "env"
    monkeypatch.delenv("ECHOMOTION_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert detectors.cache_dir() == tmp_path / "home" / ".cache" / "echomotion"
    assert detectors.cached_name(I3D_URL) == "i3d_torchscript.pt"


def test_checksum_mismatch_is_an_error_and_leaves_nothing(published, tmp_path, monkeypatch):
    monkeypatch.setattr(detectors, "open_url", CountingOpener())
    cache = tmp_path / "cache"
    params = params_of(url=published.url, sha256="0" * 64, cache_dir=str(cache))
    with pytest.raises(ValueError, match=f"sha256 {published.sha256}, expected 0000"):
        detectors.detector_file(params)
    assert list(cache.iterdir()) == []
    # a cached file that does not match is refused, not silently used
    good = params.model_copy(update={"sha256": published.sha256})
    detectors.detector_file(good)
    with pytest.raises(ValueError, match="cached"):
        detectors.detector_file(params)


def test_offline_error_names_the_file_and_how_to_supply_it(tmp_path, monkeypatch):
    def no_network(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(detectors, "open_url", no_network)
    params = params_of(path=str(tmp_path / "missing.pt"), url=INCEPTION_URL,
                       cache_dir=str(tmp_path / "cache"))  # fmt: skip
    target = tmp_path / "cache" / "inception-2015-12-05.pt"
    with pytest.raises(FileNotFoundError, match="download failed") as err:
        TorchScriptFeatures(params, "frame", "cpu")
    assert str(target) in str(err.value) and INCEPTION_URL in str(err.value)
    assert "missing.pt" in str(err.value) and "path" in str(err.value)
    monkeypatch.setenv("ECHOMOTION_OFFLINE", "1")
    monkeypatch.setattr(detectors, "open_url", None)  # not even tried
    with pytest.raises(detectors.DetectorUnavailable, match="ECHOMOTION_OFFLINE"):
        detectors.detector_file(params)
    with pytest.raises(FileNotFoundError, match="no url"):
        detectors.detector_file(params.model_copy(update={"url": None}))


def test_an_existing_local_path_is_used_without_download(tmp_path, monkeypatch):
    monkeypatch.setattr(detectors, "open_url", None)
    path = save_script(InceptionStandIn(), tmp_path / "local.pt")
    params = params_of(path=path, url=INCEPTION_URL, cache_dir=str(tmp_path / "cache"))
    assert str(detectors.detector_file(params)) == path
    with pytest.raises(ValidationError, match="path or a url"):
        TorchScriptExtractorParams(size=None)


# ------------------------------------------------------------------ inputs as StyleGAN-V's


def test_inputs_are_uint8_rgb_at_their_own_size(tmp_path):
    path = save_script(I3DStandIn(), tmp_path / "i3d.pt")
    kwargs = {"rescale": True, "resize": True, "return_features": True}
    i3d = TorchScriptFeatures(params_of(path=path, call_kwargs=kwargs), "clip", "cpu")
    levels = torch.arange(2 * 4 * 6 * 6).reshape(2, 4, 1, 6, 6) % 256  # (N, T, 1, H, W)
    x = i3d.preprocess(levels.float() / 255.0)
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 4, 6, 6)
    assert torch.equal(x[:, 1], levels[:, :, 0].to(torch.uint8))  # exact grey levels
    assert i3d(levels.float() / 255.0).shape == (2, 24)
    # the uint8 scale is the byte scale rounded
    byte = TorchScriptFeatures(params_of(path=path).model_copy(update={"value_range": "byte"}),
                               "clip", "cpu")  # fmt: skip
    assert torch.equal(byte.preprocess(levels.float() / 255.0).round().to(torch.uint8), x)


def test_class_probabilities_use_the_probability_call(tmp_path):
    path = save_script(InceptionStandIn(), tmp_path / "inception.pt")
    net = TorchScriptFeatures(params_of(path=path, probs_kwargs={"no_output_bias": True}),
                              "frame", "cpu")  # fmt: skip
    frames = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    probs = extract_probabilities(net, frames, batch_size=2)
    assert probs.shape == (5, 5) and np.allclose(probs.sum(1), 1)
    biased = TorchScriptFeatures(params_of(path=path), "frame", "cpu")
    assert not np.allclose(extract_probabilities(biased, frames, 2), probs)  # kwargs reach it
    with pytest.raises(ValueError, match="frame extractor"):
        extract_probabilities(net, frames[None], 2)


# ------------------------------------------------------------------------------ the maths


def test_inception_score_known_values_and_scipy_parity():
    assert inception_score(np.full((20, 7), 1 / 7)) == pytest.approx((1.0, 0.0))
    one_hot = np.eye(4)[np.arange(40) % 4]  # every split holds each class once
    assert inception_score(one_hot) == pytest.approx((4.0, 0.0))
    probs = np.random.default_rng(0).dirichlet(np.full(6, 0.3), size=103)
    parts = [probs[i * 103 // 10 : (i + 1) * 103 // 10] for i in range(10)]
    scores = [np.exp(np.mean([entropy(p, part.mean(0)) for p in part])) for part in parts]
    assert inception_score(probs) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-10)
    with pytest.raises(ValueError, match="splits"):
        inception_score(probs[:9])


def test_biased_covariance_is_stylegan_v_s_and_the_default_is_unchanged():
    x = np.random.default_rng(0).normal(size=(30, 4))
    assert np.allclose(gaussian_stats(x, ddof=0)[1], np.cov(x, rowvar=False, bias=True))
    assert np.array_equal(gaussian_stats(x)[1], np.cov(x, rowvar=False))
    y = x[::-1] * 1.1 + 0.2
    assert frechet_distance(x, y) != frechet_distance(x, y, ddof=0)


# ------------------------------------------------------------------------- realism scores


def eval_data(tmp_path) -> EvalData:
    """A real store (4 TRAIN videos of 20-40 frames, 3 TEST) and 4 synthetic 24-frame
    videos, 16x16, random grey levels."""
    rng = np.random.default_rng(1)
    with RaggedStoreWriter(tmp_path / "videos.zarr", {"frames": ((16, 16), "uint8")}, 64, 16) as w:
        for i, (split, n) in enumerate(zip(["TRAIN"] * 4 + ["TEST"] * 3,
                                           [20, 30, 40, 36, 32, 24, 40], strict=True)):  # fmt: skip
            frames = rng.integers(0, 256, (n, 16, 16), dtype=np.uint8)
            w.append({"frames": frames}, file_name=f"v{i}", split=split, ef=50.0)
    synthetic = [rng.integers(0, 256, (24, 16, 16), dtype=np.uint8) for _ in range(4)]
    return EvalData(RaggedStore(tmp_path / "videos.zarr"), [],
                    VideoSet.from_arrays([f"s{i}" for i in range(4)], synthetic))  # fmt: skip


def standard_extractors(tmp_path, standard: bool = True) -> tuple[dict, RealismParams]:
    common = {"size": None, "value_range": "uint8", "standard": standard}
    inception = TorchScriptExtractorParams(
        path=save_script(InceptionStandIn(), tmp_path / "inception.pt"),
        call_kwargs={"return_features": True}, probs_kwargs={"no_output_bias": True}, **common,
    )  # fmt: skip
    i3d = TorchScriptExtractorParams(
        path=save_script(I3DStandIn(), tmp_path / "i3d.pt"),
        call_kwargs={"rescale": True, "resize": True, "return_features": True}, **common,
    )  # fmt: skip
    realism = RealismParams(
        n_frames=40, n_clips=8, max_reference_frames=None, reference_clips=8,
        inception=inception, i3d=i3d, fvd_frames=(8, 30), inception_score=True,
    )  # fmt: skip
    extractors = {
        "inception": TorchScriptFeatures(inception, "frame", "cpu"),
        "i3d": TorchScriptFeatures(i3d, "clip", "cpu"),
    }
    return extractors, realism


def test_stylegan_v_names_lengths_and_inception_score(tmp_path):
    data = eval_data(tmp_path)
    extractors, realism = standard_extractors(tmp_path)
    params = section("evaluate", clip_frames=8, batch_size=4, realism=realism)
    out = realism_scores(data, extractors, params, np.random.default_rng(0))
    for key in ("fid40_full", "fvd8_8f"):
        assert np.isfinite(out[key]) and out[key] >= 0 and np.isfinite(out[f"{key}_real_baseline"])
    # 30-frame clips: the synthetic videos have 24 frames, so that FVD is skipped
    assert "synthetic videos have at most 24 frames" in out["fvd8_30f"]["skipped"]
    assert 1.0 <= out["is40_mean"] <= 5.0 and out["is40_std"] >= 0
    assert 1.0 <= out["is40_mean_real_baseline"] <= 5.0
    assert not any(k.startswith(("inception_", "i3d_")) for k in out)
    # seeded: the same numbers again
    again = realism_scores(data, extractors, params, np.random.default_rng(0))
    assert again == out


def test_own_detectors_keep_their_prefixed_names(tmp_path):
    data = eval_data(tmp_path)
    extractors, realism = standard_extractors(tmp_path, standard=False)
    realism = realism.model_copy(update={"fvd_frames": None})
    params = section("evaluate", clip_frames=8, batch_size=4, realism=realism)
    out = realism_scores(data, extractors, params, np.random.default_rng(0))
    assert {"inception_fid40_full", "i3d_fvd8_8f", "inception_is40_mean"} <= set(out)
    with pytest.raises(ValidationError, match="needs an inception"):
        RealismParams(inception_score=True)
    with pytest.raises(ValidationError, match="lengths >= 2"):
        RealismParams(fvd_frames=(16, 1))


# ---------------------------------------------------------------------------- paper preset


def test_paper_preset_runs_the_stylegan_v_protocol():
    _, merged = load_preset("paper", REPO / "params.yaml")
    paper = validate_params(merged, "paper preset")
    realism = paper.evaluate.realism
    assert (realism.n_frames, realism.n_clips, realism.max_reference_frames) == (50000, 2048, None)
    assert realism.fvd_frames == (16, 128) and realism.inception_score
    assert realism.inception.url == INCEPTION_URL and realism.i3d.url == I3D_URL
    assert realism.inception.standard and realism.i3d.standard
    assert realism.i3d.call_kwargs == {"rescale": True, "resize": True, "return_features": True}
    assert realism.inception.probs_kwargs == {"no_output_bias": True}
    assert (paper.sample.protocol, paper.sample.max_sources) == ("official", 2048)
    assert paper.sample.splits == ("TRAIN",)
