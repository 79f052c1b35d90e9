"""Stage `flow_export`: models/flow + videos.zarr -> data/pseudo/flow.zarr, metrics/flow.json."""

from echomotion.config import write_used_params
from echomotion.device import resolve_device
from echomotion.stage import start, write_json
from echomotion.store import frames_store
from echomotion.tasks.flow.export import export_flow

OUT = "data/pseudo"


def main() -> None:
    params = start("flow_export")
    metrics = export_flow(
        frames_store("data/prepared/videos.zarr", params.shared.pseudo_label_frames),
        "models/flow/model",
        "data/phantom/truth.zarr",
        params.flow_export,
        f"{OUT}/flow.zarr",
        device=resolve_device(params.shared.device),
    )
    write_used_params(params.flow_export, f"{OUT}/flow_params_used.json")
    write_json("metrics/flow.json", metrics)


if __name__ == "__main__":
    main()
