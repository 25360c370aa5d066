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


class _OpLog(torch.utils._python_dispatch.TorchDispatchMode):
    """Every aten op run inside, with the dtypes of its tensor arguments."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        dtypes = [a.dtype for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        self.ops.append((func.overloadpacket.__name__, dtypes))
        return func(*args, **(kwargs or {}))


def _default_recipe_steps(amp: str, steps: int = 2):
    """Ops of `steps` whole steps of the default recipe (spectral norm, EMA, instance noise, hinge) after a
    warm-up step, as the training loop runs them."""
    import tempfile
    from pathlib import Path

    from facegan.bench import RecipeStep
    from facegan.config import resolve

    cfg, _ = resolve({"model.conv_dim": 8, "model.z_size": 16, "batch_size": 8, "amp": amp,
                      "instance_noise_steps": 1000})
    with tempfile.TemporaryDirectory() as tmp:
        runner = RecipeStep(cfg, torch.device("cpu"), Path(tmp))
        runner.steps(1)
        log = _OpLog()
        with log:
            for _ in range(steps):
                runner.trainer._train_on(next(runner._batches))
    return log.ops


HEAVY = ("convolution", "convolution_backward", "mm", "addmm", "bmm", "linear")


def test_the_bf16_step_runs_no_fp32_convolution_or_matmul_and_no_host_sync():
    """The speed guard of the default recipe: in the bf16 step every convolution and matrix product (forward
    and backward, G and D, spectral norm's included) takes bf16 operands, and nothing inside the step waits
    for the device (.item(), a Python bool of a tensor). Breaking either (an fp32 cast before a conv, a sync
    per step) fails here without any timing."""
    ops = _default_recipe_steps("bf16")
    heavy = [(name, dtypes) for name, dtypes in ops if name in HEAVY]
    assert len(heavy) > 20  # G and D forward and backward, both steps: the guard sees the real work
    fp32 = [(name, dtypes) for name, dtypes in heavy if torch.float32 in dtypes]
    assert not fp32, f"fp32 operands in the bf16 step: {fp32[:5]}"
    syncs = [name for name, _ in ops if name in ("_local_scalar_dense", "item", "is_nonzero")]
    assert not syncs, f"host syncs inside the step: {syncs}"
    # The same guard sees fp32 where fp32 is asked for, so it is not blind.
    assert any(torch.float32 in dtypes for name, dtypes in _default_recipe_steps("off") if name in HEAVY)


def test_a_shared_cpu_gets_one_line_naming_the_thread_fix():
    import os
    import subprocess
    import sys
    from types import SimpleNamespace

    from facegan.device import busy_threads_elsewhere, configure_threads

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    threads = torch.get_num_threads()
    try:
        assert busy_threads_elsewhere() >= 1  # the spinner is always running or waiting to run
        torch.set_num_threads(len(os.sched_getaffinity(0)) + 1)  # more threads than free cores
        said = []
        configure_threads(SimpleNamespace(threads=0), log=said.append)
        assert len(said) == 1 and "the CPU is shared" in said[0] and "--threads" in said[0], said
        said.clear()
        assert configure_threads(SimpleNamespace(threads=1), log=said.append) == 1  # the user chose: no advice
        assert said == [] and torch.get_num_threads() == 1
    finally:
        spinner.kill()
        torch.set_num_threads(threads)
