"""Checkpoint files: what they hold, atomic writes and safe loads (runs.py knows where they live).

Two kinds of file (as EDM does): `checkpoints/last.pt` and `checkpoints/epoch-NNNN.pt` hold the
full training state for exact resume; `generator.pt` in the run folder is the light network
snapshot that generate/evaluate read. Both hold only tensors and plain data, and are loaded
with weights_only=True: opening a checkpoint somebody sent you never runs code.
"""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import torch

from .config import TrainConfig, with_old_defaults
from .errors import FaceganError
from .fileio import atomic_write

TRAINING_STATE = "facegan-training-state-1"
GENERATOR_SNAPSHOT = "facegan-generator-1"


def tensor_checksums(obj, prefix: str = "") -> dict[str, int]:
    """CRC-32 of every tensor's bytes in a nested dict/list, keyed by its path ('generator.to_rgb.weight').

    torch.load reads a flipped bit in a tensor without complaint; these make it a clear error."""
    if isinstance(obj, torch.Tensor):
        data = obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        return {prefix: zlib.crc32(data)}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    sums = {}
    for key, value in items:
        if key != "checksums":
            sums.update(tensor_checksums(value, f"{prefix}.{key}" if prefix else str(key)))
    return sums


def atomic_save(obj, path: Path) -> Path:
    """torch.save via a temporary file, fsync and rename: a crash leaves the old file or the new one.
    A facegan checkpoint (a dict with a format) also carries the checksum of every tensor."""
    path = Path(path)
    if isinstance(obj, dict) and "format" in obj:
        obj = {**obj, "checksums": tensor_checksums(obj)}
    previous = path.stat().st_size if path.exists() else None  # about what the new one needs
    with atomic_write(path, "wb", fsync=True, needed=previous) as f:
        torch.save(obj, f)
    return path


# What each kind of file must hold: a file that names a format but lacks these is damaged.
REQUIRED_KEYS = {
    TRAINING_STATE: ("config", "generator", "discriminator", "opt_g", "opt_d", "step", "epoch", "step_in_epoch", "rng"),
    GENERATOR_SNAPSHOT: ("config", "generator"),
}


def load(path, map_location="cpu") -> dict:
    """Load a facegan checkpoint or snapshot, refusing pickles that carry code."""
    path = Path(path)
    if not path.is_file():
        raise FaceganError(f"checkpoint {path} does not exist: pass a run folder or a .pt file from one")
    if path.stat().st_size == 0:
        raise FaceganError(f"checkpoint {path} is empty (0 bytes): it was never written completely; "
                           f"pass another checkpoint, such as checkpoints/last.pt of the run")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise FaceganError(f"refusing to load {path}: it holds Python objects or code, not only tensors, "
                               f"so it is not a facegan checkpoint") from None
        raise FaceganError(f"{path} is not a facegan checkpoint (not a PyTorch file at all): "
                           f"pass a run folder, last.pt or generator.pt") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:120] or type(exc).__name__
        raise FaceganError(f"cannot read checkpoint {path} ({detail}): "
                           f"the file is damaged or not a checkpoint") from None
    if not isinstance(state, dict) or state.get("format") not in REQUIRED_KEYS:
        raise FaceganError(f"{path} is not a facegan checkpoint: pass a run folder, last.pt or generator.pt")
    missing = [key for key in REQUIRED_KEYS[state["format"]] if key not in state]
    if missing:
        raise FaceganError(f"checkpoint {path} is damaged: it lacks {', '.join(missing)}; "
                           f"pass another checkpoint of the run (checkpoints/epoch-NNNN.pt)")
    if "checksums" in state:  # files written before checksums existed have none to check
        expected, actual = state["checksums"], tensor_checksums(state)
        wrong = sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))
        if wrong:
            raise FaceganError(f"checkpoint {path} is damaged: {len(wrong)} tensor(s) fail their checksum "
                               f"({', '.join(wrong[:2])}{', ...' if len(wrong) > 2 else ''}), a changed bit on "
                               f"disk; pass another checkpoint of the run (checkpoints/epoch-NNNN.pt)")
    return state


def config_of(state: dict) -> TrainConfig:
    """The config a checkpoint was trained with; options it predates get the value they had then."""
    if not isinstance(state["config"], dict):
        raise FaceganError("the checkpoint's config is not a section of keys: the file is damaged or was "
                           "edited; pass another checkpoint of the run (checkpoints/epoch-NNNN.pt)")
    return TrainConfig.from_dict(with_old_defaults(state["config"]))


def generator_snapshot(generator, cfg: TrainConfig, step: int, epoch: int, ema=None) -> dict:
    """The light file generate/evaluate read: the generator's weights (and their moving average, when
    training keeps one) and the config that builds it."""
    snapshot = {"format": GENERATOR_SNAPSHOT, "config": cfg.to_dict(), "generator": generator.state_dict(),
                "step": step, "epoch": epoch}
    if ema is not None:
        snapshot["generator_ema"] = ema.state_dict()
    return snapshot
