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

EF labels are optional (see :mod:`.ef`): with fewer than ``ef.min_labelled`` labelled
videos the EF metrics and the EF network's clip distance (``efnet_fvd...``) are written
as ``{"skipped": reason}`` under their names; realism by the ReID frame distance (and any
TorchScript extractor), motion fidelity and privacy need no label and are always computed.
"""

from __future__ import annotations

import logging

import numpy as np

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
from echomotion.reid.model import ReIDEncoder

from .data import EvaluatePaths, load_data, write_rows
from .ef import SCATTER_COLUMNS, ef_scores, train_real_ef, train_synthetic_ef
from .params import EvaluateParams, MotionParams, RealismParams
from .scores import motion_scores, privacy_scores, realism_scores, unflagged

log = logging.getLogger(__name__)


def extractors_for(
    params: RealismParams, reid: ReIDEncoder, ef_model: EFRegressor | None
) -> dict[str, FeatureExtractor]:
    """The Frechet feature extractors by metric prefix: the pipeline's own networks (the EF
    network only when it was trained), plus Inception / I3D when a local TorchScript file
    is configured."""
    extractors: dict[str, FeatureExtractor] = {"reid": ReIDFrameFeatures(reid)}
    if ef_model is not None:
        extractors["efnet"] = EFClipFeatures(ef_model)
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
    #    (each only with enough EF labels; otherwise skipped, with the reason)
    ef_seed = params.ef.train.seed_or(seed)
    ef_real, no_real = train_real_ef(data, params, paths, ef_seed)
    ef_syn, no_syn = train_synthetic_ef(data, params, paths, ef_seed)
    # 3. realism (the EF network's clip distance needs the real-trained regressor)
    rng = np.random.default_rng(seed)
    extractors = extractors_for(params.realism, reid, ef_real)
    unavailable = {} if ef_real is not None else {"efnet": ("clip", no_real)}
    realism = realism_scores(data, extractors, params, rng, unavailable)
    # 4. motion fidelity
    provider = _flow_provider(params.motion, paths)
    motion, motion_rows = motion_scores(data, paths.features, mafe, provider, params.batch_size)
    # 5. EF
    ef, scatter = ef_scores(data, ef_real, ef_syn, params, {"real": no_real, "synthetic": no_syn})
    # 6. privacy, and the synthetic set without flagged videos
    privacy, privacy_rows, hist = privacy_scores(data, reid, params.privacy, params.batch_size)
    keep = unflagged(privacy_rows, params.privacy.filter_flagged)
    privacy["n_kept"] = write_filtered_dataset(paths.synthetic, paths.private, keep)
    # 7. plots
    for name, rows, columns in [
        ("motion.csv", motion_rows, ()),
        ("ef_scatter.csv", scatter, SCATTER_COLUMNS),
        ("privacy.csv", privacy_rows, ()),
        ("privacy_hist.csv", hist, ()),
    ]:
        write_rows(paths.plots / name, rows, columns)
    return {"realism": realism, "motion": motion, "ef": ef, "privacy": privacy}
