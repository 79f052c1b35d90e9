"""Stage `flow_export`: models/flow + videos.zarr -> data/pseudo/flow.zarr, metrics/flow.json."""

from echomotion.stage import start
from echomotion.tasks.flow_export.run import run


def main() -> None:
    run(start("flow_export"))


if __name__ == "__main__":
    main()
