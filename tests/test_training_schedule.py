"""Schedule options of the shared training loop: LR floor and horizon, linear decay, Adam
vs AdamW, and best-checkpoint selection (resume keeps the best; two ranks agree)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.optimization import get_scheduler
from pydantic import ValidationError
from torch import nn

from echomotion.training import checkpoint as ckpt
from echomotion.training.loop import _Trainer, lr_factor, make_optimizer, train
from echomotion.training.params import TrainParams

HERE = Path(__file__).resolve().parent


class TinyNet(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, dim: int = 4, hidden: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Toy(torch.utils.data.Dataset):
    def __init__(self, n: int = 12):
        g = torch.Generator().manual_seed(5)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x.sum(1, keepdim=True)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


def mse(model, batch):
    return nn.functional.mse_loss(model(batch["x"]), batch["y"]), {}


def params(**overrides) -> TrainParams:
    base = {"steps": 6, "batch_size": 4, "lr": 1e-2, "checkpoint_every": 1, "log_every": 1}
    return TrainParams(**(base | overrides))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def loaded(path: Path) -> dict[str, torch.Tensor]:
    return weights(TinyNet.from_pretrained(path))


# -- learning-rate schedule ------------------------------------------------------------------


def diffusers_lrs(p: TrainParams, n: int) -> list[float]:
    """The lr of steps 0..n-1 from diffusers' own scheduler stepped on a real optimizer."""
    name = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=p.lr)
    scheduler = get_scheduler(
        name[p.lr_schedule], optimizer, num_warmup_steps=p.warmup_steps, num_training_steps=p.steps
    )
    lrs = []
    for _ in range(n):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize(
    "setting",
    [
        {"steps": 300, "lr": 1e-3, "warmup_steps": 10, "lr_schedule": "cosine"},
        {"steps": 1000, "lr": 5e-4, "warmup_steps": 20, "lr_schedule": "cosine"},
        {"steps": 7, "lr": 3e-3, "warmup_steps": 0, "lr_schedule": "cosine"},
        {"steps": 50, "lr": 1e-4, "warmup_steps": 5, "lr_schedule": "constant"},
        {"steps": 60, "lr": 1e-4, "warmup_steps": 5, "lr_schedule": "linear"},
    ],
)
def test_without_floor_the_schedule_is_diffusers_get_scheduler(setting):
    """lr_min 0 and no horizon: the loop's lr is diffusers' scheduler's, step for step
    (its warm-up starts at 0: the first step takes none)."""
    p = params(**setting)
    factor = lr_factor(p)
    assert [p.lr * factor(s) for s in range(p.steps)] == pytest.approx(
        diffusers_lrs(p, p.steps), rel=1e-12, abs=1e-18
    )
    assert factor(0) == (0.0 if p.warmup_steps else 1.0)


def test_cosine_floor_and_horizon_follow_the_official_mafe_schedule():
    """Official MAFE (train_echo_flow.py get_learning_rate): 2000 warm-up steps, then
    cosine from 2e-4 to 2e-5 over 300 epochs; training stops after 100 epochs."""
    per_epoch = 933
    p = params(
        steps=100 * per_epoch, lr=2e-4, lr_min=2e-5, warmup_steps=2000,
        schedule_steps=300 * per_epoch, lr_schedule="cosine",
    )  # fmt: skip
    factor = lr_factor(p)

    def official(step: int) -> float:
        mul = math.cos((step - 2000) / (300 * per_epoch - 2000) * math.pi) * 0.5 + 0.5
        return (2e-4 - 2e-5) * mul + 2e-5

    for step in (2000, 5000, 50_000, 93_299, 200_000, 279_900):
        assert p.lr * factor(step) == pytest.approx(official(step), rel=1e-12)
    assert p.lr * factor(p.steps - 1) == pytest.approx(1.56e-4, rel=5e-3)  # far from 2e-5
    assert factor(300 * per_epoch + 5) == pytest.approx(0.1)  # held at the floor
    assert factor(0) == 0.0 and factor(1000) == 0.5  # the official warm-up: lr * step / 2000


def test_linear_decay_reaches_the_floor_and_cosine_without_horizon_ends_at_steps():
    p = params(steps=110, lr=4e-4, lr_min=4e-6, warmup_steps=10, lr_schedule="linear")
    f = lr_factor(p)
    assert [f(s) for s in (0, 5, 9)] == [0.0, 0.5, 0.9]
    assert f(10) == 1.0
    assert f(60) == pytest.approx(0.5 * (1 + 0.01))
    assert f(110) == pytest.approx(0.01) and f(500) == pytest.approx(0.01)
    cosine = lr_factor(params(steps=110, lr=4e-4, warmup_steps=10, lr_schedule="cosine"))
    assert cosine(60) == pytest.approx(0.5) and cosine(110) == 0.0
    assert lr_factor(params(steps=110, lr=4e-4, schedule_steps=110, lr_schedule="cosine"))(
        60
    ) == lr_factor(params(steps=110, lr=4e-4, lr_schedule="cosine"))(60)
    assert lr_factor(params(lr_min=1e-3, lr_schedule="constant"))(5) == 1.0


