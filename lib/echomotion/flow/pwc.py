"""PWCLite: a small PWC-Net-style optical-flow network for grayscale echo frames.

Feature pyramid -> at each level, coarse to fine: warp the second frame's features by the
upsampled flow, build a local cost volume, estimate a residual flow, refine it with a dilated
context network -> bilinear (default) or learned convex upsampling (UnSAMFlow's
``learned_upsampler``, after RAFT) of the finest estimate to full resolution. Trained
without labels by :mod:`echomotion.flow.losses` (UnFlow/ARFlow/UnSAMFlow recipe).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import Tensor, nn

from echomotion.flow.ops import backward_warp, local_correlation, pad_to_multiple, resize_flow


def load_model(model_dir: str | Path) -> PWCLite | None:
    """The trained network, or None when ``model_dir`` holds none."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        return None
    return PWCLite.from_pretrained(model_dir).eval()


@dataclass
class PWCLiteOutput(BaseOutput):
    """``flow``: (B, 2, H, W) full-resolution flow in pixels.

    ``flows``: finest first, ``flows[0]`` is ``flow``; each (B, 2, ceil(H/s), ceil(W/s)) in
    pixels of its stride ``s``. Bilinear upsampling: then one estimate per decoded pyramid
    level at its own stride (2, 4, ... from ``output_level``). Learned upsampling: every
    decoded level's estimate upsampled by the same factor, so strides 1, 2, 4, ...
    """

    flow: Tensor
    flows: tuple[Tensor, ...]


def conv(c_in: int, c_out: int, stride: int = 1, dilation: int = 1, act: bool = True) -> nn.Module:
    """3x3 convolution keeping the size (at stride 1), optionally followed by LeakyReLU(0.1)."""
    layer = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation)
    return nn.Sequential(layer, nn.LeakyReLU(0.1)) if act else layer


