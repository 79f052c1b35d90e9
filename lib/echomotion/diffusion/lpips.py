"""LPIPS perceptual distance (Zhang et al. 2018, the VGG16 variant LDM's VAE loss uses).

The network is defined here (torchvision is not a dependency) with the layer layout of
the reference implementations, so their weights load by name:

- ``net.slice{1..5}.{i}.weight|bias``: the VGG16 ``features`` convolutions, ``i`` being
  the index in torchvision's ``vgg16().features`` (a torchvision state dict, keys
  ``features.{i}.*``, is mapped onto these names; its ``classifier.*`` is not used);
- ``lin{0..4}.model.1.weight``: the learned 1x1 heads (the ``lpips`` package's
  ``weights/v0.1/vgg.pth``).

Nothing is downloaded: :func:`load_lpips` reads one or more local files (``.safetensors``,
or a ``.pth`` state dict read with ``torch.load(weights_only=True)``) whose keys together
must be exactly the trunk and the heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

VGG16_WIDTHS = (64, 128, 256, 512, 512)
# convolutions per VGG16 stage; a stage is [max-pool,] (conv, relu) x n
_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
# the normalisation LPIPS applies to [-1, 1] inputs (ImageNet statistics, rescaled)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_OPTIONAL = ("scaling_layer.shift", "scaling_layer.scale")  # constants, checked if present


def _stage(index: int, in_ch: int, out_ch: int, first: int) -> nn.Sequential:
    """VGG16 stage ``index`` as an ``nn.Sequential`` whose child names are torchvision's
    ``features`` indices, starting at ``first``."""
    stage, i, ch = nn.Sequential(), first, in_ch
    if index > 0:
        stage.add_module(str(i), nn.MaxPool2d(kernel_size=2, stride=2))
        i += 1
    for _ in range(_CONVS_PER_STAGE[index]):
        stage.add_module(str(i), nn.Conv2d(ch, out_ch, kernel_size=3, padding=1))
        stage.add_module(str(i + 1), nn.ReLU(inplace=False))
        i, ch = i + 2, out_ch
    return stage


class VGG16Trunk(nn.Module):
    """The 5 feature slices of VGG16 (outputs relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)."""

    def __init__(self, widths: Sequence[int] = VGG16_WIDTHS):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"VGG16 has 5 stages, got widths {tuple(widths)}")
        first, in_ch = 0, 3
        for index, width in enumerate(widths):
            stage = _stage(index, in_ch, width, first)
            self.add_module(f"slice{index + 1}", stage)
            first, in_ch = first + len(stage), width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of every slice, ``(B, C_k, H / 2**k, W / 2**k)``."""
        features = []
        for index in range(1, 6):
            x = getattr(self, f"slice{index}")(x)
            features.append(x)
        return features


class _Head(nn.Module):
    """``lin{k}``: dropout (inactive in eval) then a bias-free 1x1 conv to one channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS distance between images in [-1, 1]; one value per image ``(B,)``.

    ``widths`` other than VGG16's only serve small test stand-ins.
    """

    def __init__(self, widths: Sequence[int] = VGG16_WIDTHS):
        super().__init__()
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.net = VGG16Trunk(widths)
        for k, width in enumerate(widths):
            self.add_module(f"lin{k}", _Head(width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance of ``x`` and ``y`` ``(B, 1 or 3, H, W)``; grayscale is replicated to RGB."""
        if x.shape != y.shape:
            raise ValueError(f"x and y differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        feats_x, feats_y = (self.net(self._prepare(v)) for v in (x, y))
        total = 0.0
        for k, (fx, fy) in enumerate(zip(feats_x, feats_y, strict=True)):
            diff = (_unit(fx) - _unit(fy)).pow(2)  # (B, C_k, h, w)
            total = total + getattr(self, f"lin{k}")(diff).mean(dim=(1, 2, 3))
        return total

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)  # (B, 3, H, W) grayscale as RGB
        elif images.shape[1] != 3:
            raise ValueError(f"LPIPS takes 1 or 3 channels, got {images.shape[1]}")
        return (images - self.shift.to(images.dtype)) / self.scale.to(images.dtype)


def _unit(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Features divided by their channel-wise L2 norm at each position."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weights file not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _rename(key: str, trunk_slices: dict[int, str]) -> str | None:
    """The :class:`LPIPS` name of a key of a reference file; None for unused keys."""
    if key.startswith("classifier."):
        return None  # torchvision VGG16's fully connected layers
    if key.startswith("features."):
        index = int(key.split(".")[1])
        return f"net.{trunk_slices.get(index, 'unknown')}.{key.removeprefix('features.')}"
    return key


def _check_constants(state: dict[str, torch.Tensor], origin: str) -> None:
    expected = {"scaling_layer.shift": _SHIFT, "scaling_layer.scale": _SCALE}
    for key in _OPTIONAL:
        if key in state and not torch.allclose(
            state[key].flatten().float(), torch.tensor(expected[key])
        ):
            raise ValueError(f"{origin}: {key} is {state[key].flatten().tolist()}, not LPIPS's")


def load_lpips(
    paths: str | Path | Sequence[str | Path], widths: Sequence[int] = VGG16_WIDTHS
) -> LPIPS:
    """A frozen, eval-mode :class:`LPIPS` from local weight files, merged in order
    (``widths``: VGG16's unless loading a small test stand-in).

    Raises FileNotFoundError for a missing file and ValueError when the merged keys are
    not exactly the network's (both lists printed) or a tensor has another shape.
    """
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    if not paths:
        raise ValueError("load_lpips needs at least one weights file")
    state: dict[str, torch.Tensor] = {}
    for path in map(Path, paths):
        state.update(_read_state(path))
    origin = ", ".join(map(str, paths))
    _check_constants(state, origin)
    with torch.device("meta"):
        net = LPIPS(widths)
    slices = {int(name.split(".")[1]): name.split(".")[0] for name, _ in net.net.named_parameters()}
    renamed = {_rename(k, slices): v for k, v in state.items() if k not in _OPTIONAL}
    renamed.pop(None, None)
    expected = set(net.state_dict())
    missing, unexpected = sorted(expected - renamed.keys()), sorted(renamed.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"LPIPS weights {origin} do not match the network: missing {missing}, "
            f"unexpected {unexpected}"
        )
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    wrong = [f"{k}: {tuple(v.shape)} != {tuple(shapes[k])}" for k, v in sorted(renamed.items())
             if v.shape != shapes[k]]  # fmt: skip
    if wrong:
        raise ValueError(f"LPIPS weights {origin}: {len(wrong)} tensors of other shapes: {wrong}")
    net.load_state_dict(renamed, strict=True, assign=True)
    # the non-persistent constants were built on the meta device too
    net.shift = torch.tensor(_SHIFT).view(1, 3, 1, 1)
    net.scale = torch.tensor(_SCALE).view(1, 3, 1, 1)
    return net.float().eval().requires_grad_(False)
