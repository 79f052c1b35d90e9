"""Stage `features`: the trained MAFE -> motion/appearance vectors in data/features.zarr."""

from echomotion.stage import start
from echomotion.tasks.features.run import run


def main() -> None:
    run(start("features"))


if __name__ == "__main__":
    main()
