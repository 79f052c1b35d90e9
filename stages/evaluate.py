"""Stage `evaluate`: synthetic dataset + real videos (+ the EchoNet root's LV tracings) +
trained networks -> metrics/eval.json."""

from pathlib import Path

from echomotion.config import write_used_params
from echomotion.device import resolve_device
from echomotion.stage import start, write_json
from echomotion.tasks.evaluate.data import EvaluatePaths
from echomotion.tasks.evaluate.run import evaluate


def main() -> None:
    params = start("evaluate")
    paths = EvaluatePaths(source_root=Path(params.data.root))
    metrics = evaluate(
        params.evaluate,
        paths,
        seed=params.shared.seed,
        device=resolve_device(params.shared.device),
    )
    write_used_params(params.evaluate, paths.plots / "params_used.json")
    write_json("metrics/eval.json", metrics)


if __name__ == "__main__":
    main()
