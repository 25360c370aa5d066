"""The optimised step must train the same model as the textbook step (issue: same maths)."""

import copy

import torch

from facegan.bench import FaceganStep, TextbookDCGAN
from facegan.config import ModelConfig
from facegan.models import build_models


def test_optimised_step_matches_textbook_step():
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=32, conv_dim=8, z_size=16)
    generator, discriminator = build_models(cfg)
    start = copy.deepcopy(generator.state_dict())
    textbook = TextbookDCGAN(copy.deepcopy(generator), copy.deepcopy(discriminator))
    ours = FaceganStep(generator, discriminator, torch.device("cpu"), channels_last=True)
    data = torch.Generator().manual_seed(1)
    for _ in range(4):
        real = torch.rand(16, 3, 32, 32, generator=data) * 2 - 1
        z = torch.randn(16, 16, generator=data)
        textbook.step(real, z.view(16, 16, 1, 1))
        ours.step(real.contiguous(memory_format=torch.channels_last), z)
    for reference, optimised in [(textbook.netG, ours.generator), (textbook.netD[0], ours.discriminator)]:
        for (name, a), b in zip(reference.state_dict().items(), optimised.state_dict().values()):
            if a.dtype.is_floating_point:
                torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=f"{name} differs")
    # The steps changed the weights by far more than the tolerance, so agreement means something.
    change = max((ours.generator.state_dict()[k] - v).abs().max().item() for k, v in start.items()
                 if v.dtype.is_floating_point)
    assert change > 5e-4


def test_bf16_step_trains_the_same_model_up_to_rounding():
    """bf16 autocast (the CPU/GPU speed path) changes rounding, not the update: after a few steps
    each weight has moved the same way as in fp32, up to a small fraction of the move."""
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=32, conv_dim=8, z_size=16)
    generator, discriminator = build_models(cfg)
    start = copy.deepcopy(generator.state_dict())
    fp32 = FaceganStep(copy.deepcopy(generator), copy.deepcopy(discriminator), torch.device("cpu"))
    bf16 = FaceganStep(generator, discriminator, torch.device("cpu"), amp=True)
    data = torch.Generator().manual_seed(1)
    for _ in range(4):
        real = (torch.rand(16, 3, 32, 32, generator=data) * 2 - 1).contiguous(memory_format=torch.channels_last)
        z = torch.randn(16, 16, generator=data)
        fp32.step(real, z)
        bf16.step(real, z)
    moves, gaps = [], []
    for name, before in start.items():
        if before.dtype.is_floating_point and "running" not in name:
            moves.append((fp32.generator.state_dict()[name] - before).abs().mean())
            gaps.append((bf16.generator.state_dict()[name] - fp32.generator.state_dict()[name]).abs().mean())
    assert torch.stack(gaps).mean() < 0.25 * torch.stack(moves).mean()
