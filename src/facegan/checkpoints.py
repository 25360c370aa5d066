"""Run folders and checkpoint files: atomic writes, safe loads, and finding 'the newest run'.

Two kinds of file (as EDM does): `checkpoints/last.pt` and `checkpoints/epoch-NNNN.pt` hold the
full training state for exact resume; `generator.pt` in the run folder is the light network
snapshot that generate/evaluate read. Both hold only tensors and plain data, and are loaded
with weights_only=True: opening a checkpoint somebody sent you never runs code.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from .config import TrainConfig
from .errors import FaceganError

TRAINING_STATE = "facegan-training-state-1"
GENERATOR_SNAPSHOT = "facegan-generator-1"
_RUN_NAME = re.compile(r"^(\d{5})-")


def atomic_save(obj, path: Path) -> Path:
    """torch.save via a temporary file, fsync and rename: a crash leaves the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path, map_location="cpu") -> dict:
    """Load a facegan checkpoint or snapshot, refusing pickles that carry code."""
    path = Path(path)
    if not path.is_file():
        raise FaceganError(f"checkpoint {path} does not exist: pass a run folder or a .pt file from one")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise FaceganError(f"refusing to load {path}: it holds Python objects or code, not only tensors, "
                           f"so it is not a facegan checkpoint") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise FaceganError(f"cannot read checkpoint {path} ({str(exc).splitlines()[0][:120]}): "
                           f"the file is damaged or not a checkpoint") from None
    if not isinstance(state, dict) or state.get("format") not in (TRAINING_STATE, GENERATOR_SNAPSHOT):
        raise FaceganError(f"{path} is not a facegan checkpoint: pass a run folder, last.pt or generator.pt")
    return state


def config_of(state: dict) -> TrainConfig:
    return TrainConfig.from_dict(state["config"])


def new_run_dir(root, name: str) -> Path:
    """Create root/NNNNN-name with the next free number (stylegan2-ada's layout)."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for p in root.iterdir() if (m := _RUN_NAME.match(p.name))]
        run = root / f"{max(numbers, default=-1) + 1:05d}-{name}"
        run.mkdir()
        probe = run / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise FaceganError(f"cannot write to output folder {root} ({exc.strerror}): "
                           f"pass --out with a folder you can write to") from None
    return run


def latest_run(root) -> Path:
    """The highest-numbered run under root that has a checkpoint."""
    root = Path(root)
    runs = sorted((p for p in root.iterdir() if _RUN_NAME.match(p.name) and (p / "checkpoints" / "last.pt").is_file()),
                  key=lambda p: p.name) if root.is_dir() else []
    if not runs:
        raise FaceganError(f"no run with a checkpoint under {root}/: train one first with 'facegan train', "
                           f"or pass a run folder or checkpoint file")
    return runs[-1]


def resolve(target, root, prefer: str = "last") -> Path:
    """A run folder, a checkpoint file, 'latest' or None -> a checkpoint file.

    prefer="last" picks the full training state; "generator" picks the light snapshot when there is one."""
    run = latest_run(root) if target in (None, "latest") else Path(target)
    if run.is_file():
        return run
    if not run.exists():
        raise FaceganError(f"{run} does not exist: pass a run folder, a checkpoint file, or 'latest'")
    if run.name == "checkpoints":
        run = run.parent
    candidates = ([run / "generator.pt"] if prefer == "generator" else []) + [run / "checkpoints" / "last.pt"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FaceganError(f"{run} has no checkpoint yet (no checkpoints/last.pt): train first, "
                       f"or pass a checkpoint file")


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint file belongs to."""
    checkpoint = Path(checkpoint).resolve()
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def prune_epoch_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` epoch-NNNN.pt files."""
    epochs = sorted(folder.glob("epoch-*.pt"))
    for old in epochs[:-keep] if keep > 0 else epochs:
        old.unlink(missing_ok=True)
