"""Stage `mcdm_train`: latents + motion vectors -> models/mcdm/model and models/mcdm/pipeline.

Several processes (GPUs, or gloo on a CPU): `dvc exp run -S mcdm_train.launch.num_processes=N`
(dvc.yaml starts it with `python -m echomotion.launch`). Rank 0 writes every file.
"""

from echomotion.stage import finish_training, start
from echomotion.tasks.generator.mcdm import train_mcdm
from echomotion.training.fingerprint import fresh_checkpoints

OUT = "models/mcdm"


def main() -> None:
    params = start("mcdm_train")
    fresh_checkpoints("mcdm_train", f"{OUT}/checkpoints")
    metrics = train_mcdm(
        "data/latents.zarr",
        "data/features.zarr",
        "models/vae/model",
        params.mcdm_train,
        out_dir=OUT,
        log_file="plots/mcdm_train/train.tsv",
        seed=params.mcdm_train.train.seed_or(params.shared.seed),
    )
    finish_training(
        params.mcdm_train, f"{OUT}/params_used.json", "metrics/mcdm_train.json", metrics
    )


if __name__ == "__main__":
    main()
