"""Store ``data/phantom/truth.zarr``: the phantom's ground truth, per frame and per video.

Written by stage ``phantom`` (:func:`truth_row` gives a video's table row); read by
``edes_eval`` (true ED/ES), ``flow_train``/``flow_export``/``mafe_train`` (true flow,
:mod:`echomotion.flow.truth`) and ``evaluate`` (the EF of each driver).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from echomotion.phantom.anatomy import LABELS
from echomotion.phantom.simulate import PhantomVideo
from echomotion.stores.ragged import RaggedStoreWriter

PATH = "data/phantom/truth.zarr"  # where the pipeline keeps it (dvc.yaml)

TRUTH_SCHEMA = {
    "displacement": "(N, 2, H, W) float16, pixels, quantised to 1/256: backward map of "
    "each frame to the reference (ED) configuration, u_t(x) = G_t(x) - x; pixel x of "
    "frame t shows the tissue at G_t(x) of the reference; channel 0 dx (columns), 1 dy "
    "(rows). Ground-truth flow a->b: echomotion.phantom.flow_between(disp_a, disp_b).",
    "labels": "(N, H, W) uint8: " + ", ".join(f"{v} = {k}" for k, v in LABELS.items()) + ".",
    "phase": "(N,) float32 in [0, 1]: LV contraction, 0 = end-diastole, 1 = end-systole.",
    "lv_volume_ml": "(N,) float32: LV volume by the method of disks on that frame's tracing.",
    "offsets": "(n_videos + 1,) int64: video i is rows offsets[i]:offsets[i + 1].",
    "videos": "per-video table in FileList order: file_name, split, ef, esv, edv, "
    "heart_rate_bpm, fps, n_frames, ed_frame, es_frame (traced frames) and the identity "
    "parameters the video was drawn with (echomotion.phantom.identity.VideoIdentity).",
}


def truth_row(name: str, split: str, video: PhantomVideo, fps: float) -> dict[str, Any]:
    ident = video.ident.row()
    return {
        "file_name": name, "split": split, "ef": video.ef, "esv": video.esv, "edv": video.edv,
        "heart_rate_bpm": ident.pop("heart_rate_bpm"), "fps": float(fps),
        "n_frames": ident.pop("n_frames"), "ed_frame": video.ed_frame,
        "es_frame": video.es_frame, **ident,
    }  # fmt: skip


def open_writer(path: str | Path, size: int, attrs: dict) -> RaggedStoreWriter:
    """Writer of a truth store of ``size`` x ``size`` frames (:data:`TRUTH_SCHEMA` is added
    to ``attrs``)."""
    arrays = {
        "displacement": ((2, size, size), "float16"), "labels": ((size, size), "uint8"),
        "phase": ((), "float32"), "lv_volume_ml": ((), "float32"),
    }  # fmt: skip
    return RaggedStoreWriter(path, arrays, 2048, 16, {"schema": TRUTH_SCHEMA, **attrs})
