"""Evaluation of synthetic echo videos: realism, motion fidelity, EF and privacy.

- :mod:`.frechet`: one Frechet distance (FID over frames, FVD over clips);
- :mod:`.extractors`: the pluggable feature extractors it compares (ReID frames, EF-regressor
  clips, or a local TorchScript Inception / I3D);
- :mod:`.ef_regressor`: the (2+1)D EF regressor, its loss and datasets;
- :mod:`.motion_fidelity`: MAFE motion-vector cosine and flow EPE against the driving video;
- :mod:`.privacy`: ReID nearest-neighbour similarity, the 95th-percentile threshold, filtering;
- :mod:`.videos` / :mod:`.synthetic`: the video sets and the synthetic dataset's table.
"""

from .ef_regressor import (
    ArrayClipDataset,
    EFRegressor,
    EFRegressorParams,
    LabelledWindowDataset,
    ef_loss,
    predict_ef,
    regression_metrics,
)
from .extractors import (
    EFClipFeatures,
    FeatureExtractor,
    ReIDFrameFeatures,
    TorchScriptExtractorParams,
    TorchScriptFeatures,
    extract,
)
from .frechet import frechet_distance, frechet_distance_from_stats, gaussian_stats
from .motion_fidelity import (
    cosine_matrix,
    ed_es_or_detect,
    epe_matrix,
    matched_and_mismatched,
    motion_vectors,
    pair_flows,
    retrieval_top1,
    standardise,
)
from .privacy import (
    flag,
    max_similarity,
    privacy_threshold,
    similarity_histogram,
    video_embeddings,
    write_filtered_dataset,
)
from .synthetic import SyntheticRecord, load_synthetic, read_synthetic_table, source_index
from .videos import VideoSet, draw_clips, draw_frames, gather_clips, gather_frames

__all__ = [
    "ArrayClipDataset",
    "EFClipFeatures",
    "EFRegressor",
    "EFRegressorParams",
    "FeatureExtractor",
    "LabelledWindowDataset",
    "ReIDFrameFeatures",
    "SyntheticRecord",
    "TorchScriptExtractorParams",
    "TorchScriptFeatures",
    "VideoSet",
    "cosine_matrix",
    "draw_clips",
    "draw_frames",
    "ed_es_or_detect",
    "ef_loss",
    "epe_matrix",
    "extract",
    "flag",
    "frechet_distance",
    "frechet_distance_from_stats",
    "gather_clips",
    "gather_frames",
    "gaussian_stats",
    "load_synthetic",
    "matched_and_mismatched",
    "max_similarity",
    "motion_vectors",
    "pair_flows",
    "predict_ef",
    "privacy_threshold",
    "read_synthetic_table",
    "regression_metrics",
    "retrieval_top1",
    "similarity_histogram",
    "source_index",
    "standardise",
    "video_embeddings",
    "write_filtered_dataset",
]
