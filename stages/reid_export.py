"""Stage `reid_export`: models/reid -> data/pseudo/reid.zarr (ED/ES embeddings) and
held-out retrieval metrics (metrics/reid.json)."""

from echomotion.stage import start
from echomotion.tasks.reid_export.run import run


def main() -> None:
    run(start("reid_export"))


if __name__ == "__main__":
    main()
