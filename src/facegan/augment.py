"""What D sees besides the plain images: batch-level tensor functions on the training device.

Instance noise (Sonderby et al. 2016; Arjovsky & Bottou 2017): Gaussian noise on every image D sees,
real and fake, whose std fades linearly to 0. While the two distributions overlap under the noise,
D cannot separate them perfectly, so G keeps getting gradients that spread its samples apart; this
is what gets a 64x64 DCGAN out of mode collapse early (docs/findings.md, "Leaving mode collapse").
"""

from __future__ import annotations

import torch


def instance_noise_std(start_std: float, fade_steps: int, step: int) -> float:
    """The noise std at `step`: start_std, falling linearly to 0 at fade_steps (0 steps = off)."""
    if fade_steps <= 0:
        return 0.0
    return start_std * max(0.0, 1.0 - step / fade_steps)


def instance_noise(batch: torch.Tensor, std: float, generator: torch.Generator, rank: int = 0,
                   world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise for D's real and for its fake inputs, each shaped like `batch` (this process's share).

    Drawn for the whole global batch and sliced by rank, as z is, so every process consumes the
    same random stream and N processes x batch B see what one process x N*B would."""
    n, channels, height, width = len(batch) * world_size, *batch.shape[1:]
    if batch.is_contiguous(memory_format=torch.channels_last) and not batch.is_contiguous():
        # Drawn into a plain (N, H, W, C) buffer and viewed as NCHW, which is channels_last memory:
        # normal_ straight into a channels_last tensor takes a strided path measured 9x slower on CPU
        # (6.1 vs 0.7 ms at 64x3x32x32), a fifth of the default recipe's 32 px step.
        draws = [torch.empty((n, height, width, channels), device=batch.device).normal_(0.0, std, generator=generator)
                 .permute(0, 3, 1, 2) for _ in range(2)]
    else:
        draws = [torch.empty((n, channels, height, width), device=batch.device).normal_(0.0, std, generator=generator)
                 for _ in range(2)]
    return draws[0][rank::world_size], draws[1][rank::world_size]


# Augmentations of the real batches (--augment): the ranges are small on purpose, so faces stay
# faces (rotation about +-10 degrees, as the course notes suggest).
BRIGHTNESS = 0.2          # add U(-0.2, 0.2) to every pixel of an image (pixels in [-1, 1], i.e. +-10% of the range)
CONTRAST = (0.8, 1.2)     # scale an image's deviation from its own mean by U(0.8, 1.2)
ROTATION_DEGREES = 10.0   # rotate by U(-10, 10) degrees about the centre
TRANSLATION = 0.0625      # shift by up to 1/16 of the side in x and y (2 px at 32)


def augment(batch: torch.Tensor, names, generator: torch.Generator, rank: int = 0,
            world_size: int = 1) -> torch.Tensor:
    """Random colour and geometry changes of a real batch (B, 3, S, S) in [-1, 1], as whole-batch
    tensor ops on its device. Every parameter is drawn for the global batch from the run's noise
    stream and sliced by rank (as flips and z are), so runs resume exactly and N x B == 1 x NB.
    "flip" is handled where batches are made (data.flip); the rest are applied here in a fixed order."""
    names = [n for n in names if n != "flip"]
    if not names:
        return batch
    total = len(batch) * world_size

    def draw(low: float, high: float) -> torch.Tensor:
        """U(low, high) per image of the global batch, this rank's share, shaped (B, 1, 1, 1)."""
        values = torch.rand(total, generator=generator, device=generator.device)[rank::world_size]
        return (low + (high - low) * values).to(batch.device, batch.dtype).view(-1, 1, 1, 1)

    out = batch
    if "brightness" in names:
        out = out + draw(-BRIGHTNESS, BRIGHTNESS)
    if "contrast" in names:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = mean + (out - mean) * draw(*CONTRAST)
    if "rotate" in names or "translate" in names:
        angle = draw(-ROTATION_DEGREES, ROTATION_DEGREES).flatten() * (torch.pi / 180) if "rotate" in names \
            else torch.zeros(len(batch), device=batch.device, dtype=batch.dtype)
        shift = [draw(-2 * TRANSLATION, 2 * TRANSLATION).flatten() if "translate" in names else torch.zeros_like(angle)
                 for _ in range(2)]  # affine_grid's coordinates span 2 per side
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([cos, -sin, shift[0]], 1), torch.stack([sin, cos, shift[1]], 1)], 1)
        grid = torch.nn.functional.affine_grid(theta.float(), list(out.shape), align_corners=False)
        # reflection: the corners a rotation uncovers repeat the background instead of going black
        out = torch.nn.functional.grid_sample(out.float(), grid, mode="bilinear", padding_mode="reflection",
                                              align_corners=False).to(batch.dtype)
    return out.clamp(-1.0, 1.0)


# DiffAugment (Zhao et al. 2020): the same random, differentiable changes applied to every image D
# sees, real and fake, in the D step and in the G step, so D cannot memorise a small data set and G's
# gradient flows through the change. The policy names and ranges are the paper's.
DIFFAUG_TRANSLATION = 0.125  # shift by up to 1/8 of the side, zeros coming in
DIFFAUG_CUTOUT = 0.5         # a zeroed square of half the side at a random place


def diff_augment(images: torch.Tensor, policies, generator: torch.Generator, rank: int = 0,
                 world_size: int = 1) -> torch.Tensor:
    """Differentiable augmentation of a batch (B, 3, S, S) in [-1, 1]; parameters drawn for the global
    batch from `generator` and sliced by rank, as every other draw of the loop is."""
    total, n, size = len(images) * world_size, len(images), images.shape[-1]

    def draw(*shape) -> torch.Tensor:
        values = torch.rand(total, *shape, generator=generator, device=generator.device)[rank::world_size]
        return values.to(images.device)

    x = images
    if "color" in policies:
        x = x + (draw(1, 1, 1) - 0.5)                                                    # brightness
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (draw(1, 1, 1) * 2) + mean                                      # saturation
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (draw(1, 1, 1) + 0.5) + mean                                    # contrast
    if "translation" in policies:
        most = int(size * DIFFAUG_TRANSLATION + 0.5)
        shift = (draw(2) * (2 * most + 1)).floor() - most                                # whole pixels
        theta = torch.zeros(n, 2, 3, device=images.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = shift * (2.0 / size)
        grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        x = torch.nn.functional.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros",
                                            align_corners=False).to(images.dtype)
    if "cutout" in policies:
        side = int(size * DIFFAUG_CUTOUT + 0.5)
        corner = (draw(2) * (size + 1 - side)).floor()                                   # top-left (y, x)
        rows = torch.arange(size, device=images.device).view(1, size, 1)
        cols = torch.arange(size, device=images.device).view(1, 1, size)
        y, x0 = corner[:, 0].view(-1, 1, 1), corner[:, 1].view(-1, 1, 1)
        inside = (rows >= y) & (rows < y + side) & (cols >= x0) & (cols < x0 + side)
        x = x * (~inside).unsqueeze(1).to(x.dtype)
    return x
