"""Params of the evaluation models: pydantic only (validating params.yaml loads no model)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from echomotion.section import Section


class TorchScriptExtractorParams(Section):
    """A local TorchScript feature network (e.g. StyleGAN-V's Inception or I3D detector)."""

    path: str = Field(description="Local TorchScript file (torch.jit.save); a DVC dependency.")
    size: int = Field(ge=8, description="Frames are resized to size x size (299 / 224).")
    channels: Literal[1, 3] = Field(3, description="Gray frames are repeated to 3 channels.")
    value_range: Literal["unit", "byte", "symmetric"] = Field(
        "byte", description="Input scale: [0, 1], [0, 255] or [-1, 1]."
    )
    call_kwargs: dict[str, bool] = Field(
        default_factory=dict, description="Keyword flags of the call, e.g. return_features."
    )


class EFRegressorParams(Section):
    """Architecture of the EF regressor."""

    widths: tuple[int, ...] = Field((8, 16, 32), description="Channels of each (2+1)D block.")
    feature_dim: int = Field(64, ge=2, description="Penultimate width (the FVD-style features).")
    input_size: int = Field(48, ge=16, description="Frames are resized to this side first.")
    ef_mean: float = Field(55.0, description="EF (%) the output is centred on.")
    ef_std: float = Field(12.0, gt=0, description="EF (%) per unit of output.")


class LVSegmenterParams(Section):
    """Architecture of the LV segmenter (a tiny U-Net) of the LV-area EF estimator."""

    widths: tuple[int, ...] = Field((8, 16, 32), description="Channels per U-Net level.")
    input_size: int | None = Field(
        None, ge=16, description="Frames resized to this side inside the model; None: as given."
    )
