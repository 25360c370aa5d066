"""Training-speed benchmark: the textbook DCGAN step against facegan's, side by side.

The textbook step is pytorch/examples/dcgan's step as it is: Sigmoid + BCELoss, channels-first
eager fp32, default Adam, D's weight gradients computed during the G step, and `.item()` every
step. Both run on the same networks (the textbook one with D's Sigmoid appended), the same batch
size and the same images, in one process, alternating repeats so machine drift cancels.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from .config import ModelConfig
from .data.batches import BatchSource
from .data.synthetic import render_faces
from .device import adam_options, autocast_factory
from .losses import make_loss
from .models import build_models
from .step import StepModules, train_step


class TextbookDCGAN:
    """pytorch/examples/dcgan main.py's training step, line for line in spirit."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, lr=2e-4, beta1=0.5):
        self.netG = generator
        self.netD = nn.Sequential(discriminator, nn.Sigmoid())  # the example's D ends in Sigmoid
        self.criterion = nn.BCELoss()
        self.optimizerD = torch.optim.Adam(self.netD.parameters(), lr=lr, betas=(beta1, 0.999))
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=lr, betas=(beta1, 0.999))

    def step(self, real: torch.Tensor, noise: torch.Tensor) -> tuple:
        batch_size = real.size(0)
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        self.netD.zero_grad()
        label = torch.full((batch_size,), 1.0, dtype=real.dtype, device=real.device)
        output = self.netD(real).view(-1)
        errD_real = self.criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()
        fake = self.netG(noise)
        label.fill_(0.0)
        output = self.netD(fake.detach()).view(-1)
        errD_fake = self.criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        self.optimizerD.step()
        # (2) Update G network: maximize log(D(G(z))); this backward also fills D's weight gradients
        self.netG.zero_grad()
        label.fill_(1.0)
        output = self.netD(fake).view(-1)
        errG = self.criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        self.optimizerG.step()
        return errD.item(), errG.item(), D_x, D_G_z1, D_G_z2


class FaceganStep:
    """facegan's step with its per-device defaults, fed from its uint8 batch path."""

    def __init__(self, generator, discriminator, device, channels_last=True, compile=False, amp=False):
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.generator = generator.to(device, memory_format=self.memory_format)
        self.discriminator = discriminator.to(device, memory_format=self.memory_format)
        adam = dict(lr=2e-4, betas=(0.5, 0.999), **adam_options(device))
        self.opt_g = torch.optim.Adam(self.generator.parameters(), **adam)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), **adam)
        self.loss = make_loss("bce", 1.0)
        self.g_call, self.d_call = ((torch.compile(self.generator), torch.compile(self.discriminator))
                                    if compile else (self.generator, self.discriminator))
        self.modules = StepModules(self.g_call, self.d_call, self.opt_g, self.opt_d)
        self.autocast = autocast_factory(device, amp)
        self.stats = None

    def step(self, real, noise):
        stats = train_step(self.modules, self.loss, real, noise, autocast=self.autocast)
        self.stats = stats if self.stats is None else self.stats + stats  # accumulated, never synced per step


@dataclass
class BenchResult:
    textbook_images_per_s: float
    facegan_images_per_s: float
    textbook_gflop_per_image: float  # each step's own work: the textbook's includes D's wasted gradients
    facegan_gflop_per_image: float
    roofline_gflops: float

    @property
    def ratio(self) -> float:
        return self.facegan_images_per_s / self.textbook_images_per_s


def matmul_roofline(device, sizes=(1024, 2048, 4096), seconds=1.0, dtype=torch.float32) -> float:
    """Best sustained matmul GFLOP/s over a few sizes in `dtype`: the ceiling a conv net's step can approach."""
    best = 0.0
    for size in sizes:
        a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
        a @ b
        _sync(device)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        _sync(device)
        best = max(best, 2 * size ** 3 * count / (time.perf_counter() - start) / 1e9)
    return best


