"""Stage `reid_export`: models/reid -> data/pseudo/reid.zarr (ED/ES embeddings) and
held-out retrieval metrics (metrics/reid.json)."""

from echomotion.config import write_used_params
from echomotion.device import resolve_device
from echomotion.stage import start, write_json
from echomotion.store import frames_store
from echomotion.tasks.reid.export import export_reid

OUT = "data/pseudo/reid.zarr"


def main() -> None:
    params = start("reid_export")
    metrics = export_reid(
        frames_store("data/prepared/videos.zarr", params.shared.pseudo_label_frames),
        "models/reid",
        OUT,
        params.reid_export,
        seed=params.shared.seed,
        device=resolve_device(params.shared.device),
    )
    write_used_params(params.reid_export, "data/pseudo/reid_params_used.json")
    write_json("metrics/reid.json", metrics)


if __name__ == "__main__":
    main()
