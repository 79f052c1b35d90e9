"""Sampling: a ``DiffusionPipeline`` that turns a reference frame and a motion vector into a video.

**Windows.** A video longer than the UNet's training window (``unet.config.num_frames``) is
generated as overlapping windows, all with the same motion:

- each window after the first starts ``window_overlap`` frames before the previous one ends
  (the last window more, aligned to the end of the video);
- those already generated frames are *known*: before every denoising step they are replaced
  by their clean latents noised to the current timestep (``scheduler.add_noise``, fresh
  noise each step, as in RePaint), so temporal attention continues the motion from them;
  after the last step they are set back to their clean values.

**Reference.** The reference latent (appearance) follows how the model was trained
(``reference`` in the pipeline config):

- ``"window_start"`` (each training window started at its reference frame): the first
  window's frame 0 is pinned to the reference as a known frame, and each later window takes
  its first known frame as its reference;
- ``"random"`` (any frame of the video was the reference): every window uses the given one.

**What the config records of the training** (``model_index.json``; a saved folder needs no
side file):

- ``motion_mean``, ``motion_std``: the training set's motion statistics. The MCDM was
  trained on ``(motion - motion_mean) / motion_std``, and the pipeline normalises the raw
  motion it is given (or that ``mafe`` extracts) the same way. A model trained on raw motion
  keeps mean 0, std 1.
- ``time_ids``: ``"signals"`` (fps, noise_aug_strength and motion_dropped ids), ``"zeros"``
  (all zero, as the official code) or ``"heart_rate"`` (the signals and the heart rate in
  beats per minute; ``heart_rate`` is then the training median, used when a call gives none).
- ``condition_ef``: the token is ``[EF / 100, motion]``; each call then needs ``ef``.
- ``residual_scale``: set when the UNet denoises a window's scaled difference from its
  reference latent (``MCDMModelParams.residual``). Each window is denoised in that space,
  known frames included, and mapped back to latents; a step callback sees the residuals.
- ``cond_dropout``: the share of training samples whose motion was dropped. At 0 the
  unconditional branch never trained, so guidance (``guidance_scale != 1``) is refused.
- ``motion_tokens``: the number of cross-attention tokens the condition is cut into
  (:func:`~echomotion.diffusion.conditioning.motion_context`); pipelines saved before it
  existed load with 1, their single token.
- ``contraction``: the UNet also reads each frame's contraction (the driver's label-free
  curve, :func:`echomotion.edes.contraction_curve`, 0 at ED and 1 at ES); each call then
  needs ``contraction`` ``(B or 1, num_frames)``, and every window gets its frames' values.

**Loading.** ``save_pretrained`` also writes a loader module (:data:`LOADER_MODULE` ``.py``,
which only imports this class from the installed ``echomotion``) and records it as
``_class_name: [module, class]``, diffusers' form for a custom pipeline. So
``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` loads it in any
interpreter where ``echomotion`` is installed (diffusers asks for ``trust_remote_code``
before it imports a module from a folder). ``MotionConditionedVideoPipeline.from_pretrained
(folder)`` needs no such flag: it is that class already and does not run the folder's module.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    ModelMixin,
    SchedulerMixin,
    UNetSpatioTemporalConditionModel,
)
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from echomotion.diffusion.conditioning import (
    augment_reference,
    condition_time_ids,
    ef_token,
    from_residual,
    motion_from_driving_video,
    to_residual,
)
from echomotion.diffusion.params import (
    TimeIds,
    WindowAnchor,
    context_dim_of,
    guidance_refusal,
)
from echomotion.diffusion.unet import takes_contraction, unet_predict
from echomotion.diffusion.vae import decode_latents as decode_latent_frames
from echomotion.diffusion.vae import downsampling, encode_images, frames_to_images

Frames = np.ndarray | torch.Tensor
OutputType = Literal["np", "pt", "pil", "latent"]
OUTPUT_TYPES = ("np", "pt", "pil", "latent")
EFInput = float | Sequence[float] | np.ndarray | torch.Tensor
LOADER_MODULE = "motion_pipeline"  # stem of the loader module save_pretrained writes
LOADER_DOC = '''"""Loader of this folder for ``diffusers.DiffusionPipeline.from_pretrained``: the
pipeline class, and the modules of its components from outside diffusers (diffusers loads
a component class only from a module already imported)."""
'''


@dataclass
class MotionVideoPipelineOutput(BaseOutput):
    """``frames`` by ``output_type``: ``"np"`` uint8 numpy ``(B, T, H, W)``, ``"pt"`` the same
    as a uint8 tensor, ``"pil"`` B lists of T grayscale images, ``"latent"`` ``(B, T, C, h, w)``."""

    frames: np.ndarray | torch.Tensor | list[list[PIL.Image.Image]]


def normalize_motion(
    motion: np.ndarray | torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """Float32 ``(motion - mean) / std`` of motion ``(..., D)``, on the motion's device."""
    motion = torch.as_tensor(motion, dtype=torch.float32)
    if motion.shape[-1] != len(mean):
        raise ValueError(f"motion has {motion.shape[-1]} channels, the model takes {len(mean)}")
    return (motion - mean.to(motion.device)) / std.to(motion.device)


