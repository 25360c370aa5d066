"""An exponential moving average of G's weights (Karras et al.; StyleGAN2-ADA's training loop), whose
samples are smoother than the raw G's. The half-life is counted in images seen, so it does not depend
on the batch size, and ramps up at the start (the average of a few hundred random steps is noise):

    half_life = min(ema_kimg * 1000, images_seen * rampup);   beta = 0.5 ** (batch / half_life)

A dozen lines of our own rather than the ema-pytorch package: that package keys its update on steps
and its own warm-up formula, and facegan needs the images-based half-life above and the average's
state inside its exact-resume checkpoints."""

from __future__ import annotations

import copy

import torch


def ema_beta(ema_kimg: float, images_seen: int, batch: int, rampup: float = 0.05) -> float:
    half_life = min(ema_kimg * 1000.0, images_seen * rampup) if rampup else ema_kimg * 1000.0
    return 0.5 ** (batch / max(half_life, 1e-8))


class GeneratorEMA:
    def __init__(self, generator: torch.nn.Module):
        self.module = copy.deepcopy(generator).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: torch.nn.Module, beta: float) -> None:
        """ema = beta * ema + (1 - beta) * G for weights; BatchNorm statistics copied (as StyleGAN2-ADA)."""
        averaged = list(self.module.parameters())
        torch._foreach_lerp_(averaged, [p.detach() for p in generator.parameters()], 1.0 - beta)
        for mine, theirs in zip(self.module.buffers(), generator.buffers()):
            mine.copy_(theirs)
