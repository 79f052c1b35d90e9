"""ReID appearance encoder: a small ResNet with a BNNeck (identity = video).

The encoder maps a grayscale frame to an embedding such that frames of the same video
are close and frames of different videos are far apart. It follows the "bag of tricks"
ReID baseline (Luo et al. 2019): global average pooling, a linear projection to ``D``
features (used by the triplet loss), a BatchNorm "neck" whose output (the embedding) feeds
the identity classifier and is used, L2-normalised, for retrieval and export.
"""

from __future__ import annotations

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
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths {widths} and blocks {blocks} must be non-empty, same length")
        if min(blocks) < 1 or num_identities < 1:
            raise ValueError(f"blocks {blocks} and num_identities {num_identities} must be >= 1")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        chans = (widths[0], *widths)
        self.stages = nn.Sequential(
            *[
                _stage(chans[i], chans[i + 1], blocks[i], 1 if i == 0 else 2)
                for i in range(len(blocks))
            ]
        )
        self.project = nn.Linear(widths[-1], embedding_dim)
        # BNNeck: the shift is frozen at zero so the classifier sees a centred embedding.
        self.bnneck = nn.BatchNorm1d(embedding_dim)
        self.bnneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(embedding_dim, num_identities, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def check_inputs(self, x: Tensor) -> None:
        """Raise if ``x`` is not a float (B, in_channels, H, W) batch."""
        expected = self.config.in_channels
        if x.ndim != 4 or x.shape[1] != expected:
            raise ValueError(f"expected (B, {expected}, H, W) frames, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected float frames in [0, 1], got dtype {x.dtype}")

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
