"""MS-SSIM (Wang et al. 2003) and sample diversity as in AC-GAN (Odena et al. 2017), no download.

Diversity is the mean MS-SSIM over random pairs of images from one set: higher means more alike,
so a generator whose pairs score far above real pairs is collapsing. As in the reference TF
implementation the 11x11 Gaussian window shrinks (with its sigma) when an image is smaller, so
32x32 and 64x64 faces get all five scales.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_K1, _K2 = 0.01, 0.03


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g /= g.sum()
    return torch.outer(g, g)[None, None].repeat(channels, 1, 1, 1)


def _ssim_terms(a: torch.Tensor, b: torch.Tensor, max_value: float):
    """Per-image mean SSIM and contrast-structure terms with a 'valid' Gaussian window."""
    size = min(11, a.shape[-1], a.shape[-2])
    window = _gaussian_window(size, 1.5 * size / 11, a.shape[1], a)

    def filt(x):
        return F.conv2d(x, window, groups=a.shape[1])

    c1, c2 = (_K1 * max_value) ** 2, (_K2 * max_value) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a ** 2
    var_b = filt(b * b) - mu_b ** 2
    cov = filt(a * b) - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    ssim = ((2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)) * cs
    return ssim.mean(dim=(1, 2, 3)), cs.mean(dim=(1, 2, 3))


def ms_ssim(a: torch.Tensor, b: torch.Tensor, max_value: float = 255.0) -> torch.Tensor:
    """MS-SSIM of image pairs (N, C, H, W) -> (N,); 1 for identical images."""
    a, b = a.double(), b.double()
    values = []
    for scale in range(len(WEIGHTS)):
        ssim, cs = _ssim_terms(a, b, max_value)
        values.append(ssim if scale == len(WEIGHTS) - 1 else cs)
        if scale < len(WEIGHTS) - 1:
            a, b = F.avg_pool2d(a, 2, ceil_mode=True), F.avg_pool2d(b, 2, ceil_mode=True)
    stacked = torch.stack(values, dim=1).clamp_min(0)  # negative structure terms carry no similarity
    weights = torch.tensor(WEIGHTS, dtype=stacked.dtype)
    return torch.prod(stacked ** weights, dim=1)


def diversity(images, pairs: int = 1000, seed: int = 0) -> float:
    """Mean MS-SSIM over random distinct pairs of a set (uint8 NHWC or float NCHW in [0, 255])."""
    tensor = torch.as_tensor(np.asarray(images))
    if tensor.dtype == torch.uint8:
        tensor = tensor.permute(0, 3, 1, 2)
    tensor = tensor.double()
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(tensor), pairs)
    second = (first + rng.integers(1, len(tensor), pairs)) % len(tensor)  # never an image with itself
    scores = [ms_ssim(tensor[first[i:i + 256]], tensor[second[i:i + 256]]) for i in range(0, pairs, 256)]
    return float(torch.cat(scores).mean())
