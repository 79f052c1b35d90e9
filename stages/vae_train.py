"""Stage `vae_train`: data/prepared/videos.zarr (TRAIN frames) -> models/vae/model."""

from echomotion.stage import finish_training, start
from echomotion.tasks.generator.vae import train_vae
from echomotion.training.fingerprint import fresh_checkpoints

OUT = "models/vae"


def main() -> None:
    params = start("vae_train")
    fresh_checkpoints("vae_train", f"{OUT}/checkpoints")
    metrics = train_vae(
        "data/prepared/videos.zarr",
        params.vae_train,
        out_dir=OUT,
        log_file="plots/vae_train/train.tsv",
        figure="plots/vae_train/reconstruction.png",
        seed=params.vae_train.train.seed_or(params.shared.seed),
    )
    finish_training(params.vae_train, f"{OUT}/params_used.json", "metrics/vae.json", metrics)


if __name__ == "__main__":
    main()
