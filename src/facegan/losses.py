"""GAN losses as objects with a D phase and a G phase, so a new loss never touches the training loop.

All take D's raw logits in any shape with one value per image: (N,), (N, 1) or (N, 1, 1, 1).
`score` maps logits to the number logged as D(x) / D(G(z)): a probability for BCE, the raw output
otherwise. `real_loss` / `fake_loss` are the course notebooks' helpers, for hand-written loops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import FaceganError


class GANLoss:
    def __init__(self, real_label: float = 1.0):
        self.real_label = real_label  # D's target for real images; < 1 is one-sided label smoothing

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return self._d_loss(real_logits.reshape(-1), fake_logits.reshape(-1))

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return self._g_loss(fake_logits.reshape(-1))

    def _d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:  # both (N,)
        raise NotImplementedError

    def _g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:  # (N,)
        raise NotImplementedError

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def d_loss_floor(self) -> float | None:
        """The lowest D loss a perfect discriminator reaches, near which D "wins outright" and G learns
        little (monitor.py alerts there); None where a D at zero loss is no alarm."""
        return 0.0


class BCELoss(GANLoss):
    """Non-saturating GAN loss: D maximises log D(x) + log(1 - D(G(z))), G maximises log D(G(z)).

    BCE-with-logits is the numerically stable form of sigmoid + BCELoss."""

    def _d_loss(self, real_logits, fake_logits):
        real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, self.real_label))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return real + fake

    def _g_loss(self, fake_logits):
        # Targets are 1, never smoothed: smoothing is one-sided, for D's real labels only.
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))

    def score(self, logits):
        return torch.sigmoid(logits)

    def d_loss_floor(self):
        """Label smoothing lifts the floor above 0: the entropy of the smoothed real label."""
        p = self.real_label
        return -(p * math.log(p) + (1 - p) * math.log(1 - p)) if p < 1.0 else 0.0


class LSGANLoss(GANLoss):
    """Least squares GAN (Mao et al. 2017) with targets a=0 (fake), b=real_label (real), c=1."""

    def _d_loss(self, real_logits, fake_logits):
        return 0.5 * ((real_logits - self.real_label) ** 2).mean() + 0.5 * (fake_logits ** 2).mean()

    def _g_loss(self, fake_logits):
        return 0.5 * ((fake_logits - 1.0) ** 2).mean()


class HingeLoss(GANLoss):
    """Hinge loss (Lim & Ye 2017; SAGAN, BigGAN). Label smoothing does not apply."""

    def _d_loss(self, real_logits, fake_logits):
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()

    def _g_loss(self, fake_logits):
        return -fake_logits.mean()

    def d_loss_floor(self):
        """None: G's hinge loss is linear in D's output, so G keeps its full gradient however well D does
        (the 64-px quality run that reached D loss 0.009 drew the benchmark's best faces)."""
        return None


# The one list of losses: --loss's choices and config validation read it, so a new loss is one entry here.
LOSSES = {"bce": BCELoss, "lsgan": LSGANLoss, "hinge": HingeLoss}


def make_loss(name: str, real_label: float = 1.0) -> GANLoss:
    if name not in LOSSES:
        raise FaceganError(f"unknown loss '{name}': use one of {', '.join(LOSSES)}")
    return LOSSES[name](real_label=real_label)


def real_loss(logits: torch.Tensor, smooth: bool = False) -> torch.Tensor:
    """BCE of D's logits against "real" (0.9 with smooth=True, one-sided label smoothing), as the course
    notebooks write it; any logits shape."""
    logits = logits.reshape(-1)
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 0.9 if smooth else 1.0))


def fake_loss(logits: torch.Tensor) -> torch.Tensor:
    """BCE of D's logits against "fake" (0); any logits shape."""
    logits = logits.reshape(-1)
    return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def r1_penalty(discriminator, real: torch.Tensor, autocast=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(D's logits on `real`, the R1 penalty: mean over images of |grad_x D(x)|^2), built so that the
    penalty's own gradient reaches D's weights (create_graph)."""
    real = real.detach().requires_grad_(True)
    if autocast is not None:
        with autocast():
            logits = discriminator(real)
    else:
        logits = discriminator(real)
    (gradient,) = torch.autograd.grad(logits.float().sum(), real, create_graph=True)
    return logits, gradient.float().square().sum(dim=tuple(range(1, gradient.dim()))).mean()