class FeaturePyramid(nn.Module):
    """Two 3x3 convs per level, the first with stride 2: level ``l`` has stride ``2**(l+1)``."""

    def __init__(self, in_channels: int, channels: tuple[int, ...]):
        super().__init__()
        widths = itertools.pairwise((in_channels, *channels))
        self.levels = nn.ModuleList(
            nn.Sequential(conv(a, b, stride=2), conv(b, b)) for a, b in widths
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for level in self.levels:
            x = level(x)
            feats.append(x)
        return feats  # finest first


class FlowEstimator(nn.Module):
    """Residual flow from [cost volume, projected features, current flow]; shared by levels.

    ``connectivity`` "chain": each convolution reads the previous one. "reduce" (UnSAMFlow's
    ``FlowEstimatorReduce``): from the third on, each reads the previous two outputs
    concatenated, and so does the flow head.
    """

    def __init__(
        self, c_in: int, channels: tuple[int, ...], connectivity: Literal["chain", "reduce"]
    ):
        super().__init__()
        self.connectivity = connectivity
        if connectivity == "chain":
            widths = (c_in, *channels)
            self.body = nn.Sequential(*(conv(a, b) for a, b in itertools.pairwise(widths)))
            self.predict = conv(widths[-1], 2, act=False)
            return
        if len(channels) < 2:
            raise ValueError(f"'reduce' estimator needs 2 or more widths, got {channels}")
        pairs = [a + b for a, b in itertools.pairwise(channels)]
        inputs = (c_in, channels[0], *pairs[:-1])
        self.body = nn.ModuleList(conv(a, b) for a, b in zip(inputs, channels, strict=True))
        self.predict = conv(pairs[-1], 2, act=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.connectivity == "chain":
            hidden = self.body(x)
            return self.predict(hidden), hidden
        outs: list[Tensor] = []
        for i, layer in enumerate(self.body):
            outs.append(layer(x if i == 0 else torch.cat(outs[-2:], 1)))
        return self.predict(torch.cat(outs[-2:], 1)), outs[-1]


class ContextNetwork(nn.Module):
    """Dilated convolutions that refine a flow estimate from the estimator's last features."""

    def __init__(self, c_in: int, channels: tuple[int, ...], dilations: tuple[int, ...]):
        super().__init__()
        widths = (c_in, *channels)
        pairs = zip(itertools.pairwise(widths), dilations, strict=True)
        layers = [conv(a, b, dilation=d) for (a, b), d in pairs]
        self.body = nn.Sequential(*layers, conv(widths[-1], 2, act=False))

    def forward(self, x: Tensor, feature_layer: int | None = None) -> tuple[Tensor, Tensor | None]:
        """Flow refinement and the output of layer ``feature_layer`` (None: not kept)."""
        feature = None
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i == feature_layer:
                feature = x
        return x, feature


class ConvexUpsampler(nn.Module):
    """Learned upsampling by ``factor``: each fine vector is a softmax-weighted combination of
    the 3x3 coarse neighbours (RAFT; UnSAMFlow's ``UpFlowNetwork``), weights from features."""

    def __init__(self, c_in: int, channels: int, factor: int):
        super().__init__()
        self.factor = factor
        # both convs end in LeakyReLU, as in UnSAMFlow (its `conv` default)
        self.mask = nn.Sequential(conv(c_in, channels), conv(channels, factor * factor * 9))

    def forward(self, flow: Tensor, feature: Tensor) -> Tensor:
        """``flow`` (B, 2, h, w) in its pixels -> (B, 2, f*h, f*w) in the fine pixels."""
        b, _, h, w = flow.shape
        f = self.factor
        mask = (0.25 * self.mask(feature)).view(b, 1, 9, f, f, h, w).softmax(2)  # 0.25: UnSAMFlow
        neigh = F.unfold(f * flow, 3, padding=1).view(b, 2, 9, 1, 1, h, w)
        up = (mask * neigh).sum(2)  # (B, 2, f, f, h, w)
        return up.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, f * h, f * w)


class PWCLite(ModelMixin, ConfigMixin):
    """Coarse-to-fine flow network; ``forward(img1, img2)`` gives ``flow_12`` (see ops.py).

    Args:
        in_channels: channels of the input frames (1 for grayscale echo).
        pyramid_channels: feature channels per pyramid level, finest first; their number sets
            the coarsest stride ``2**len(pyramid_channels)`` that inputs are padded to.
        max_displacement: search radius of the cost volume, in pixels of each level.
        feature_channels: width of the 1x1 projection of each level's features into the
            shared estimator.
        estimator_channels: widths of the flow estimator's convolutions.
        context_channels: widths of the context network's convolutions.
        context_dilations: their dilations (same length as ``context_channels``).
        estimator_connectivity: "chain" or UnSAMFlow's "reduce" (see :class:`FlowEstimator`).
        output_level: finest pyramid level decoded (0: stride 2; UnSAMFlow: 1, stride 4).
        learned_upsampler: convex upsampling of each decoded level's flow by
            ``2**(output_level + 1)`` from context features; False: bilinear.
        upsampler_channels: hidden width of the learned upsampler.
        upsampler_feature_layer: index of the context layer whose output the upsampler
            reads (negative: from the last hidden layer back).
    """

    # the step counter of a scheduled training loss (losses.STEP_BUFFER) is saved with the
    # weights of such runs; it is no part of the network
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"^loss_micro_steps$"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        pyramid_channels: tuple[int, ...] = (16, 32, 48, 64),
        max_displacement: int = 3,
        feature_channels: int = 32,
        estimator_channels: tuple[int, ...] = (64, 48, 32),
        context_channels: tuple[int, ...] = (48, 48, 32, 16),
        context_dilations: tuple[int, ...] = (1, 2, 4, 8),
        estimator_connectivity: Literal["chain", "reduce"] = "chain",
        output_level: int = 0,
        learned_upsampler: bool = False,
        upsampler_channels: int = 128,
        upsampler_feature_layer: int = -1,
    ):
        super().__init__()
        self.check_config(pyramid_channels, context_channels, context_dilations, output_level)
        self.stride = 2 ** len(pyramid_channels)
        self.pyramid = FeaturePyramid(in_channels, tuple(pyramid_channels))
        self.project = nn.ModuleList(nn.Conv2d(c, feature_channels, 1) for c in pyramid_channels)
        n_cost = (2 * max_displacement + 1) ** 2
        self.estimator = FlowEstimator(
            n_cost + feature_channels + 2, tuple(estimator_channels), estimator_connectivity
        )
        self.context = ContextNetwork(
            estimator_channels[-1] + 2, tuple(context_channels), tuple(context_dilations)
        )
        self.cost_act = nn.LeakyReLU(0.1)
        self.feature_layer = upsampler_feature_layer % len(context_channels)
        self.upsampler = (
            ConvexUpsampler(
                context_channels[self.feature_layer], upsampler_channels, 2 ** (output_level + 1)
            )
            if learned_upsampler
            else None
        )
        self.reset_parameters()

    @staticmethod
    def check_config(
        pyramid: tuple[int, ...],
        context: tuple[int, ...],
        dilations: tuple[int, ...],
        output_level: int,
    ) -> None:
        """Context widths and dilations pair up; ``output_level`` is a pyramid level."""
        if len(context) != len(dilations):
            raise ValueError(
                f"context_channels {tuple(context)} and context_dilations "
                f"{tuple(dilations)} must have the same length"
            )
        if not 0 <= output_level < len(pyramid):
            raise ValueError(
                f"output_level {output_level} must be in [0, {len(pyramid) - 1}] "
                f"for {len(pyramid)} pyramid levels"
            )

    def reset_parameters(self) -> None:
        """He initialisation for LeakyReLU(0.1), zero biases, zero flow heads.

        PyTorch's default convolution init shrinks activations about threefold per layer;
        through the dozen layers before the flow heads the estimator's features start so
        small that training sat on the zero-flow plateau for ~100 steps at the default
        params, against ~40 with He init. The heads start at zero: random initial flows of
        several pixels make most pixels fail the forward-backward check, which starves the
        occlusion-masked loss.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0.1, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)
        for head in (self.estimator.predict, self.context.body[-1]):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def check_inputs(self, img1: Tensor, img2: Tensor) -> None:
        """Both frames (B, C, H, W) with the same shape and ``in_channels`` channels."""
        if img1.shape != img2.shape:
            raise ValueError(f"img1 {tuple(img1.shape)} and img2 {tuple(img2.shape)} differ")
        if img1.ndim != 4 or img1.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected (B, {self.config.in_channels}, H, W) frames, got {tuple(img1.shape)}"
            )

    def refine_level(
        self, level: int, f1: Tensor, f2: Tensor, flow: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """One coarse-to-fine step at ``level``: ``flow`` (level pixels) in, refined flow out
        with the context features the learned upsampler reads (None without it)."""
        f2_warped = backward_warp(f2, flow)
        # cosine costs: raw feature products of a fresh network are ~1e-3 and drown in the
        # other estimator inputs, which stalls early training
        cost = local_correlation(f1, f2_warped, self.config.max_displacement, cosine=True)
        cost = self.cost_act(cost)
        residual, hidden = self.estimator(torch.cat([cost, self.project[level](f1), flow], 1))
        flow = flow + residual
        layer = self.feature_layer if self.upsampler is not None else None
        refinement, feature = self.context(torch.cat([hidden, flow], 1), layer)
        return flow + refinement, feature

    def forward(self, img1: Tensor, img2: Tensor) -> PWCLiteOutput:
        """Flow from ``img1`` to ``img2`` (both (B, C, H, W) in [0, 1]), any H and W."""
        # 1. check and pad to the coarsest stride; centre intensities around zero
        self.check_inputs(img1, img2)
        h, w = img1.shape[-2:]
        pair = pad_to_multiple(torch.cat([img1, img2], 0), self.stride) * 2.0 - 1.0

        # 2. features of both frames in one pass
        feats = [f.chunk(2, dim=0) for f in self.pyramid(pair)]  # finest first

        # 3. coarse to fine: upsample the flow (x2 vectors), warp, correlate, estimate, refine
        coarsest = feats[-1][0]
        flow = coarsest.new_zeros(coarsest.shape[0], 2, *coarsest.shape[-2:])
        level_flows = []
        for level in reversed(range(self.config.output_level, len(feats))):
            f1, f2 = feats[level]
            flow, feature = self.refine_level(level, f1, f2, resize_flow(flow, f1.shape[-2:]))
            stride = 2 ** (level + 1)
            if self.upsampler is not None:  # every level's estimate, upsampled
                flow_up, stride = self.upsampler(flow, feature), stride // self.upsampler.factor
                level_flows.append(flow_up[..., : -(-h // stride), : -(-w // stride)])
            else:
                level_flows.append(flow[..., : -(-h // stride), : -(-w // stride)])
        if self.upsampler is not None:
            flows = tuple(reversed(level_flows))
            return PWCLiteOutput(flow=flows[0], flows=flows)

        # 4. full resolution: bilinear upsampling of the finest estimate, crop the padding
        full = resize_flow(flow, pair.shape[-2:])[..., :h, :w]
        return PWCLiteOutput(flow=full, flows=(full, *reversed(level_flows)))
