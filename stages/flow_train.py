"""Stage `flow_train`: data/prepared/videos.zarr -> models/flow (PWCLite, no labels)."""

from echomotion.stage import start
from echomotion.tasks.flow_train.run import run


def main() -> None:
    run(start("flow_train"))


if __name__ == "__main__":
    main()
