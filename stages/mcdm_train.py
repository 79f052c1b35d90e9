"""Stage `mcdm_train`: latents + motion vectors -> models/mcdm/model and models/mcdm/pipeline.

Several processes (GPUs, or gloo on a CPU): `dvc exp run -S mcdm_train.launch.num_processes=N`
(dvc.yaml starts it with `python -m echomotion.cli.launch`). Rank 0 writes every file.
"""

from echomotion.stage import start
from echomotion.tasks.mcdm_train.run import run


def main() -> None:
    run(start("mcdm_train"))


if __name__ == "__main__":
    main()
