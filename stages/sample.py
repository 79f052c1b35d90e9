"""Stage `sample`: models/mcdm/pipeline + motion vectors -> data/synthetic/echonet."""

from echomotion.config import write_used_params
from echomotion.device import resolve_device
from echomotion.stage import start, write_json
from echomotion.tasks.generator.sample import sample_dataset

OUT = "data/synthetic"


def main() -> None:
    params = start("sample")
    report = sample_dataset(
        "models/mcdm/pipeline",
        "data/prepared/videos.zarr",
        "data/features.zarr",
        f"{OUT}/echonet",
        "plots/sample",
        params.sample,
        seed=params.shared.seed,
        device=resolve_device(params.shared.device),
    )
    write_used_params(params.sample, f"{OUT}/params_used.json")
    write_json("metrics/sample.json", report)


if __name__ == "__main__":
    main()