def step_flops(cfg: ModelConfig, batch_size: int) -> tuple[float, float]:
    """FLOPs of one textbook step and one facegan step (forward + backward of G and D), counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode

    generator, discriminator = build_models(cfg)
    real = torch.randn(batch_size, 3, cfg.image_size, cfg.image_size)
    z = torch.randn(batch_size, cfg.z_size)
    counts = []
    for runner in (TextbookDCGAN(copy.deepcopy(generator), copy.deepcopy(discriminator)),
                   FaceganStep(generator, discriminator, torch.device("cpu"), channels_last=False)):
        with FlopCounterMode(display=False) as counter:
            runner.step(real, z)
        counts.append(counter.get_total_flops())
    return counts[0], counts[1]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(cfg: ModelConfig, batch_size: int, device: torch.device, steps: int = 10, repeats: int = 5,
        warmup: int = 3, channels_last=True, compile=False, amp=False, log=print) -> BenchResult:
    torch.manual_seed(0)
    generator, discriminator = build_models(cfg)
    textbook = TextbookDCGAN(copy.deepcopy(generator).to(device), copy.deepcopy(discriminator).to(device))
    ours = FaceganStep(generator, discriminator, device, channels_last, compile, amp)
    images = render_faces(range(batch_size * 4), size=cfg.image_size)
    source = BatchSource(images, batch_size, device, seed=0, flip=True, memory_format=ours.memory_format)
    noise = torch.Generator(device).manual_seed(0)
    # The textbook step gets ready float batches (its DataLoader's cost is not counted);
    # facegan's step pays for its own uint8 -> float conversion and flips inside the timing.
    ready = [source.to_float(source.images[i * batch_size:(i + 1) * batch_size]).contiguous() for i in range(4)]

    def facegan_steps(n):
        for i in range(n):
            real = next(source.epoch(i % 4, noise))
            ours.step(real, torch.randn(batch_size, cfg.z_size, device=device, generator=noise))
        ours.stats.tolist()  # the one sync, as the training loop does at a log step

    def textbook_steps(n):
        for i in range(n):
            textbook.step(ready[i % 4], torch.randn(batch_size, cfg.z_size, 1, 1, device=device))

    timings = {"textbook": [], "facegan": []}
    for fn in (textbook_steps, facegan_steps):
        fn(warmup)  # also triggers torch.compile's compilation, which is excluded
    _sync(device)
    for repeat in range(repeats):
        for name, fn in (("textbook", textbook_steps), ("facegan", facegan_steps)):
            start = time.perf_counter()
            fn(steps)
            _sync(device)
            timings[name].append(batch_size * steps / (time.perf_counter() - start))
        log(f"repeat {repeat + 1}/{repeats}: textbook {timings['textbook'][-1]:,.1f} img/s, "
            f"facegan {timings['facegan'][-1]:,.1f} img/s")
    textbook_flops, facegan_flops = step_flops(cfg, batch_size)
    return BenchResult(statistics.median(timings["textbook"]), statistics.median(timings["facegan"]),
                       textbook_flops / batch_size / 1e9, facegan_flops / batch_size / 1e9, matmul_roofline(device))


def report(result: BenchResult, label: str) -> str:
    lines = [label, f"fp32 matmul roofline {result.roofline_gflops:,.0f} GFLOP/s (best of 1024/2048/4096 squared)",
             f"{'step':<10}{'images/s':>10}{'GFLOP/img':>11}{'GFLOP/s':>9}{'of roofline':>13}"]
    for name, rate, cost in (("textbook", result.textbook_images_per_s, result.textbook_gflop_per_image),
                             ("facegan", result.facegan_images_per_s, result.facegan_gflop_per_image)):
        lines.append(f"{name:<10}{rate:>10,.1f}{cost:>11.3f}{rate * cost:>9,.0f}"
                     f"{rate * cost / result.roofline_gflops:>13.0%}")
    lines.append(f"ratio facegan / textbook: {result.ratio:.2f}x")
    return "\n".join(lines)


class RecipeStep:
    """A whole `facegan train` step of a resolved config, as the training loop runs it: the Trainer's own
    batch path (uint8 gather, flips), z draw, D input policy (instance noise, DiffAugment, lazy R1),
    spectral norm, loss, both optimiser steps and the EMA update; only logging and saving are left out."""

    def __init__(self, cfg, device: torch.device, run_dir):
        from .data.prepare import PreparedData
        from .train import Trainer

        images = render_faces(range(cfg.batch_size * 4), size=cfg.model.image_size)
        prepared = PreparedData(images, {"checksum": ""}, run_dir / "bench.u8", reused=True)
        self.trainer = Trainer(cfg, run_dir, prepared, progress=False, log=lambda *a: None, device=device)
        self.batch_size = cfg.batch_size
        self._epoch = 0
        self._batches = iter(())
        self.stats = None

    def steps(self, count: int) -> None:
        for _ in range(count):
            real = next(self._batches, None)
            if real is None:
                self._batches = self.trainer.batches.epoch(self._epoch, self.trainer.noise)
                self._epoch += 1
                real = next(self._batches)
            stats = self.trainer._train_on(real)
            self.stats = stats if self.stats is None else self.stats + stats
        self.stats.tolist()  # the one host sync, as the loop does at a log step


class TextbookSteps:
    """The textbook step on the paper's networks, fed ready float batches (its DataLoader is not timed)."""

    def __init__(self, cfg: ModelConfig, batch_size: int, device: torch.device):
        torch.manual_seed(0)
        generator, discriminator = build_models(cfg)
        self.runner = TextbookDCGAN(generator.to(device), discriminator.to(device))
        images = render_faces(range(batch_size * 4), size=cfg.image_size)
        source = BatchSource(images, batch_size, device, seed=0, flip=False)
        self.ready = [source.to_float(source.images[i * batch_size:(i + 1) * batch_size]).contiguous()
                      for i in range(4)]
        self.batch_size, self.z_size, self.device = batch_size, cfg.z_size, device

    def steps(self, count: int) -> None:
        for i in range(count):
            self.runner.step(self.ready[i % 4], torch.randn(self.batch_size, self.z_size, 1, 1, device=self.device))


def alternate(runners: dict, steps: int, repeats: int, warmup: int, device, log=print) -> dict[str, list[float]]:
    """images/s of each runner per repeat, the runners taking turns within every repeat so that drift
    on a shared machine hits all of them alike; warm-up (and any compilation) excluded."""
    for runner in runners.values():
        runner.steps(warmup)
    _sync(device)
    rates = {name: [] for name in runners}
    for repeat in range(repeats):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.steps(steps)
            _sync(device)
            rates[name].append(runner.batch_size * steps / (time.perf_counter() - start))
        log(f"repeat {repeat + 1}/{repeats}: " + ", ".join(f"{n} {r[-1]:,.1f}" for n, r in rates.items()))
    return rates
