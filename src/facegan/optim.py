"""Optimisers per network and learning-rate schedules.

A schedule is a pure function of (step, planned total steps), applied to the optimisers' learning
rates before each step. The planned total is fixed when a run starts and kept in its checkpoints,
so a resumed run follows the schedule it started with, bit for bit."""

from __future__ import annotations

import math

import torch

from .config import TrainConfig
from .device import adam_options


def make_optimizer(name: str, parameters, lr: float, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam (beta1/beta2 from cfg) or SGD with cfg.momentum."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=cfg.momentum)
    return torch.optim.Adam(parameters, lr=lr, betas=(cfg.beta1, cfg.beta2), **adam_options(device))


def lr_factor(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The multiplier of the base learning rates at `step` (0-based) of a run planned for `total_steps`."""
    if cfg.lr_decay == "step":
        return cfg.lr_decay_gamma ** (step // cfg.lr_decay_every)
    if cfg.lr_decay in ("linear", "cosine"):
        span = max(total_steps - cfg.lr_decay_start, 1)
        progress = min(max(step - cfg.lr_decay_start, 0) / span, 1.0)  # 0 until the start, 1 at the end
        return 1.0 - progress if cfg.lr_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def set_learning_rates(optimizers_and_base: list[tuple[torch.optim.Optimizer, float]], factor: float) -> None:
    for optimizer, base in optimizers_and_base:
        for group in optimizer.param_groups:
            group["lr"] = base * factor
