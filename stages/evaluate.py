"""Stage `evaluate`: synthetic dataset + real videos + trained networks -> metrics/eval.json."""

from echomotion.config import write_used_params
from echomotion.stage import start, write_json
from echomotion.tasks.evaluate.data import EvaluatePaths
from echomotion.tasks.evaluate.run import evaluate


def main() -> None:
    params = start("evaluate")
    paths = EvaluatePaths()
    metrics = evaluate(params.evaluate, paths, seed=params.shared.seed)
    write_used_params(params.evaluate, paths.plots / "params_used.json")
    write_json("metrics/eval.json", metrics)


if __name__ == "__main__":
    main()
