"""Stage ``evaluate``: score the synthetic dataset for realism, motion fidelity, EF and privacy.

Inputs: the prepared real videos, the synthetic EchoNet-layout dataset of ``sample``, the
motion vectors of ``features``, the trained ReID, MAFE and (for flow EPE) flow models, and
the LV tracings of the EchoNet root (``paths.source_root``). It trains two small EF
regressors with the shared loop (on real TRAIN, and on synthetic videos only, for the
EchoNet-Synthetic downstream protocol) and an LV segmenter (on the traced TRAIN frames)
and writes:

- the metrics (``metrics/eval.json``, by the stage script): groups ``realism``, ``motion``
  (also per mode: ``transfer_*``, ``self_*``; ``still_*``: by identity-free motion vectors,
  see :func:`.scores.still_cosine`), ``appearance`` (ReID: nearer to the
  appearance than to the motion source), ``ssim`` (self mode vs its driver, time-matched),
  ``ef``, ``ef_lv`` (EF by LV-area tracking, see :mod:`.lv`), ``privacy``;
- ``plots/evaluate/``: ``ef_scatter.csv`` (EF truth vs prediction per set),
  ``privacy.csv`` (per synthetic video: nearest TRAIN video, similarity, flag),
  ``privacy_hist.csv`` (similarity histogram, synthetic vs real TEST), ``motion.csv`` (per
  synthetic video: cosine, EPE, ED/ES used), ``ef_train.tsv`` / ``ef_train_synthetic.tsv``,
  ``ef_lv_scatter.csv`` (LV-area EF per set), ``lv_area.csv`` (LV area over time of each
  driver and its generated videos, long format), ``lv_train.tsv``;
- ``models/ef_regressor``, ``models/ef_regressor_synthetic`` and ``models/lv_segmenter``
  (training out_dirs);
- ``data/synthetic_private/``: the synthetic dataset in EchoNet layout without the videos
  the privacy rule flags (every video when ``privacy.filter_flagged`` is false).

Realism names follow StyleGAN-V (``fid50k_full``: 50k generated frames against all real
frames; ``fvd2048_16f``: 2048 generated 16-frame clips), prefixed with the extractor and
scaled down at the CPU default: ``reid_fid512`` (the ``_full`` suffix only when
``realism.max_reference_frames`` is null, i.e. every reference frame is used) and
``efnet_fvd128_16f``; with a TorchScript network also ``inception_fid...`` /
``i3d_fvd...`` (``realism.fvd_frames``: one per clip length; ``realism.inception_score``:
``inception_is..._mean`` / ``_std``), named exactly as StyleGAN-V names them
(``fid50k_full``, ``fvd2048_16f``, ``fvd2048_128f``, ``is50k_mean``) when the extractor is
marked ``standard`` (its detectors, see :mod:`echomotion.evaluation.detectors`). Each has
a ``..._real_baseline`` twin: the real ``baseline_split`` scored against the same
reference with as many samples as the synthetic set (``n_frames_used``,
``n_clips_used``), which gives the scale (small-sample bias included).

Every network runs on ``device`` (params ``shared.device``): the loaded ones are moved
there, the trained ones (which the training loop leaves on its own device) before their
first prediction.

EF labels are optional (see :mod:`.ef`): with fewer than ``ef.min_labelled`` labelled
videos the EF metrics and the EF network's clip distance (``efnet_fvd...``) are written
as ``{"skipped": reason}`` under their names; realism by the ReID frame distance (and any
TorchScript extractor), motion fidelity and privacy need no label and are always computed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from echomotion.device import resolve_device
from echomotion.evaluation.ef_regressor import EFRegressor
from echomotion.evaluation.extractors import (
    EFClipFeatures,
    FeatureExtractor,
    ReIDFrameFeatures,
    TorchScriptFeatures,
)
from echomotion.evaluation.privacy import write_filtered_dataset
from echomotion.flow.classical import make_flow_provider
from echomotion.flow.pwc import PWCLite
from echomotion.mafe.model import MAFE
from echomotion.params import Params, write_used_params
from echomotion.reid.model import ReIDEncoder
from echomotion.stage import write_json
from echomotion.tasks.evaluate.data import EvalData, EvaluatePaths, load_data, write_rows
from echomotion.tasks.evaluate.ef import (
    SCATTER_COLUMNS,
    ef_scores,
    skipped,
    train_real_ef,
    train_synthetic_ef,
)
from echomotion.tasks.evaluate.figures import save_lv_area_figure
from echomotion.tasks.evaluate.lv import (
    AREA_COLUMNS,
    lv_scores,
    segmentation_scores,
    traced_sets,
    train_lv,
)
from echomotion.tasks.evaluate.params import EvaluateParams, MotionParams, RealismParams
from echomotion.tasks.evaluate.scores import (
    motion_scores,
    privacy_scores,
    realism_scores,
    unflagged,
)
from echomotion.tasks.evaluate.transfer import appearance_scores, ssim_scores

log = logging.getLogger(__name__)


def extractors_for(
    params: RealismParams,
    reid: ReIDEncoder,
    ef_model: EFRegressor | None,
    device: str | torch.device,
) -> dict[str, FeatureExtractor]:
    """The Frechet feature extractors by metric prefix, each on ``device``: the pipeline's
    own networks (the EF network only when it was trained), plus Inception / I3D when
    configured (a local TorchScript file or one downloaded once into the cache)."""
    extractors: dict[str, FeatureExtractor] = {"reid": ReIDFrameFeatures(reid, device)}
    if ef_model is not None:
        extractors["efnet"] = EFClipFeatures(ef_model, device)
    if params.inception is not None:
        extractors["inception"] = TorchScriptFeatures(params.inception, "frame", device)
    if params.i3d is not None:
        extractors["i3d"] = TorchScriptFeatures(params.i3d, "clip", device)
    return extractors


def flow_provider(params: MotionParams, paths: EvaluatePaths, device: str | torch.device):
    """The motion-fidelity flow provider; the "network" one with the trained flow network
    on ``device`` (the provider runs it where it is)."""
    if params.flow.method != "network":
        return make_flow_provider(params.flow)
    return make_flow_provider(params.flow, PWCLite.from_pretrained(paths.flow).to(device))


def ef_lv_scores(
    data: EvalData,
    params: EvaluateParams,
    paths: EvaluatePaths,
    seed: int,
    device: str | torch.device,
) -> tuple[dict, list[dict], list[dict]]:
    """The LV-area EF estimator: segmenter trained on the TRAIN tracings, then its metrics
    (``{"skipped": reason}`` without tracings), EF scatter rows and LV-area rows, the
    segmenter run on ``device``."""
    traced = traced_sets(data.store, paths.source_root)
    model, reason = train_lv(traced, params, paths, params.lv.train.seed_or(seed))
    if model is None:
        return skipped(reason), [], []
    metrics, scatter, areas = lv_scores(data, model, params, device, seed)
    dice = segmentation_scores(model, traced, params.batch_size, device)
    return dice | metrics, scatter, areas


def evaluate(
    params: EvaluateParams, paths: EvaluatePaths, seed: int, device: str | torch.device
) -> dict[str, dict]:
    """Run every evaluation, its networks on ``device``; write the plots and the private
    copy; return the metrics."""
    # 1. inputs and trained networks
    data = load_data(paths)
    reid = ReIDEncoder.from_pretrained(paths.reid).to(device).eval()
    mafe = MAFE.from_pretrained(paths.mafe).to(device).eval()
    # 2. EF regressors: real TRAIN, and synthetic only (downstream protocol)
    #    (each only with enough EF labels; otherwise skipped, with the reason)
    ef_seed = params.ef.train.seed_or(seed)
    ef_real, no_real = train_real_ef(data, params, paths, ef_seed)
    ef_syn, no_syn = train_synthetic_ef(data, params, paths, ef_seed)
    # 3. realism (the EF network's clip distance needs the real-trained regressor)
    rng = np.random.default_rng(seed)
    extractors = extractors_for(params.realism, reid, ef_real, device)
    unavailable = {} if ef_real is not None else {"efnet": ("clip", no_real)}
    realism = realism_scores(data, extractors, params, rng, unavailable)
    # 4. motion fidelity, appearance kept, self-mode reconstruction
    provider = flow_provider(params.motion, paths, device)
    motion, motion_rows = motion_scores(
        data, paths.features, mafe, provider, params.batch_size, device
    )
    appearance = appearance_scores(data, reid, params, device)
    ssim = ssim_scores(data)
    # 5. EF: the (2+1)D regressors, and LV-area tracking
    why_not = {"real": no_real, "synthetic": no_syn}
    ef, scatter = ef_scores(data, ef_real, ef_syn, params, why_not, device=device)
    ef_lv, lv_scatter, lv_area = ef_lv_scores(data, params, paths, seed, device)
    # 6. privacy, and the synthetic set without flagged videos
    privacy, privacy_rows, hist = privacy_scores(
        data, reid, params.privacy, params.batch_size, device
    )
    keep = unflagged(privacy_rows, params.privacy.filter_flagged)
    privacy["n_kept"] = write_filtered_dataset(paths.synthetic, paths.private, keep)
    # 7. plots
    for name, rows, columns in [
        ("motion.csv", motion_rows, ()),
        ("ef_scatter.csv", scatter, SCATTER_COLUMNS),
        ("ef_lv_scatter.csv", lv_scatter, SCATTER_COLUMNS),
        ("lv_area.csv", lv_area, AREA_COLUMNS),
        ("privacy.csv", privacy_rows, ()),
        ("privacy_hist.csv", hist, ()),
    ]:
        write_rows(paths.plots / name, rows, columns)
    save_lv_area_figure(lv_area, paths.plots / "lv_area.png")
    return {
        "realism": realism,
        "motion": motion,
        "appearance": appearance,
        "ssim": ssim,
        "ef": ef,
        "ef_lv": ef_lv,
        "privacy": privacy,
    }


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    paths = EvaluatePaths(source_root=Path(params.data.root))
    metrics = evaluate(
        params.evaluate,
        paths,
        seed=params.shared.seed,
        device=resolve_device(params.shared.device),
    )
    write_used_params(params.evaluate, paths.plots / "params_used.json")
    write_json("metrics/eval.json", metrics)
