"""What D sees besides the plain images: batch-level tensor functions on the training device.

Instance noise (Sonderby et al. 2016; Arjovsky & Bottou 2017): Gaussian noise on every image D sees,
real and fake, whose std fades linearly to 0. While the two distributions overlap under the noise,
D cannot separate them perfectly, so G keeps getting gradients that spread its samples apart; this
is what gets a 64x64 DCGAN out of mode collapse early (README, "Leaving mode collapse").
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
    shape = (len(batch) * world_size, *batch.shape[1:])
    layout = torch.channels_last if batch.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    draws = [torch.empty(shape, device=batch.device, memory_format=layout).normal_(0.0, std, generator=generator)
             for _ in range(2)]
    return draws[0][rank::world_size], draws[1][rank::world_size]
