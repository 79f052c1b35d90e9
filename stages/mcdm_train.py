"""Stage `mcdm_train`: latents + motion vectors -> models/mcdm/model and models/mcdm/pipeline.

One process: `python stages/mcdm_train.py`; several: `accelerate launch --multi_gpu
--num_processes N stages/mcdm_train.py` (CPU: gloo). Rank 0 writes every file.
"""

from accelerate import PartialState

from echomotion.config import write_used_params
from echomotion.stage import start, write_json
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
    if PartialState().is_main_process:
        write_used_params(params.mcdm_train, f"{OUT}/params_used.json")
        write_json("metrics/mcdm_train.json", metrics)


if __name__ == "__main__":
    main()
