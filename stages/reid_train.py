"""Stage `reid_train`: data/prepared/videos.zarr -> models/reid (identity = TRAIN video)."""

from echomotion.stage import start
from echomotion.tasks.reid_train.run import run


def main() -> None:
    run(start("reid_train"))


if __name__ == "__main__":
    main()
