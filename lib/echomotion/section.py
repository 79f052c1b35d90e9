"""The base of every params model: unknown keys are errors, values read-only; and the
split names. Imported by every params module, it imports none of them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Split = Literal["TRAIN", "VAL", "TEST"]
SPLITS: tuple[Split, ...] = ("TRAIN", "VAL", "TEST")
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, values are read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)
