"""Which device and precision a run uses, and the per-device choices that follow from it."""

from __future__ import annotations

import contextlib

import torch

from .errors import FaceganError


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda, else mps, else cpu; an explicit device must exist here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FaceganError(f"unknown device '{name}': use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FaceganError(f"device '{name}' asked for, but this PyTorch sees no CUDA GPU: use --device cpu, "
                           f"or install a CUDA build of torch (see README.md)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise FaceganError(f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not _mps_available():
        raise FaceganError("device 'mps' asked for, but Apple's Metal backend is not available: use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise FaceganError(f"unsupported device '{name}': use auto, cpu, cuda, cuda:N or mps")
    return device


def default_amp(device: torch.device) -> str:
    """bf16 where the hardware does it natively (CUDA; CPUs with AVX-512 BF16), else fp32.

    On this project's 2-core AVX-512 BF16 CPU, bf16 autocast trained the default model to the same
    SWD as fp32 in 0.63x the time (docs/benchmarks.md); on CPUs without native bf16 it would be slower."""
    if device.type == "cuda":
        return "bf16"
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return "bf16" if device.type == "cpu" and native else "off"


def resolve_amp(amp: str, device: torch.device) -> str:
    """The precision actually used: --amp as given, or the device's default for 'auto'."""
    return default_amp(device) if amp == "auto" else amp


def default_channels_last(device: torch.device) -> bool:
    """NHWC memory layout where it was measured faster: oneDNN on CPU, cuDNN on CUDA."""
    return device.type in ("cpu", "cuda")


def adam_options(device: torch.device) -> dict:
    """Adam's implementation per device: fused kernels on CUDA and CPU (on CPU measured 4x faster than
    foreach: 4.0 vs 17.2 ms per step of the 64 px networks, and no .item() per parameter), foreach elsewhere."""
    return {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}


def autocast_factory(device: torch.device, bf16: bool):
    """A no-argument context-manager factory: bf16 autocast on `device`, or nothing."""
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext


def memory_bytes(device: torch.device) -> int | None:
    """Memory a model can use on `device`: the GPU's total, or the machine's RAM; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        import os

        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(parameters: int, needed: int, device: torch.device, activations: int = 0) -> None:
    """Refuse a model whose training state (`needed` bytes of weights, gradients and Adam state) and one step's
    `activations` would not fit, before the allocator fails minutes into the run."""
    available = memory_bytes(device)
    if available is not None and needed + activations > available:
        raise FaceganError(f"this model has {parameters:,} parameters and needs about "
                           f"{(needed + activations) / 2**30:,.1f} GiB ({needed / 2**30:,.1f} GiB weights, gradients "
                           f"and Adam state, {activations / 2**30:,.1f} GiB activations of one step), more than the "
                           f"{available / 2**30:,.1f} GiB of {device.type}: lower --batch-size, --conv-dim or "
                           f"--image-size")
