"""The shared training loop: convergence, determinism, exact resume, checkpoint files,
precision, gradient accumulation, samplers and a two-process run."""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from echomotion.training import checkpoint as ckpt
from echomotion.training.data import ShardedSampler, custom_batches
from echomotion.training.loop import train
from echomotion.training.params import TrainParams

HERE = Path(__file__).resolve().parent


class TinyNet(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, dim: int = 4, hidden: int = 16, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ToyRegression(torch.utils.data.Dataset):
    """y = x . w; with ``augment``, x gets noise from the global torch RNG per item."""

    def __init__(self, n: int = 12, augment: bool = False):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
        self.augment, self.epoch = augment, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        x = self.x[i] + 0.1 * torch.randn(4) if self.augment else self.x[i]
        return {"x": x, "y": self.y[i], "index": i, "epoch": self.epoch}


class Recorder:
    """loss_fn that records (index, epoch) per micro-batch, optionally adds input noise
    from the global RNG, and can fail on its ``fail_at``-th call (1-based)."""

    def __init__(self, noise: bool = False, fail_at: int | None = None):
        self.noise, self.fail_at, self.seen = noise, fail_at, []

    def __call__(self, model, batch):
        if len(self.seen) + 1 == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        self.seen.append(list(zip(batch["index"].tolist(), batch["epoch"].tolist(), strict=True)))
        x = batch["x"] + 0.05 * torch.randn_like(batch["x"]) if self.noise else batch["x"]
        loss = nn.functional.mse_loss(model(x), batch["y"])
        return loss, {"mae": (model(x) - batch["y"]).abs().mean().item()}


def make_params(**overrides) -> TrainParams:
    base = {"steps": 6, "batch_size": 4, "lr": 1e-2, "checkpoint_every": 2, "log_every": 2}
    return TrainParams(**(base | overrides))


def make_model(seed: int = 0, **config) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(**config)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def step_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def test_loss_decreases_and_outputs_are_written(tmp_path):
    model = make_model()
    params = make_params(steps=40, batch_size=8, lr=3e-2, log_every=5, checkpoint_every=20)
    result = train(model, ToyRegression(48), Recorder(), params, out_dir=tmp_path, seed=0)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < 0.2 * losses[0], losses
    assert result.step == 40 and result.resumed_from is None and result.raw_model_dir is None
    lines = (tmp_path / "train.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["step", "loss", "mae", "grad_norm", "lr"]
    assert [int(line.split("\t")[0]) for line in lines[1:]] == list(range(5, 41, 5))
    assert_same(weights(TinyNet.from_pretrained(result.model_dir)), weights(model))
    assert step_dirs(tmp_path) == ["step-0000020", "step-0000040"]


def test_same_seed_gives_same_weights(tmp_path):
    def run(seed, out):
        model = make_model(0, dropout=0.2)
        data = ToyRegression(augment=True)
        train(model, data, Recorder(noise=True), make_params(), out_dir=tmp_path / out, seed=seed)
        return weights(model)

    first = run(0, "a")
    assert_same(first, run(0, "b"))
    assert not torch.equal(first["net.0.weight"], run(1, "c")["net.0.weight"])


@pytest.mark.parametrize("sampler", ["default", "epochs"])
def test_interrupted_run_resumes_to_identical_weights(tmp_path, sampler):
    """Interrupt in the middle of step 8 (checkpoint at 6), resume from a model with other
    initial weights: raw and EMA weights, data order and the curve match a straight run."""
    factory = EpochBatches if sampler == "epochs" else None
    params = make_params(
        steps=8, grad_accum=2, warmup_steps=2, lr_schedule="cosine", ema_decay=0.9,
        checkpoint_every=3, log_every=1, num_workers=1 if sampler == "default" else 0,
    )  # fmt: skip

    def run(out, loss_fn, init_seed=0):
        model = make_model(init_seed, dropout=0.2)
        data = ToyRegression(augment=True)
        kwargs = {"out_dir": tmp_path / out, "seed": 3, "batch_sampler_factory": factory}
        return model, train(model, data, loss_fn, params, **kwargs)

    straight = Recorder(noise=True)
    model_a, result_a = run("a", straight)
    with pytest.raises(KeyboardInterrupt):
        run("b", Recorder(noise=True, fail_at=15))  # in step 8
    assert step_dirs(tmp_path / "b") == ["step-0000003", "step-0000006"]
    resumed = Recorder(noise=True)
    model_b, result_b = run("b", resumed, init_seed=99)

    assert result_b.resumed_from == 6 and result_b.step == 8
    assert resumed.seen == straight.seen[12:]  # same batches, same epochs
    assert max(epoch for batch in straight.seen for _, epoch in batch) >= 2
    assert_same(weights(model_b), weights(model_a))  # EMA weights, in memory
    raw_a, raw_b = (TinyNet.from_pretrained(r.raw_model_dir) for r in (result_a, result_b))
    assert_same(weights(raw_b), weights(raw_a))
    assert not torch.equal(weights(raw_a)["net.0.weight"], weights(model_a)["net.0.weight"])
    curve_a, curve_b = ((tmp_path / d / "train.tsv").read_text() for d in "ab")
    assert curve_b == curve_a


class EpochBatches:
    """A finite per-epoch batch sampler with ``__len__`` and ``set_epoch`` (like P x K)."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int, world_size: int):
        self.n, self.bs, self.seed = len(dataset), batch_size, seed
        self.rank, self.ws, self.epoch = rank, world_size, 0

    def __len__(self) -> int:
        return self.n // (self.bs * self.ws)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        for j in range(self.rank, len(self) * self.ws, self.ws):
            yield order[j * self.bs : (j + 1) * self.bs].tolist()


def test_rotation_keeps_newest_and_removes_partial_folders(tmp_path):
    stale = tmp_path / "checkpoints" / ".tmp-step-0000099"
    stale.mkdir(parents=True)
    (stale / "junk").write_text("half written")
    params = make_params(steps=7, keep_checkpoints=2, ema_decay=0.5)
    result = train(make_model(), ToyRegression(), Recorder(), params, out_dir=tmp_path, seed=0)
    assert result.resumed_from is None  # the partial folder was not taken for a checkpoint
    assert step_dirs(tmp_path) == ["step-0000006", "step-0000007"]
    last = tmp_path / "checkpoints" / "step-0000007"
    state = ckpt.load_state(last / ckpt.STATE_FILE)
    assert state["step"] == 7 and state["data_position"] == 7 and len(state["rng"]) == 1
    names = sorted(p.name for p in last.iterdir())
    assert names == [
        ckpt.CURVES_DIR, ckpt.EMA_FILE, "model", ckpt.STATE_FILE, "training_state.safetensors"
    ]  # fmt: skip


def test_crash_while_saving_leaves_no_complete_checkpoint(tmp_path, monkeypatch):
    calls, save_state = [], ckpt.save_state

    def failing_save(path, state):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        save_state(path, state)

    monkeypatch.setattr(ckpt, "save_state", failing_save)
    with pytest.raises(OSError, match="disk full"):
        train(make_model(), ToyRegression(), Recorder(), make_params(), out_dir=tmp_path, seed=0)
    assert step_dirs(tmp_path) == [".tmp-step-0000004", "step-0000002"]
    monkeypatch.undo()
    result = train(
        make_model(), ToyRegression(), Recorder(), make_params(), out_dir=tmp_path, seed=0
    )
    assert result.resumed_from == 2
    assert step_dirs(tmp_path) == ["step-0000004", "step-0000006"]


def test_changed_params_start_anew_but_more_steps_continue(tmp_path, caplog):
    def run(**overrides):
        params = make_params(**({"steps": 4} | overrides))
        return train(make_model(), ToyRegression(), Recorder(), params, out_dir=tmp_path, seed=0)

    assert run().resumed_from is None
    assert run().resumed_from == 4  # finished run: nothing to do
    longer = run(steps=6)
    assert longer.resumed_from == 4 and [r["step"] for r in longer.history] == [6]
    with caplog.at_level(logging.WARNING):
        assert run(steps=6, lr=5e-3).resumed_from is None
    assert "lr" in caplog.text


def test_bf16_runs_on_cpu_and_fp16_is_refused(tmp_path):
    model = make_model()
    params = make_params(steps=3, mixed_precision="bf16", log_every=1)
    result = train(model, ToyRegression(), Recorder(), params, out_dir=tmp_path, seed=0)
    assert all(np.isfinite(row["loss"]) for row in result.history)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="fp16"):
            train(model, ToyRegression(), Recorder(), make_params(mixed_precision="fp16"),
                  out_dir=tmp_path / "fp16", seed=0)  # fmt: skip


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    def run(out, **overrides):
        model = make_model()
        params = make_params(steps=4, warmup_steps=2, max_grad_norm=0.5, **overrides)
        recorder = Recorder()
        train(model, ToyRegression(), recorder, params, out_dir=tmp_path / out, seed=0)
        return weights(model), recorder.seen

    big, seen_big = run("big", batch_size=8)
    small, seen_small = run("small", batch_size=4, grad_accum=2)
    assert len(seen_small) == 2 * len(seen_big) == 8
    assert [a + b for a, b in zip(seen_small[::2], seen_small[1::2], strict=True)] == seen_big
    for k in big:
        torch.testing.assert_close(small[k], big[k], rtol=0, atol=1e-6)
    assert not torch.equal(big["net.0.weight"], weights(make_model())["net.0.weight"])


def test_eval_fn_sees_ema_weights_and_leaves_training_alone(tmp_path):
    def eval_fn(model, step):
        torch.randn(100)  # consumes the global RNG: must not change training
        assert not model.training and not torch.is_grad_enabled()
        return {"w": model.net[0].weight.sum().item()}

    def run(out, fn):
        model = make_model(dropout=0.3)
        params = make_params(steps=5, ema_decay=0.8)
        result = train(model, ToyRegression(), Recorder(noise=True), params,
                       out_dir=tmp_path / out, seed=0, eval_fn=fn)  # fmt: skip
        return model, result

    model, result = run("eval", eval_fn)
    plain, _ = run("plain", None)
    assert_same(weights(model), weights(plain))
    assert [row["step"] for row in result.evals] == [2, 4, 5]
    assert result.evals[-1]["w"] == pytest.approx(model.net[0].weight.sum().item(), abs=1e-6)
    assert (tmp_path / "eval" / "eval.tsv").read_text().splitlines()[0] == "step\tw"


def test_sharded_sampler_covers_each_epoch_and_skips_exactly():
    ranks = [ShardedSampler(10, 3, seed=5, rank=r, world_size=2) for r in range(2)]
    shards = [set(s.epoch_items(0).tolist()) for s in ranks]
    assert shards[0] | shards[1] == set(range(10)) and not shards[0] & shards[1]
    stream = list(itertools.islice(ranks[1].batches(0), 9))
    assert list(itertools.islice(ranks[1].batches(4), 5)) == stream[4:]
    assert {e for batch in stream for _, e in batch} == {0, 1, 2, 3, 4, 5}
    sampler = EpochBatches(range(12), 2, seed=0, rank=0, world_size=1)
    full = list(itertools.islice(custom_batches(sampler, 0), 20))
    assert list(itertools.islice(custom_batches(sampler, 7), 13)) == full[7:]
    endless = ([i % 5] for i in itertools.count())
    assert list(itertools.islice(custom_batches(endless, 3), 2)) == [[(3, None)], [(4, None)]]


def test_two_processes_share_the_work_and_only_rank_0_writes(tmp_path):
    out, record = tmp_path / "out", tmp_path / "record"
    record.mkdir()
    env = os.environ | {"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(HERE / "_two_rank_train.py"), str(out), str(record)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [4, 4]
    for a, b in zip(ranks[0]["seen"], ranks[1]["seen"], strict=True):
        assert not set(a) & set(b)  # each step, the ranks drew different items
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients were averaged
    assert ranks[1]["writes"] == []
    assert step_dirs(out) == ["step-0000002", "step-0000004"]
    assert (out / "model" / ckpt.WEIGHTS_FILE).is_file() and (out / "train.tsv").is_file()
    for path in out.rglob("*"):
        if path.is_dir() or path.suffix != ".safetensors":  # safetensors files are 0600
            assert path.stat().st_mode & 0o040, f"{path} not written by rank 0"


MODELS = ("flow", "reid", "mafe", "vae", "mcdm", "ef", "lv")  # tests/_two_rank_models.py


def _torchrun(nproc: int, out: Path, record: Path) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(nproc), str(HERE / "_two_rank_models.py"), str(out), str(record)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def model_runs(tmp_path_factory) -> dict[str, dict]:
    """Every model's weights after 2 steps: both ranks of a 2-process run, and a 1-process
    run on rank 0's batch."""
    tmp = tmp_path_factory.mktemp("ranks")
    _torchrun(2, tmp / "two", tmp)
    _torchrun(1, tmp / "one", tmp)
    names = {"rank0": "rank0-of-2", "rank1": "rank1-of-2", "alone": "rank0-of-1"}
    return {k: json.loads((tmp / f"{v}.json").read_text()) for k, v in names.items()}


@pytest.mark.parametrize("model", MODELS)
def test_every_stage_loss_averages_gradients_over_ranks(model_runs, model):
    """Ranks fed different data end with identical weights, which differ from training on
    rank 0's data alone: each rank stepped with the average gradient. (vae_loss once called
    the unwrapped VAE's encode/decode: its ranks drifted apart, and this test failed.)"""
    rank0, rank1, alone = (model_runs[k][model] for k in ("rank0", "rank1", "alone"))
    assert rank0 == rank1, f"{model}: the ranks' weights differ (gradients not averaged)"
    assert rank0 != alone, f"{model}: 2 ranks trained exactly as rank 0 alone"


def test_curves_come_back_when_the_workspace_lost_them(tmp_path):
    """DVC deletes a stage's outputs (the TSVs) before re-running it; the persisted
    checkpoint carries the curves, so a resume restores them."""

    def eval_fn(model, step):
        return {"w": float(step)}

    def run(steps):
        params = make_params(steps=steps, checkpoint_every=2, log_every=1)
        return train(make_model(), ToyRegression(), Recorder(), params,
                     out_dir=tmp_path, seed=0, eval_fn=eval_fn)  # fmt: skip

    run(4)
    full = (tmp_path / "train.tsv").read_text()
    evals = (tmp_path / "eval.tsv").read_text()
    (tmp_path / "train.tsv").unlink()
    (tmp_path / "eval.tsv").unlink()
    assert run(4).resumed_from == 4
    assert (tmp_path / "train.tsv").read_text() == full
    assert (tmp_path / "eval.tsv").read_text() == evals
    assert [line.split("\t")[0] for line in evals.splitlines()[1:]] == ["2", "4"]
    (tmp_path / "train.tsv").unlink()
    run(6)  # more steps continue the restored curve
    rows = (tmp_path / "train.tsv").read_text().splitlines()[1:]
    assert [int(r.split("\t")[0]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_another_run_key_starts_anew(tmp_path, caplog):
    """A loss weight is not a TrainParams field: the stage passes its params as run_key,
    so `dvc exp run -S <loss weight>` never continues the old run's checkpoint."""
    params = make_params(steps=3)

    def run(key):
        return train(make_model(), ToyRegression(), Recorder(), params,
                     out_dir=tmp_path, seed=0, run_key=key)  # fmt: skip

    assert run({"flow_ratio": 0.01}).resumed_from is None
    assert run({"flow_ratio": 0.01}).resumed_from == 3
    with caplog.at_level("WARNING"):
        assert run({"flow_ratio": 0.0}).resumed_from is None
    assert "run_key" in caplog.text


def test_checkpoints_of_other_inputs_are_discarded(tmp_path):
    step = tmp_path / "checkpoints" / "step-0000002"
    step.mkdir(parents=True)
    ckpt.discard_other_inputs(tmp_path / "checkpoints", "abc", stamp="data_fingerprint.txt")
    assert not step.exists()  # no fingerprint: data unknown
    step.mkdir()
    ckpt.discard_other_inputs(tmp_path / "checkpoints", "abc", stamp="data_fingerprint.txt")
    assert step.is_dir()  # same data: kept for resuming
    ckpt.discard_other_inputs(tmp_path / "checkpoints", "other", stamp="data_fingerprint.txt")
    assert not step.exists()
    assert (tmp_path / "checkpoints" / "data_fingerprint.txt").read_text().strip() == "other"


def test_a_runs_own_seed_overrides_the_shared_one():
    assert make_params().seed_or(1234) == 1234
    assert make_params(seed=0).seed_or(1234) == 0


def test_training_state_round_trips_with_its_types_and_identical_bytes(tmp_path):
    """JSON + safetensors, no pickle: int keys, tuples, None, NaN and tensors come back
    as they went in, and writing the same state twice gives the same bytes."""
    state = {
        "step": 3,
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 2)}},
                      "param_groups": [{"lr": 1e-3, "params": [0]}]},
        "rng": [ckpt.rng_state()],
        "scaler": None,
        "nan": float("nan"),
    }  # fmt: skip
    ckpt.save_state(tmp_path / "a.json", state)
    ckpt.save_state(tmp_path / "b.json", state)
    for suffix in (".json", ".safetensors"):
        assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()
    back = ckpt.load_state(tmp_path / "a.json")
    assert list(back["optimizer"]["state"]) == [0]
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], torch.ones(2, 2))
    assert isinstance(back["rng"][0]["python"], tuple) and back["scaler"] is None
    assert back["nan"] != back["nan"]
    ckpt.set_rng_state(back["rng"][0])  # restorable as saved
