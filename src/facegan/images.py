"""Image grids, PNG writing and plots: everything that turns arrays into files a person opens."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .fileio import atomic_write
from .metrics.registry import RESULT_TITLES


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    images = (images.detach().float().clamp(-1, 1) + 1.0) * 127.5
    return images.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 images (N, H, W, 3) into one (rows*H', columns*W', 3) picture."""
    n, h, w, _ = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + padding) + padding, columns * (w + padding) + padding, 3), 255, np.uint8)
    for i in range(n):
        top = padding + (i // columns) * (h + padding)
        left = padding + (i % columns) * (w + padding)
        grid[top:top + h, left:left + w] = images[i]
    return grid


def save_png(image: np.ndarray, path, upscale: int = 1) -> Path:
    """Write a uint8 (H, W, 3) array as PNG, via a temporary file so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(image)
    if upscale > 1:  # small training images are hard to judge at 1:1
        picture = picture.resize((picture.width * upscale, picture.height * upscale), Image.NEAREST)
    with atomic_write(path, "wb") as f:
        picture.save(f, format="PNG")
    return path


def save_grid(images: np.ndarray, path, columns: int | None = None) -> Path:
    """Grid of uint8 images, upscaled so 32x32 faces are still readable on screen."""
    upscale = max(1, 128 // images.shape[1])
    return save_png(make_grid(images, columns), path, upscale=upscale)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt
    return plt


def _save_figure(fig, out_path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    out_path = Path(out_path)
    with atomic_write(out_path, "wb") as f:
        fig.savefig(f, dpi=90, format="png")
    plt.close(fig)
    return out_path


def plot_eval(rows: list[dict], out_path) -> Path | None:
    """Each evaluated metric against the training step, one panel per metric; `rows` are
    metrics.jsonl rows holding "eval"."""
    names = [k for k in RESULT_TITLES if any(k in r["eval"] for r in rows)]
    if not names:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        points = [(r["step"], r["eval"][name]) for r in rows if name in r["eval"]]
        ax.plot(*zip(*points), marker="o")
        if name == "msssim":
            reals = [r["eval"]["msssim_real"] for r in rows if "msssim_real" in r["eval"]]
            ax.axhline(reals[-1], color="grey", linestyle="--", label="real faces")
            ax.legend()
        ax.set_xlabel("step")
        ax.set_title(RESULT_TITLES[name])
    return _save_figure(fig, out_path)


def plot_losses(rows: list[dict], out_path) -> Path | None:
    """D and G losses and D's outputs from metrics.jsonl rows holding "loss_d"; None when there are none."""
    plt = _pyplot()
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig, (ax_loss, ax_prob) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(steps, [r["loss_d"] for r in rows], label="discriminator")
    ax_loss.plot(steps, [r["loss_g"] for r in rows], label="generator")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("Training losses")
    ax_loss.legend()
    ax_prob.plot(steps, [r["d_real"] for r in rows], label="D(x) real")
    ax_prob.plot(steps, [r["d_fake"] for r in rows], label="D(G(z)) fake")
    ax_prob.set_xlabel("step")
    ax_prob.set_title("Mean discriminator output")
    ax_prob.legend()
    return _save_figure(fig, out_path)
