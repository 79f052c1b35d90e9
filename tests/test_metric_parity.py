"""The hand-written metrics agree with reference implementations: SSIM with
pytorch-msssim (a dev dependency), retrieval mAP with scikit-learn's average precision, the
Frechet distance with its closed form and with the textbook scipy ``sqrtm`` formula, the
flow loss's census distance with ARFlow's ternary transform.

They stay hand-written for reasons the references do not cover: SSIM is differentiable and
per image on any device inside training; mAP is chunked over queries with its chance level;
the Frechet distance adds a diagonal retry for singular covariances from few samples.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_msssim import ssim as reference_ssim
from scipy import linalg
from sklearn.metrics import average_precision_score

from echomotion.diffusion.metrics import ssim
from echomotion.evaluation.frechet import frechet_distance, frechet_distance_from_stats
from echomotion.reid.metrics import rank1_and_map


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_pytorch_msssim(channels: int) -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(4, channels, 40, 48, generator=g)
    noisy = (target + 0.2 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    pred = torch.cat([target[:1], noisy[1:]])  # one identical pair: SSIM 1
    ours = ssim(pred, target, data_range=1.0, window_size=11, sigma=1.5)
    ref = reference_ssim(
        pred, target, data_range=1.0, win_size=11, win_sigma=1.5, size_average=False
    )
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    assert ours[0].item() == pytest.approx(1.0, abs=1e-6)
    assert (ours[1:] < 0.9).all()


def test_map_and_rank1_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(6), 5)  # 6 identities x 5 items
    centres = rng.normal(size=(6, 16))
    emb = centres[ids] + 1.2 * rng.normal(size=(len(ids), 16))
    got = rank1_and_map(emb, ids, emb, ids, exclude_same_index=True, chunk=7)

    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = unit @ unit.T
    aps, hits = [], []
    for i in range(len(ids)):
        keep = np.arange(len(ids)) != i  # the query is not in its own gallery
        relevant = ids[keep] == ids[i]
        aps.append(average_precision_score(relevant, sim[i, keep]))
        hits.append(relevant[np.argmax(sim[i, keep])])
    assert got["mAP"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert got["rank1"] == pytest.approx(np.mean(hits), abs=1e-12)
    assert 0.0 < got["mAP"] < 1.0  # neither perfect nor empty: the comparison means something


def _textbook_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """The formula of Heusel et al. as the FID reference code writes it."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_matches_the_textbook_formula() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 8))
    b = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8)) * 0.5 + 0.3
    assert frechet_distance(a, b) == pytest.approx(_textbook_frechet(a, b), rel=1e-9)
    assert frechet_distance(a, b) > 1.0


def test_frechet_matches_the_closed_form_for_diagonal_gaussians() -> None:
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # for commuting covariances: |mu1 - mu2|^2 + sum (sqrt(var1) - sqrt(var2))^2
    exact = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    got = frechet_distance_from_stats(mu1, np.diag(var1), mu2, np.diag(var2))
    assert got == pytest.approx(exact, rel=1e-12)


def test_census_matches_the_arflow_ternary_transform_inside_the_border() -> None:
    """The census distance against ARFlow's / UnFlow's formulation (identity-kernel conv
    over 255-scaled intensities, soft ternary 0.81, soft Hamming 0.1; UnSAMFlow inherits
    it), written here from that formulation. They pad differently (zeros there, edge
    replication here), so they agree exactly on pixels farther than patch // 2 from the
    border."""
    import torch
    import torch.nn.functional as F

    from echomotion.flow.losses import census_distance

    def ternary(img: torch.Tensor, patch: int) -> torch.Tensor:
        weights = torch.eye(patch * patch).view(patch * patch, 1, patch, patch)
        intensities = img * 255
        diff = F.conv2d(intensities, weights, padding=patch // 2) - intensities
        return diff / torch.sqrt(0.81 + diff**2)

    def reference(a: torch.Tensor, b: torch.Tensor, patch: int) -> torch.Tensor:
        dist = (ternary(a, patch) - ternary(b, patch)) ** 2
        return (dist / (0.1 + dist)).mean(1, keepdim=True)

    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 24, 20, generator=gen), torch.rand(2, 1, 24, 20, generator=gen)
    for patch in (3, 7):
        r = patch // 2
        got = census_distance(a, b, patch)[..., r:-r, r:-r]
        want = reference(a, b, patch)[..., r:-r, r:-r]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
