"""Checkpoint + seeds -> faces. Seed s always gives the same face: its z is drawn from its own
generator, and the network runs in eval mode (BatchNorm running statistics), so no image
depends on which others share its batch (stylegan2-ada / EDM generate.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from . import checkpoints
from .config import TrainConfig
from .errors import FaceganError
from .images import save_png, to_uint8
from .models import make_generator

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_seeds(text: str) -> list[int]:
    """'0-63', '1,5,9' or '0-3,10' -> list of seeds (ranges inclusive)."""
    seeds = []
    for part in str(text).split(","):
        match = _RANGE.match(part.strip())
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise FaceganError(f"bad seed list '{text}': use numbers and ranges such as 0-63 or 1,5,10-20")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        seeds.extend(range(low, high + 1))
    return seeds


def load_generator(checkpoint, device="cpu") -> tuple[torch.nn.Module, TrainConfig]:
    """A generator in eval mode from a training state or a generator snapshot."""
    return generator_from_state(checkpoints.load(checkpoint), device)


def generator_from_state(state: dict, device="cpu") -> tuple[torch.nn.Module, TrainConfig]:
    cfg = checkpoints.config_of(state)
    generator = make_generator(cfg.model)
    try:
        generator.load_state_dict(state["generator"])
    except RuntimeError:
        raise FaceganError("the checkpoint's weights do not match the model its config describes: the file is "
                           "damaged or was edited") from None
    return generator.to(device).eval(), cfg


def latents(seeds, z_size: int) -> torch.Tensor:
    """(len(seeds), z_size) with row i a function of seeds[i] alone."""
    return torch.stack([torch.randn(z_size, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def generate(generator, seeds, batch_size: int = 64, device="cpu") -> np.ndarray:
    """uint8 (len(seeds), S, S, 3), one face per seed."""
    z = latents(seeds, generator.config.z_size)
    parts = [to_uint8(generator(z[i:i + batch_size].to(device))) for i in range(0, len(z), batch_size)]
    return np.concatenate(parts) if parts else np.empty((0,) * 4, np.uint8)


@torch.no_grad()
def interpolate(generator, seed_a: int, seed_b: int, steps: int = 8, device="cpu") -> np.ndarray:
    """Faces along the spherical path between two seeds' latents (slerp suits Gaussian z)."""
    z = latents([seed_a, seed_b], generator.config.z_size)
    a, b = z[0], z[1]
    omega = torch.arccos(torch.clamp(torch.dot(a / a.norm(), b / b.norm()), -1.0, 1.0))
    t = torch.linspace(0.0, 1.0, steps)[:, None]
    if omega.abs() < 1e-6:
        path = (1 - t) * a + t * b
    else:
        path = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return to_uint8(generator(path.to(device)))


def write_per_seed(images: np.ndarray, seeds, outdir) -> list[Path]:
    """One PNG per seed, named seed0042.png."""
    outdir = Path(outdir)
    return [save_png(image, outdir / f"seed{seed:04d}.png") for image, seed in zip(images, seeds)]
