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
from .images import save_image, to_uint8
from .models import make_generator

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


MAX_SEED = 2 ** 63 - 1    # torch.Generator.manual_seed's range
MAX_SEEDS = 100_000       # faces in one command: 100k at 64 px are 1.2 GB of images


def parse_seeds(text: str) -> list[int]:
    """'0-63', '1,5,9' or '0-3,10' -> list of seeds (ranges inclusive)."""
    seeds = []
    for part in str(text).split(","):
        match = _RANGE.match(part.strip())
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise FaceganError(f"bad seed list '{text}': use numbers and ranges such as 0-63 or 1,5,10-20")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high > MAX_SEED or high - low + len(seeds) >= MAX_SEEDS:
            raise FaceganError(f"seed list '{text}' is too large: seeds go from 0 to {MAX_SEED}, at most "
                               f"{MAX_SEEDS:,} at once")
        seeds.extend(range(low, high + 1))
    return seeds


def load_generator(checkpoint, device="cpu", ema: bool = True) -> tuple[torch.nn.Module, TrainConfig]:
    """A generator in eval mode from a training state or a generator snapshot (its EMA when it has one)."""
    return generator_from_state(checkpoints.load(checkpoint), device, ema)


def generator_weights(state: dict, ema: bool = True) -> tuple[dict, bool]:
    """(G's state dict, whether it is the EMA one): the moving average of G's weights when the
    checkpoint holds one and `ema` is on, since it draws the cleaner faces; else the raw G."""
    if ema and state.get("generator_ema") is not None:
        return state["generator_ema"], True
    return state["generator"], False


def generator_from_state(state: dict, device="cpu", ema: bool = True) -> tuple[torch.nn.Module, TrainConfig]:
    cfg = checkpoints.config_of(state)
    generator = make_generator(cfg.model)
    try:
        generator.load_state_dict(generator_weights(state, ema)[0])
    except RuntimeError:
        raise FaceganError("the checkpoint's weights do not match the model its config describes: the file is "
                           "damaged or was edited") from None
    return generator.to(device).eval(), cfg


