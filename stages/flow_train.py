"""Stage `flow_train`: data/prepared/videos.zarr -> models/flow (PWCLite, no labels)."""

from echomotion.stage import finish_training, start
from echomotion.store import frames_store
from echomotion.tasks.flow.train import train_flow
from echomotion.training.fingerprint import fresh_checkpoints

OUT = "models/flow"


def main() -> None:
    params = start("flow_train")
    fresh_checkpoints("flow_train", f"{OUT}/checkpoints")
    report = train_flow(
        frames_store("data/prepared/videos.zarr", params.shared.pseudo_label_frames),
        "data/phantom/truth.zarr",
        params.flow_train,
        out_dir=OUT,
        log_file="plots/flow_train/train.tsv",
        seed=params.flow_train.train.seed_or(params.shared.seed),
    )
    finish_training(
        params.flow_train, f"{OUT}/params_used.json", "metrics/flow_train.json", report.as_dict()
    )


if __name__ == "__main__":
    main()
