"""Stage `vae_train`: data/prepared/videos.zarr (TRAIN frames) -> models/vae/model."""

from echomotion.stage import start
from echomotion.tasks.vae_train.run import run


def main() -> None:
    run(start("vae_train"))


if __name__ == "__main__":
    main()
