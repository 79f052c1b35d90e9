"""The training loop; the package docstring describes its files and resume semantics."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list, gather_object, send_to_device, set_seed
from diffusers.optimization import get_scheduler
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.optim import Adam, AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from echomotion.section import Section
from echomotion.training import checkpoint as ckpt
from echomotion.training.data import BatchSamplerFactory, batch_iterator
from echomotion.training.ema import EMA
from echomotion.training.params import TrainParams
from echomotion.training.tables import Meter, Table

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], tuple[Tensor, dict[str, float]]]
EvalFn = Callable[[nn.Module, int], dict[str, float]]

# Params that may differ between an interrupted run and the call that resumes it.
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "keep_checkpoints", "log_every", "num_workers"}


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did and wrote (paths are written by rank 0)."""

    step: int  # optimizer steps done, counting those of resumed checkpoints
    model_dir: Path  # final weights to use: EMA when enabled, else raw
    raw_model_dir: Path | None  # final raw weights, only when EMA is enabled
    checkpoint_dir: Path
    resumed_from: int | None  # step of the checkpoint this call continued, if any
    history: list[dict[str, float]] = field(default_factory=list)  # curve rows of this call
    evals: list[dict[str, float]] = field(default_factory=list)  # eval_fn rows (rank 0)
    # the run's last curve and eval rows, also when they were written before a resume
    # (a run resumed at its last step adds no rows, but its metrics still have them)
    last_row: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] | None = None  # {"step", "value"} of best_metric's choice


def make_accelerator(params: TrainParams) -> Accelerator:
    """An Accelerator on CUDA when there is one, else on the CPU (gloo across processes)."""
    cpu = not torch.cuda.is_available()
    if cpu and params.mixed_precision == "fp16":
        raise ValueError(
            "mixed_precision='fp16' needs a CUDA device (fp16 autocast is off on the CPU); "
            "use 'bf16' or 'no'"
        )
    # Each call configures its own run; the process group (PartialState) is kept.
    AcceleratorState._reset_state()
    return Accelerator(
        cpu=cpu,
        mixed_precision=params.mixed_precision,
        gradient_accumulation_steps=params.grad_accum,
    )


DIFFUSERS_SCHEDULE = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}


def lr_factor(params: TrainParams) -> Callable[[int], float]:
    """Multiplier of ``lr`` at optimizer step ``s`` (0-based): diffusers' schedule
    (``get_scheduler``: a linear warm-up from 0 over ``warmup_steps``, then constant, or a
    cosine or linear decay to 0 at ``schedule_steps``, default ``steps``), its decay
    rescaled to end at ``lr_min / lr`` instead of 0 and held from ``schedule_steps`` on
    (diffusers' cosine would rise again after its end)."""
    horizon = params.steps if params.schedule_steps is None else params.schedule_steps
    floor = params.lr_min / params.lr
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)  # only to read the shape
    shape = get_scheduler(
        DIFFUSERS_SCHEDULE[params.lr_schedule], probe, num_warmup_steps=params.warmup_steps,
        num_training_steps=max(horizon, params.warmup_steps + 1),
    ).lr_lambdas[0]  # fmt: skip

    def factor(step: int) -> float:
        if step < params.warmup_steps:
            return shape(step)
        # exact for lr_min = 0: 0.0 + 1.0 * decay == decay, diffusers' own factor
        return floor + (1.0 - floor) * shape(min(step, horizon))

    return factor