def window_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """First frame of each window covering ``num_frames`` (the last one ends at the end)."""
    if num_frames <= window:
        return [0]
    return [*range(0, num_frames - window, window - overlap), num_frames - window]


def default_overlap(window: int) -> int:
    """Known frames carried into each next window by default: ``window // 4``, at least one
    when the window has room for it (a ``window_start`` model needs one)."""
    return min(max(window // 4, 1), window - 1)


def per_reference(
    value: float | Sequence[float], batch_size: int, name: str, kind: str, valid
) -> torch.Tensor:
    """A per-reference scalar (EF, heart rate) as ``(batch_size,)`` float32: ``value`` is
    one number or ``batch_size`` numbers, each ``valid`` (a tensor predicate, ``kind``
    describing it); else a ValueError naming ``name``."""
    values = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if len(values) not in (1, batch_size) or not valid(values).all():
        raise ValueError(f"{name} must be 1 or {batch_size} {kind} values, got {values.tolist()}")
    return values.expand(batch_size)


def _motion_dim(width: int, tokens: int, condition_ef: bool) -> int:
    """D of the motion vectors of a UNet whose cross-attention tokens are ``width`` wide."""
    return context_dim_of(width, tokens) - int(condition_ef)


def _check_motion_stats(mean: list[float] | None, std: list[float] | None, dim: int) -> None:
    """Both or neither of ``motion_mean``/``motion_std``, ``dim`` long, std positive."""
    if (mean is None) != (std is None):
        raise ValueError("give both motion_mean and motion_std, or neither")
    if mean is None:
        return
    if not len(mean) == len(std) == dim:
        raise ValueError(
            f"motion_mean ({len(mean)}) and motion_std ({len(std)}) must have the UNet's "
            f"motion dim ({dim}) values"
        )
    if not all(s > 0 for s in std):
        raise ValueError(f"motion_std must be positive in every channel, got {list(std)}")


class MotionConditionedVideoPipeline(DiffusionPipeline):
    """Reference frame (appearance) + motion vector (motion) -> echo video, via the MCDM.

    Components: ``vae`` (grayscale ``AutoencoderKL``), ``unet`` (the MCDM video UNet),
    ``scheduler`` (any diffusers scheduler with the training ``prediction_type``) and the
    optional ``mafe`` (a ``ModelMixin`` with ``motion_vector(img0, img1) -> (1, D)``) that
    extracts motion from a driving video.

    Config (what the model was trained with; module docstring):

    - ``fps``: the frame rate, the ``fps`` time id (``None`` = unknown = 0);
    - ``reference``: how the training windows related to their reference frame;
    - ``motion_mean``, ``motion_std`` ``(D,)``: the statistics raw motion is normalised with
      (``None``: motion is taken as given);
    - ``frame_size`` ``[H, W]``: the training frames (``None``: unknown);
    - ``time_ids``, ``condition_ef`` (then the UNet's ``cross_attention_dim`` is the motion
      dim + 1), ``residual_scale`` (``None``: the UNet denoises the latents);
    - ``cond_dropout``: the share of samples trained with the motion dropped (``None``:
      unknown); at 0, guidance is refused;
    - ``motion_tokens``: the cross-attention tokens the condition is cut into (then the
      UNet's ``cross_attention_dim`` is the condition's width / K + K; 1: one token);
    - ``window_anchor``: where the training windows started, ``"any"`` frame or a
      label-free ED (``"ed"``: give the pipeline a reference frame at ED, as the sample stage
      and ``echomotion-generate`` do);
    - ``heart_rate``: with ``time_ids="heart_rate"``, the median training heart rate (bpm),
      the heart-rate id when a call gives none;
    - ``contraction``: the UNet has the per-frame contraction channel (module docstring).

    To reload a pipeline with a ``mafe`` through this class, import the ``mafe``'s module
    first (diffusers imports no module a folder names);
    ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` has the folder's
    loader module import it.
    """

    model_cpu_offload_seq = "mafe->vae->unet"
    _optional_components = ["mafe"]  # noqa: RUF012 (diffusers declares it as a class list)
    _callback_tensor_inputs = ["latents"]  # noqa: RUF012 (as diffusers' pipelines)

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNetSpatioTemporalConditionModel,
        scheduler: SchedulerMixin,
        mafe: ModelMixin | None = None,
        fps: float | None = None,
        reference: str = "random",  # "window_start" | "random" (diffusers needs a plain type)
        motion_mean: list[float] | None = None,
        motion_std: list[float] | None = None,
        frame_size: list[int] | None = None,
        time_ids: str = "signals",  # "signals" | "zeros" (diffusers needs a plain type)
        condition_ef: bool = False,
        residual_scale: float | None = None,
        cond_dropout: float | None = None,
        motion_tokens: int = 1,
        window_anchor: str = "any",  # "any" | "ed" (diffusers needs a plain type)
        heart_rate: float | None = None,
        contraction: bool = False,
    ):
        super().__init__()
        if cond_dropout is not None and not 0 <= cond_dropout <= 1:
            raise ValueError(f"cond_dropout must be in [0, 1] or None, got {cond_dropout}")
        if residual_scale is not None and not residual_scale > 0:
            raise ValueError(f"residual_scale must be positive or None, got {residual_scale}")
        if reference not in ("window_start", "random"):
            raise ValueError(f"reference must be 'window_start' or 'random', got {reference!r}")
        if window_anchor not in get_args(WindowAnchor):
            raise ValueError(
                f"window_anchor must be one of {get_args(WindowAnchor)}, got {window_anchor!r}"
            )
        if time_ids not in get_args(TimeIds):
            raise ValueError(f"time_ids must be one of {get_args(TimeIds)}, got {time_ids!r}")
        if heart_rate is not None and not heart_rate > 0:
            raise ValueError(f"heart_rate must be positive or None, got {heart_rate}")
        if bool(contraction) != takes_contraction(unet):
            raise ValueError(
                f"contraction={bool(contraction)}, but the UNet's in_channels "
                f"({unet.config.in_channels}) say {not contraction}"
            )
        width = unet.config.cross_attention_dim
        if motion_tokens < 1 or (motion_tokens > 1 and width <= motion_tokens):
            raise ValueError(
                f"motion_tokens ({motion_tokens}) does not fit the UNet's cross_attention_dim "
                f"({width})"
            )
        _check_motion_stats(
            motion_mean, motion_std, _motion_dim(width, motion_tokens, condition_ef)
        )
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler, mafe=mafe)
        self.register_to_config(
            fps=fps,
            reference=reference,
            motion_mean=None if motion_mean is None else [float(m) for m in motion_mean],
            motion_std=None if motion_std is None else [float(s) for s in motion_std],
            frame_size=None if frame_size is None else [int(n) for n in frame_size],
            time_ids=time_ids,
            condition_ef=bool(condition_ef),
            residual_scale=None if residual_scale is None else float(residual_scale),
            cond_dropout=None if cond_dropout is None else float(cond_dropout),
            motion_tokens=int(motion_tokens),
            window_anchor=window_anchor,
            heart_rate=None if heart_rate is None else float(heart_rate),
            contraction=bool(contraction),
        )

    @property
    def motion_dim(self) -> int:
        """D of the motion vectors (the condition's width, less EF when conditioned)."""
        c = self.config
        return _motion_dim(self.unet.config.cross_attention_dim, c.motion_tokens, c.condition_ef)

    # ---- saving and loading -------------------------------------------------------------

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """diffusers' ``save_pretrained`` (local folders only), plus the loader module that
        lets plain ``DiffusionPipeline.from_pretrained`` find this class (module docstring)."""
        if kwargs.get("push_to_hub"):
            raise ValueError("push_to_hub is not supported: save locally, then upload the folder")
        super().save_pretrained(save_directory, **kwargs)
        directory = Path(save_directory)
        (directory / f"{LOADER_MODULE}.py").write_text(self._loader_source())
        index = directory / self.config_name
        config = json.loads(index.read_text())
        config["_class_name"] = [LOADER_MODULE, type(self).__name__]
        index.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    def _loader_source(self) -> str:
        """Source of the loader module: imports of the components' own modules, then of
        this class."""
        modules = {type(c).__module__ for c in self.components.values() if c is not None}
        imports = [
            f"import {m}  # noqa: F401" for m in sorted(modules) if m.split(".")[0] != "diffusers"
        ]
        own = f"from {type(self).__module__} import {type(self).__name__}  # noqa: F401"
        return "\n".join([LOADER_DOC, *imports, own, ""])

    @classmethod
    def load_config(cls, *args, **kwargs) -> dict[str, Any] | tuple:
        """ConfigMixin's ``load_config``, with a ``_class_name`` that names this class through
        the loader module replaced by the plain name: ``from_pretrained`` on this class then
        uses it as it is, rather than importing the folder's module (``trust_remote_code``)."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        if config.get("_class_name") == [LOADER_MODULE, cls.__name__]:
            config["_class_name"] = cls.__name__
        return loaded

    # ---- input checks -------------------------------------------------------------------

    def _reference_batch(self, reference: Frames) -> int:
        """Batch size of ``reference``; raises naming the expected and received layouts."""
        if torch.is_tensor(reference) and reference.is_floating_point():
            channels = self.vae.config.latent_channels
            if reference.ndim != 4 or reference.shape[1] != channels:
                raise ValueError(
                    f"a latent reference must be (B, {channels}, h, w), "
                    f"got {tuple(reference.shape)}"
                )
            return reference.shape[0]
        if reference.dtype not in (np.uint8, torch.uint8) or reference.ndim not in (2, 3):
            raise ValueError(
                "reference must be uint8 (H, W) or (B, H, W) frames or a float latent, got "
                f"{reference.dtype} {tuple(reference.shape)}"
            )
        factor = downsampling(self.vae)
        if any(s % factor for s in reference.shape[-2:]):
            raise ValueError(
                f"frame size {tuple(reference.shape[-2:])} must be a multiple of {factor} "
                "(the VAE's downsampling)"
            )
        return 1 if reference.ndim == 2 else reference.shape[0]

    def _check_motion(
        self,
        motion: torch.Tensor | None,
        driving_video: Frames | None,
        ed: int | None,
        es: int | None,
        batch_size: int,
    ) -> None:
        if (motion is None) == (driving_video is None):
            raise ValueError("pass exactly one of `motion` and `driving_video`")
        dim = self.motion_dim
        if motion is not None:
            if motion.ndim != 2 or motion.shape[1] != dim or motion.shape[0] not in (1, batch_size):
                raise ValueError(
                    f"motion must be ({batch_size} or 1, {dim}), got {tuple(motion.shape)}"
                )
            return
        if self.mafe is None:
            raise ValueError("`driving_video` needs a pipeline with a `mafe` motion encoder")
        if driving_video.ndim != 3 or driving_video.dtype not in (np.uint8, torch.uint8):
            raise ValueError(
                f"driving_video must be uint8 (T, H, W), got {driving_video.dtype} "
                f"{tuple(driving_video.shape)}"
            )
        n = driving_video.shape[0]
        if ed is None or es is None or not (0 <= ed < n and 0 <= es < n):
            raise ValueError(f"ed ({ed}) and es ({es}) must index the {n} driving frames")

    def _check_ef(self, ef: EFInput | None, batch_size: int) -> None:
        """``ef`` is given exactly when the model was trained with EF, one value or
        ``batch_size`` values, finite."""
        if not self.config.condition_ef:
            if ef is not None:
                raise ValueError("`ef` given, but this pipeline was trained without EF")
            return
        if ef is None:
            raise ValueError("this pipeline was trained with EF conditioning: pass `ef` (percent)")
        per_reference(ef, batch_size, "ef", "finite", torch.isfinite)

    def check_inputs(
        self,
        reference: Frames,
        motion: torch.Tensor | None,
        driving_video: Frames | None,
        ed: int | None,
        es: int | None,
        num_frames: int,
        window_overlap: int,
        guidance_scale: float,
        output_type: str,
        latents: torch.Tensor | None = None,
        callback_inputs: Sequence[str] = (),
        ef: EFInput | None = None,
    ) -> int:
        """Validate the call's arguments; return the batch size."""
        batch_size = self._reference_batch(reference)
        self._check_motion(motion, driving_video, ed, es, batch_size)
        self._check_ef(ef, batch_size)
        window = self.unet.config.num_frames
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if not 0 <= window_overlap < window:
            raise ValueError(f"window_overlap ({window_overlap}) must be in [0, window={window})")
        if window_overlap == 0 and num_frames > window and self.config.reference == "window_start":
            raise ValueError(
                "window_overlap must be >= 1 for more frames than one window: this model "
                "(reference 'window_start') takes each later window's reference from its first "
                "known frame"
            )
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        refusal = guidance_refusal(guidance_scale, self.config.cond_dropout)
        if refusal:
            raise ValueError(f"{refusal}: use guidance_scale 1 (guidance off)")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        unknown = [k for k in callback_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {unknown} are not among "
                f"{self._callback_tensor_inputs}"
            )
        if latents is not None:
            expected = (batch_size, num_frames, *self._latent_shape(reference))
            if tuple(latents.shape) != expected:
                raise ValueError(f"latents must be {expected}, got {tuple(latents.shape)}")
        return batch_size

    def _latent_shape(self, reference: Frames) -> tuple[int, int, int]:
        """``(C, h, w)`` of the latents of a (checked) reference."""
        if torch.is_tensor(reference) and reference.is_floating_point():
            return tuple(reference.shape[1:])
        factor = downsampling(self.vae)
        h, w = reference.shape[-2:]
        return self.vae.config.latent_channels, h // factor, w // factor

    # ---- conditions ---------------------------------------------------------------------

    def encode_reference(self, reference: Frames) -> torch.Tensor:
        """Scaled reference latent ``(B, C, h, w)`` from uint8 frames or a given latent."""
        device = self._execution_device
        if torch.is_tensor(reference) and reference.is_floating_point():
            return reference.to(device=device, dtype=torch.float32)
        frames = torch.as_tensor(reference)
        frames = frames[None] if frames.ndim == 2 else frames  # (B, H, W)
        return encode_images(self.vae, frames_to_images(frames)).float()

    def normalize_motion(self, motion: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw motion ``(..., D)`` normalised with the config's training statistics (as
        float32 on its device; unchanged but for the dtype when the config has none)."""
        if self.config.motion_mean is None:
            return torch.as_tensor(motion, dtype=torch.float32)
        mean = torch.tensor(self.config.motion_mean, dtype=torch.float32)  # (D,)
        std = torch.tensor(self.config.motion_std, dtype=torch.float32)  # (D,)
        return normalize_motion(motion, mean, std)

    def encode_motion(
        self,
        motion: np.ndarray | torch.Tensor | None,
        driving_video: Frames | None,
        ed: int | None,
        es: int | None,
        batch_size: int,
        motion_normalized: bool = False,
    ) -> torch.Tensor:
        """Normalised motion vectors ``(B, D)``: the given ones (normalised here unless
        ``motion_normalized``), or those of the driving video's ED/ES pair via ``mafe``."""
        if motion is None:
            raw = motion_from_driving_video(self.mafe, torch.as_tensor(driving_video), ed, es)
            motion = self.normalize_motion(raw)
        elif not motion_normalized:
            motion = self.normalize_motion(motion)
        motion = torch.as_tensor(motion).to(device=self._execution_device, dtype=torch.float32)
        return motion.expand(batch_size, -1)

    def condition_token(self, motion: torch.Tensor, ef: EFInput | None) -> torch.Tensor:
        """The cross-attention token ``(B, D [+ 1])``: the normalised motion ``(B, D)``, with
        ``EF / 100`` first when the model was trained with EF (``ef`` in percent)."""
        if not self.config.condition_ef:
            return motion
        values = per_reference(ef, motion.shape[0], "ef", "finite", torch.isfinite)
        return ef_token(motion, values.to(motion.device))

    def heart_rate_ids(
        self, heart_rate: float | Sequence[float] | None, batch_size: int, device
    ) -> torch.Tensor | None:
        """The heart-rate ids ``(B,)`` (bpm) of a pipeline trained with
        ``time_ids="heart_rate"``: ``heart_rate`` (one or ``batch_size`` positive values),
        else the config's; ``None`` for other pipelines, which refuse a ``heart_rate``."""
        if self.config.time_ids != "heart_rate":
            if heart_rate is not None:
                raise ValueError(
                    f"`heart_rate` given, but this pipeline was trained with time_ids "
                    f"{self.config.time_ids!r}, not 'heart_rate'"
                )
            return None
        heart_rate = self.config.get("heart_rate") if heart_rate is None else heart_rate
        if heart_rate is None:
            raise ValueError("this pipeline conditions on the heart rate: pass `heart_rate` (bpm)")
        rates = per_reference(heart_rate, batch_size, "heart_rate", "positive", lambda v: v > 0)
        return rates.to(device)

    # ---- denoising ----------------------------------------------------------------------

    def contraction_ids(
        self,
        contraction: np.ndarray | torch.Tensor | None,
        batch_size: int,
        num_frames: int,
        device,
    ) -> torch.Tensor | None:
        """The per-frame contraction ``(B, num_frames)`` float32 on ``device`` for a pipeline
        with the contraction channel (``contraction`` ``(B or 1, num_frames)``, finite), else
        None; a missing or a refused ``contraction`` raises, naming the config."""
        if not self.config.get("contraction", False):
            if contraction is not None:
                raise ValueError("`contraction` given, but this pipeline was trained without it")
            return None
        if contraction is None:
            raise ValueError(
                "this pipeline conditions each frame on the driver's contraction: pass "
                "`contraction` (B or 1, num_frames), e.g. echomotion.edes.Beats.contraction_from"
            )
        curve = torch.as_tensor(contraction, dtype=torch.float32)
        if curve.ndim != 2 or curve.shape[0] not in (1, batch_size) or curve.shape[1] != num_frames:
            raise ValueError(
                f"contraction must be ({batch_size} or 1, {num_frames}), got {tuple(curve.shape)}"
            )
        if not torch.isfinite(curve).all():
            raise ValueError("contraction must be finite")
        return curve.to(device).expand(batch_size, -1)

    def prepare_latents(
        self,
        batch_size: int,
        num_frames: int,
        latent_shape: tuple[int, int, int],
        generator,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Initial noise ``(B, T, C, h, w)`` (drawn, or the given ``latents``) scaled by the
        scheduler's ``init_noise_sigma``."""
        if latents is None:
            shape = (batch_size, num_frames, *latent_shape)
            latents = randn_tensor(
                shape, generator=generator, device=self._execution_device, dtype=torch.float32
            )
        else:
            latents = latents.to(device=self._execution_device, dtype=torch.float32)
        return latents * self.scheduler.init_noise_sigma

    def predict(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        conditions: tuple[torch.Tensor | None, ...],
        guidance_scale: float,
    ) -> torch.Tensor:
        """Guided model output ``(B, T, C, h, w)``.

        With guidance, ``conditions`` is batched as [unconditional, conditional] and the
        output is ``uncond + guidance_scale * (cond - uncond)``; at scale 1 only the
        conditional branch runs.
        """
        model_input = self.scheduler.scale_model_input(latents, t)
        tokens = self.config.motion_tokens
        ref, motion, ids, contraction = conditions
        if guidance_scale == 1.0:
            return unet_predict(self.unet, model_input, ref, motion, ids, t, tokens, contraction)
        doubled = torch.cat([model_input, model_input])
        out = unet_predict(self.unet, doubled, ref, motion, ids, t, tokens, contraction)
        uncond, cond = out.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    def _replace_known(self, latents: torch.Tensor, known: torch.Tensor, t, generator):
        """Overwrite the first frames of ``latents`` with ``known`` noised to timestep ``t``."""
        noise = randn_tensor(
            known.shape, generator=generator, device=known.device, dtype=known.dtype
        )
        noised = self.scheduler.add_noise(known, noise, t.reshape(1))
        return torch.cat([noised, latents[:, known.shape[1] :]], dim=1)

    def denoise(
        self,
        latents: torch.Tensor,
        conditions: tuple[torch.Tensor | None, ...],
        num_inference_steps: int,
        guidance_scale: float,
        generator,
        known: torch.Tensor | None = None,
        step_end: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run the scheduler over one window; ``known`` ``(B, k, C, h, w)`` pins the first k;
        ``step_end(t, latents)`` after each step gives the latents to continue from."""
        self.scheduler.set_timesteps(num_inference_steps, device=latents.device)
        for t in self.scheduler.timesteps:
            if known is not None:
                latents = self._replace_known(latents, known, t, generator)
            output = self.predict(latents, t, conditions, guidance_scale)
            latents = self.scheduler.step(output, t, latents, generator=generator).prev_sample
            if step_end is not None:
                latents = step_end(t, latents)
        if known is not None:
            latents = torch.cat([known, latents[:, known.shape[1] :]], dim=1)
        return latents

    def generate_windows(
        self,
        ref_latent: torch.Tensor,
        num_frames: int,
        window_overlap: int,
        conditions_for: Callable[[torch.Tensor, int, int], tuple[torch.Tensor, ...]],
        denoise_kwargs: dict,
        latents: torch.Tensor | None = None,
        base: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Latent video ``(B, num_frames, C, h, w)`` stitched from overlapping windows.

        ``conditions_for(reference latent, start, end)`` gives the conditions (see
        :meth:`predict`) of the window of frames ``start:end``;
        ``latents`` ``(B, num_frames, C, h, w)``, if given, the initial noise (each window
        starts from its frames of it); ``base`` the clean reference latent the first
        window's residual is taken from (default ``ref_latent``; only used with
        ``residual_scale``).
        """
        base = ref_latent if base is None else base
        window = self.unet.config.num_frames
        from_start = self.config.reference == "window_start"
        batch_size, latent_shape = ref_latent.shape[0], tuple(ref_latent.shape[1:])
        video = None
        for start in window_starts(num_frames, window, window_overlap):
            end = min(start + window, num_frames)
            given = None if latents is None else latents[:, start:end]
            noise = self.prepare_latents(
                batch_size, end - start, latent_shape, denoise_kwargs["generator"], given
            )
            if video is None:  # first window: starts at the reference when trained so
                known = base[:, None] if from_start else None
                conditions = conditions_for(ref_latent, start, end)
                video = self._denoise_window(noise, conditions, known, base, denoise_kwargs)
                continue
            known = video[:, start:]  # (B, k, C, h, w): frames already generated
            window_ref = known[:, 0] if from_start else ref_latent
            window_base = known[:, 0] if from_start else base
            window_latents = self._denoise_window(
                noise, conditions_for(window_ref, start, end), known, window_base, denoise_kwargs
            )
            video = torch.cat([video, window_latents[:, known.shape[1] :]], dim=1)
        return video

    def _denoise_window(
        self,
        noise: torch.Tensor,
        conditions: tuple[torch.Tensor, ...],
        known: torch.Tensor | None,
        base: torch.Tensor,
        denoise_kwargs: dict,
    ) -> torch.Tensor:
        """:meth:`denoise` one window; with ``residual_scale``, in the residual space of
        ``base`` ``(B, C, h, w)`` (known frames mapped into it), the result mapped back."""
        scale = self.config.residual_scale
        if scale is None:
            return self.denoise(noise, conditions, known=known, **denoise_kwargs)
        known = None if known is None else to_residual(known, base, scale)
        residual = self.denoise(noise, conditions, known=known, **denoise_kwargs)
        return from_residual(residual, base, scale)

    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 frames ``(B, T, H, W)`` of latents ``(B, T, C, h, w)``."""
        b, t = latents.shape[:2]
        frames = decode_latent_frames(self.vae, latents.flatten(0, 1))  # (B*T, H, W)
        return frames.reshape(b, t, *frames.shape[1:])

    def postprocess(self, latents: torch.Tensor, output_type: OutputType):
        """The ``output_type`` frames of latents ``(B, T, C, h, w)`` (see
        :class:`MotionVideoPipelineOutput`)."""
        if output_type == "latent":
            return latents
        frames = self.decode_latents(latents)  # (B, T, H, W) uint8
        if output_type == "pt":
            return torch.from_numpy(frames)
        if output_type == "pil":
            return [[PIL.Image.fromarray(frame) for frame in video] for video in frames]
        return frames

    def _step_end(self, callback: Callable | None, tensor_inputs: Sequence[str], bar) -> Callable:
        """``(t, latents) -> latents``, run after every scheduler step: calls
        ``callback(self, step, t, {name: tensor})`` (steps counted across windows), takes
        back the ``"latents"`` of the dict it returns, and advances the progress ``bar``."""
        steps = itertools.count()

        def step_end(t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
            step = next(steps)
            if callback is not None:
                tensors = {"latents": latents}
                outputs = callback(self, step, t, {k: tensors[k] for k in tensor_inputs})
                latents = outputs.pop("latents", latents)
            bar.update()
            return latents

        return step_end

    # ---- call ---------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        reference: Frames,
        motion: np.ndarray | torch.Tensor | None = None,
        *,
        motion_normalized: bool = False,
        driving_video: Frames | None = None,
        ed: int | None = None,
        es: int | None = None,
        num_frames: int | None = None,
        window_overlap: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        noise_aug_strength: float = 0.0,
        fps: float | None = None,
        heart_rate: float | Sequence[float] | None = None,
        contraction: np.ndarray | torch.Tensor | None = None,
        ef: EFInput | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: OutputType = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict[str, torch.Tensor]] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> MotionVideoPipelineOutput | tuple:
        """Generate ``num_frames`` frames (default: the training window) per reference.

        Args:
            reference: uint8 frame ``(H, W)`` / frames ``(B, H, W)``, or a scaled latent
                ``(B, C, h, w)`` (float tensor).
            motion: motion vectors ``(B or 1, D)``; or give ``driving_video`` (uint8
                ``(T, H, W)``) with its ``ed`` and ``es`` frame indices, encoded by ``mafe``.
            motion_normalized: False: ``motion`` is raw (as MAFE gives it) and is normalised
                with the config's ``motion_mean``/``motion_std``; True: it is normalised
                already and used as it is. Motion from ``driving_video`` is always normalised.
            window_overlap: known frames carried into each next window (default window // 4, at
                least 1 when the window has 2 frames or more).
            guidance_scale: classifier-free guidance on the motion; 1 = conditional only.
            noise_aug_strength: std of noise added to the reference latent (the time id).
            fps: the ``fps`` time id (default: the pipeline's ``fps`` config, else 0; unused
                with ``time_ids="zeros"``).
            heart_rate: beats per minute of the motion to draw, one or per reference, the
                heart-rate id of a pipeline trained with ``time_ids="heart_rate"`` (default:
                the config's ``heart_rate``, the training median; the sample stage and
                ``echomotion-generate`` give the driving video's, from its label-free ED
                frames); refused by other pipelines.
            contraction: each frame's contraction ``(B or 1, num_frames)`` (0 at ED, 1 at
                ES: the driver's :func:`echomotion.edes.contraction_curve` at the frames to
                draw), required by (and only accepted by) a pipeline whose config has
                ``contraction``.
            ef: ejection fraction(s) in percent, one or per reference: required by (and only
                accepted by) a pipeline trained with ``condition_ef``.
            generator: the source of every random draw (initial noise, the noise of the
                known frames of later windows, stochastic schedulers).
            latents: initial noise ``(B, num_frames, C, h, w)`` (unscaled, as drawn) in place
                of drawing it; each window starts from its frames.
            output_type: ``"np"`` uint8 ``(B, T, H, W)``, ``"pt"`` the same as a tensor,
                ``"pil"`` B lists of T images, ``"latent"`` ``(B, T, C, h, w)``.
            callback_on_step_end: ``callback(pipe, step, timestep, tensors) -> dict`` after
                every scheduler step (``step`` counts across windows); ``tensors`` holds the
                ``callback_on_step_end_tensor_inputs`` (of ``"latents"``, the current
                window's ``(B, t, C, h, w)``, residuals with ``residual_scale``); a ``"latents"`` it
                returns replaces them.
        """
        # 0. defaults
        window = self.unet.config.num_frames
        num_frames = window if num_frames is None else num_frames
        window_overlap = default_overlap(window) if window_overlap is None else window_overlap
        fps = self.config.fps if fps is None else fps

        # 1. check inputs
        batch_size = self.check_inputs(
            reference, motion, driving_video, ed, es, num_frames, window_overlap,
            guidance_scale, output_type, latents, callback_on_step_end_tensor_inputs, ef,
        )  # fmt: skip

        # 2. encode the conditions
        ref_latent = self.encode_reference(reference)  # (B, C, h, w)
        motion = self.encode_motion(
            motion, driving_video, ed, es, batch_size, motion_normalized
        )  # (B, D)
        motion = self.condition_token(motion, ef)  # (B, D [+ 1])
        rates = self.heart_rate_ids(heart_rate, batch_size, ref_latent.device)  # (B,) | None
        curves = self.contraction_ids(contraction, batch_size, num_frames, ref_latent.device)
        if noise_aug_strength < 0:
            raise ValueError(f"noise_aug_strength must be >= 0, got {noise_aug_strength}")
        strength = torch.full((batch_size,), float(noise_aug_strength), device=ref_latent.device)
        clean_ref = ref_latent
        if noise_aug_strength > 0:
            ref_latent = augment_reference(ref_latent, strength, generator)

        def conditions_for(reference_latent: torch.Tensor, start: int, end: int):
            return self._conditions(
                reference_latent, motion, strength, fps or 0.0, guidance_scale,
                self.config.time_ids, rates, None if curves is None else curves[:, start:end],
            )  # fmt: skip

        # 3. denoise window by window, one progress bar over every step
        self.scheduler.set_timesteps(num_inference_steps, device=ref_latent.device)  # to count
        windows = len(window_starts(num_frames, window, window_overlap))
        with self.progress_bar(total=windows * len(self.scheduler.timesteps)) as bar:
            step_end = self._step_end(callback_on_step_end, callback_on_step_end_tensor_inputs, bar)
            latents = self.generate_windows(
                ref_latent,
                num_frames,
                window_overlap,
                conditions_for,
                {
                    "num_inference_steps": num_inference_steps,
                    "guidance_scale": guidance_scale,
                    "generator": generator,
                    "step_end": step_end,
                },
                latents,
                base=clean_ref,
            )

        # 4. decode
        frames = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        return MotionVideoPipelineOutput(frames=frames) if return_dict else (frames,)

    @staticmethod
    def _conditions(
        ref_latent: torch.Tensor,
        motion: torch.Tensor,
        strength: torch.Tensor,
        fps: float,
        guidance_scale: float,
        time_ids: str = "signals",
        heart_rate: torch.Tensor | None = None,
        contraction: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(reference latent, motion, time ids, contraction or None), batched [uncond, cond]
        when guiding; the unconditional branch zeroes the whole token (EF included) and the
        contraction ``(B, T)``, as training's dropout, and keeps the heart rate (``(B,)``,
        with ``time_ids="heart_rate"``), as training keeps it when the motion is dropped."""
        fps_ids = torch.full_like(strength, fps)
        kept, dropped = torch.zeros_like(strength), torch.ones_like(strength)
        ids = condition_time_ids(time_ids, fps_ids, strength, kept, heart_rate)
        cond = (ref_latent, motion, ids, contraction)
        if guidance_scale == 1.0:
            return cond
        uncond_ids = condition_time_ids(time_ids, fps_ids, strength, dropped, heart_rate)
        return (
            torch.cat([ref_latent, ref_latent]),
            torch.cat([torch.zeros_like(motion), motion]),
            torch.cat([uncond_ids, ids]),
            None
            if contraction is None
            else torch.cat([torch.zeros_like(contraction), contraction]),
        )
