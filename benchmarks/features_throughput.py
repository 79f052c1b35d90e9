"""`features` throughput: videos/s of the vector computation beside MAFE's bare passes.

The stage computes each video's vectors from its ED/ES pair (read from the store,
batched, one backbone pass). The bare passes run the network alone on the same batches,
already in memory as tensors: the backbone (``MAFE.extract``, all the vectors need) and
the full interpolation forward. The ratio says what the store reads and batching cost.

python benchmarks/features_throughput.py [--model models/mafe/model] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from common import REPO, best_of, phantom_root, quiet
from echomotion.data import TripletDataset, to_tensor
from echomotion.mafe.model import MAFE, load_mafe
from echomotion.params import load_params
from echomotion.tasks.features.run import compute_vectors, ed_es_pairs
from echomotion.tasks.prepare.run import prepare_dataset


def videos_store(work: Path) -> Path:
    """The pipeline's prepared store, or the default phantom prepared into ``work``."""
    store = REPO / "data/prepared/videos.zarr"
    if (store / "zarr.json").is_file():
        return store
    params = load_params(REPO / "params.yaml").prepare
    prepare_dataset(phantom_root(work), params, work / "videos.zarr", work / "rejects.csv")
    return work / "videos.zarr"


def model_at(path: Path) -> MAFE:
    """The trained MAFE, or an untrained one of the default architecture (same cost)."""
    if (path / "config.json").is_file():
        return load_mafe(path)
    print(f"no model at {path}: timing an untrained MAFE of the default size")
    return MAFE.from_params(load_params(REPO / "params.yaml").mafe_train.model).eval()


def tensor_batches(dataset: TripletDataset, batch_size: int) -> list[tuple[torch.Tensor, ...]]:
    """The stage's ED/ES batches as (img0, img1) tensors (B, 1, H, W), in memory."""
    pairs = ed_es_pairs(dataset)
    out = []
    for s in range(0, len(pairs), batch_size):
        frames = np.stack([dataset.store.video(v)[[a, b]] for v, a, b in pairs[s : s + batch_size]])
        x = to_tensor(frames)  # (B, 2, 1, H, W)
        out.append((x[:, 0], x[:, 1]))
    return out


@torch.no_grad()
def bare(model: MAFE, batches: list, full: bool) -> None:
    """The network alone on in-memory batches: backbone only, or the full forward."""
    for img0, img1 in batches:
        if full:
            model(img0, img1)
        else:
            model.extract(model.pad(img0), model.pad(img1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models/mafe/model")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    quiet()
    with tempfile.TemporaryDirectory() as work:
        dataset = TripletDataset(videos_store(Path(work)), splits=("TRAIN", "VAL", "TEST"))
        dataset.store.load("frames")
        model, n = model_at(args.model), len(dataset)
        batches = tensor_batches(dataset, args.batch_size)
        pairs = ed_es_pairs(dataset)
        t_stage = best_of(3, lambda: compute_vectors(model, dataset.store, pairs, args.batch_size))
        t_backbone = best_of(3, lambda: bare(model, batches, full=False))
        t_forward = best_of(3, lambda: bare(model, batches, full=True))
    print(f"videos: {n}, batch size {args.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"features (store -> vectors): {t_stage:7.3f} s  {n / t_stage:7.1f} videos/s")
    print(f"bare backbone (extract)    : {t_backbone:7.3f} s  {n / t_backbone:7.1f} videos/s")
    print(f"bare full forward          : {t_forward:7.3f} s  {n / t_forward:7.1f} videos/s")
    print(f"features / bare backbone throughput: {t_backbone / t_stage:.2f}x")
    print(f"features / bare full forward throughput: {t_forward / t_stage:.2f}x")


if __name__ == "__main__":
    main()
