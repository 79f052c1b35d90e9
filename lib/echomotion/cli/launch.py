"""Start a training stage on one or several processes, machines and GPUs, from its params.

    python -m echomotion.cli.launch [--num_processes N] [--num_machines M] [--machine_rank R]
        [--main_process_ip IP] [--main_process_port PORT] [--mixed_precision P] SCRIPT

dvc.yaml runs every training stage through this command with the stage's ``launch``
params (``${mcdm_train.launch}`` expands to ``--num_processes 1 --num_machines 1 ...``), so

    dvc exp run -S mcdm_train.launch.num_processes=8

trains on 8 GPUs without editing dvc.yaml. One process on one machine (the default) runs
``SCRIPT`` in this interpreter, exactly as ``python SCRIPT`` would. Otherwise this process
becomes ``accelerate launch --multi_gpu`` with the same numbers: one process per GPU on a
CUDA machine, gloo processes on a CPU-only one (the training loop's Accelerator picks the
CPU when there is no GPU). ``num_processes`` counts every process of every machine, as in
accelerate; on several machines each one runs the stage with its own ``machine_rank``
(``dvc exp run -S <stage>.launch.machine_rank=1`` on the second).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from echomotion.training.params import LaunchParams


def parse_args(argv: Sequence[str]) -> tuple[LaunchParams, str, Path]:
    """(launch params, mixed precision, script) from the command line; exits 2 on a bad one."""
    fields = LaunchParams.model_fields
    parser = argparse.ArgumentParser(
        prog="python -m echomotion.cli.launch",
        description="Run a training stage script on one or several processes.",
    )
    for name, field in fields.items():
        parser.add_argument(
            f"--{name}",
            type=type(field.default),
            default=field.default,
            help=f"{field.description} (default: {field.default})",
        )
    parser.add_argument(
        "--mixed_precision",
        choices=("no", "bf16", "fp16"),
        default="no",
        help="passed to accelerate launch; the stage's train.mixed_precision (default: no)",
    )
    parser.add_argument("script", type=Path, help="the stage script, e.g. stages/mcdm_train.py")
    args = parser.parse_args(argv)
    if not args.script.is_file():
        parser.error(f"{args.script}: no such script")
    try:
        params = LaunchParams(**{name: getattr(args, name) for name in fields})
    except ValidationError as err:
        parser.error("; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors()))
    return params, args.mixed_precision, args.script


def accelerate_command(params: LaunchParams, mixed_precision: str, script: Path) -> list[str]:
    """The ``accelerate launch`` command line of a multi-process run."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes", str(params.num_processes),
        "--num_machines", str(params.num_machines),
        "--machine_rank", str(params.machine_rank),
        "--main_process_ip", params.main_process_ip,
        "--main_process_port", str(params.main_process_port),
        "--mixed_precision", mixed_precision,
        "--dynamo_backend", "no",
        str(script),
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    params, mixed_precision, script = parse_args(sys.argv[1:] if argv is None else argv)
    if params.is_single:
        sys.argv = [str(script)]
        sys.path.insert(0, str(script.resolve().parent))
        runpy.run_path(str(script), run_name="__main__")
        return
    command = accelerate_command(params, mixed_precision, script)
    sys.stdout.flush()
    os.execv(command[0], command)  # signals (DVC's interrupt) reach accelerate directly


if __name__ == "__main__":
    main()
