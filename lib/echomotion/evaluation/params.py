"""Params of the evaluation models: pydantic only (validating params.yaml loads no model)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from echomotion.section import Section


class TorchScriptExtractorParams(Section):
    """A TorchScript feature network (e.g. StyleGAN-V's Inception or I3D detector): a local
    file, or a URL downloaded once into a cache (see :mod:`echomotion.evaluation.detectors`)."""

    path: str | None = Field(
        None, description="Local TorchScript file (torch.jit.save); a DVC dependency."
    )
    url: str | None = Field(
        None, description="Downloaded once into cache_dir when path is not given or missing."
    )
    sha256: str | None = Field(
        None, description="Expected SHA-256 of the file (download and cache reuse are checked)."
    )
    cache_dir: str | None = Field(
        None, description="Download cache; None: $ECHOMOTION_CACHE or ~/.cache/echomotion."
    )
    size: int | None = Field(
        ge=8,
        description="Frames are resized to size x size (299 / 224); None: passed at their own "
        "size (the StyleGAN-V detectors resize inside).",
    )
    channels: Literal[1, 3] = Field(3, description="Gray frames are repeated to 3 channels.")
    value_range: Literal["unit", "byte", "symmetric", "uint8"] = Field(
        "byte",
        description="Input scale: [0, 1], [0, 255], [-1, 1], or uint8 0..255 (StyleGAN-V).",
    )
    call_kwargs: dict[str, bool] = Field(
        default_factory=dict, description="Keyword flags of the call, e.g. return_features."
    )
    probs_kwargs: dict[str, bool] = Field(
        default_factory=dict,
        description="Keyword flags of the call that gives class probabilities (Inception "
        "Score), e.g. no_output_bias (StyleGAN-V).",
    )
    standard: bool = Field(
        False,
        description="The StyleGAN-V detector: metrics named as StyleGAN-V names them "
        "(fid50k_full, fvd2048_16f, is50k), without the extractor prefix, and Gaussians with "
        "its biased covariance.",
    )

    @model_validator(mode="after")
    def _path_or_url(self) -> TorchScriptExtractorParams:
        if self.path is None and self.url is None:
            raise ValueError("a TorchScript extractor needs a path or a url (or both)")
        return self


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
