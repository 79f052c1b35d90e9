"""Stage `latents`: data/prepared/videos.zarr + models/vae/model -> data/latents.zarr."""

from echomotion.stage import start
from echomotion.tasks.latents.run import run


def main() -> None:
    run(start("latents"))


if __name__ == "__main__":
    main()
