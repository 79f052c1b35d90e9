"""Params section ``reid_export``."""

from __future__ import annotations

from pydantic import Field, model_validator

from echomotion.section import Section, Split


class ReIDExportParams(Section):
    """Stage ``reid_export``: ED/ES embeddings of triplet videos and held-out retrieval."""

    eval_splits: tuple[Split, ...] = Field(
        ..., min_length=1, description="Held-out splits scored for retrieval."
    )
    eval_frames: int = Field(
        ..., ge=2, description="Evenly spaced frames per held-out video (queries and gallery)."
    )
    pixel_size: int = Field(
        ..., ge=1, description="Raw-pixel baseline: frames average-pooled to this size."
    )
    batch_size: int = Field(..., ge=1, description="Frames per forward pass.")

    @model_validator(mode="after")
    def _check(self) -> ReIDExportParams:
        if "TRAIN" in self.eval_splits:
            raise ValueError(
                f"eval_splits {self.eval_splits} must not hold TRAIN (seen in training)"
            )
        return self