def test_a_floor_above_the_peak_is_refused():
    with pytest.raises(ValidationError, match="lr_min"):
        params(lr=1e-3, lr_min=2e-3)


def test_training_logs_the_scheduled_lr(tmp_path):
    p = params(steps=6, lr=1e-2, lr_min=1e-3, schedule_steps=4, lr_schedule="linear")
    torch.manual_seed(0)
    result = train(TinyNet(), Toy(), mse, p, out_dir=tmp_path, seed=0)
    f = lr_factor(p)
    assert [row["lr"] for row in result.history] == [p.lr * f(s) for s in range(6)]


# -- optimizer -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["adamw", "adam"])
def test_adam_couples_weight_decay_and_adamw_decouples_it(kind):
    """One step with a zero loss gradient: AdamW only shrinks the weights by lr * wd;
    Adam's L2 gradient wd * p is normalised, so each weight moves by about lr."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    before = layer.weight.detach().clone()
    p = params(lr=1e-2, weight_decay=0.1, optimizer=kind)
    optimizer = make_optimizer(p, layer.parameters())
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (1e-2, 0.1)
    assert type(optimizer).__name__ == {"adamw": "AdamW", "adam": "Adam"}[kind]
    (0.0 * layer(torch.ones(1, 4)).sum()).backward()
    optimizer.step()
    after = layer.weight.detach()
    if kind == "adamw":
        assert torch.allclose(after, before * (1 - 1e-2 * 0.1))
    else:
        assert torch.allclose(after, before - 1e-2 * before.sign(), atol=1e-6)


def test_the_trainer_builds_the_chosen_optimizer(tmp_path):
    torch.manual_seed(0)
    trainer = _Trainer(TinyNet(), params(optimizer="adam", weight_decay=1e-6), 0, tmp_path, {})
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate's wrapper
    assert type(inner) is torch.optim.Adam and inner.param_groups[0]["weight_decay"] == 1e-6


# -- best checkpoint -------------------------------------------------------------------------

SCORES = {1: 1.0, 2: 3.0, 3: 2.0, 4: float("nan"), 5: 2.5, 6: 0.5}


class Scored:
    """eval_fn: a scripted score per step; records the weights it was shown."""

    def __init__(self):
        self.seen: dict[int, dict[str, torch.Tensor]] = {}

    def __call__(self, model, step: int) -> dict[str, float]:
        self.seen[step] = weights(model)
        return {"score": SCORES[step], "other": 0.0}


def best_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("best"))


def run(out: Path, p: TrainParams, eval_fn=None, init: int = 0):
    torch.manual_seed(init)
    model = TinyNet()
    return model, train(model, Toy(), mse, p, out_dir=out, seed=0, eval_fn=eval_fn)


@pytest.mark.parametrize(("mode", "step"), [("max", 2), ("min", 6)])
def test_model_dir_holds_the_best_eval_weights(tmp_path, mode, step):
    scored = Scored()
    p = params(ema_decay=0.5, best_metric="score", best_mode=mode)
    model, result = run(tmp_path, p, scored)
    assert result.best == {"step": step, "value": SCORES[step]}
    assert same(loaded(result.model_dir), scored.seen[step])  # EMA weights eval scored
    assert same(weights(model), scored.seen[step])  # the model in memory too
    assert not same(scored.seen[step], scored.seen[6] if step != 6 else scored.seen[2])
    # model_raw/: the raw weights of the same step (those of its checkpoint)
    raw = tmp_path / "checkpoints" / ckpt.checkpoint_name(step) / "model"
    if raw.is_dir():  # kept only when among the newest checkpoints
        assert same(loaded(result.raw_model_dir), loaded(raw))
    assert best_dirs(tmp_path) == [ckpt.best_name(step)]
    state = ckpt.load_state(tmp_path / "checkpoints" / "step-0000006" / ckpt.STATE_FILE)
    assert state["best"] == {"step": step, "value": SCORES[step]}


def test_without_best_metric_model_dir_holds_the_last_weights(tmp_path):
    scored = Scored()
    model, result = run(tmp_path, params(), scored)
    assert result.best is None and best_dirs(tmp_path) == []
    assert same(loaded(result.model_dir), scored.seen[6]) and same(weights(model), scored.seen[6])


def test_raw_best_matches_the_raw_checkpoint(tmp_path):
    p = params(ema_decay=0.5, keep_checkpoints=10, best_metric="score")
    _, result = run(tmp_path, p, Scored())
    raw = loaded(tmp_path / "checkpoints" / "step-0000002" / "model")
    assert same(loaded(result.raw_model_dir), raw)
    assert not same(loaded(result.model_dir), raw)  # model/ is the EMA


def test_an_unknown_metric_names_the_row_keys(tmp_path):
    with pytest.raises(KeyError, match=r"'psnr'.*\['other', 'score', 'step'\]"):
        run(tmp_path, params(best_metric="psnr"), Scored())


def test_resume_after_an_interruption_keeps_the_best(tmp_path):
    """Interrupted after the checkpoint of step 3 (best: step 2, whose checkpoint is
    rotated away): the resumed run still ends with step 2's weights, as a straight run."""
    p = params(ema_decay=0.5, keep_checkpoints=1, best_metric="score")
    _, straight = run(tmp_path / "a", p, Scored())

    class Interrupt(Scored):
        def __call__(self, model, step):
            if step == 4:
                raise KeyboardInterrupt("simulated")
            return super().__call__(model, step)

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", p, Interrupt())
    assert best_dirs(tmp_path / "b") == ["best-0000002"]
    _, resumed = run(tmp_path / "b", p, Scored(), init=7)
    assert resumed.resumed_from == 3 and resumed.best == straight.best == {"step": 2, "value": 3.0}
    for name in ("model", "model_raw"):
        assert same(loaded(tmp_path / "b" / name), loaded(tmp_path / "a" / name))


