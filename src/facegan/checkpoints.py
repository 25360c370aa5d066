"""Checkpoint files: what they hold, atomic writes and safe loads (runs.py knows where they live).

Two kinds of file (as EDM does): `checkpoints/last.pt` and `checkpoints/epoch-NNNN.pt` hold the
full training state for exact resume; `generator.pt` in the run folder is the light network
snapshot that generate/evaluate read. Both hold only tensors and plain data, and are loaded
with weights_only=True: opening a checkpoint somebody sent you never runs code.
"""

from __future__ import annotations

import pickle
import zipfile
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
        detail = " ".join(str(exc).split())[:100]
        raise FaceganError(f"refusing to load {path}: torch's safe loader rejected it ({detail}), so it is not a "
                           f"facegan checkpoint; pass a run folder, last.pt or generator.pt") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError, RecursionError,
            MemoryError, zipfile.BadZipFile) as exc:  # torch's unpickler meeting text or a damaged archive
        detail = " ".join(str(exc).split())[:120] or type(exc).__name__  # TorchScript's reason spans lines
        raise FaceganError(f"cannot read checkpoint {path} ({detail}): "
                           f"the file is damaged or not a checkpoint") from None
    if not isinstance(state, dict) or state.get("format") not in REQUIRED_KEYS:
        raise FaceganError(f"{path} is not a facegan checkpoint: pass a run folder, last.pt or generator.pt")
    missing = [key for key in REQUIRED_KEYS[state["format"]] if key not in state]
    if missing:
        raise FaceganError(f"checkpoint {path} is damaged: it lacks {', '.join(missing)}; "
                           f"pass another checkpoint of the run (checkpoints/epoch-NNNN.pt)")
    problem = schema_problem(state)  # before anything walks it: a nested or mistyped file is refused here
    if problem:
        raise FaceganError(f"checkpoint {path} is damaged or was edited: {problem}; pass another checkpoint of "
                           f"the run (checkpoints/epoch-NNNN.pt)")
    if "checksums" in state:  # files written before checksums existed have none to check
        expected, actual = state["checksums"], tensor_checksums(state)
        wrong = sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))
        if wrong:
            raise FaceganError(f"checkpoint {path} is damaged: {len(wrong)} tensor(s) fail their checksum "
                               f"({', '.join(wrong[:2])}{', ...' if len(wrong) > 2 else ''}), a changed bit on "
                               f"disk; pass another checkpoint of the run (checkpoints/epoch-NNNN.pt)")
    if not _weights_finite(state):
        raise FaceganError(f"checkpoint {path} holds NaN or infinite weights (its run diverged): {_last_finite(path)}")
    return state


MAX_DEPTH, MAX_NODES = 8, 200_000  # a real training state is 5 levels deep with a few thousand entries
MAX_COUNT = 10 ** 12               # steps, epochs: far beyond any run, far below int64


def _bounded(obj) -> str | None:
    """Refuse containers nested deeper than MAX_DEPTH or larger than MAX_NODES, walked without recursion
    and counting a shared sub-list every time it is reached (a 500 KB file of a=[a, a] 40 times is 2**40)."""
    stack, nodes = [(obj, 0)], 0
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth >= MAX_DEPTH:
                return f"its containers nest deeper than {MAX_DEPTH} levels"
            children = value.values() if isinstance(value, dict) else value
            nodes += len(children)
            if nodes > MAX_NODES:
                return f"it holds more than {MAX_NODES:,} entries"
            stack.extend((child, depth + 1) for child in children)
    return None


def _tensor_dict(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def _optimiser_state(value) -> bool:
    return isinstance(value, dict) and isinstance(value.get("state"), dict) and isinstance(
        value.get("param_groups"), list) and all(isinstance(g, dict) for g in value["param_groups"])


# key -> (check, what it must be). Keys a file does not have are not checked (REQUIRED_KEYS says which it needs).
_SCHEMA = {
    "config": (lambda v: isinstance(v, dict), "a section of keys"),
    "generator": (_tensor_dict, "names and tensors"), "generator_ema": (_tensor_dict, "names and tensors"),
    "discriminator": (_tensor_dict, "names and tensors"),
    "opt_g": (_optimiser_state, "an optimiser state"), "opt_d": (_optimiser_state, "an optimiser state"),
    "step": (_count, f"a whole number 0..{MAX_COUNT:.0e}"), "epoch": (_count, f"a whole number 0..{MAX_COUNT:.0e}"),
    "step_in_epoch": (_count, f"a whole number 0..{MAX_COUNT:.0e}"),
    "planned_steps": (_count, f"a whole number 0..{MAX_COUNT:.0e}"),
    "world_size": (lambda v: _count(v) and v >= 1, "a whole number of processes"),
    "rng": (lambda v: isinstance(v, dict) and isinstance(v.get("torch"), torch.Tensor)
            and v["torch"].dtype == torch.uint8 and isinstance(v.get("noise", v["torch"]), torch.Tensor),
            "random states (uint8 tensors)"),
    "best": (lambda v: v is None or isinstance(v, dict), "empty or a section of keys"),
    "checksums": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and _count(c) for k, c in v.items()),
                  "names and CRC-32 values"),
}


def schema_problem(state: dict) -> str | None:
    """What is wrong with a loaded checkpoint's layout (depth, size, each known key's type), or None."""
    problem = _bounded(state)
    if problem:
        return problem
    for key, (fits, what) in _SCHEMA.items():
        if key in state and not fits(state[key]):
            return f"its '{key}' is not {what} but {type(state[key]).__name__}"
    return None


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


def global_rng_state() -> dict:
    """torch's global random state, CPU and every CUDA device: what training states save and timings restore."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_finite(modules) -> bool:
    """Whether every parameter and buffer of `modules` (None entries skipped) is finite: one fused
    reduction and one host sync, so it can run before every save."""
    return _finite([t for m in modules if m is not None for t in (*m.parameters(), *m.buffers())])


def _finite(tensors) -> bool:
    peaks = [t.detach().abs().amax().float() for t in tensors if t.is_floating_point() and t.numel()]
    return not peaks or bool(torch.isfinite(torch.stack(peaks)).all())


def _weights_finite(state: dict) -> bool:
    """The networks in a loaded checkpoint hold no NaN or inf (an optimiser's moments are not checked)."""
    return _finite([t for key in ("generator", "generator_ema", "discriminator") if isinstance(state.get(key), dict)
                    for t in state[key].values() if isinstance(t, torch.Tensor)])


def _last_finite(path: Path) -> str:
    """Where to go instead of a diverged checkpoint: the newest finite epoch checkpoint of its run."""
    folder = path.parent if path.parent.name == "checkpoints" else path.parent / "checkpoints"
    for candidate in sorted(folder.glob("epoch-*.pt"), reverse=True):
        try:
            if candidate != path and _weights_finite(torch.load(candidate, map_location="cpu", weights_only=True)):
                return f"use {candidate}, the newest finite one"
        except Exception:  # noqa: BLE001 (a damaged candidate is skipped; the user is told about the good one)
            continue
    return "no earlier checkpoint of the run is finite: start again with a lower --lr-d/--lr-g"
