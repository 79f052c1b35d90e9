"""Stage `edes_eval`: the label-free ED/ES detector against the phantom's ground truth.

The phantom stores each frame's cardiac phase (0 = ED, 1 = ES). True ED/ES frames of a
prepared (resampled) video are the local extremes of the phase at the stored frames;
the error of a detected frame is its distance to the nearest true one (any cycle).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from echomotion.edes import detect_ed_es, heart_rate_bpm, mean_error, nearest_error
from echomotion.params import Params
from echomotion.stage import write_json
from echomotion.stores import phantom_truth as phantom_truth_store
from echomotion.stores import videos as videos_store
from echomotion.stores.ragged import RaggedStore
from echomotion.video import resample_indices

log = logging.getLogger(__name__)


def true_ed_es(phase: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames where the phase has a local minimum near 0 (ED) or maximum near 1 (ES)."""
    prev = np.r_[np.inf, phase[:-1]]
    nxt = np.r_[phase[1:], np.inf]
    ed = np.flatnonzero((phase < 0.25) & (phase <= prev) & (phase <= nxt))
    prev, nxt = np.r_[-np.inf, phase[:-1]], np.r_[phase[1:], -np.inf]
    es = np.flatnonzero((phase > 0.75) & (phase >= prev) & (phase >= nxt))
    return ed, es


def evaluate_ed_es(videos_path: str | Path, truth_path: str | Path) -> dict:
    """Mean frame error of the detector's chosen ED/ES and of all it found; the error of the
    heart rate taken from the detected EDs; and the share of videos whose first detected ED
    is not one (true phase above 0.25: the generator's first window would start mid-cycle)."""
    videos, truth = RaggedStore(videos_path), RaggedStore(truth_path)
    index = {name: i for i, name in enumerate(truth.table["file_name"])}
    chosen, found = {"ed": [], "es": []}, {"ed": [], "es": []}
    rate_errors, mid_cycle = [], []
    for i in range(len(videos)):
        row = videos.row(i)
        if row["file_name"] not in index:
            continue
        phase = truth.video(index[row["file_name"]], "phase")
        stored = phase[resample_indices(len(phase), row["source_fps"], row["fps"])]
        detected = detect_ed_es(videos.video(i), row["fps"])
        for key, true, picked, every in (
            ("ed", true_ed_es(stored)[0], detected.ed, detected.ed_all),
            ("es", true_ed_es(stored)[1], detected.es, detected.es_all),
        ):
            if picked >= 0:
                chosen[key].append(nearest_error(np.array([picked]), true)[0])
            found[key].extend(nearest_error(every, true))
        true_rate = float(truth.table["heart_rate_bpm"][index[row["file_name"]]])
        rate_errors.append(abs(heart_rate_bpm(detected.ed_all, row["fps"]) - true_rate))
        if len(detected.ed_all):
            mid_cycle.append(float(stored[int(detected.ed_all.min())] > 0.25))
    matched = sum(1 for n in videos.table["file_name"] if n in index)
    if not matched:
        log.warning("no video of %s has ground truth in %s", videos_path, truth_path)
    return {
        "ground_truth": bool(matched),
        "videos": matched,
        "ed_error_frames": mean_error(chosen["ed"]),
        "es_error_frames": mean_error(chosen["es"]),
        "all_ed_error_frames": mean_error(found["ed"]),
        "all_es_error_frames": mean_error(found["es"]),
        "videos_without_detection": matched - len(chosen["ed"]),
        "heart_rate_error_bpm": mean_error(rate_errors),
        "first_ed_mid_cycle": mean_error(mid_cycle),
    }


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    metrics = evaluate_ed_es(videos_store.PATH, phantom_truth_store.PATH)
    write_json("metrics/edes.json", metrics)
