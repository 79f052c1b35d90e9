"""`python -m echomotion.cli.launch`: the command dvc.yaml starts every training stage with."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from echomotion.cli.launch import accelerate_command, parse_args
from echomotion.training.params import LaunchParams

TRAINING_STAGES = ("flow_train", "reid_train", "mafe_train", "vae_train", "mcdm_train")

# as a stage: the process state first (fresh_checkpoints), then the loop's Accelerator.
# Each rank writes its line to its own file: ranks printing to one stdout interleave.
SCRIPT = """
import sys
from pathlib import Path
from echomotion.device import process_state
from echomotion.training.loop import make_accelerator
from echomotion.training.params import TrainParams
state = process_state()
acc = make_accelerator(TrainParams(steps=1, batch_size=1, lr=1.0, checkpoint_every=1))
assert (state.process_index, state.num_processes) == (acc.process_index, acc.num_processes)
line = f"rank {acc.process_index} of {acc.num_processes} argv {sys.argv[1:]} name {__name__}"
Path(f"rank{acc.process_index}.txt").write_text(line)
"""


def rank_lines(cwd) -> list[str]:
    return [p.read_text() for p in sorted(cwd.glob("rank*.txt"))]


def launch(*args: str, cwd) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "echomotion.cli.launch", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_one_process_runs_the_script_in_the_launching_interpreter(tmp_path):
    (tmp_path / "stage.py").write_text(SCRIPT)
    done = launch("stage.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert rank_lines(tmp_path) == ["rank 0 of 1 argv [] name __main__"]


def test_two_processes_are_two_gloo_ranks_on_a_cpu(tmp_path):
    (tmp_path / "stage.py").write_text(SCRIPT)
    done = launch("--num_processes", "2", "--main_process_port", "29612", "stage.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = rank_lines(tmp_path)
    assert lines == ["rank 0 of 2 argv [] name __main__", "rank 1 of 2 argv [] name __main__"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num_processes", "0"], "greater than or equal to 1"),
        (["--num_processes", "3", "--num_machines", "2"], "multiple of num_machines"),
        (["--num_machines", "2", "--machine_rank", "2"], "below num_machines"),
        (["--mixed_precision", "fp8"], "invalid choice"),
        ([], "no such script"),
    ],
)
def test_bad_launch_settings_exit_2_with_the_reason(tmp_path, args, message):
    (tmp_path / "stage.py").write_text(SCRIPT)
    done = launch(*args, "stage.py" if args else "missing.py", cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_several_machines_become_one_accelerate_launch():
    params, precision, script = parse_args(
        ["--num_processes", "16", "--num_machines", "2", "--machine_rank", "1",
         "--main_process_ip", "10.0.0.1", "--mixed_precision", "bf16", "stages/mcdm_train.py"]
    )  # fmt: skip
    cmd = accelerate_command(params, precision, script)
    assert cmd[:4] == [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    flags = dict(zip(cmd[4:-1:2], cmd[5:-1:2], strict=True))
    assert flags == {
        "--num_processes": "16", "--num_machines": "2", "--machine_rank": "1",
        "--main_process_ip": "10.0.0.1", "--main_process_port": "29500",
        "--mixed_precision": "bf16", "--dynamo_backend": "no",
    }  # fmt: skip
    assert cmd[-1] == "stages/mcdm_train.py" and not params.is_single


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_training_stages_launch_with_their_params(stage):
    """dvc.yaml passes the stage's launch section and precision: `dvc exp run -S
    <stage>.launch.num_processes=N` is all a multi-GPU run needs."""
    cmd = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["cmd"]
    assert cmd.split() == [
        "python", "-m", "echomotion.cli.launch", f"${{{stage}.launch}}",
        "--mixed_precision", f"${{{stage}.train.mixed_precision}}", f"stages/{stage}.py",
    ]  # fmt: skip
    params = yaml.safe_load((REPO / "params.yaml").read_text())[stage]["launch"]
    assert LaunchParams(**params).is_single  # the default: one process
