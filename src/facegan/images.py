"""Image grids, PNG writing and plots: everything that turns arrays into files a person opens."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import FaceganError
from .fileio import atomic_write
from .metric_names import RESULT_TITLES


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


# File name suffix -> Pillow format: the one place that says what an output file name may end in.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
ANIMATION_FORMATS = {".gif": "GIF", ".webp": "WEBP"}
_SAVE_OPTIONS = {"JPEG": dict(quality=95), "WEBP": dict(quality=95)}  # small faces lose detail at the defaults


def _format_of(path: Path, formats: dict, what: str) -> str:
    try:
        return formats[path.suffix.lower()]
    except KeyError:
        raise FaceganError(f"cannot write {what} to {path.name}: end the file name in "
                           f"{', '.join(sorted(formats))}") from None


def _upscaled(image: np.ndarray, upscale: int) -> Image.Image:
    picture = Image.fromarray(image)
    if upscale > 1:  # small training images are hard to judge at 1:1
        picture = picture.resize((picture.width * upscale, picture.height * upscale), Image.NEAREST)
    return picture


def save_image(image: np.ndarray, path, upscale: int = 1) -> Path:
    """Write a uint8 (H, W, 3) array as PNG, JPEG or WebP by the file name's suffix, via a temporary
    file so readers never see half a file."""
    path = Path(path)
    image_format = _format_of(path, IMAGE_FORMATS, "an image")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        _upscaled(image, upscale).save(f, format=image_format, **_SAVE_OPTIONS.get(image_format, {}))
    return path


def save_animation(frames: np.ndarray, path, fps: float = 12.0, upscale: int = 1) -> Path:
    """Write uint8 frames (T, H, W, 3) as a looping GIF or animated WebP by the file name's suffix."""
    path = Path(path)
    image_format = _format_of(path, ANIMATION_FORMATS, "an animation")
    pictures = [_upscaled(frame, upscale) for frame in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    # WebP lossless: small faces keep their detail, and frames that differ by a few levels stay frames
    options = dict(lossless=True) if image_format == "WEBP" else {}
    with atomic_write(path, "wb") as f:
        pictures[0].save(f, format=image_format, save_all=True, append_images=pictures[1:],
                         duration=round(1000 / fps), loop=0, **options)
    return path


def grid_upscale(images: np.ndarray) -> int:
    """How much to enlarge images of this size so 32x32 faces are still readable on screen."""
    return max(1, 128 // images.shape[1])


def save_grid(images: np.ndarray, path, columns: int | None = None) -> Path:
    """Grid of uint8 images (N, H, W, 3), upscaled to be readable; the format follows the file name."""
    return save_image(make_grid(images, columns), path, upscale=grid_upscale(images))


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


def plot_bands(series: dict[str, list[float]], out_path, labels, title: str, attributes: dict | None = None) -> Path:
    """Grouped bars of shares per band, one colour per series (e.g. data vs samples); with `attributes`
    (name -> share) a second panel of horizontal bars."""
    plt = _pyplot()
    panels = 2 if attributes else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2 if not attributes else 7), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / len(series)
    for number, (name, shares) in enumerate(series.items()):
        positions = np.arange(len(labels)) + (number - (len(series) - 1) / 2) * width
        bars = ax.bar(positions, [100 * s for s in shares], width, label=name)
        ax.bar_label(bars, fmt="%.0f%%", fontsize=7)
    ax.set_xticks(np.arange(len(labels)), labels, rotation=20)
    ax.set_ylabel("share of images (%)")
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend()
    if attributes:
        names = sorted(attributes, key=attributes.get)
        axes[0][1].barh(names, [100 * attributes[n] for n in names], color="grey")
        axes[0][1].tick_params(axis="y", labelsize=7)
        axes[0][1].set_xlabel("share of images with the attribute (%)")
        axes[0][1].set_title("CelebA attributes (the data set's annotations)", fontsize=10)
    return _save_figure(fig, out_path)
