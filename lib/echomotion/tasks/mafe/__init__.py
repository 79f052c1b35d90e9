"""Stages of the mafe group: train MAFE, then export its motion and appearance vectors.

``mafe_train`` trains :class:`~echomotion.mafe.MAFE` on each TRAIN video's ED/mid/ES
triplet, supervised by frame interpolation plus the pseudo flow (L_flow) and ReID
(L_reid) labels, and scores it on VAL against naive interpolation baselines and, on the
phantom, ground-truth flow. ``features`` stores every triplet video's motion and
appearance vectors and measures what each encodes (EF by ridge regression, identity by
retrieval).
"""

from .dataset import PseudoLabels, PseudoLabelTriplets, augment_item, read_pseudo_labels
from .features import (
    FEATURES_SCHEMA,
    compute_vectors,
    ed_es_pairs,
    ef_probe,
    export_features,
    fit_ridge,
    identity_retrieval,
    pair_vectors,
    r_squared,
    shifted_pairs,
    train_stats,
    write_features,
)
from .params import FeaturesParams, MAFETrainParams
from .train import (
    evaluate_mafe,
    flow_errors,
    interpolation_scores,
    load_mafe,
    train_mafe,
    truth_flows,
)

__all__ = [
    "FEATURES_SCHEMA",
    "FeaturesParams",
    "MAFETrainParams",
    "PseudoLabelTriplets",
    "PseudoLabels",
    "augment_item",
    "compute_vectors",
    "ed_es_pairs",
    "ef_probe",
    "evaluate_mafe",
    "export_features",
    "fit_ridge",
    "flow_errors",
    "identity_retrieval",
    "interpolation_scores",
    "load_mafe",
    "pair_vectors",
    "r_squared",
    "read_pseudo_labels",
    "shifted_pairs",
    "train_mafe",
    "train_stats",
    "truth_flows",
    "write_features",
]
