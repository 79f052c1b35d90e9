"""ReID appearance encoders: a small ResNet with a BNNeck or a Siamese pair head
(identity = video).

Each encoder maps a grayscale frame to an embedding such that frames of the same video
are close and frames of different videos are far apart. Both share one ResNet trunk,
global average pooling and a linear projection to ``D`` features.

- :class:`ReIDEncoder` follows the "bag of tricks" ReID baseline (Luo et al. 2019): the
  features feed the triplet loss, a BatchNorm "neck" whose output (the embedding) feeds the
  identity classifier and is used, L2-normalised, for retrieval and export.
- :class:`SiameseReIDEncoder` follows the EchoNet-Synthetic privacy network
  (echosyn/privacy/shared.py): sigmoid features of each frame, ``|f1 - f2|`` -> linear ->
  one same/different logit. Its embedding is the sigmoid features, L2-normalised.

:func:`load_reid_encoder` loads either from a ``save_pretrained`` folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 strided) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


def _stage(in_ch: int, out_ch: int, n_blocks: int, stride: int) -> nn.Sequential:
    """``n_blocks`` basic blocks; the first one changes width and resolution."""
    blocks = [BasicBlock(in_ch, out_ch, stride)]
    blocks += [BasicBlock(out_ch, out_ch, 1) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks)


def _check_architecture(
    widths: tuple[int, ...], blocks: tuple[int, ...], num_identities: int
) -> None:
    """Raise on an empty or mismatched stage layout or a non-positive count."""
    if len(widths) != len(blocks) or not widths:
        raise ValueError(f"widths {widths} and blocks {blocks} must be non-empty, same length")
    if min(blocks) < 1 or num_identities < 1:
        raise ValueError(f"blocks {blocks} and num_identities {num_identities} must be >= 1")


def _trunk(
    in_channels: int, widths: tuple[int, ...], blocks: tuple[int, ...], stem_stride: int
) -> tuple[nn.Sequential, nn.Sequential]:
    """The stem (3x3 conv-BN-ReLU) and the residual stages of both encoders, built in this
    order (so a seeded build draws the same initial weights)."""
    stem = nn.Sequential(
        nn.Conv2d(in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    )
    chans = (widths[0], *widths)
    stages = nn.Sequential(
        *[_stage(chans[i], chans[i + 1], blocks[i], 1 if i == 0 else 2) for i in range(len(blocks))]
    )
    return stem, stages


def _check_frames(x: Tensor, in_channels: int) -> None:
    """Raise if ``x`` is not a float (B, in_channels, H, W) batch."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected (B, {in_channels}, H, W) frames, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected float frames in [0, 1], got dtype {x.dtype}")


class ReIDEncoder(ModelMixin, ConfigMixin):
    """Small ResNet + BNNeck ReID network for (B, 1, H, W) frames in [0, 1].

    Args:
        in_channels: input channels (1: grayscale).
        widths: channels of each residual stage; stages after the first halve the resolution.
        blocks: residual blocks per stage (same length as ``widths``).
        stem_stride: stride of the 3x3 stem convolution (2 halves 112 -> 56 up front).
        embedding_dim: size ``D`` of the features and of the embedding.
        num_identities: classes of the identity classifier (training videos).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        blocks: tuple[int, ...] = (1, 1, 1, 1),
        stem_stride: int = 2,
        embedding_dim: int = 128,
        num_identities: int = 2,
    ) -> None:
        super().__init__()
        widths, blocks = tuple(widths), tuple(blocks)
        _check_architecture(widths, blocks, num_identities)
        self.stem, self.stages = _trunk(in_channels, widths, blocks, stem_stride)
        self.project = nn.Linear(widths[-1], embedding_dim)
        # BNNeck: the shift is frozen at zero so the classifier sees a centred embedding.
        self.bnneck = nn.BatchNorm1d(embedding_dim)
        self.bnneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(embedding_dim, num_identities, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def check_inputs(self, x: Tensor) -> None:
        """Raise if ``x`` is not a float (B, in_channels, H, W) batch."""
        _check_frames(x, self.config.in_channels)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Return ``features`` (B, D) before the BNNeck, ``embedding`` (B, D) after it,
        and identity ``logits`` (B, num_identities)."""
        # 1. check
        self.check_inputs(x)
        # 2. convolutional trunk
        h = self.stages(self.stem(x))  # (B, C, h, w)
        # 3. global average pooling and projection
        features = self.project(h.mean(dim=(2, 3)))  # (B, D)
        # 4. BNNeck and identity classifier
        embedding = self.bnneck(features)  # (B, D)
        logits = self.classifier(embedding)  # (B, num_identities)
        return {"features": features, "embedding": embedding, "logits": logits}

    def embed(self, x: Tensor) -> Tensor:
        """L2-normalised (B, D) retrieval embedding; call ``.eval()`` first for inference."""
        return F.normalize(self.forward(x)["embedding"], dim=1)


