"""Stage ``evaluate``: score the synthetic dataset for realism, motion fidelity, EF and privacy.

Inputs: the prepared real videos, the synthetic EchoNet-layout dataset of ``sample``, the
motion vectors of ``features``, and the trained ReID, MAFE and (for flow EPE) flow models.
It trains two small EF regressors with the shared loop (on real TRAIN, and on synthetic
videos only, for the EchoNet-Synthetic downstream protocol) and writes:

- the metrics (``metrics/eval.json``, by the stage script): groups ``realism``, ``motion``,
  ``ef``, ``privacy``;
- ``plots/evaluate/``: ``ef_scatter.csv`` (EF truth vs prediction per set),
  ``privacy.csv`` (per synthetic video: nearest TRAIN video, similarity, flag),
  ``privacy_hist.csv`` (similarity histogram, synthetic vs real TEST), ``motion.csv`` (per
  synthetic video: cosine, EPE, ED/ES used), ``ef_train.tsv`` / ``ef_train_synthetic.tsv``;
- ``models/ef_regressor`` and ``models/ef_regressor_synthetic`` (training out_dirs);
- ``data/synthetic_private/``: the synthetic dataset in EchoNet layout without the videos
  the privacy rule flags (every video when ``privacy.filter_flagged`` is false).

Realism names follow StyleGAN-V (``fid50k_full``: 50k generated frames against all real
frames; ``fvd2048_16f``: 2048 generated 16-frame clips), prefixed with the extractor and
scaled down at the CPU default: ``reid_fid512`` (the ``_full`` suffix only when
``realism.max_reference_frames`` is null, i.e. every reference frame is used) and
``efnet_fvd128_16f``; with a local TorchScript network also ``inception_fid...`` /
``i3d_fvd...``. Each has a ``..._real_baseline`` twin: the real ``baseline_split`` scored
against the same reference with as many samples as the synthetic set (``n_frames_used``,
``n_clips_used``), which gives the scale (small-sample bias included).
"""

from __future__ import annotations

import logging

import numpy as np

from echomotion.evaluation import (
    EFClipFeatures,
    EFRegressor,
    FeatureExtractor,
    ReIDFrameFeatures,
    TorchScriptFeatures,
    write_filtered_dataset,
)
from echomotion.flow import PWCLite, make_flow_provider
from echomotion.mafe import MAFE
from echomotion.reid import ReIDEncoder

from .data import EvalData, EvaluatePaths, load_data, write_rows
from .ef import ef_scores, train_real_ef, train_synthetic_ef
from .params import EFParams, EvaluateParams, MotionParams, PrivacyParams, RealismParams
from .scores import count_name, motion_scores, privacy_scores, realism_scores, unflagged

log = logging.getLogger(__name__)

__all__ = [
    "EFParams",
    "EvalData",
    "EvaluateParams",
    "EvaluatePaths",
    "MotionParams",
    "PrivacyParams",
    "RealismParams",
    "count_name",
    "evaluate",
    "extractors_for",
    "load_data",
]


def extractors_for(
    params: RealismParams, reid: ReIDEncoder, ef_model: EFRegressor
) -> dict[str, FeatureExtractor]:
    """The Frechet feature extractors by metric prefix: the pipeline's own networks, plus
    Inception / I3D when a local TorchScript file is configured."""
    extractors: dict[str, FeatureExtractor] = {
        "reid": ReIDFrameFeatures(reid),
        "efnet": EFClipFeatures(ef_model),
    }
    if params.inception is not None:
        extractors["inception"] = TorchScriptFeatures(params.inception, "frame")
    if params.i3d is not None:
        extractors["i3d"] = TorchScriptFeatures(params.i3d, "clip")
    return extractors


def _flow_provider(params: MotionParams, paths: EvaluatePaths):
    model = PWCLite.from_pretrained(paths.flow) if params.flow.method == "network" else None
    return make_flow_provider(params.flow, model)


def evaluate(params: EvaluateParams, paths: EvaluatePaths, seed: int) -> dict[str, dict]:
    """Run every evaluation, write the plots and the private copy; return the metrics."""
    # 1. inputs and trained networks
    data = load_data(paths)
    reid = ReIDEncoder.from_pretrained(paths.reid).eval()
    mafe = MAFE.from_pretrained(paths.mafe).eval()
    # 2. EF regressors: real TRAIN, and synthetic only (downstream protocol)
    ef_seed = params.ef.train.seed_or(seed)
    ef_real = train_real_ef(data, params, paths, ef_seed)
    ef_syn = train_synthetic_ef(data, params, paths, ef_seed) if params.ef.downstream else None
    # 3. realism
    rng = np.random.default_rng(seed)
    realism = realism_scores(data, extractors_for(params.realism, reid, ef_real), params, rng)
    # 4. motion fidelity
    provider = _flow_provider(params.motion, paths)
    motion, motion_rows = motion_scores(data, paths.features, mafe, provider, params.batch_size)
    # 5. EF
    ef, scatter = ef_scores(data, ef_real, ef_syn, params)
    # 6. privacy, and the synthetic set without flagged videos
    privacy, privacy_rows, hist = privacy_scores(data, reid, params.privacy, params.batch_size)
    keep = unflagged(privacy_rows, params.privacy.filter_flagged)
    privacy["n_kept"] = write_filtered_dataset(paths.synthetic, paths.private, keep)
    # 7. plots
    for name, rows in [
        ("motion.csv", motion_rows),
        ("ef_scatter.csv", scatter),
        ("privacy.csv", privacy_rows),
        ("privacy_hist.csv", hist),
    ]:
        write_rows(paths.plots / name, rows)
    return {"realism": realism, "motion": motion, "ef": ef, "privacy": privacy}
