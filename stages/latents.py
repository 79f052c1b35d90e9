"""Stage `latents`: data/prepared/videos.zarr + models/vae/model -> data/latents.zarr."""

from echomotion.device import resolve_device
from echomotion.stage import start, write_json
from echomotion.tasks.generator.latents import encode_videos


def main() -> None:
    params = start("latents")
    report = encode_videos(
        "data/prepared/videos.zarr",
        "models/vae/model",
        "data/latents.zarr",
        params.latents,
        device=resolve_device(params.shared.device),
    )
    write_json("metrics/latents.json", report)


if __name__ == "__main__":
    main()
