"""Stage `prepare`: an EchoNet-Dynamic-layout root (params data.root) -> data/prepared/,
metrics/prepare.json and the source fps / frame-size histograms in plots/prepare/."""

from echomotion.config import write_used_params
from echomotion.prepare import prepare_dataset, write_source_plots
from echomotion.stage import start, write_json

OUT = "data/prepared"


def main() -> None:
    params = start("prepare")
    report = prepare_dataset(
        params.data.root, params.prepare, f"{OUT}/videos.zarr", f"{OUT}/rejects.csv"
    )
    write_used_params(params.prepare, f"{OUT}/params_used.json")
    write_json("metrics/prepare.json", report.as_dict())
    write_source_plots(report, "plots/prepare")


if __name__ == "__main__":
    main()
