"""Stage `phantom`: the synthetic echo dataset (EchoNet-Dynamic layout + ground truth)."""

from pathlib import Path

from echomotion.config import write_used_params
from echomotion.phantom.writer import generate_phantom
from echomotion.stage import start, write_json

OUT = Path("data/phantom")


def main() -> None:
    params = start("phantom")
    summary = generate_phantom(params.phantom, params.shared.seed, OUT)
    write_used_params(params.phantom, OUT / "params_used.json")
    write_json("metrics/phantom.json", summary)


if __name__ == "__main__":
    main()
