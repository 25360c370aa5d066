"""One training step, in two phases (D, then G), what D sees in them, and the window of step
statistics the loop logs.

The step itself knows nothing of schedules: a `DInput` says what D sees on this step besides the
batch (DiffAugment, instance noise, the lazy R1 weight), and a `DInputPolicy` makes one per step
from the run's config, so a new treatment of D's inputs touches this module, never the loop.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import distributed
from .augment import diff_augment, instance_noise, instance_noise_std
from .ema import GeneratorEMA
from .errors import FaceganError
from .losses import GANLoss, r1_penalty
from .models import build_models
from .optim import make_optimizer


@dataclass
class StepModules:
    """What one step calls and updates. `discriminator_in_g_step` is D as called in the G step; under
    DDP it is the unwrapped module, since D's gradients are not wanted there and DDP would wait for them."""
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    discriminator_in_g_step: torch.nn.Module | None = None


@dataclass
class DInput:
    """What D sees on one step besides the batch: `view` transforms every batch D sees, real and fake,
    in both phases (DiffAugment), before the instance noise for the reals and the fakes is added;
    `r1_weight` > 0 adds that times the R1 penalty to D's loss on this step."""
    view: Callable[[torch.Tensor], torch.Tensor] | None = None
    real_noise: torch.Tensor | None = None
    fake_noise: torch.Tensor | None = None
    r1_weight: float = 0.0

    def real(self, images: torch.Tensor) -> torch.Tensor:
        seen = self.view(images) if self.view else images
        return seen if self.real_noise is None else seen + self.real_noise

    def fake(self, images: torch.Tensor) -> torch.Tensor:
        seen = self.view(images) if self.view else images
        return seen if self.fake_noise is None else seen + self.fake_noise


METRIC_NAMES = ("loss_d", "loss_g", "d_real", "d_fake")  # what train_step returns, in order
PLAIN = DInput()  # the paper's step: D sees the batches as they are


class DInputPolicy:
    """The run's per-step treatments of D's inputs, from its config: DiffAugment policies, instance
    noise fading over its steps, and lazy R1 every r1_every steps. All draws come from `noise` (the
    run's checkpointed stream) as slices of the global batch, so any world size draws the same."""

    def __init__(self, cfg, noise: torch.Generator, rank: int, world_size: int, memory_format):
        self.cfg, self.noise, self.rank, self.world_size = cfg, noise, rank, world_size
        policies = cfg.diffaug_policies
        self.view = (lambda images: diff_augment(images, policies, noise, rank, world_size)
                     .contiguous(memory_format=memory_format)) if policies else None

    def for_step(self, step: int, real: torch.Tensor) -> DInput:
        """What D sees at `step` (counted before it runs); draws this step's instance noise."""
        cfg = self.cfg
        std = instance_noise_std(cfg.instance_noise, cfg.instance_noise_steps, step)
        # No noise tensors (no extra pass over the batch) once the noise has faded out.
        real_noise, fake_noise = (instance_noise(real, std, self.noise, self.rank, self.world_size)
                                  if std > 0 else (None, None))
        r1_weight = cfg.r1_gamma / 2 * cfg.r1_every if cfg.r1_gamma and step % cfg.r1_every == 0 else 0.0
        return DInput(self.view, real_noise, fake_noise, r1_weight)


def build_networks(cfg, device: torch.device, world, memory_format):
    """(G, D, the EMA of G or None, the StepModules the step calls), seeded by cfg.seed, on `device`.
    G and D are the plain modules, what gets saved; the step calls their DDP / torch.compile wrappers."""
    torch.manual_seed(cfg.seed)
    generator, discriminator = build_models(cfg.model)
    if cfg.sync_bn:
        if not (world.distributed and device.type == "cuda"):
            raise FaceganError("--sync-bn needs several CUDA processes (torchrun on GPUs): drop --sync-bn")
        generator = torch.nn.SyncBatchNorm.convert_sync_batchnorm(generator)
        discriminator = torch.nn.SyncBatchNorm.convert_sync_batchnorm(discriminator)
    for net in (generator, discriminator):
        net.to(device, memory_format=memory_format)
    opt_g = make_optimizer(cfg.opt_g, generator.parameters(), cfg.lr_g, cfg, device)
    opt_d = make_optimizer(cfg.opt_d, discriminator.parameters(), cfg.lr_d, cfg, device)
    # The moving average of G (made after G is on its device); samples and evaluations use it.
    ema = GeneratorEMA(generator) if cfg.ema_kimg > 0 else None
    step_g, step_d, step_d_in_g_step = distributed.wrap_for_step(generator, discriminator, world, device,
                                                                 cfg.compile)
    return generator, discriminator, ema, StepModules(step_g, step_d, opt_g, opt_d, step_d_in_g_step)


def train_step(modules: StepModules, loss: GANLoss, real: torch.Tensor, z: torch.Tensor,
               d_input: DInput = PLAIN, autocast=contextlib.nullcontext) -> torch.Tensor:
    """One DCGAN step: D on real vs detached fake, then G through the updated D.

    Returns (loss_d, loss_g, mean D(x), mean D(G(z))) as one detached tensor: no host sync here."""
    m = modules
    frozen_d = m.discriminator_in_g_step if m.discriminator_in_g_step is not None else m.discriminator
    seen_real = d_input.real(real)
    penalty = None
    with autocast():
        fake = m.generator(z)                                      # (N, 3, S, S)
        if d_input.r1_weight:
            real_logits, penalty = r1_penalty(m.discriminator, seen_real)
        else:
            real_logits = m.discriminator(seen_real)
        fake_logits = m.discriminator(d_input.fake(fake.detach()))
        loss_d = loss.d_loss(real_logits.float(), fake_logits.float())
    if penalty is not None:
        loss_d = loss_d + d_input.r1_weight * penalty
    m.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    m.opt_d.step()

    # G step. D's weights are frozen so backward computes only the input gradients G needs,
    # not D's weight gradients, which the textbook step computes and then throws away.
    frozen_d.requires_grad_(False)
    with autocast():
        loss_g = loss.g_loss(frozen_d(d_input.fake(fake)).float())
    m.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    m.opt_g.step()
    frozen_d.requires_grad_(True)
    return torch.stack([loss_d.detach(), loss_g.detach(),
                        loss.score(real_logits.detach().float()).mean(),
                        loss.score(fake_logits.detach().float()).mean()])


class LossWindow:
    """The step statistics summed on the device since the last metrics row, and when that began."""

    def __init__(self, device):
        self.total = torch.zeros(len(METRIC_NAMES), device=device)
        self.reset()

    def add(self, stats: torch.Tensor) -> None:
        self.total += stats
        self.steps += 1

    def finite(self) -> bool:
        return bool(torch.isfinite(self.total).all())  # a host sync: asked only when a save is due

    def reset(self) -> None:
        self.total.zero_()
        self.steps, self.started = 0, time.perf_counter()
