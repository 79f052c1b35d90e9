"""Stages of the reid group: train the appearance encoder, export its pseudo labels.

``reid_train`` trains :class:`~echomotion.reid.ReIDEncoder` with identity = TRAIN video
on frames at every cardiac phase, so the embedding keeps what a video looks like and
drops where in the cycle it is. ``reid_export`` writes the embeddings of each triplet
video's ED and ES frames (the pseudo appearance labels MAFE learns from) and scores
retrieval on held-out videos against an untrained encoder and raw pixels.
"""

from .export import (
    REID_SCHEMA,
    check_disjoint,
    embed_frames,
    export_reid,
    heldout_metrics,
    load_encoder,
    pixel_embeddings,
    untrained_like,
)
from .params import ReIDAugmentParams, ReIDExportParams, ReIDModelParams, ReIDTrainParams
from .train import (
    IDENTITIES_FILE,
    IdentityFrames,
    ReIDTrainReport,
    build_encoder,
    evenly_spaced,
    identity_frames,
    pk_sampler_factory,
    read_identities,
    train_reid,
)

__all__ = [
    "IDENTITIES_FILE",
    "REID_SCHEMA",
    "IdentityFrames",
    "ReIDAugmentParams",
    "ReIDExportParams",
    "ReIDModelParams",
    "ReIDTrainParams",
    "ReIDTrainReport",
    "build_encoder",
    "check_disjoint",
    "embed_frames",
    "evenly_spaced",
    "export_reid",
    "heldout_metrics",
    "identity_frames",
    "load_encoder",
    "pixel_embeddings",
    "pk_sampler_factory",
    "read_identities",
    "train_reid",
    "untrained_like",
]
