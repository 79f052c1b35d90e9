"""The parameters every training section shares."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from echomotion.section import Section


class TrainParams(Section):
    """Optimisation, precision, EMA, checkpoint and logging settings of one training run.

    Stage sections subclass it, add their own fields and give ``steps``, ``batch_size``,
    ``lr`` and ``checkpoint_every`` defaults that suit their model.
    """

    steps: int = Field(ge=1, description="Optimizer steps of the whole run.")
    batch_size: int = Field(ge=1, description="Items per micro-batch on each process.")
    lr: float = Field(gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up from lr/warmup_steps to lr.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="After warm-up: constant, or cosine decay to 0 at `steps`."
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
    log_every: int = Field(10, ge=1, description="Steps between rows of the training curve.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per rank.")
    seed: int | None = Field(
        None,
        ge=0,
        description="Seed of this run (initial weights, data order); None: shared.seed. "
        "A seed study of one stage: dvc exp run -S <stage>.train.seed=N.",
    )

    def seed_or(self, default: int) -> int:
        """This run's seed: ``seed`` when set, else ``default`` (the pipeline's shared seed)."""
        return default if self.seed is None else self.seed

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: object) -> object:
        """A bare `no` in YAML 1.1 (as `dvc exp run -S` may write it) reads as False."""
        return "no" if value is False else value
