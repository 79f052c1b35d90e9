"""The stage's paths, its inputs opened, and small output helpers."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echomotion.evaluation.synthetic import SyntheticRecord, load_synthetic, source_index
from echomotion.evaluation.videos import VideoSet
from echomotion.stores import features as features_store
from echomotion.stores import videos as videos_store
from echomotion.stores.ragged import RaggedStore
from echomotion.stores.videos import frame_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluatePaths:
    """Inputs and outputs of the stage (defaults: the pipeline's paths)."""

    videos: Path = Path(videos_store.PATH)
    synthetic: Path = Path("data/synthetic/echonet")
    features: Path = Path(features_store.PATH)
    reid: Path = Path("models/reid/model")
    mafe: Path = Path("models/mafe/model")
    flow: Path = Path("models/flow/model")
    ef_real: Path = Path("models/ef_regressor")
    ef_synthetic: Path = Path("models/ef_regressor_synthetic")
    lv: Path = Path("models/lv_segmenter")
    private: Path = Path("data/synthetic_private")
    plots: Path = Path("plots/evaluate")
    # the EchoNet root (params ``data.root``) whose VolumeTracings.csv trains the LV
    # segmenter; None: no tracings (the LV-area EF estimator is skipped)
    source_root: Path | None = None


@dataclass
class EvalData:
    """The real store, its split video sets and the synthetic videos."""

    store: RaggedStore
    records: list[SyntheticRecord]
    synthetic: VideoSet

    def split_rows(self, name: str, labelled: bool = False) -> np.ndarray:
        """Store rows of one split (only those with an EF label when ``labelled``)."""
        rows = np.flatnonzero(self.store.table["split"].astype(str) == name)
        if labelled:
            rows = rows[np.isfinite(self.store.table["ef"][rows].astype(float))]
        if len(rows) == 0:
            raise ValueError(f"{self.store.path}: no {name} video{' with EF' * labelled}")
        return rows

    def n_labelled(self, name: str) -> int:
        """Videos of one split with an EF label."""
        in_split = self.store.table["split"].astype(str) == name
        return int((in_split & np.isfinite(self.store.table["ef"].astype(float))).sum())

    def split(self, name: str, labelled: bool = False) -> VideoSet:
        """Videos of one split of the real store."""
        return VideoSet.from_store(self.store, self.split_rows(name, labelled))

    def source_ef(self) -> np.ndarray:
        """EF (%) of each synthetic video's motion source (NaN when unknown)."""
        idx = source_index(self.store.table["file_name"], [r.motion_source for r in self.records])
        ef = self.store.table["ef"].astype(float)
        return np.where(idx >= 0, ef[np.maximum(idx, 0)], np.nan)


def load_data(paths: EvaluatePaths) -> EvalData:
    """Open the real store and decode the synthetic videos at the real frame size."""
    store = RaggedStore(paths.videos)
    size = frame_size(store)
    records, synthetic = load_synthetic(paths.synthetic, size)
    log.info("%d synthetic videos, %d real videos", len(records), len(store))
    return EvalData(store, records, synthetic)


def write_rows(path: Path, rows: list[dict], columns: tuple[str, ...] = ()) -> None:
    """A CSV table (header from the first row, else ``columns``) for ``dvc plots``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(columns))
        writer.writeheader()
        writer.writerows(rows)
