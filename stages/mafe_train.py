"""Stage `mafe_train`: ED/mid/ES triplets + pseudo flow and ReID labels -> models/mafe/."""

from echomotion.stage import finish_training, start
from echomotion.store import frames_store
from echomotion.tasks.mafe.train import train_mafe
from echomotion.training.fingerprint import fresh_checkpoints

OUT = "models/mafe"


def main() -> None:
    params = start("mafe_train")
    fresh_checkpoints("mafe_train", f"{OUT}/checkpoints")
    metrics = train_mafe(
        frames_store("data/prepared/videos.zarr", params.shared.pseudo_label_frames),
        "data/pseudo/flow.zarr",
        "data/pseudo/reid.zarr",
        params.mafe_train,
        out_dir=OUT,
        seed=params.mafe_train.train.seed_or(params.shared.seed),
        log_file="plots/mafe_train/train.tsv",
        truth_path="data/phantom/truth.zarr",
    )
    finish_training(params.mafe_train, f"{OUT}/params_used.json", "metrics/mafe.json", metrics)


if __name__ == "__main__":
    main()
