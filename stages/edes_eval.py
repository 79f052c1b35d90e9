"""Stage `edes_eval`: label-free ED/ES detection against the phantom's ground truth."""

from echomotion.stage import start, write_json
from echomotion.tasks.edes import evaluate_ed_es


def main() -> None:
    start("edes_eval")
    metrics = evaluate_ed_es("data/prepared/videos.zarr", "data/phantom/truth.zarr")
    write_json("metrics/edes.json", metrics)


if __name__ == "__main__":
    main()
