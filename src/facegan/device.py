"""Which device and precision a run uses, and the per-device choices that follow from it."""

from __future__ import annotations

import contextlib
import os
import time

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


def busy_threads_elsewhere(samples: int = 3, interval_s: float = 0.02, max_tasks: int = 20_000) -> int:
    """Threads of other processes running or waiting to run right now: the median over a few samples of
    the 'R' states in /proc/*/task/*/stat, ours left out (~50 ms once per run). 0 where /proc cannot
    tell (not Linux)."""
    own = str(os.getpid())
    counts = []
    for sample in range(samples):
        running, seen = 0, 0
        try:
            pids = [name for name in os.listdir("/proc") if name.isdigit() and name != own]
        except OSError:
            return 0
        for pid in pids:
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue  # ended meanwhile, or not ours to read
            for task in tasks:
                seen += 1
                try:
                    with open(f"/proc/{pid}/task/{task}/stat", "rb") as stat:
                        # "pid (comm) S ...": the state follows the last ')' (comm may hold spaces, parentheses)
                        running += stat.read().rpartition(b")")[2][1:2] == b"R"
                except OSError:
                    continue
            if seen > max_tasks:  # a huge host: counting would cost more than it tells
                return 0
        counts.append(running)
        if sample < samples - 1:
            time.sleep(interval_s)
    return sorted(counts)[len(counts) // 2]


def configure_threads(cfg, log=print) -> int:
    """torch's CPU thread count for a run, returned: --threads when given, else torch's default (its
    physical cores, or OMP_NUM_THREADS). On a CPU that other processes keep busy, say in one line how to
    fit: OpenMP's threads wait at every parallel region for the slowest one, so more threads than free
    cores ran at 0.16x of a fair share beside two other trainings (benchmarks/cpu_hog.py) and 1 thread
    at 0.78x. The count is not changed behind the user's back: it changes the floating-point
    summation order, and with it what a seed reproduces."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
        return cfg.threads
    threads = torch.get_num_threads()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = busy_threads_elsewhere()
    free = max(1, cpus - busy)
    if busy and threads > free:
        log(f"the CPU is shared: {busy} busy thread(s) of other processes on {cpus} CPU(s), and {threads} training "
            f"threads may then run far below a fair share: --threads {free} (or OMP_NUM_THREADS={free}) fits the "
            f"free CPU")
    return threads
