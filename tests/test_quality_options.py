"""Issue 12's mechanics: the EMA generator, --preset, spectral norm, R1, DiffAugment, and the defaults it chose."""

import json

import pytest
import torch

from facegan import checkpoints
from facegan.cli import main
from facegan.config import ModelConfig
from facegan.ema import GeneratorEMA, ema_beta
from facegan.generate import generate, load_generator
from facegan.models import Generator
from facegan.train import train

from conftest import killed_copy, tiny_train_config

QUIET = {"progress": False, "log": lambda *a: None}


tiny = tiny_train_config


def test_ema_beta_follows_the_half_life_in_images_with_ramp_up():
    assert ema_beta(10.0, 10**9, 64) == pytest.approx(0.5 ** (64 / 10_000))   # ramp over: half-life 10k images
    assert ema_beta(10.0, 1000, 64) == pytest.approx(0.5 ** (64 / 50))        # early: 5% of 1000 images seen
    assert ema_beta(10.0, 1000, 64, rampup=0) == pytest.approx(0.5 ** (64 / 10_000))


def test_ema_weights_move_as_specified_and_copy_batchnorm_statistics():
    generator = Generator(z_size=4, conv_dim=4, image_size=16)
    ema = GeneratorEMA(generator)
    before = [p.clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in generator.parameters():
            p.add_(1.0)
        for b in generator.buffers():
            b.add_(3)
    ema.update(generator, beta=0.9)
    for old, new, averaged in zip(before, generator.parameters(), ema.module.parameters()):
        assert torch.allclose(averaged, 0.9 * old + 0.1 * new)
    assert all(torch.equal(a, b) for a, b in zip(ema.module.buffers(), generator.buffers()))
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_is_in_checkpoints_resumes_exactly_and_generate_uses_it(tmp_path, capsys):
    cfg = tiny(ema_kimg=0.1)
    straight = train(cfg, out=tmp_path / "a", **QUIET)
    state = checkpoints.load(straight / "checkpoints" / "last.pt")
    snapshot = checkpoints.load(straight / "generator.pt")
    assert "generator_ema" in state and "generator_ema" in snapshot
    assert not all(torch.equal(state["generator_ema"][k], v) for k, v in state["generator"].items())
    killed = tmp_path / "b" / straight.name  # killed after epoch 1, resumed from there
    epoch_one = killed_copy(straight, killed)
    train(checkpoints.config_of(checkpoints.load(epoch_one)), resume_from=epoch_one, **QUIET)
    resumed = checkpoints.load(killed / "checkpoints" / "last.pt")
    assert all(torch.equal(v, resumed["generator_ema"][k]) for k, v in state["generator_ema"].items())
    ema_faces = generate(load_generator(straight / "generator.pt")[0], [1, 2])
    raw_faces = generate(load_generator(straight / "generator.pt", ema=False)[0], [1, 2])
    assert not (ema_faces == raw_faces).all()
    assert main(["generate", str(straight), "--no-ema", "--seeds", "1,2", "--out", str(tmp_path / "raw.png")]) == 0


def test_preset_dcgan_is_the_textbook_under_explicit_options(tmp_path, capsys):
    common = ["train", "--num-images", "256", "--conv-dim", "4", "--max-steps", "1", "--no-progress",
              "--out", str(tmp_path)]
    assert main(common + ["--preset", "dcgan"]) == 0
    assert main(common + ["--preset", "dcgan", "--batch-size", "32", "--real-label", "0.9"]) == 0
    first, second = (json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/config.json")))
    settings = (first["batch_size"], first["real_label"], first["instance_noise"], first["ema_kimg"])
    assert settings == (128, 1.0, 0.0, 0.0)
    assert first["data"]["flip"] is False and first["lr_d"] == first["lr_g"] == 2e-4 and first["beta1"] == 0.5
    assert first["loss"] == "bce" and first["model"]["spectral_norm"] is False
    assert second["batch_size"] == 32 and second["real_label"] == 0.9 and second["instance_noise"] == 0.0
    assert main(["train", "--preset", "fancy"]) == 2


def test_the_default_is_the_quality_benchmarks_winner_and_can_be_turned_off(tmp_path, capsys):
    """docs/findings.md "Better faces": hinge loss, spectral norm on D and a 10-kimg EMA won benchmarks/quality.py."""
    common = ["train", "--num-images", "256", "--conv-dim", "4", "--max-steps", "1", "--no-progress",
              "--out", str(tmp_path)]
    assert main(common) == 0
    assert main(common + ["--no-spectral-norm", "--ema", "0", "--loss", "bce"]) == 0
    default, off = (json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/config.json")))
    assert (default["loss"], default["model"]["spectral_norm"], default["ema_kimg"]) == ("hinge", True, 10.0)
    assert (off["loss"], off["model"]["spectral_norm"], off["ema_kimg"]) == ("bce", False, 0.0)
    run = sorted(tmp_path.glob("*-faces32"))[0]
    assert "generator_ema" in checkpoints.load(run / "generator.pt")


def test_spectral_norm_holds_every_d_layer_at_singular_value_one():
    from facegan.models import build_models
    _, discriminator = build_models(ModelConfig(conv_dim=8, spectral_norm=True))
    layers = [m for m in discriminator.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    for _ in range(30):  # power iterations happen in training-mode forwards
        discriminator(torch.randn(4, 3, 32, 32))
    for m in layers:
        assert torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2) == pytest.approx(1.0, abs=0.05)


def test_r1_gradient_matches_finite_differences():
    from facegan.losses import r1_penalty
    torch.manual_seed(0)
    discriminator = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.Tanh(),
                                        torch.nn.Linear(5, 1)).double()
    real = torch.randn(3, 3, 2, 2, dtype=torch.double)
    logits, penalty = r1_penalty(discriminator, real)
    step, numeric = 1e-6, torch.zeros_like(real)
    for i in range(real.numel()):  # d(sum of D)/dx by central differences
        bump = torch.zeros(real.numel(), dtype=torch.double)
        bump[i] = step
        bump = bump.view_as(real)
        numeric.view(-1)[i] = (discriminator(real + bump).sum() - discriminator(real - bump).sum()) / (2 * step)
    assert penalty.item() == pytest.approx(numeric.square().sum(dim=(1, 2, 3)).mean().item(), rel=1e-6)
    penalty.backward()  # the penalty's gradient reaches D's weights
    assert discriminator[1].weight.grad.abs().sum() > 0


def test_training_with_spectral_norm_and_lazy_r1_resumes_exactly(tmp_path):
    cfg = tiny(model=ModelConfig(conv_dim=8, z_size=16, spectral_norm=True), r1_gamma=1.0, r1_every=2)
    straight = train(cfg, out=tmp_path / "a", **QUIET)
    killed = tmp_path / "b" / straight.name
    epoch_one = killed_copy(straight, killed)
    train(checkpoints.config_of(checkpoints.load(epoch_one)), resume_from=epoch_one, **QUIET)
    a, b = (checkpoints.load(run / "checkpoints" / "last.pt") for run in (straight, killed))
    assert all(torch.equal(v, b["discriminator"][k]) for k, v in a["discriminator"].items())


def test_diffaugment_is_differentiable_and_applied_to_real_and_fake_in_both_phases(tmp_path):
    from facegan.augment import diff_augment
    images = torch.rand(4, 3, 16, 16, requires_grad=True)
    out = diff_augment(images * 2 - 1, ["color", "translation", "cutout"], torch.Generator().manual_seed(0))
    out.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert ((out == 0).flatten(1).sum(1) >= 3 * 8 * 8).all()  # each image has its 8x8 cutout (x 3 channels)
    halves = [diff_augment((images * 2 - 1)[r::2], ["color", "translation", "cutout"],
                           torch.Generator().manual_seed(0), r, 2) for r in (0, 1)]
    assert torch.allclose(halves[0], out[0::2]) and torch.allclose(halves[1], out[1::2])

    from facegan.losses import make_loss
    from facegan.models import build_models
    from facegan.step import DInput, StepModules, train_step
    seen = []

    def view(batch):
        seen.append(batch.requires_grad)
        return batch * 0.5
    generator, discriminator = build_models(ModelConfig(conv_dim=4, z_size=8))
    opts = [torch.optim.Adam(n.parameters()) for n in (generator, discriminator)]
    train_step(StepModules(generator, discriminator, *opts), make_loss("bce"), torch.rand(4, 3, 32, 32) * 2 - 1,
               torch.randn(4, 8), DInput(view=view))
    assert seen == [False, False, True]  # real and detached fake in the D phase, fake with G's graph in the G phase
    assert json.loads(train(tiny(diffaug="color,translation,cutout", epochs=1), out=tmp_path, **QUIET)
                      .joinpath("config.json").read_text())["diffaug"] == "color,translation,cutout"
