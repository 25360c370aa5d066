"""What a run will cost before it starts: its plan (images, steps, epochs), its parameters and memory,
and a step rate timed on the real device. `facegan train --dry-run` and `facegan study run --dry-run`
print it without writing anything; `facegan train` prints the ETA first and refreshes it once."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch

from .checkpoints import global_rng_state, set_global_rng_state
from .config import TrainConfig
from .device import autocast_factory, default_channels_last, resolve_amp
from .distributed import World
from .schedule import planned_steps

TIMED_STEPS = 3  # after one warm-up step


@dataclass
class Plan:
    images: int            # images one epoch draws from (before unreadable files are skipped, for folders)
    steps_per_epoch: int
    steps: int             # planned steps in all (epochs x steps per epoch, or --max-steps)
    global_batch: int

    @property
    def epochs(self) -> float:
        return self.steps / max(1, self.steps_per_epoch)


def plan_of(cfg: TrainConfig, world_size: int = 1) -> Plan:
    """The run's plan from its data source, counted without decoding or caching anything."""
    from .data.prepare import resolve_source

    images = len(resolve_source(cfg.data).items)
    if cfg.data.max_images:
        images = min(images, cfg.data.max_images)
    global_batch = min(cfg.batch_size * world_size, images)  # a small set trains with the batch it can fill
    per_epoch = max(1, images // max(1, global_batch))
    return Plan(images, per_epoch, planned_steps(cfg, per_epoch), global_batch)


@dataclass
class StepCost:
    images_per_s: float
    g_parameters: int
    d_parameters: int
    activation_bytes: int  # what one step keeps for backward: every layer's output, G and D's three passes

    @property
    def weight_bytes(self) -> int:
        """Weights, gradients and Adam's two moments at 4 bytes each (models.training_bytes' rule)."""
        return 16 * (self.g_parameters + self.d_parameters)


def time_step(cfg: TrainConfig, device: torch.device, steps: int = TIMED_STEPS) -> StepCost:
    """Time `steps` training steps of `cfg`'s networks, recipe and batch on `device`, on random batches,
    with networks of their own: the run's weights and every random stream are left as they were."""
    from .losses import make_loss
    from .step import DInputPolicy, build_networks, train_step

    rng = global_rng_state()
    try:
        channels_last = cfg.channels_last if cfg.channels_last is not None else default_channels_last(device)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        generator, discriminator, _, modules = build_networks(cfg, device, World(), memory_format)
        noise = torch.Generator(device).manual_seed(0)
        side = cfg.model.image_size
        real = (torch.rand(cfg.batch_size, 3, side, side, device=device, generator=noise) * 2 - 1
                ).contiguous(memory_format=memory_format)
        autocast = autocast_factory(device, resolve_amp(cfg.amp, device) == "bf16")
        loss, inputs = make_loss(cfg.loss, cfg.real_label), DInputPolicy(cfg, noise, 0, 1, memory_format)

        def one(step: int) -> None:
            z = torch.randn(cfg.batch_size, cfg.model.noise_size, device=device, generator=noise)
            train_step(modules, loss, real, z, inputs.for_step(step, real), autocast)

        with _output_bytes(generator, discriminator) as activations:
            one(0)  # the warm-up, whose layer outputs are counted
        _sync(device)
        started = time.perf_counter()
        for step in range(1, steps + 1):
            one(step)
        _sync(device)
        seconds = time.perf_counter() - started
        return StepCost(steps * cfg.batch_size / max(seconds, 1e-9), _count(generator), _count(discriminator),
                        activations[0])
    finally:
        set_global_rng_state(rng)


def _count(net) -> int:
    return sum(p.numel() for p in net.parameters())


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _output_bytes(*nets):
    """Sum of the bytes of every leaf layer's output while inside: about what autograd keeps."""
    total = [0]

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()

    # torch's own layers only: not containers, facegan's blocks or spectral norm's parametrization parts
    containers = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)
    layers = [m for net in nets for m in net.modules()
              if type(m).__module__.startswith("torch.nn.modules") and not isinstance(m, containers)]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        yield total
    finally:
        for handle in handles:
            handle.remove()


def duration(seconds: float) -> str:
    """3 s, 4 min, 1 h 20 min."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def eta_line(plan: Plan, images_per_s: float, done_steps: int = 0, how: str = "") -> str:
    """'20 epochs, 6,240 steps: about 3 min at 2,500 images/s'."""
    left = max(0, plan.steps - done_steps)
    seconds = left * plan.global_batch / max(images_per_s, 1e-9)
    where = f" ({left:,} to go)" if done_steps else ""
    return (f"{plan.epochs:g} epochs, {plan.steps:,} steps{where}: about {duration(seconds)} at "
            f"{images_per_s:,.0f} images/s{how}")


def dry_run_report(cfg: TrainConfig) -> str:
    """`facegan train --dry-run`: the resolved config, parameters, memory, plan and ETA, writing nothing."""
    import json

    from .device import resolve_device

    device = resolve_device(cfg.device)
    plan = plan_of(cfg)
    cost = time_step(cfg, device)
    gib = 2 ** 30
    return "\n".join([
        "resolved config:", json.dumps(cfg.to_dict(), indent=2),
        f"parameters: G {cost.g_parameters:,}, D {cost.d_parameters:,}",
        f"memory: about {(cost.weight_bytes + cost.activation_bytes) / gib:.2f} GiB at batch {cfg.batch_size} "
        f"({cost.weight_bytes / gib:.2f} GiB weights, gradients and Adam state, "
        f"{cost.activation_bytes / gib:.2f} GiB activations)",
        f"data: {plan.images:,} images, {plan.steps_per_epoch:,} steps an epoch of batch {plan.global_batch}",
        eta_line(plan, cost.images_per_s, how=f" ({TIMED_STEPS} steps timed on {device})"),
        "dry run: nothing was written",
    ])


class RunClock:
    """The whole run's ETA: printed before the first step from a timing, refreshed once from the
    first log window's measured rate."""

    def __init__(self, plan: Plan, log):
        self.plan, self.log, self.refreshed = plan, log, False

    @classmethod
    def begin(cls, trainer, log) -> RunClock:
        """The clock of a train.Trainer about to run, its first ETA printed."""
        cfg = trainer.cfg
        clock = cls(Plan(len(trainer.batches.images), trainer.batches.steps_per_epoch, trainer.planned_steps,
                         cfg.batch_size * trainer.world.size), log)
        log(eta_line(clock.plan, time_step(cfg, trainer.device).images_per_s, trainer.step, " (a short timing)"))
        return clock

    def after_window(self, row: dict) -> None:
        if not self.refreshed and math.isfinite(row["images_per_s"]):
            self.refreshed = True
            self.log("measured: " + eta_line(self.plan, row["images_per_s"], row["step"]))
