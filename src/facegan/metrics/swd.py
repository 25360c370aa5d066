"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, ProGAN), no download.

Per pyramid level (full resolution down to 16x16): 128 random 7x7 patches per image, each
normalised per colour channel over the set; 512 random unit directions (4 repeats of 128);
the 1-D Wasserstein distance of the sorted projections, averaged. Reported x1e3 per level and on
average, as in the paper. Lower is better; finer levels measure detail, the 16x16 level layout.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(images: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    kernel = (torch.outer(_BINOMIAL, _BINOMIAL) * gain).to(images)[None, None].repeat(images.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(images, (2, 2, 2, 2), mode="reflect"), kernel, groups=images.shape[1])


def laplacian_pyramid(images: torch.Tensor, min_size: int = 16) -> list[torch.Tensor]:
    """(N, C, S, S) float -> band-pass levels from S down, ending with the low-pass min_size image."""
    levels, current = [], images
    while current.shape[-1] > min_size:
        smaller = _blur(current)[:, :, ::2, ::2]
        up = torch.zeros_like(current)
        up[:, :, ::2, ::2] = smaller
        levels.append(current - _blur(up, gain=4.0))
        current = smaller
    levels.append(current)
    return levels


def _patches(level: torch.Tensor, per_image: int, size: int, generator: torch.Generator) -> torch.Tensor:
    n, c, h, w = level.shape
    ys = torch.randint(0, h - size + 1, (n, per_image), generator=generator)
    xs = torch.randint(0, w - size + 1, (n, per_image), generator=generator)
    offsets = torch.arange(size)
    rows = (ys[..., None] + offsets)[..., :, None].expand(n, per_image, size, size)
    cols = (xs[..., None] + offsets)[..., None, :].expand(n, per_image, size, size)
    batch = torch.arange(n)[:, None, None, None].expand_as(rows)
    patches = level.permute(0, 2, 3, 1)[batch, rows, cols]  # (n, per_image, size, size, c)
    return patches.reshape(n * per_image, size, size, c)


def _normalise(descriptors: torch.Tensor) -> torch.Tensor:
    """Per colour channel zero mean, unit std over all of a set's descriptors; then flatten."""
    mean = descriptors.mean(dim=(0, 1, 2), keepdim=True)
    std = descriptors.std(dim=(0, 1, 2), keepdim=True).clamp_min(1e-8)
    return ((descriptors - mean) / std).flatten(1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: int = 128, repeats: int = 4,
                       generator: torch.Generator | None = None) -> float:
    results = []
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], directions, generator=generator, dtype=a.dtype)
        dirs /= dirs.norm(dim=0, keepdim=True)
        projected_a, _ = torch.sort(a @ dirs, dim=0)
        projected_b, _ = torch.sort(b @ dirs, dim=0)
        results.append((projected_a - projected_b).abs().mean().item())
    return float(np.mean(results))


def _to_float(images) -> torch.Tensor:
    """uint8 (N, H, W, 3) or float (N, 3, H, W) -> float (N, 3, H, W) in [0, 255] for the pyramid."""
    tensor = torch.as_tensor(np.asarray(images))
    if tensor.dtype == torch.uint8:
        tensor = tensor.permute(0, 3, 1, 2)
    return tensor.float()


def swd(real, fake, patches_per_image: int = 128, patch_size: int = 7, seed: int = 0) -> dict:
    """{'levels': {resolution: swd x1e3}, 'avg': mean over levels} between two image sets of equal size."""
    real, fake = _to_float(real), _to_float(fake)
    if len(real) != len(fake):
        count = min(len(real), len(fake))
        real, fake = real[:count], fake[:count]
    generator = torch.Generator().manual_seed(seed)
    levels = {}
    for real_level, fake_level in zip(laplacian_pyramid(real), laplacian_pyramid(fake)):
        a = _normalise(_patches(real_level, patches_per_image, patch_size, generator))
        b = _normalise(_patches(fake_level, patches_per_image, patch_size, generator))
        levels[real_level.shape[-1]] = sliced_wasserstein(a, b, generator=generator) * 1e3
    return {"levels": levels, "avg": float(np.mean(list(levels.values())))}
