"""MAFE, the motion-appearance feature extractor (EMA-VFI-style, grayscale).

Stage ``i`` has ``F * 2**i`` channels at stride ``2**i``; the first stages are convolutional,
the last ``len(num_heads)`` are transformer stages of windowed inter-frame attention (see
:mod:`echomotion.mafe.attention`). A coarse-to-fine head turns their features into
bidirectional flows and a blending mask, warps both frames to the middle frame and refines it.

Motion-vector width: a transformer stage with ``C`` channels emits ``motion_ratio * C`` motion
channels per frame (its blocks' motion features concatenated, each block
``motion_ratio * C / depth`` wide). :meth:`MAFE.motion_vector` pools the motion features of the
last two stages for both frames, so its width is ``2 * motion_ratio * (C[-2] + C[-1])``, and
twice that with ``flip_tta`` (the vector of the pair, then that of its 180-degree rotated copy).
At the paper's configuration (F=32, five stages, C[-2]=256, C[-1]=512) the official inference
reaches 3072 with EMA-VFI's ``motion_ratio=1`` (``motion_dims = 8F/depth, 16F/depth``) and its
fast flip test-time augmentation: ``2 TTA * 2 frames * 768``. ``motion_ratio=2`` without TTA
is the other way to 3072 (the CPU default's ratio).

``subtract_still`` (an option, off in the default and the paper preset) subtracts from the
pair's vector the mean vector of its two still pairs, each frame paired with itself: the
pooled motion features of a pair also depend on the anatomy they move. On the phantom it
takes the identity retrieval mAP of motion vectors from 0.73 to 0.26 at about the same EF
content, but the generator conditioned on it followed the driver's EF less (README,
"Disentanglement"). Like ``flip_tta`` it changes inference only, not training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import Tensor, nn

from echomotion.flow.ops import backward_warp
from echomotion.mafe.attention import MotionFormerBlock
from echomotion.mafe.heads import (
    AppearanceEmbedding,
    FlowHead,
    MotionFlowDecoder,
    RefineNet,
    conv_act,
)
from echomotion.mafe.params import MAFEModelParams, check_architecture, motion_vector_dim


def load_mafe(model_dir: str | Path) -> MAFE:
    """The trained MAFE of ``model_dir`` (save_pretrained form), in eval mode."""
    return MAFE.from_pretrained(model_dir).eval()


# The paper's configuration (EMA-VFI's F=32, depths [2,2,2,4,4], motion_ratio 1, flip
# test-time augmentation, as the paper preset): 2 x 2 frames x (256 + 512) = 3072-d.
PAPER_MAFE = MAFEModelParams(
    embed_dim=32, depths=(2, 2, 2, 4, 4), num_heads=(8, 16), motion_ratio=1, flip_tta=True
)


class CrossScalePatchEmbed(nn.Module):
    """Tokens of the first transformer stage from every conv stage, each strided to its grid."""

    def __init__(self, in_chs: list[int], out_ch: int) -> None:
        super().__init__()
        n = len(in_chs)
        self.convs = nn.ModuleList()
        for j, cin in enumerate(in_chs):
            s = 2 ** (n - j)  # stride from conv stage j (stride 2**j) to stride 2**n
            self.convs.append(nn.Conv2d(cin, in_chs[0], s + 1, s, s // 2))
        self.proj = nn.Conv2d(in_chs[0] * n, out_ch, 1)
        self.norm = nn.LayerNorm(out_ch)

    def forward(self, feats: list[Tensor]) -> Tensor:
        """Conv features (2B, C_j, H_j, W_j) -> tokens (2B, h, w, out_ch)."""
        x = self.proj(torch.cat([conv(f) for conv, f in zip(self.convs, feats, strict=True)], 1))
        return self.norm(x.permute(0, 2, 3, 1))


class OverlapPatchEmbed(nn.Module):
    """Strided 3x3 convolution to the next stage's grid, then LayerNorm over channels."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, 2, 1)
        self.norm = nn.LayerNorm(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        """(2B, C, H, W) -> tokens (2B, H/2, W/2, out_ch)."""
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class TransformerStage(nn.Module):
    """Blocks of inter-frame attention, alternating plain and shifted windows."""

    def __init__(
        self, dim: int, motion_dim: int, heads: int, depth: int, window: int, mlp_ratio: float
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            MotionFormerBlock(dim, motion_dim // depth, heads, window, j % 2 == 1, mlp_ratio)
            for j in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """tokens (2B, h, w, C) -> appearance (2B, C, h, w), motion (2B, Cm, h, w)."""
        motions = []
        for block in self.blocks:
            tokens, motion = block(tokens)
            motions.append(motion)
        appearance = self.norm(tokens).permute(0, 3, 1, 2)
        return appearance, torch.cat(motions, dim=-1).permute(0, 3, 1, 2)


def time_weighted(feat: Tensor, t: Tensor) -> Tensor:
    """Frame-stacked (2B, C, h, w) -> (B, 2C, h, w) = [t * frame 0, (1 - t) * frame 1]."""
    f0, f1 = feat.chunk(2)
    return torch.cat([t * f0, (1 - t) * f1], dim=1)


def per_frame(feat: Tensor) -> Tensor:
    """Frame-stacked (2B, ...) -> (B, 2, ...)."""
    return rearrange(feat, "(two b) ... -> b two ...", two=2)


class MAFE(ModelMixin, ConfigMixin):
    """Motion-appearance feature extractor and frame interpolator for grayscale frame pairs.

    Args mirror :class:`MAFEModelParams` (see there for meaning and defaults).
    Inputs are (B, 1, H, W) in [0, 1]; any H, W (padded to the stride internally).
    """

    @register_to_config
    def __init__(
        self,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int,
        mlp_ratio: float,
        motion_ratio: int,
        reid_dim: int,
        flip_tta: bool = False,
        subtract_still: bool = False,
    ) -> None:
        super().__init__()
        check_architecture(embed_dim, depths, num_heads, motion_ratio)
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.n_conv = len(depths) - len(num_heads)
        self.stride = 2 ** (len(depths) - 1)
        self.conv_stages = nn.ModuleList(
            self._conv_stage(dims, depths, i) for i in range(self.n_conv)
        )
        self.embeds = nn.ModuleList(
            CrossScalePatchEmbed(dims[: self.n_conv], dims[i])
            if i == self.n_conv
            else OverlapPatchEmbed(dims[i - 1], dims[i])
            for i in range(self.n_conv, len(depths))
        )
        self.stages = nn.ModuleList(
            TransformerStage(dims[i], motion_ratio * dims[i], h, depths[i], window_size, mlp_ratio)
            for i, h in zip(range(self.n_conv, len(depths)), num_heads, strict=True)
        )
        self._build_heads(dims, motion_ratio, embed_dim, reid_dim)

    @staticmethod
    def _conv_stage(dims: list[int], depths: Sequence[int], i: int) -> nn.Sequential:
        cin = 1 if i == 0 else dims[i]
        layers = [] if i == 0 else [conv_act(dims[i - 1], dims[i], stride=2)]
        layers += [conv_act(cin if j == 0 else dims[i], dims[i]) for j in range(depths[i])]
        return nn.Sequential(*layers)

    def _build_heads(self, dims: list[int], motion_ratio: int, f: int, reid_dim: int) -> None:
        t_idx = list(range(self.n_conv, len(dims)))
        feat_ch = [2 * (motion_ratio + 1) * dims[i] for i in t_idx]
        # Coarsest stage first; later heads also see warped frames, mask and flow (2+2+1+4).
        self.flow_heads = nn.ModuleList(
            FlowHead(feat_ch[k], 2 if n == 0 else 9, 4 * f, 2 ** t_idx[k])
            for n, k in enumerate(reversed(range(len(t_idx))))
        )
        self.refine = RefineNet(2 + 2 + 1 + 4 + 2 * dims[0], 2 * f)
        self.flow_decoder = MotionFlowDecoder([motion_ratio * dims[i] for i in t_idx], 4 * f)
        self.reid_head = AppearanceEmbedding(sum(dims[i] for i in t_idx[-2:]), reid_dim)

    # ----------------------------------------------------------------------------- helpers
    def check_inputs(self, img0: Tensor, img1: Tensor) -> None:
        """Both frames must be (B, 1, H, W) of the same shape."""
        if img0.ndim != 4 or img0.shape[1] != 1 or img0.shape != img1.shape:
            raise ValueError(
                f"img0 and img1 must both be (B, 1, H, W), got {tuple(img0.shape)} and "
                f"{tuple(img1.shape)}"
            )

    def pad(self, img: Tensor) -> Tensor:
        """Replicate-pad (B, 1, H, W) at the bottom/right to a multiple of the network stride."""
        h, w = img.shape[-2:]
        ph, pw = -h % self.stride, -w % self.stride
        return F.pad(img, (0, pw, 0, ph), mode="replicate") if ph or pw else img

    def extract(
        self, img0: Tensor, img1: Tensor
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Backbone on padded frames -> conv features, appearance and motion per transformer stage.

        Every tensor is frame-stacked (2B, C, h, w): rows [:B] from img0, [B:] from img1.
        """
        x = torch.cat([img0, img1], dim=0)  # (2B, 1, H, W)
        conv_feats = []
        for stage in self.conv_stages:
            x = stage(x)
            conv_feats.append(x)
        appearance, motion = [], []
        for i, (embed, stage) in enumerate(zip(self.embeds, self.stages, strict=True)):
            tokens = embed(conv_feats if i == 0 else appearance[-1])
            a, m = stage(tokens)
            appearance.append(a)
            motion.append(m)
        return conv_feats, appearance, motion

    def estimate_flow(
        self, img0: Tensor, img1: Tensor, app: list[Tensor], mot: list[Tensor], t: Tensor
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Coarse-to-fine flows (B, 4, H, W), mask logits (B, 1, H, W) and each step's blend."""
        flow = mask = None
        merged = []
        ctx = torch.cat([img0, img1], dim=1)  # later heads also see warped frames and mask
        for head, a, m in zip(self.flow_heads, app[::-1], mot[::-1], strict=True):
            feat = torch.cat([time_weighted(m, t), *a.chunk(2)], dim=1)
            if flow is None:
                flow, mask = head(feat, ctx, None)
            else:
                d_flow, d_mask = head(feat, ctx, flow)
                flow, mask = flow + d_flow, mask + d_mask
            warped0 = backward_warp(img0, flow[:, :2])
            warped1 = backward_warp(img1, flow[:, 2:])
            w = torch.sigmoid(mask)
            merged.append(w * warped0 + (1 - w) * warped1)
            ctx = torch.cat([img0, img1, warped0, warped1, mask], dim=1)
        return flow, mask, merged

    def refine_frame(
        self, img0: Tensor, img1: Tensor, feat0: Tensor, flow: Tensor, mask: Tensor, blend: Tensor
    ) -> Tensor:
        """Residual refinement of the blended frame with warped first-stage features."""
        f0, f1 = feat0.chunk(2)
        warped = [
            backward_warp(img0, flow[:, :2]),
            backward_warp(img1, flow[:, 2:]),
            backward_warp(f0, flow[:, :2]),
            backward_warp(f1, flow[:, 2:]),
        ]
        x = torch.cat([img0, img1, torch.sigmoid(mask), flow, *warped], dim=1)
        return torch.clamp(blend + self.refine(x), 0, 1)

    def pooled(self, feats: list[Tensor]) -> Tensor:
        """Global average pool of the last two stages, both frames -> (B, sum 2 * C)."""
        parts = [
            rearrange(per_frame(f.mean(dim=(-2, -1))), "b two c -> b (two c)") for f in feats[-2:]
        ]
        return torch.cat(parts, dim=1)

    # ----------------------------------------------------------------------------- public
    def forward(self, img0: Tensor, img1: Tensor, timestep: float | Tensor = 0.5) -> dict:
        """Interpolate the frame at ``timestep`` between img0 and img1 (B, 1, H, W) in [0, 1].

        Returns a dict: ``pred`` (B, 1, H, W); ``flows`` (B, 4, H, W) mid->img0 then mid->img1
        (backward warp); ``mask`` (B, 1, H, W) weight of img0 in the blend; ``merged`` blends
        of each coarse-to-fine step; ``motion_features`` / ``appearance_features`` per
        transformer stage (B, 2, C, h, w) (frame 0 attending to frame 1, then the reverse, on
        the padded grid); ``flow_from_motion`` (B, 4, H, W) decoded from motion features only;
        ``embedding_from_appearance`` (B, 2, reid_dim), one per input frame.
        """
        # 1. check inputs, pad to the network stride, broadcastable time
        self.check_inputs(img0, img1)
        h, w = img0.shape[-2:]
        x0, x1 = self.pad(img0), self.pad(img1)
        t = torch.as_tensor(timestep, dtype=img0.dtype, device=img0.device).reshape(-1, 1, 1, 1)
        # 2. motion and appearance features
        conv_feats, app, mot = self.extract(x0, x1)
        # 3. coarse-to-fine flow and mask, warp and blend, residual refinement
        flow, mask, merged = self.estimate_flow(x0, x1, app, mot, t)
        pred = self.refine_frame(x0, x1, conv_feats[0], flow, mask, merged[-1])
        # 4. auxiliary decoders: flow from motion only, embeddings from appearance only
        flow_aux = self.flow_decoder([time_weighted(m, t) for m in mot], x0.shape[-2:])
        emb = self.reid_head(per_frame(torch.cat([a.mean(dim=(-2, -1)) for a in app[-2:]], 1)))
        # 5. crop back to the input size
        return {
            "pred": pred[..., :h, :w],
            "flows": flow[..., :h, :w],
            "mask": torch.sigmoid(mask)[..., :h, :w],
            "merged": [m[..., :h, :w] for m in merged],
            "motion_features": [per_frame(m) for m in mot],
            "appearance_features": [per_frame(a) for a in app],
            "flow_from_motion": flow_aux[..., :h, :w],
            "embedding_from_appearance": emb,
        }

    def vectors(
        self, img0: Tensor, img1: Tensor, subtract_still: bool | None = None
    ) -> tuple[Tensor, Tensor]:
        """(motion (B, motion_vector_dim), appearance (B, appearance_vector_dim)) of frame
        pairs (B, 1, H, W), one backbone pass; see :meth:`motion_vector`. With
        ``subtract_still`` (``None``: the config's) the pass also holds the still pairs
        (img0, img0), (img1, img1); with ``flip_tta`` the rotated copies of all of them. The
        appearance is the original pair's."""
        self.check_inputs(img0, img1)
        n = len(img0)
        if subtract_still is None:
            subtract_still = self.config.subtract_still
        if subtract_still:  # the pair, then its two still pairs
            img0, img1 = torch.cat([img0, img0, img1]), torch.cat([img1, img0, img1])
        if self.config.flip_tta:  # EMA-VFI fast TTA: the pairs, then them rotated by 180 degrees
            img0 = torch.cat([img0, img0.flip(-2, -1)])
            img1 = torch.cat([img1, img1.flip(-2, -1)])
        _, app, mot = self.extract(self.pad(img0), self.pad(img1))
        motion = self.pooled(mot)  # (k B, D), k = 1, 2, 3 or 6
        if self.config.flip_tta:
            motion = rearrange(motion, "(tta b) d -> b (tta d)", tta=2)  # (B or 3B, 2D)
        if subtract_still:
            pair, still0, still1 = motion.chunk(3)
            motion = pair - 0.5 * (still0 + still1)
        return motion, self.pooled(app)[:n]  # appearance of the original pairs

    def motion_vector(
        self, img0: Tensor, img1: Tensor, subtract_still: bool | None = None
    ) -> Tensor:
        """Per-pair motion vector (B, motion_vector_dim): pooled motion of the last two stages.

        Order: for each of the last two transformer stages, frame 0's then frame 1's pooled
        motion features; with ``flip_tta``, that vector of the pair, then that of the pair
        rotated by 180 degrees. 3072-d at the paper's configuration (module docstring). With
        ``subtract_still`` (``None``: the config's), minus the mean of that vector for the
        still pairs (img0, img0) and (img1, img1): what the pooled features say about the
        anatomy, not its motion.
        """
        return self.vectors(img0, img1, subtract_still)[0]

    def appearance_vector(self, img0: Tensor, img1: Tensor) -> Tensor:
        """Per-pair appearance vector (B, appearance_vector_dim), laid out like motion_vector
        without TTA (the pair only)."""
        self.check_inputs(img0, img1)
        _, app, _ = self.extract(self.pad(img0), self.pad(img1))
        return self.pooled(app)

    @property
    def motion_vector_dim(self) -> int:
        """Width of :meth:`motion_vector`: 2 * motion_ratio * (C[-2] + C[-1]), twice that
        with ``flip_tta``."""
        c = self.config
        return motion_vector_dim(c.embed_dim, c.depths, c.num_heads, c.motion_ratio, c.flip_tta)

    @property
    def appearance_vector_dim(self) -> int:
        """Width of :meth:`appearance_vector`: 2 * (C[-2] + C[-1])."""
        n = len(self.config.depths)
        last = range(max(self.n_conv, n - 2), n)
        return 2 * sum(self.config.embed_dim * 2**i for i in last)

    @classmethod
    def from_params(cls, params: MAFEModelParams) -> MAFE:
        """Build an untrained MAFE from its params section."""
        return cls(**params.model_dump())
