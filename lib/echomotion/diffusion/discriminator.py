"""The VAE's adversarial objective, as LDM's ``LPIPSWithDiscriminator`` (the loss of the
EchoNet-Synthetic VAE): L1 (+ LPIPS) + KL + a PatchGAN discriminator trained from scratch.

The shared training loop has one optimizer and ``loss_fn(model, batch)``; the GAN fits it
as follows. :class:`VAEWithDiscriminator` holds the VAE and the discriminator, and its
``forward`` (the only call a DDP wrapper synchronises) returns everything the loss needs:

- ``logits_gen``: the discriminator on the reconstruction with *detached* discriminator
  parameters (``torch.func.functional_call``), so the generator term moves only the VAE;
- ``logits_real`` / ``logits_fake``: the discriminator on the images and on the
  *detached* reconstruction, so the discriminator term moves only the discriminator.

Both terms are summed into one loss; since their gradients reach disjoint parameter sets,
one AdamW step equals the official two optimizers' steps (same lr), except that a global
``max_grad_norm`` clips over both sets together. The discriminator starts at optimizer
step ``disc_start``, read from a step counter buffer of the wrapper: it is saved in every
checkpoint's weights, so it survives a resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import nn
from torch.func import functional_call

from echomotion.diffusion.lpips import LPIPS
from echomotion.diffusion.metrics import ssim
from echomotion.diffusion.params import VAELossParams
from echomotion.training.forward import inner_module


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix; LDM's ``NLayerDiscriminator`` with BatchNorm).

    ``n_layers`` stride-2 4x4 convolutions (widths ``channels * min(2**k, 8)``), then a
    stride-1 one and a 1-channel output: one logit per overlapping patch
    ``(B, 1, h, w)``. Key layout ``main.{i}.*`` as the reference.
    """

    def __init__(self, in_channels: int = 1, channels: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for k in range(1, n_layers + 1):
            prev, mult = mult, min(2**k, 8)
            stride = 2 if k < n_layers else 1
            conv = nn.Conv2d(channels * prev, channels * mult, 4, stride, padding=1, bias=False)
            layers += [
                conv,
                nn.BatchNorm2d(channels * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(channels * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Patch logits ``(B, 1, h, w)`` of images ``(B, C, H, W)``."""
        return self.main(images)


def _init_weights(module: nn.Module) -> None:
    """pix2pix init: conv weights N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_discriminator(params: VAELossParams) -> NLayerDiscriminator:
    """The grayscale discriminator of ``params``."""
    return NLayerDiscriminator(1, params.disc_channels, params.disc_layers)


def discriminator_loss(
    logits_real: torch.Tensor, logits_fake: torch.Tensor, kind: str
) -> torch.Tensor:
    """``hinge``: ``(relu(1 - real) + relu(1 + fake)) / 2``; ``vanilla``: the softplus
    (non-saturating) form. Means over patches and images."""
    if kind == "hinge":
        return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
    if kind == "vanilla":
        return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())
    raise ValueError(f"disc_loss must be 'hinge' or 'vanilla', got {kind!r}")


def adaptive_weight(
    rec: torch.Tensor, gen: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """VQGAN's balance ``|grad rec| / (|grad gen| + 1e-4)``, gradients w.r.t. the
    decoder's last layer, clamped to ``[0, max_weight]`` and detached.

    ``torch.autograd.grad`` only reads these gradients (it does not accumulate into
    ``.grad`` nor fire DDP's reduction hooks), so each rank weighs its own batch, as the
    reference does under DDP; the later backward is what DDP averages.
    """
    g_rec = torch.autograd.grad(rec, last_layer, retain_graph=True)[0]
    g_gen = torch.autograd.grad(gen, last_layer, retain_graph=True)[0]
    weight = g_rec.norm() / (g_gen.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


@dataclass
class RoundTrip:
    """What :class:`VAEWithDiscriminator` returns for one batch."""

    images: torch.Tensor  # (B, 1, H, W) in [-1, 1], on the model's device and dtype
    posterior: DiagonalGaussianDistribution
    recon: torch.Tensor  # (B, 1, H, W), decoded from a posterior sample
    step: int  # optimizer steps done before this batch
    logits_gen: torch.Tensor | None = None  # frozen discriminator on recon
    logits_real: torch.Tensor | None = None  # discriminator on images
    logits_fake: torch.Tensor | None = None  # discriminator on recon.detach()


class VAEWithDiscriminator(nn.Module):
    """The VAE and (optionally) its discriminator, trained together by one optimizer.

    ``micro_steps`` counts training forwards; the optimizer step is that // ``grad_accum``.
    """

    def __init__(self, vae: AutoencoderKL, discriminator: nn.Module | None, grad_accum: int = 1):
        super().__init__()
        if grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
        self.vae, self.discriminator, self.grad_accum = vae, discriminator, grad_accum
        self.register_buffer("micro_steps", torch.zeros((), dtype=torch.int64))

    @property
    def step(self) -> int:
        """Optimizer steps done (as counted by training forwards)."""
        return int(self.micro_steps) // self.grad_accum

    def forward(self, images: torch.Tensor) -> RoundTrip:
        """Encode, sample the posterior, decode; then the discriminator passes."""
        # 1. step of this batch
        step = self.step
        if self.training:
            self.micro_steps += 1
        # 2. VAE round trip (the same calls and random draw as vae_loss)
        images = images.to(device=self.vae.device, dtype=self.vae.dtype)
        posterior = self.vae.encode(images).latent_dist
        recon = self.vae.decode(posterior.sample()).sample
        out = RoundTrip(images, posterior, recon, step)
        if self.discriminator is None:
            return out
        # 3. generator pass: gradients reach recon, never the discriminator
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        out.logits_gen = functional_call(self.discriminator, frozen, (recon,), strict=False)
        # 4. discriminator passes: gradients reach the discriminator, never the VAE
        out.logits_real = self.discriminator(images.detach())
        out.logits_fake = self.discriminator(recon.detach())
        return out


def vae_gan_loss(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    params: VAELossParams,
    lpips: LPIPS | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """LDM's VAE objective on ``batch["image"]`` ``(B, 1, H, W)`` -> (loss, logs).

    ``model``: a (possibly DDP-wrapped) :class:`VAEWithDiscriminator`. Terms, as means
    per element like :func:`~echomotion.diffusion.losses.vae_loss`: reconstruction
    ``rec`` (+ ``lpips_weight`` x LPIPS when ``lpips`` is given, + ``ssim_weight`` x
    (1 - SSIM)), ``kl_weight`` x KL, and from step ``disc_start`` the generator term
    ``-mean(logits_gen)`` x (adaptive weight x) ``disc_weight`` plus the discriminator loss.
    """
    # 1. round trip and discriminator passes, inside the model's forward
    out: RoundTrip = model(batch["image"])
    images, recon = out.images.float(), out.recon.float()
    # 2. reconstruction terms (the reference's "nll", logvar 0) and KL, summed in
    # vae_loss's order
    diff = recon - images
    rec = diff.abs().mean() if params.reconstruction == "l1" else diff.pow(2).mean()
    kl = out.posterior.kl().mean() / out.posterior.mean[0].numel()
    loss, nll = rec + params.kl_weight * kl, rec
    logs = {"rec": rec.item(), "kl": kl.item()}
    if lpips is not None:
        distance = lpips.to(recon.device)(recon, images).mean()
        loss, nll = loss + params.lpips_weight * distance, nll + params.lpips_weight * distance
        logs["lpips"] = distance.item()
    if params.ssim_weight > 0:
        ssim_term = 1.0 - ssim(recon, images, data_range=2.0).mean()
        loss, nll = loss + params.ssim_weight * ssim_term, nll + params.ssim_weight * ssim_term
        logs["ssim"] = 1.0 - ssim_term.item()
    # 3. adversarial terms (weight 0 before disc_start, as the reference's adopt_weight)
    if out.logits_gen is not None:
        on = 1.0 if out.step >= params.disc_start else 0.0
        gen = -out.logits_gen.float().mean()
        weight: torch.Tensor | float = params.disc_weight
        if params.disc_adaptive and on and model.training:
            last = inner_module(model).vae.decoder.conv_out.weight
            weight = adaptive_weight(nll, gen, last) * params.disc_weight
        real, fake = out.logits_real.float(), out.logits_fake.float()
        disc = discriminator_loss(real, fake, params.disc_loss)
        loss = loss + weight * on * gen + on * disc
        logs |= {"g": gen.item(), "d": disc.item(), "d_weight": float(weight) * on}
    logs["loss"] = loss.item()
    return loss, logs
