"""Stage `reid_train`: data/prepared/videos.zarr -> models/reid (identity = TRAIN video)."""

from echomotion.stage import finish_training, start
from echomotion.store import frames_store
from echomotion.tasks.reid.train import train_reid
from echomotion.training.fingerprint import fresh_checkpoints

OUT = "models/reid"


def main() -> None:
    params = start("reid_train")
    fresh_checkpoints("reid_train", f"{OUT}/checkpoints")
    report = train_reid(
        frames_store("data/prepared/videos.zarr", params.shared.pseudo_label_frames),
        params.reid_train,
        out_dir=OUT,
        seed=params.reid_train.train.seed_or(params.shared.seed),
        log_file="plots/reid_train/train.tsv",
    )
    finish_training(
        params.reid_train, f"{OUT}/params_used.json", "metrics/reid_train.json", report.as_dict()
    )


if __name__ == "__main__":
    main()
