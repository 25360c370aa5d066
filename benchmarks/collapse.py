"""How fast a 64x64 DCGAN leaves mode collapse: the textbook step against facegan's, one switch at a time.

The bisection behind README "Leaving mode collapse". Every run trains on the same built-in faces and
logs, every --every steps, the mean G loss and the MS-SSIM diversity of 64 fixed-z samples (lower is
more diverse; real faces 0.15), in train mode (BatchNorm batch statistics, as the textbook's grids)
and in eval mode (running statistics, as facegan's grids).

    python benchmarks/collapse.py --step textbook --biases 0 --flip 0 --amp off --channels-last 0 --real-label 1
    python benchmarks/collapse.py                                   # facegan's step with its defaults
    python benchmarks/collapse.py --instance-noise 0 --conv-dim 16  # one switch at a time
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from facegan.bench import TextbookDCGAN
from facegan.config import DataConfig, ModelConfig, TrainConfig
from facegan.data.batches import BatchSource
from facegan.data.prepare import prepare
from facegan.device import adam_options, autocast_factory
from facegan.images import save_grid, to_uint8
from facegan.losses import make_loss
from facegan.metrics.msssim import diversity
from facegan.models import build_models
from facegan.step import StepModules, train_step

DEFAULTS = TrainConfig()


class NoisyInputs(nn.Module):
    """D behind instance noise whose std falls linearly to 0 over `steps` (facegan's schedule)."""

    def __init__(self, discriminator: nn.Module, std: float, steps: int):
        super().__init__()
        self.discriminator, self.std, self.steps, self.step = discriminator, std, steps, 0

    def forward(self, images):
        std = self.std * max(0.0, 1.0 - self.step / self.steps) if self.steps else 0.0
        return self.discriminator(images + std * torch.randn_like(images) if std > 0 else images)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--step", choices=("textbook", "facegan"), default="facegan")
    p.add_argument("--biases", type=int, default=1, help="facegan's biases on D's first conv, D's head, G's output")
    p.add_argument("--real-label", type=float, default=DEFAULTS.real_label)
    p.add_argument("--flip", type=int, default=1)
    p.add_argument("--amp", choices=("bf16", "off"), default="bf16")
    p.add_argument("--channels-last", type=int, default=1)
    p.add_argument("--instance-noise", type=float, default=DEFAULTS.instance_noise)
    p.add_argument("--instance-noise-steps", type=int, default=DEFAULTS.instance_noise_steps)
    p.add_argument("--conv-dim", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    p.add_argument("--out", default="", help="prefix for sample grids, e.g. /tmp/run (writes /tmp/run-train-300.png)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cpu")
    images = prepare(DataConfig(num_images=20000), a.image_size, progress=False).images
    torch.manual_seed(a.seed)
    generator, discriminator = build_models(ModelConfig(image_size=a.image_size, conv_dim=a.conv_dim,
                                                          spectral_norm=False))  # the paper's D, as measured
    if not a.biases:  # the textbook's networks have none of these three
        for layer in (discriminator.features[0].conv, discriminator.head, generator.to_rgb):
            layer.register_parameter("bias", None)
    memory_format = torch.channels_last if a.channels_last else torch.contiguous_format
    fixed_z = torch.randn(64, 100, generator=torch.Generator().manual_seed(a.seed + 2))
    batches = BatchSource(images, a.batch_size, device, a.seed, bool(a.flip), memory_format)
    noise = torch.Generator().manual_seed(a.seed + 1)
    noisy = None
    if a.step == "textbook":  # pytorch/examples/dcgan's step: Sigmoid + BCELoss, real label 1, fp32
        textbook = TextbookDCGAN(generator, discriminator)

        def step(real, z):
            return textbook.step(real.contiguous(), z.view(len(z), -1, 1, 1))[1]
    else:
        generator.to(memory_format=memory_format)
        discriminator.to(memory_format=memory_format)
        adam = dict(lr=2e-4, betas=(0.5, 0.999), **adam_options(device))
        opt_g = torch.optim.Adam(generator.parameters(), **adam)
        opt_d = torch.optim.Adam(discriminator.parameters(), **adam)
        loss, autocast = make_loss("bce", a.real_label), autocast_factory(device, a.amp == "bf16")
        noisy = NoisyInputs(discriminator, a.instance_noise, a.instance_noise_steps)

        def step(real, z):
            return train_step(StepModules(generator, noisy, opt_g, opt_d), loss, real, z, autocast=autocast)[1].item()

    losses, done, epoch, started = [], 0, 0, time.time()
    while done < a.steps:
        for real in batches.epoch(epoch, noise):
            losses.append(step(real, torch.randn(len(real), 100, generator=noise)))
            done += 1
            if noisy is not None:
                noisy.step = done
            if done % a.every == 0:
                with torch.no_grad():
                    train_mode = to_uint8(generator(fixed_z))
                    generator.eval()
                    eval_mode = to_uint8(generator(fixed_z))
                    generator.train()
                print(json.dumps({"step": done, "loss_g": round(sum(losses) / len(losses), 2),
                                  "msssim_train_mode": round(diversity(train_mode, 256), 3),
                                  "msssim_eval_mode": round(diversity(eval_mode, 256), 3),
                                  "seconds": round(time.time() - started)}), flush=True)
                losses = []
                if a.out:
                    save_grid(train_mode, f"{a.out}-train-{done}.png")
            if done >= a.steps:
                break
        epoch += 1


if __name__ == "__main__":
    main()
