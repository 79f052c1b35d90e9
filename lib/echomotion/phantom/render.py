"""B-mode rendering: reflectivity x moving speckle, depth attenuation, log compression,
inside an ultrasound sector (fan) on black.

Speckle and tissue texture live in reference coordinates and are sampled at the
backward map G_t(x) (bilinear), so they move with the tissue and optical flow is well
defined; a small weight of fresh speckle per frame decorrelates it a little over time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

from echomotion.phantom.anatomy import LABELS, REFERENCE_SIZE, Anatomy
from echomotion.phantom.identity import VideoIdentity
from echomotion.phantom.tracings import pixel_cm

SECTOR_APEX_Y = -2.0  # pixels above the top row (112 frame)
TOP_DB = 6.0  # amplitude level (dB) shown as white
TEXTURE_SIGMA = 4.0  # pixels (112 frame): scale of the tissue brightness texture
TEXTURE_STD = 0.3  # log-amplitude std of that texture
EDGE_PX = 1.0  # soft edge of the fan


@dataclass(frozen=True)
class Sector:
    """The imaging fan: apex (x, y), half opening angle (rad), radius (pixels)."""

    apex: tuple[float, float]
    half_angle: float
    radius: float

    def geometry(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(mask in [0, 1], depth in pixels) on the ``size`` x ``size`` frame."""
        yy, xx = np.mgrid[:size, :size].astype(np.float32)
        dx, dy = xx - self.apex[0], yy - self.apex[1]
        depth = np.hypot(dx, dy)
        angle = np.arctan2(dx, dy)  # 0 straight down
        side = (self.half_angle - np.abs(angle)) * depth / EDGE_PX
        bottom = (self.radius - depth) / EDGE_PX
        mask = np.clip(np.minimum(side, bottom) + 0.5, 0.0, 1.0)
        return mask.astype(np.float32), depth


def sector_for(ident: VideoIdentity, size: int) -> Sector:
    """The video's fan: apex at the top centre, ``sector_angle_deg`` wide."""
    apex_y = SECTOR_APEX_Y * size / REFERENCE_SIZE
    radius = ident.sector_depth * size - apex_y
    return Sector(((size - 1) / 2.0, apex_y), math.radians(ident.sector_angle_deg) / 2, radius)


def speckle(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...]):
    """Low-pass filtered complex Gaussian noise of unit mean power: (2, *shape) re, im.

    Its magnitude is Rayleigh distributed, like fully developed speckle.
    """
    z = rng.standard_normal((2, *shape), dtype=np.float32)
    z = np.stack([gaussian_filter(c, sigma, mode="wrap") for c in z])
    return z / np.sqrt(np.mean(z[0] ** 2 + z[1] ** 2))


def fresh_speckle(rng: np.random.Generator, shape: tuple[int, int, int], sigma) -> np.ndarray:
    """Like :func:`speckle` for a block of frames (2, T, H, W), filtered frame by frame."""
    z = rng.standard_normal((2, *shape), dtype=np.float32)
    for plane in z.reshape(-1, *shape[1:]):
        cv2.GaussianBlur(plane, (0, 0), sigmaX=sigma[1], sigmaY=sigma[0], dst=plane)
    return z / np.sqrt(np.mean(z[0] ** 2 + z[1] ** 2))


def reference_textures(
    anatomy: Anatomy, ident: VideoIdentity, size: int, rng: np.random.Generator
) -> np.ndarray:
    """(H, W, 3) float32 in reference coordinates: speckle real and imaginary parts and
    the mean echo amplitude (reflectivity times a smooth tissue texture)."""
    scale = size / REFERENCE_SIZE
    sig = (ident.speckle_sigma_axial * scale, ident.speckle_sigma_lateral * scale)
    z = speckle(rng, (size, size), sig)
    tex = gaussian_filter(rng.standard_normal((size, size)), TEXTURE_SIGMA * scale, mode="wrap")
    tex = np.exp(TEXTURE_STD * tex / tex.std())
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    _, refl = anatomy.reference_maps(xx, yy)
    return np.dstack([z[0], z[1], refl * tex]).astype(np.float32)


def _sample_textures(textures: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Textures (H, W, 3) sampled bilinearly at reference positions (T, 2, H, W):
    (3, T, H, W)."""
    out = [
        cv2.remap(textures, m[0], m[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        for m in ref.astype(np.float32)
    ]
    return np.stack(out).transpose(3, 0, 1, 2)


class Renderer:
    """Renders frames of one video from its backward displacements, block by block.

    Draws from the video's speckle generator in order, so blocks must be rendered in
    frame order. ``decorrelate=False`` renders the exact pull-back of the reference
    image (no fresh speckle), as the flow tests need.
    """

    def __init__(self, anatomy: Anatomy, ident: VideoIdentity, size: int, decorrelate: bool):
        self.ident, self.size, self.decorrelate = ident, size, decorrelate
        self.rng = np.random.default_rng(ident.speckle_seed)
        self.textures = reference_textures(anatomy, ident, size, self.rng)
        self.mask, depth = sector_for(ident, size).geometry(size)
        atten_db = ident.attenuation_db_cm * depth * pixel_cm(size)
        self.gain = (10.0 ** ((ident.gain_db - atten_db) / 20.0)).astype(np.float32)
        self.grid = np.stack(np.meshgrid(np.arange(size), np.arange(size))).astype(np.float32)

    def render(self, disp: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames and labels (T, H, W) uint8 from displacements (T, 2, H, W) and the
        blood-pool labels (T, H, W); labels outside the fan become 0."""
        # 1. moving speckle and echo amplitude sampled at G_t(x) = x + u_t(x)
        re, im, amp = _sample_textures(self.textures, disp + self.grid)
        # 2. decorrelation: blend in fresh speckle (image coordinates)
        if self.decorrelate:
            ident, scale = self.ident, self.size / REFERENCE_SIZE
            sig = (ident.speckle_sigma_axial * scale, ident.speckle_sigma_lateral * scale)
            fresh = fresh_speckle(self.rng, labels.shape, sig)
            keep, new = math.sqrt(1.0 - ident.decorrelation), math.sqrt(ident.decorrelation)
            re, im = keep * re + new * fresh[0], keep * im + new * fresh[1]
        # 3. envelope with gain and depth attenuation; 4. log compression inside the fan
        db = 20.0 * np.log10(amp * np.hypot(re, im) * self.gain + 1e-6)
        dr = self.ident.dynamic_range_db
        level = np.clip((db - TOP_DB + dr) / dr, 0.0, 1.0)
        frames = np.round(255.0 * level * self.mask).astype(np.uint8)
        labels = np.where(self.mask > 0, labels, np.uint8(LABELS["outside"])).astype(np.uint8)
        return frames, labels