def is_better(value: float, best: float | None, mode: str) -> bool:
    """``value`` beats ``best`` (None: nothing yet) under ``mode`` max or min; NaN never
    beats anything."""
    if math.isnan(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def make_optimizer(params: TrainParams, parameters: Iterable[nn.Parameter]) -> Optimizer:
    """The run's optimizer at the peak ``lr``: AdamW (decoupled weight decay) or Adam
    (weight decay as an L2 gradient term, as UnSAMFlow trains)."""
    kind = {"adamw": AdamW, "adam": Adam}[params.optimizer]
    return kind(parameters, lr=params.lr, weight_decay=params.weight_decay)


def run_config(
    params: TrainParams, seed: int, model: nn.Module, n_items: int, run_key: Mapping | None = None
) -> dict:
    """What must match for a checkpoint to be continued (JSON-able)."""
    config = params.model_dump(mode="json", exclude=RESUMABLE_CHANGES)
    arch = dict(model.config) if isinstance(getattr(model, "config", None), Mapping) else {}
    # diffusers' private keys are bookkeeping, not architecture; `_use_default_values` is
    # even built from a set, so its order (and a resume's comparison) varied per process
    arch = {k: v for k, v in arch.items() if not k.startswith("_")}
    config |= {"seed": seed, "model": type(model).__name__, "dataset_len": n_items, "arch": arch}
    config["run_key"] = dict(run_key or {})
    return json.loads(json.dumps(config, default=str))


class _Trainer:
    """The state of one run and its steps; methods are collective (call on every rank)."""

    def __init__(self, model: nn.Module, params: TrainParams, seed: int, root: Path, config: dict):
        self.params, self.seed, self.root, self.config = params, seed, root, config
        self.acc = make_accelerator(params)
        self.main = self.acc.is_main_process
        model.train()
        optimizer = make_optimizer(params, model.parameters())
        # Stepped by hand once per optimizer step (accelerate's wrapper would step it
        # once per process).
        self.scheduler = LambdaLR(optimizer, lr_factor(params))
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        self.raw = self.acc.unwrap_model(self.model)
        self.ema = EMA(self.raw, params.ema_decay) if params.ema_decay is not None else None
        self.step = self.position = 0
        self.resumed_dir: Path | None = None
        self.last_lr = params.lr
        self.best: dict[str, float] | None = None  # {"step", "value"}: best_metric's choice
        self.last_row: dict[str, float] = {}  # the newest curve row (kept in checkpoints)
        self.last_eval: dict[str, float] = {}  # the newest eval row (rank 0)

    # -- resume -------------------------------------------------------------------------

    def resume(self) -> int | None:
        """Load the newest complete checkpoint of this configuration; return its step."""
        if self.main:
            ckpt.remove_partial(self.root)
        self.acc.wait_for_everyone()
        found = ckpt.complete_checkpoints(self.root)
        state = ckpt.load_state(found[-1][1] / ckpt.STATE_FILE) if found else None
        if state is not None and self._is_other_run(state):
            self.acc.wait_for_everyone()
            if self.main:
                shutil.rmtree(self.root)
            state = None
        if state is None:
            set_seed(self.seed, device_specific=True)
            return None
        self._load(found[-1][1], state)
        self._check_best()
        self.resumed_dir = found[-1][1]
        logger.info("resuming from %s", found[-1][1])
        return self.step

    def restore_curves(self, *paths: Path) -> None:
        """Put back the curve files saved in the checkpoint resumed from (rank 0)."""
        saved = self.resumed_dir
        for path in paths if self.main and saved is not None else ():
            copy = saved / ckpt.CURVES_DIR / path.name
            if copy.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(copy, path)

    def _is_other_run(self, state: dict) -> bool:
        old = json.loads(state["config"])
        new = self.config
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if changed:
            logger.warning("%s holds a run with other %s: starting anew", self.root, changed)
        return bool(changed)

    def _load(self, path: Path, state: dict) -> None:
        ckpt.load_weights(self.raw, path / "model")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.acc.scaler is not None and state["scaler"] is not None:
            self.acc.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            device = ckpt.safetensors_device(self.acc.device)
            self.ema.load_state_dict(load_file(path / ckpt.EMA_FILE, device=device))
        self.step, self.position = state["step"], state["data_position"]
        self.best = state["best"]
        self.last_row = state.get("last_row") or {}  # older checkpoints: none recorded
        self.last_eval = state.get("last_eval") or {}
        rngs = state["rng"]
        if len(rngs) == self.acc.num_processes:
            ckpt.set_rng_state(rngs[self.acc.process_index])
        else:
            logger.warning(
                "checkpoint of %d processes resumed on %d: random streams and data shards "
                "differ from an uninterrupted run",
                len(rngs),
                self.acc.num_processes,
            )
            set_seed(self.seed + self.step, device_specific=True)

    def _check_best(self) -> None:
        """After a resume: drop best folders of evals past the checkpoint (an interrupted
        run's); the one the checkpoint chose must be there (rank 0 checks, all agree)."""
        if self.main:
            ckpt.prune_best(self.root, None if self.best is None else int(self.best["step"]))
            if self.best is not None and not self._best_dir().is_dir():
                logger.warning("%s is missing: the best so far is forgotten", self._best_dir())
                self.best = None
        self.best = broadcast_object_list([self.best])[0]
        self.acc.wait_for_everyone()

    def _best_dir(self) -> Path:
        return self.root / ckpt.best_name(int(self.best["step"]))

    # -- steps --------------------------------------------------------------------------

    def train_step(self, batches: Iterator, loss_fn: LossFn, meter: Meter) -> None:
        """One optimizer step over ``grad_accum`` micro-batches."""
        acc = self.acc
        for _ in range(self.params.grad_accum):
            batch = send_to_device(next(batches), acc.device, non_blocking=True)
            self.position += 1
            with acc.accumulate(self.model):
                with acc.autocast():
                    loss, logs = loss_fn(self.model, batch)
                acc.backward(loss)
                if acc.sync_gradients and self.params.max_grad_norm is not None:
                    norm = acc.clip_grad_norm_(self.model.parameters(), self.params.max_grad_norm)
                    meter.add_grad_norm(norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            meter.add(loss.detach(), logs)
        if not acc.sync_gradients:
            raise RuntimeError("gradient accumulation fell out of step with optimizer steps")
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.raw, self.step)

    def log_row(self, meter: Meter) -> dict[str, float]:
        """The curve row of the steps since the last one, averaged over all ranks."""
        row = {"step": self.step, **meter.means(self.acc), "lr": self.last_lr}
        meter.reset()
        if not math.isfinite(row["loss"]):
            raise FloatingPointError(f"loss is {row['loss']} at step {self.step}")
        return row

    # -- checkpoints and outputs ------------------------------------------------------------

    def save_checkpoint(self, curves: tuple[Path, ...] = ()) -> None:
        """Write ``step-XXXXXXX`` atomically (rank 0) and drop the oldest ones. The
        curve files are copied in, so a resume restores them even when the workspace
        copies are gone (DVC deletes a stage's outputs before running it)."""
        rngs = gather_object([ckpt.rng_state()])  # every rank's, in rank order
        if self.main:
            final = self.root / ckpt.checkpoint_name(self.step)
            write = partial(self._write_checkpoint, rngs=rngs, curves=curves)
            ckpt.write_dir_atomically(final, write)
            ckpt.rotate(self.root, self.params.keep_checkpoints)
            if self.best is not None:  # the checkpoint now records this choice
                ckpt.prune_best(self.root, int(self.best["step"]))
        self.acc.wait_for_everyone()

    def _write_checkpoint(self, directory: Path, rngs: list[dict], curves=()) -> None:
        ckpt.save_weights(self.raw, directory / "model")
        for path in curves:
            if path.exists():
                (directory / ckpt.CURVES_DIR).mkdir(exist_ok=True)
                shutil.copyfile(path, directory / ckpt.CURVES_DIR / path.name)
        if self.ema is not None:
            save_file(self.ema.state_dict(), directory / ckpt.EMA_FILE)
        state = {
            "step": self.step,
            "data_position": self.position,
            "config": json.dumps(self.config, sort_keys=True),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.acc.scaler.state_dict() if self.acc.scaler is not None else None,
            "rng": rngs,
            "best": self.best,
            "last_row": self.last_row,
            "last_eval": self.last_eval,
        }
        ckpt.save_state(directory / ckpt.STATE_FILE, state)

    def evaluate(self, eval_fn: EvalFn) -> dict[str, float] | None:
        """``eval_fn`` on rank 0, with EMA weights when enabled, leaving RNGs untouched."""
        row = None
        if self.main:
            rng = ckpt.rng_state()
            self.raw.eval()
            with torch.no_grad(), self._final_weights():
                row = {"step": self.step, **eval_fn(self.raw, self.step)}
            self.raw.train()
            ckpt.set_rng_state(rng)
        self.acc.wait_for_everyone()
        return row

    def keep_if_best(self, row: dict[str, float] | None) -> None:
        """With ``best_metric``: when rank 0's eval ``row`` beats the best so far, write
        ``best-XXXXXXX`` (``model/``: the evaluated weights, EMA when enabled; with EMA
        also ``model_raw/``). The next checkpoint records the choice; older best folders
        go only after that, so an interruption in between keeps the recorded one."""
        metric = self.params.best_metric
        if metric is None:
            return
        if self.main and row is not None:
            if metric not in row:
                raise KeyError(
                    f"best_metric {metric!r} is not in the eval row; it has {sorted(row)}"
                )
            value = float(row[metric])
            if is_better(value, self.best and self.best["value"], self.params.best_mode):
                self.best = {"step": self.step, "value": value}
                ckpt.write_dir_atomically(self._best_dir(), self._write_best)
                logger.info("best %s=%.6g at step %d", metric, value, self.step)
        self.best = broadcast_object_list([self.best])[0]

    def _write_best(self, directory: Path) -> None:
        with self._final_weights():
            ckpt.save_weights(self.raw, directory / "model")
        if self.ema is not None:
            ckpt.save_weights(self.raw, directory / "model_raw")

    def _final_weights(self) -> contextlib.AbstractContextManager:
        return self.ema.applied(self.raw) if self.ema is not None else nullcontext(self.raw)

    def save_final(self, out_dir: Path) -> tuple[Path, Path | None]:
        """Write ``model/`` (EMA when enabled) and ``model_raw/``, of the last step or,
        with ``best_metric``, of the best eval; the model in memory ends with the weights
        of ``model/``."""
        model_dir, raw_dir = out_dir / "model", out_dir / "model_raw"
        if self.params.best_metric is not None:
            if self.best is not None:
                return self._save_best(model_dir, raw_dir)
            logger.warning("best_metric: no eval row to choose from; model/ holds the last weights")
        if self.main:
            if self.ema is not None:
                ckpt.write_dir_atomically(raw_dir, partial(ckpt.save_weights, self.raw))
            else:
                shutil.rmtree(raw_dir, ignore_errors=True)  # stale, from an EMA run
        if self.ema is not None:
            self.ema.copy_to(self.raw)
        if self.main:
            ckpt.write_dir_atomically(model_dir, partial(ckpt.save_weights, self.raw))
        self.acc.wait_for_everyone()
        return model_dir, raw_dir if self.ema is not None else None

    def _save_best(self, model_dir: Path, raw_dir: Path) -> tuple[Path, Path | None]:
        """``model/`` and ``model_raw/`` copied from the best folder, which every rank
        then loads."""
        best = self._best_dir()
        if self.main:
            for name, final in (("model", model_dir), ("model_raw", raw_dir)):
                if (best / name).is_dir():
                    copy = partial(shutil.copytree, best / name, dirs_exist_ok=True)
                    ckpt.write_dir_atomically(final, copy)
                else:
                    shutil.rmtree(final, ignore_errors=True)  # stale, from an EMA run
        self.acc.wait_for_everyone()
        ckpt.load_weights(self.raw, best / "model")
        logger.info("model/: the best eval (step %d)", self.best["step"])
        return model_dir, raw_dir if self.ema is not None else None


def train(
    model: nn.Module,
    dataset: Dataset,
    loss_fn: LossFn,
    params: TrainParams,
    *,
    out_dir: str | Path,
    seed: int,
    log_file: str | Path | None = None,
    collate_fn: Callable | None = None,
    batch_sampler_factory: BatchSamplerFactory | None = None,
    eval_fn: EvalFn | None = None,
    name: str = "train",
    run_key: Mapping | None = None,
) -> TrainResult:
    """Train ``model`` for ``params.steps`` optimizer steps, continuing any checkpoint.

    Args:
        model: an ``nn.Module`` (a diffusers ``ModelMixin`` is saved with
            ``save_pretrained``); trained in place, it ends with the weights of ``model/``.
        dataset: map-style dataset; items are collated by ``collate_fn`` (default collate).
        loss_fn: ``loss_fn(model, batch) -> (loss, logs)``; batch is on the device, the
            model possibly DDP-wrapped, so call it as ``model(...)`` (its ``forward``) for
            gradients to be synchronised; ``logs`` values are floats added to the curve.
        params: the run's settings (a stage's subclass of :class:`TrainParams`).
        out_dir: receives ``checkpoints/``, ``model/`` and, with EMA, ``model_raw/``.
            With ``params.best_metric``, each eval row that beats the best so far writes
            ``checkpoints/best-XXXXXXX/`` (``model/``: the evaluated weights, EMA when
            enabled; with EMA also ``model_raw/``: the raw weights of that step); the
            checkpoints record the choice (a resume keeps it) and ``model/`` and
            ``model_raw/`` end as copies of the best folder, so both describe one step.
        seed: seed of the data order, the item seeds and each rank's global RNGs.
        log_file: TSV training curve (default ``out_dir/train.tsv``); ``eval.tsv``
            beside it receives ``eval_fn`` rows.
        batch_sampler_factory: ``f(dataset, batch_size, seed, rank, world_size)`` giving a
            batch sampler that shards by rank itself, e.g. a P x K identity sampler.
        eval_fn: ``eval_fn(model, step) -> metrics``, run on rank 0 after each checkpoint
            in eval mode without gradients, with the EMA weights when enabled.
        name: label of the progress bar and log lines.
        run_key: everything else that shapes the run (loss weights, data settings: the
            stage's params without ``train``); a checkpoint of a run with another key is
            discarded, so ``dvc exp run -S <loss weight>`` never continues the old run.
    """
    out_dir = Path(out_dir)
    log_file = Path(log_file) if log_file is not None else out_dir / "train.tsv"
    config = run_config(params, seed, model, len(dataset), run_key)
    # 1. Accelerator, optimizer, schedule, EMA; then the newest checkpoint of this run.
    trainer = _Trainer(model, params, seed, out_dir / "checkpoints", config)
    resumed = trainer.resume()
    main = trainer.main
    if main:
        n = trainer.acc.num_processes
        logger.info("%s: %d process%s on %s", name, n, "es" * (n > 1), trainer.acc.device)
    eval_file = log_file.with_name("eval.tsv")
    trainer.restore_curves(log_file, eval_file)
    curve = Table(log_file, trainer.step, enabled=main)
    eval_table = Table(eval_file, trainer.step, enabled=main and eval_fn is not None)
    # 2. This rank's batches, from where the checkpoint stopped.
    acc = trainer.acc
    batches = batch_iterator(
        dataset,
        params.batch_size,
        seed=seed,
        rank=acc.process_index,
        world_size=acc.num_processes,
        start=trainer.position,
        num_workers=params.num_workers,
        collate_fn=collate_fn,
        batch_sampler_factory=batch_sampler_factory,
    )
    # 3. Optimise, logging and checkpointing on the way.
    history, evals = _run(trainer, batches, loss_fn, eval_fn, curve, eval_table, name)
    del batches  # stops DataLoader workers
    # 4. Final weights.
    model_dir, raw_dir = trainer.save_final(out_dir)
    return TrainResult(
        step=trainer.step,
        model_dir=model_dir,
        raw_model_dir=raw_dir,
        checkpoint_dir=trainer.root,
        resumed_from=resumed,
        history=history,
        evals=evals,
        last_row=trainer.last_row,
        last_eval=trainer.last_eval,
        best=trainer.best,
    )


def train_section(
    model: nn.Module, dataset: Dataset, loss_fn: LossFn, section: Section, **kwargs
) -> TrainResult:
    """:func:`train` with a stage section's ``train`` settings; the rest of the section
    (loss weights, data settings, ...) is the run key, so a checkpoint of a run with other
    settings is never continued. ``kwargs`` go to :func:`train`."""
    run_key = section.model_dump(mode="json", exclude={"train", "launch"})
    return train(model, dataset, loss_fn, section.train, run_key=run_key, **kwargs)


def _run(
    trainer: _Trainer,
    batches: Iterator,
    loss_fn: LossFn,
    eval_fn: EvalFn | None,
    curve: Table,
    eval_table: Table,
    name: str,
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Steps from the trainer's step to ``params.steps``; returns (curve rows, eval rows)."""
    p, meter, history, evals = trainer.params, Meter(), [], []
    if trainer.step > p.steps:
        logger.warning("checkpoint at step %d is past steps=%d; kept as is", trainer.step, p.steps)
    bar = tqdm(total=p.steps, initial=trainer.step, desc=name, disable=not trainer.main)
    while trainer.step < p.steps:
        trainer.train_step(batches, loss_fn, meter)
        bar.update()
        last = trainer.step == p.steps
        if trainer.step % p.log_every == 0 or last:
            history.append(row := trainer.log_row(meter))
            trainer.last_row = row
            curve.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4g}")
            if trainer.main:
                logger.info("%s %s", name, " ".join(f"{k}={v:.4g}" for k, v in row.items()))
        if trainer.step % p.checkpoint_every == 0 or last:
            # eval first (it leaves the RNGs untouched) so the checkpoint's copy of the
            # curves holds its row
            if eval_fn is not None:
                if (row := trainer.evaluate(eval_fn)) is not None:
                    evals.append(row)
                    eval_table.append(row)
                    trainer.last_eval = row
                trainer.keep_if_best(row)
            trainer.save_checkpoint(curves=(curve.path, eval_table.path))
    bar.close()
    return history, evals