def test_a_best_written_after_the_last_checkpoint_is_dropped_on_resume(tmp_path, monkeypatch):
    """Crash between writing best-0000002 and the checkpoint of step 2: the resume starts
    at step 1 with best 1, drops the orphan and chooses step 2 again."""
    p = params(best_metric="score")
    save = _Trainer.save_checkpoint

    def crash_at_2(self, curves=()):
        if self.step == 2:
            raise KeyboardInterrupt("simulated")
        save(self, curves)

    monkeypatch.setattr(_Trainer, "save_checkpoint", crash_at_2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, p, Scored())
    assert best_dirs(tmp_path) == ["best-0000001", "best-0000002"]
    monkeypatch.undo()
    scored = Scored()
    _, result = run(tmp_path, p, scored)
    assert result.resumed_from == 1 and result.best == {"step": 2, "value": 3.0}
    assert best_dirs(tmp_path) == ["best-0000002"]
    assert same(loaded(result.model_dir), scored.seen[2])


TWO_RANK = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from _write_spy import spy_on_writes
OUT, RANK = Path({out!r}), int(os.environ["RANK"])
WRITES = spy_on_writes(OUT, RANK)
import torch
from torch import nn
from echomotion.training.loop import train
from echomotion.training.params import TrainParams

x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
data = [{{"x": x[i], "y": x[i].sum(0, keepdim=True)}} for i in range(16)]
shown = {{}}

def eval_fn(model, step):
    shown[step] = [p.detach().flatten().tolist() for p in model.parameters()]
    return {{"score": {{1: 1.0, 2: 5.0, 3: 2.0, 4: 3.0}}[step]}}

torch.manual_seed(RANK)
model = nn.Linear(3, 1)
params = TrainParams(steps=4, batch_size=2, lr=0.05, checkpoint_every=1, log_every=1,
                     ema_decay=0.5, best_metric="score")
loss = lambda m, b: (nn.functional.mse_loss(m(b["x"]), b["y"]), {{}})
result = train(model, data, loss, params, out_dir=OUT, seed=0, eval_fn=eval_fn)
final = [p.detach().flatten().tolist() for p in model.parameters()]
record = {{"best": result.best, "final": final, "shown": shown, "writes": WRITES}}
Path({record!r}, f"rank{{RANK}}.json").write_text(json.dumps(record))
"""


def test_two_ranks_agree_on_the_best_and_only_rank_0_writes(tmp_path):
    out, record = tmp_path / "out", tmp_path / "record"
    record.mkdir()
    script = tmp_path / "two_rank_best.py"
    script.write_text(
        textwrap.dedent(TWO_RANK).format(tests=str(HERE), out=str(out), record=str(record))
    )
    env = os.environ | {"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(script)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["best"] for r in ranks] == [{"step": 2, "value": 5.0}] * 2
    assert ranks[0]["final"] == ranks[1]["final"] == ranks[0]["shown"]["2"]
    assert ranks[1]["shown"] == {} and ranks[1]["writes"] == []
    assert best_dirs(out) == ["best-0000002"]
