"""Stage `features`: the trained MAFE -> motion/appearance vectors in data/features.zarr."""

from echomotion.config import write_used_params
from echomotion.device import resolve_device
from echomotion.stage import start, write_json
from echomotion.store import frames_store
from echomotion.tasks.mafe.features import export_features

OUT = "data/features.zarr"


def main() -> None:
    params = start("features")
    metrics = export_features(
        frames_store("data/prepared/videos.zarr", params.shared.pseudo_label_frames),
        "models/mafe/model",
        OUT,
        params.features,
        device=resolve_device(params.shared.device),
    )
    write_used_params(params.features, "data/features_params_used.json")
    write_json("metrics/features.json", metrics)


if __name__ == "__main__":
    main()