def latents(seeds, z_size: int, truncation: float = 1.0) -> torch.Tensor:
    """(len(seeds), z_size) with row i a function of seeds[i] alone.

    truncation psi < 1 pulls each z toward the mean latent (zero for DCGAN's N(0, I) prior),
    z' = mean + psi * (z - mean): faces nearer the typical one, cleaner but less varied."""
    if not 0.0 <= truncation <= 2.0:
        raise FaceganError(f"truncation {truncation} is out of range: use 0 to 1 (1 = off; 0.7 is a common choice)")
    z = torch.stack([torch.randn(z_size, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    return z * truncation


@torch.no_grad()
def generate_from_latents(generator, z: torch.Tensor, batch_size: int = 64, device="cpu") -> np.ndarray:
    """uint8 (len(z), S, S, 3); eval mode makes each image independent of the batch it shares."""
    parts = [to_uint8(generator(z[i:i + batch_size].to(device))) for i in range(0, len(z), batch_size)]
    return np.concatenate(parts) if parts else np.empty((0,) * 4, np.uint8)


def generate(generator, seeds, batch_size: int = 64, device="cpu", truncation: float = 1.0) -> np.ndarray:
    """uint8 (len(seeds), S, S, 3), one face per seed."""
    return generate_from_latents(generator, latents(seeds, generator.config.noise_size, truncation), batch_size, device)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation, rows t (T, 1): keeps |z| near that of Gaussian samples, where lerp's
    midpoints shrink toward the mean and look washed out."""
    omega = torch.arccos(torch.clamp(torch.dot(a / a.norm(), b / b.norm()), -1.0, 1.0))
    if omega.abs() < 1e-6:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def latent_walk(keys: torch.Tensor, frames: int, slerp: bool = False, loop: bool = False) -> torch.Tensor:
    """A path through the latents `keys` (K, z): `frames` per leg from each key to the next, keys
    included once; loop=True adds the way back (there and back) for an animation that repeats smoothly."""
    if len(keys) < 2 or frames < 2:
        raise FaceganError("an interpolation needs at least 2 seeds and 2 frames")
    t = torch.linspace(0.0, 1.0, frames)[:, None]
    legs = []
    for i in range(len(keys) - 1):
        a, b = keys[i], keys[i + 1]
        leg = _slerp(a, b, t) if slerp else (1 - t) * a + t * b
        legs.append(leg if i == 0 else leg[1:])  # the shared key once
    path = torch.cat(legs)
    return torch.cat([path, path.flip(0)[1:-1]]) if loop else path


def interpolate(generator, seeds, frames: int = 8, device="cpu", slerp: bool = False, loop: bool = False,
                truncation: float = 1.0, batch_size: int = 64) -> np.ndarray:
    """uint8 faces (T, S, S, 3) along the walk through the seeds' latents."""
    # Walk between the untruncated latents, then pull the whole path toward the mean: with psi = 0 every key
    # is the mean (zero), and a spherical walk between zero vectors would divide 0 by 0.
    path = latent_walk(latents(seeds, generator.config.noise_size), frames, slerp, loop)
    return generate_from_latents(generator, path * truncation, batch_size, device)


def write_per_seed(images: np.ndarray, seeds, outdir, extension: str = "png") -> list[Path]:
    """One file per seed, named seed0042.png (or .jpg, .webp)."""
    outdir = Path(outdir)
    return [save_image(image, outdir / f"seed{seed:04d}.{extension}") for image, seed in zip(images, seeds)]


def write_interpolation(generator, seeds, out: Path, device="cpu", frames: int | None = None, slerp: bool = False,
                        loop: bool = False, truncation: float = 1.0, batch_size: int = 64, fps: float = 12.0,
                        log=print) -> Path:
    """Faces on the way through `seeds`' latents: a strip (.png/.jpg, one row per leg) or, for a .gif or
    .webp file, an animation (`loop`: there and back). `frames` per leg: 8 in a strip, 24 animated."""
    from .images import ANIMATION_FORMATS, save_animation, save_grid

    out = Path(out)
    animated = out.suffix.lower() in ANIMATION_FORMATS
    frames = frames or (24 if animated else 8)
    images = interpolate(generator, seeds, frames, device, slerp=slerp, loop=loop and animated,
                         truncation=truncation, batch_size=batch_size)
    through = ",".join(map(str, seeds))
    if animated:
        save_animation(images, out, fps=fps, upscale=max(1, 128 // images.shape[1]))
        log(f"wrote a {len(images)}-frame animation through seeds {through} to {out}")
    else:
        if loop:
            log("note: --loop applies to animations (.gif, .webp); the strip shows the way there")
        save_grid(images, out, columns=frames if len(seeds) == 2 else len(images))
        log(f"wrote {len(images)} faces through seeds {through} to {out}")
    return out


MAX_GRID = 4096          # faces in one grid picture (a 64 x 64 grid of 64 px faces is 4,200 px wide)
_WRITE_CHUNK = 1024      # --outdir: faces generated and written at a time, so memory stays bounded


def write_faces(generator, seeds, grid_path: Path, outdir=None, extension: str = "png", batch_size: int = 64,
                device="cpu", truncation: float = 1.0, log=print) -> None:
    """`facegan generate`'s output: one file per seed in `outdir` when given (generated and written in chunks,
    so 100,000 faces need no more memory than 1,000), else a grid at `grid_path`."""
    from .images import save_grid

    seeds = list(seeds)
    if outdir:
        written = []
        for start in range(0, len(seeds), _WRITE_CHUNK):
            chunk = seeds[start:start + _WRITE_CHUNK]
            images = generate(generator, chunk, batch_size, device, truncation=truncation)
            written += write_per_seed(images, chunk, outdir, extension=extension)
        log(f"wrote {len(written)} images to {outdir} ({written[0].name} ...)")
        return
    if len(seeds) > MAX_GRID:
        raise FaceganError(f"a grid of {len(seeds):,} faces is too large to be one picture (at most {MAX_GRID:,}): "
                           f"pass --outdir DIR for one file per seed")
    save_grid(generate(generator, seeds, batch_size, device, truncation=truncation), grid_path)
    log(f"wrote a grid of {len(seeds)} faces to {grid_path}")
