"""The parameters every training section shares."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from echomotion.section import Section


class TrainParams(Section):
    """Optimisation, precision, EMA, checkpoint and logging settings of one training run.

    Stage sections subclass it, add their own fields and give ``steps``, ``batch_size``,
    ``lr`` and ``checkpoint_every`` defaults that suit their model.
    """

    steps: int = Field(ge=1, description="Optimizer steps of the whole run.")
    batch_size: int = Field(ge=1, description="Items per micro-batch on each process.")
    lr: float = Field(gt=0, description="Peak learning rate of the optimizer.")
    optimizer: Literal["adamw", "adam"] = Field(
        "adamw",
        description="adamw: decoupled weight decay (AdamW); adam: Adam with weight_decay as "
        "an L2 term in the gradient (torch.optim.Adam).",
    )
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(
        0,
        ge=0,
        description="Linear warm-up from 0 to lr (diffusers' get_scheduler: step s has "
        "lr * s / warmup_steps, so the first step takes none).",
    )
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant",
        description="After warm-up: constant, or cosine / linear decay from lr to lr_min, "
        "reached at schedule_steps and held after.",
    )
    lr_min: float = Field(
        0.0, ge=0, description="Floor of the cosine and linear decays (unused by constant)."
    )
    schedule_steps: int | None = Field(
        None,
        ge=1,
        description="Step at which the decay reaches lr_min; None: `steps`. Larger than "
        "`steps` stops training part-way down the decay.",
    )
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip norm; None: no clipping.")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "no", description="Autocast dtype; fp16 needs CUDA, bf16 also runs on CPU."
    )
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="EMA of the weights; None: no EMA."
    )
    checkpoint_every: int = Field(ge=1, description="Steps between checkpoints.")
    keep_checkpoints: int = Field(2, ge=1, description="Newest checkpoints kept on disk.")
    best_metric: str | None = Field(
        None,
        min_length=1,
        description="Key of the eval_fn row whose best value picks the final weights "
        "(checkpoints/best-XXXXXXX, then model/ and model_raw/); None: the last weights.",
    )
    best_mode: Literal["max", "min"] = Field(
        "max", description="Whether a higher (max) or lower (min) best_metric is better."
    )
    log_every: int = Field(10, ge=1, description="Steps between rows of the training curve.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per rank.")
    seed: int | None = Field(
        None,
        ge=0,
        description="Seed of this run (initial weights, data order); None: shared.seed. "
        "A seed study of one stage: dvc exp run -S <stage>.train.seed=N.",
    )

    @model_validator(mode="after")
    def _lr_floor(self) -> TrainParams:
        if self.lr_min > self.lr:
            raise ValueError(f"lr_min ({self.lr_min}) must not exceed lr ({self.lr})")
        return self

    def seed_or(self, default: int) -> int:
        """This run's seed: ``seed`` when set, else ``default`` (the pipeline's shared seed)."""
        return default if self.seed is None else self.seed

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: object) -> object:
        """A bare `no` in YAML 1.1 (as `dvc exp run -S` may write it) reads as False."""
        return "no" if value is False else value


class LaunchParams(Section):
    """How many processes and machines a training stage runs on (``python -m
    echomotion.cli.launch``, which dvc.yaml runs with these values). Not part of a run's
    identity: a checkpoint resumes on another process count (with a warning)."""

    num_processes: int = Field(
        1, ge=1, description="Processes of the whole run, over all machines (one per GPU)."
    )
    num_machines: int = Field(1, ge=1, description="Machines (nodes) of the run.")
    machine_rank: int = Field(0, ge=0, description="This machine's rank; 0 on the main one.")
    main_process_ip: str = Field(
        "127.0.0.1", min_length=1, description="Address of machine 0, seen from the others."
    )
    main_process_port: int = Field(
        29500, ge=1, le=65535, description="Rendezvous port on machine 0."
    )

    @model_validator(mode="after")
    def _consistent(self) -> LaunchParams:
        if self.machine_rank >= self.num_machines:
            raise ValueError(
                f"machine_rank {self.machine_rank} must be below num_machines {self.num_machines}"
            )
        if self.num_processes % self.num_machines:
            raise ValueError(
                f"num_processes {self.num_processes} must be a multiple of num_machines "
                f"{self.num_machines} (the same count on every machine)"
            )
        return self

    @property
    def is_single(self) -> bool:
        """One process on one machine: the script runs in the launching interpreter."""
        return self.num_processes == 1 and self.num_machines == 1
