"""Training curves: running means over micro-batches and TSV files DVC can plot."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import Tensor

logger = logging.getLogger(__name__)

RESERVED = ("step", "loss", "grad_norm", "lr")


class Meter:
    """Sums of the loss, the ``loss_fn`` logs and the gradient norm since the last row."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new averaging window."""
        self.count, self.norm_count = 0, 0
        self.loss: Tensor | float = 0.0  # kept on the device: no sync per micro-batch
        self.norm: Tensor | float = 0.0
        self.logs: dict[str, float] = {}

    def add(self, loss: Tensor, logs: dict[str, float]) -> None:
        """Add one micro-batch."""
        self.count += 1
        self.loss = self.loss + loss.float()
        for key, value in logs.items():
            if key not in RESERVED:
                self.logs[key] = self.logs.get(key, 0.0) + float(value)

    def add_grad_norm(self, norm: Tensor) -> None:
        """Add the (global) gradient norm of one optimizer step."""
        self.norm_count += 1
        self.norm = self.norm + norm.float()

    def means(self, accelerator: Accelerator) -> dict[str, float]:
        """Means of the window, averaged over ranks (collective: call on every rank)."""
        keys = sorted(self.logs)
        values = [self.loss / self.count, *(self.logs[k] / self.count for k in keys)]
        if self.norm_count:
            keys.append("grad_norm")
            values.append(self.norm / self.norm_count)
        device = accelerator.device
        local = torch.stack(
            [torch.as_tensor(v, dtype=torch.float32, device=device) for v in values]
        )
        mean = accelerator.reduce(local, reduction="mean").cpu()
        return dict(zip(["loss", *keys], mean.tolist(), strict=True))


class Table:
    """A TSV file with a ``step`` column, appended row by row.

    Opening it for a run that resumes at ``step`` drops the rows written after that
    step by the interrupted run (all rows when ``step`` is 0).
    """

    def __init__(self, path: Path, step: int, enabled: bool = True):
        self.path, self.enabled = path, enabled
        self.columns: list[str] | None = None
        if enabled and path.exists():
            self._truncate(step)

    def _truncate(self, step: int) -> None:
        lines = self.path.read_text().splitlines()
        if step == 0 or not lines:
            self.path.unlink()
            return
        self.columns = lines[0].split("\t")
        kept = [line for line in lines[1:] if int(line.split("\t")[0]) <= step]
        self.path.write_text("\n".join([lines[0], *kept]) + "\n")

    def append(self, row: dict[str, float]) -> None:
        """Write ``row`` (its keys are the columns; they must stay the same)."""
        if not self.enabled:
            return
        if self.columns is not None and set(self.columns) != set(row):
            logger.warning("%s: columns changed to %s; file started anew", self.path, list(row))
            self.columns = None
        if self.columns is None:
            self.columns = list(row)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("\t".join(self.columns) + "\n")
        cells = [_cell(row[c]) for c in self.columns]
        with self.path.open("a") as f:
            f.write("\t".join(cells) + "\n")


def _cell(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.7g}"