class SiameseReIDEncoder(ModelMixin, ConfigMixin):
    """ResNet + Siamese pair head for (B, 1, H, W) frames in [0, 1] (EchoNet-Synthetic
    privacy network, echosyn/privacy/shared.py, on our trunk instead of ResNet-50).

    One branch maps a frame to ``D`` features in (0, 1) (projection, then sigmoid); a pair
    is scored by a linear layer on ``|f1 - f2|`` giving one same/different logit.

    Args:
        in_channels, widths, blocks, stem_stride, embedding_dim: as :class:`ReIDEncoder`.
        num_identities: training videos; recorded (so the export can check the identity
            table) but not used by any layer.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        blocks: tuple[int, ...] = (1, 1, 1, 1),
        stem_stride: int = 2,
        embedding_dim: int = 128,
        num_identities: int = 2,
    ) -> None:
        super().__init__()
        widths, blocks = tuple(widths), tuple(blocks)
        _check_architecture(widths, blocks, num_identities)
        self.stem, self.stages = _trunk(in_channels, widths, blocks, stem_stride)
        self.project = nn.Linear(widths[-1], embedding_dim)
        self.pair_head = nn.Linear(embedding_dim, 1)

    def branch(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) frames -> (B, D) sigmoid features of one branch."""
        _check_frames(x, self.config.in_channels)
        h = self.stages(self.stem(x))  # (B, C, h, w)
        return torch.sigmoid(self.project(h.mean(dim=(2, 3))))  # (B, D)

    def forward(self, x: Tensor, other: Tensor | None = None) -> dict[str, Tensor]:
        """Return ``features`` (B, D) of ``x``; with ``other`` (B, C, H, W) also its
        ``other_features`` and the pair ``logits`` (B,) (positive: same video). Each
        branch is its own pass, as in the official network."""
        features = self.branch(x)
        if other is None:
            return {"features": features}
        other_features = self.branch(other)
        logits = self.pair_head((features - other_features).abs()).squeeze(1)  # (B,)
        return {"features": features, "other_features": other_features, "logits": logits}

    def embed(self, x: Tensor) -> Tensor:
        """L2-normalised (B, D) retrieval embedding; call ``.eval()`` first for inference."""
        return F.normalize(self.branch(x), dim=1)


ReIDModel = ReIDEncoder | SiameseReIDEncoder
ENCODER_CLASSES: dict[str, type[ReIDEncoder] | type[SiameseReIDEncoder]] = {
    "ReIDEncoder": ReIDEncoder,
    "SiameseReIDEncoder": SiameseReIDEncoder,
}


def load_reid_encoder(model_dir: str | Path) -> ReIDModel:
    """Either encoder from its ``save_pretrained`` folder (the class named in
    ``config.json``), in eval mode."""
    name = json.loads((Path(model_dir) / "config.json").read_text())["_class_name"]
    if name not in ENCODER_CLASSES:
        raise ValueError(f"{model_dir}: unknown ReID encoder class {name!r}")
    return ENCODER_CLASSES[name].from_pretrained(model_dir).eval()
