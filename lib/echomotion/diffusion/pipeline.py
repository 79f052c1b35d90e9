"""Sampling: a ``DiffusionPipeline`` that turns a reference frame and a motion vector into a video.

Long videos (more frames than the UNet's training window ``unet.config.num_frames``) are
generated as overlapping windows. Each window after the first starts ``window_overlap``
frames (or more, for the last window, which is aligned to the end) before the previous one
ends; those already generated frames are *known*: before every denoising step the known
frames of the current window are replaced by the clean known latents noised to the current
timestep (``scheduler.add_noise``, fresh noise each step, as in RePaint), so temporal
attention continues the motion from them, and after the last step they are set back to
their clean values. Every window uses the same motion. The reference latent (appearance)
depends on how the model was trained (``reference`` in the pipeline config):
``"window_start"`` (the training window started at its reference frame): the first window
starts at the reference (its frame 0 is pinned to it as a known frame) and each later window
takes its first known frame as its reference; ``"random"`` (any frame of the video was the
reference): every window uses the given reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
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
    added_time_ids,
    augment_reference,
    motion_from_driving_video,
)
from echomotion.diffusion.unet import unet_predict
from echomotion.diffusion.vae import decode_latents as decode_latent_frames
from echomotion.diffusion.vae import downsampling, encode_images, frames_to_images

Frames = np.ndarray | torch.Tensor


@dataclass
class MotionVideoPipelineOutput(BaseOutput):
    """``frames``: uint8 numpy ``(B, T, H, W)``, or latents ``(B, T, C, h, w)``."""

    frames: np.ndarray | torch.Tensor


def window_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """First frame of each window covering ``num_frames`` (the last one ends at the end)."""
    if num_frames <= window:
        return [0]
    return [*range(0, num_frames - window, window - overlap), num_frames - window]


class MotionConditionedVideoPipeline(DiffusionPipeline):
    """Reference frame (appearance) + motion vector (motion) -> echo video, via the MCDM.

    Components: ``vae`` (grayscale ``AutoencoderKL``), ``unet`` (the MCDM video UNet),
    ``scheduler`` (any diffusers scheduler with the training ``prediction_type``) and the
    optional ``mafe`` (a ``ModelMixin`` with ``motion_vector(img0, img1) -> (1, D)``) that
    extracts motion from a driving video. ``fps`` is the frame rate the model was trained at
    (the ``fps`` time id; ``None`` = unknown = 0); ``reference`` how the training windows
    related to their reference frame (see the module docstring). To reload a pipeline with a
    ``mafe``, its class must be importable from the module recorded in ``model_index.json``.
    """

    model_cpu_offload_seq = "mafe->vae->unet"
    _optional_components = ["mafe"]  # noqa: RUF012 (diffusers declares it as a class list)

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNetSpatioTemporalConditionModel,
        scheduler: SchedulerMixin,
        mafe: ModelMixin | None = None,
        fps: float | None = None,
        reference: str = "random",  # "window_start" | "random" (diffusers needs a plain type)
    ):
        super().__init__()
        if reference not in ("window_start", "random"):
            raise ValueError(f"reference must be 'window_start' or 'random', got {reference!r}")
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler, mafe=mafe)
        self.register_to_config(fps=fps, reference=reference)

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
        dim = self.unet.config.cross_attention_dim
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
    ) -> int:
        """Validate the call's arguments; return the batch size."""
        batch_size = self._reference_batch(reference)
        self._check_motion(motion, driving_video, ed, es, batch_size)
        window = self.unet.config.num_frames
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if not 0 <= window_overlap < window:
            raise ValueError(f"window_overlap ({window_overlap}) must be in [0, window={window})")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if output_type not in ("np", "latent"):
            raise ValueError(f"output_type must be 'np' or 'latent', got {output_type!r}")
        return batch_size

    # ---- conditions ---------------------------------------------------------------------

    def encode_reference(self, reference: Frames) -> torch.Tensor:
        """Scaled reference latent ``(B, C, h, w)`` from uint8 frames or a given latent."""
        device = self._execution_device
        if torch.is_tensor(reference) and reference.is_floating_point():
            return reference.to(device=device, dtype=torch.float32)
        frames = torch.as_tensor(reference)
        frames = frames[None] if frames.ndim == 2 else frames  # (B, H, W)
        return encode_images(self.vae, frames_to_images(frames)).float()

    def encode_motion(
        self,
        motion: torch.Tensor | None,
        driving_video: Frames | None,
        ed: int | None,
        es: int | None,
        batch_size: int,
    ) -> torch.Tensor:
        """Motion vectors ``(B, D)``: given, or from the driving video's ED/ES pair via ``mafe``."""
        if motion is None:
            motion = motion_from_driving_video(self.mafe, torch.as_tensor(driving_video), ed, es)
        motion = motion.to(device=self._execution_device, dtype=torch.float32)
        return motion.expand(batch_size, -1)

    # ---- denoising ----------------------------------------------------------------------

    def prepare_latents(
        self, batch_size: int, num_frames: int, latent_shape: tuple[int, int, int], generator
    ) -> torch.Tensor:
        """Initial noise ``(B, T, C, h, w)`` scaled by the scheduler's ``init_noise_sigma``."""
        shape = (batch_size, num_frames, *latent_shape)
        noise = randn_tensor(
            shape, generator=generator, device=self._execution_device, dtype=torch.float32
        )
        return noise * self.scheduler.init_noise_sigma

    def predict(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        conditions: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        guidance_scale: float,
    ) -> torch.Tensor:
        """Guided model output ``(B, T, C, h, w)``.

        With guidance, ``conditions`` is batched as [unconditional, conditional] and the
        output is ``uncond + guidance_scale * (cond - uncond)``; at scale 1 only the
        conditional branch runs.
        """
        model_input = self.scheduler.scale_model_input(latents, t)
        if guidance_scale == 1.0:
            return unet_predict(self.unet, model_input, *conditions, t)
        out = unet_predict(self.unet, torch.cat([model_input, model_input]), *conditions, t)
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
        conditions: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        num_inference_steps: int,
        guidance_scale: float,
        generator,
        known: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the scheduler over one window; ``known`` ``(B, k, C, h, w)`` pins the first k."""
        self.scheduler.set_timesteps(num_inference_steps, device=latents.device)
        for t in self.progress_bar(self.scheduler.timesteps):
            if known is not None:
                latents = self._replace_known(latents, known, t, generator)
            output = self.predict(latents, t, conditions, guidance_scale)
            latents = self.scheduler.step(output, t, latents, generator=generator).prev_sample
        if known is not None:
            latents = torch.cat([known, latents[:, known.shape[1] :]], dim=1)
        return latents

    def generate_windows(
        self,
        ref_latent: torch.Tensor,
        num_frames: int,
        window_overlap: int,
        conditions_for: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
        denoise_kwargs: dict,
    ) -> torch.Tensor:
        """Latent video ``(B, num_frames, C, h, w)`` stitched from overlapping windows.

        ``conditions_for(reference latent)`` gives a window's conditions (see :meth:`predict`).
        """
        window = self.unet.config.num_frames
        from_start = self.config.reference == "window_start"
        batch_size, latent_shape = ref_latent.shape[0], tuple(ref_latent.shape[1:])
        video = None
        for start in window_starts(num_frames, window, window_overlap):
            end = min(start + window, num_frames)
            latents = self.prepare_latents(
                batch_size, end - start, latent_shape, denoise_kwargs["generator"]
            )
            if video is None:  # first window: starts at the reference when trained so
                known = ref_latent[:, None] if from_start else None
                conditions = conditions_for(ref_latent)
                video = self.denoise(latents, conditions, known=known, **denoise_kwargs)
                continue
            known = video[:, start:]  # (B, k, C, h, w): frames already generated
            conditions = conditions_for(known[:, 0] if from_start else ref_latent)
            window_latents = self.denoise(latents, conditions, known=known, **denoise_kwargs)
            video = torch.cat([video, window_latents[:, known.shape[1] :]], dim=1)
        return video

    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 frames ``(B, T, H, W)`` of latents ``(B, T, C, h, w)``."""
        b, t = latents.shape[:2]
        frames = decode_latent_frames(self.vae, latents.flatten(0, 1))  # (B*T, H, W)
        return frames.reshape(b, t, *frames.shape[1:])

    # ---- call ---------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        reference: Frames,
        motion: torch.Tensor | None = None,
        *,
        driving_video: Frames | None = None,
        ed: int | None = None,
        es: int | None = None,
        num_frames: int | None = None,
        window_overlap: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        noise_aug_strength: float = 0.0,
        fps: float | None = None,
        generator: torch.Generator | None = None,
        output_type: Literal["np", "latent"] = "np",
        return_dict: bool = True,
    ) -> MotionVideoPipelineOutput | tuple:
        """Generate ``num_frames`` frames (default: the training window) per reference.

        Args:
            reference: uint8 frame ``(H, W)`` / frames ``(B, H, W)``, or a scaled latent
                ``(B, C, h, w)`` (float tensor).
            motion: motion vectors ``(B or 1, D)``; or give ``driving_video`` (uint8
                ``(T, H, W)``) with its ``ed`` and ``es`` frame indices, encoded by ``mafe``.
            window_overlap: known frames carried into each next window (default window // 4).
            guidance_scale: classifier-free guidance on the motion; 1 = conditional only.
            noise_aug_strength: std of noise added to the reference latent (the time id).
            fps: the ``fps`` time id (default: the pipeline's ``fps`` config, else 0).
            output_type: ``"np"`` uint8 ``(B, T, H, W)`` or ``"latent"`` ``(B, T, C, h, w)``.
        """
        # 0. defaults
        window = self.unet.config.num_frames
        num_frames = window if num_frames is None else num_frames
        window_overlap = window // 4 if window_overlap is None else window_overlap
        fps = self.config.fps if fps is None else fps

        # 1. check inputs
        batch_size = self.check_inputs(
            reference, motion, driving_video, ed, es, num_frames, window_overlap,
            guidance_scale, output_type,
        )  # fmt: skip

        # 2. encode the conditions
        ref_latent = self.encode_reference(reference)  # (B, C, h, w)
        motion = self.encode_motion(motion, driving_video, ed, es, batch_size)  # (B, D)
        if noise_aug_strength < 0:
            raise ValueError(f"noise_aug_strength must be >= 0, got {noise_aug_strength}")
        strength = torch.full((batch_size,), float(noise_aug_strength), device=ref_latent.device)
        if noise_aug_strength > 0:
            ref_latent = augment_reference(ref_latent, strength, generator)

        def conditions_for(reference_latent: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self._conditions(reference_latent, motion, strength, fps or 0.0, guidance_scale)

        # 3. denoise window by window
        latents = self.generate_windows(
            ref_latent,
            num_frames,
            window_overlap,
            conditions_for,
            {
                "num_inference_steps": num_inference_steps,
                "guidance_scale": guidance_scale,
                "generator": generator,
            },
        )

        # 4. decode
        frames = latents if output_type == "latent" else self.decode_latents(latents)
        self.maybe_free_model_hooks()
        return MotionVideoPipelineOutput(frames=frames) if return_dict else (frames,)

    @staticmethod
    def _conditions(
        ref_latent: torch.Tensor,
        motion: torch.Tensor,
        strength: torch.Tensor,
        fps: float,
        guidance_scale: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reference latent, motion, time ids), batched [uncond, cond] when guiding."""
        fps_ids = torch.full_like(strength, fps)
        cond = (ref_latent, motion, added_time_ids(fps_ids, strength, torch.zeros_like(strength)))
        if guidance_scale == 1.0:
            return cond
        uncond_ids = added_time_ids(fps_ids, strength, torch.ones_like(strength))
        return (
            torch.cat([ref_latent, ref_latent]),
            torch.cat([torch.zeros_like(motion), motion]),
            torch.cat([uncond_ids, cond[2]]),
        )
