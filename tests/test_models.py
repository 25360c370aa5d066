import pytest
import torch
from torch import nn

from facegan.config import ModelConfig
from facegan.errors import FaceganError
from facegan.models import Discriminator, Generator, build_models


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("head", ["conv", "linear"])
def test_shapes_for_every_size_and_head(size, head):
    cfg = ModelConfig(image_size=size, conv_dim=8, z_size=16, d_head=head)
    generator, discriminator = build_models(cfg)
    images = generator(torch.randn(3, 16))
    assert images.shape == (3, 3, size, size)
    # the head's natural shape, as the PyTorch tutorial (conv head) and the course notebooks (linear) expect
    assert discriminator(images).shape == ((3, 1, 1, 1) if head == "conv" else (3, 1))


@pytest.mark.parametrize("layers,final", [(3, 4), (4, 2)])
def test_layer_count_at_32_ends_at_4x4_or_2x2(layers, final):
    cfg = ModelConfig(image_size=32, conv_dim=8, num_layers=layers)
    generator, discriminator = build_models(cfg)
    assert cfg.final_size == final
    strided = [m for m in discriminator.features.modules() if isinstance(m, nn.Conv2d)]
    assert len(strided) == layers
    assert discriminator.features(torch.randn(2, 3, 32, 32)).shape[-1] == final
    assert generator.project(torch.randn(2, 100, 1, 1)).shape[-1] == final


def test_default_layers_follow_log2_of_size():
    assert [ModelConfig(image_size=s).layers for s in (32, 64, 128)] == [3, 4, 5]


def test_generator_accepts_flat_and_4d_z_and_outputs_tanh_range():
    generator = Generator(ModelConfig(conv_dim=8)).eval()
    z = torch.randn(4, 100) * 10  # large z drives tanh to saturation, still inside [-1, 1]
    flat, square = generator(z), generator(z.view(4, 100, 1, 1))
    assert torch.equal(flat, square)
    assert flat.min() >= -1 and flat.max() <= 1


def test_batchnorm_placement_follows_the_paper():
    generator, discriminator = build_models(ModelConfig(conv_dim=8))
    first_block = discriminator.features[0]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in first_block.modules())
    assert all(any(isinstance(m, nn.BatchNorm2d) for m in block.modules()) for block in discriminator.features[1:])
    assert isinstance(generator.to_rgb, nn.ConvTranspose2d)  # the output layer: no BatchNorm after it
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in discriminator.modules())
    assert any(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in discriminator.modules())


def test_spectral_norm_layers_keep_the_default_init_the_benchmark_measured():
    """Under spectral norm `weight` is computed from a stored original, which keeps PyTorch's
    Kaiming-uniform init (|w| <= 1/sqrt(fan_in)); N(0, 0.02) there measured worse (docs/findings.md)."""
    torch.manual_seed(0)
    _, discriminator = build_models(ModelConfig(conv_dim=8))
    first = discriminator.features[0].conv.parametrizations.weight.original  # (8, 3, 4, 4): fan_in 48
    bound = 1 / 48 ** 0.5
    assert first.abs().max() <= bound + 1e-6 and first.abs().max() > 0.9 * bound  # uniform, not N(0, 0.02)


def test_init_statistics():
    torch.manual_seed(0)
    generator, discriminator = build_models(ModelConfig(conv_dim=64, spectral_norm=False))
    weights = torch.cat([m.weight.flatten() for net in (generator, discriminator) for m in net.modules()
                         if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(weights.mean().item()) < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)
    bn_weights = torch.cat([m.weight for net in (generator, discriminator) for m in net.modules()
                            if isinstance(m, nn.BatchNorm2d)])
    assert bn_weights.mean().item() == pytest.approx(1.0, abs=0.005)
    assert bn_weights.std().item() == pytest.approx(0.02, rel=0.1)
    biases = [m.bias for net in (generator, discriminator) for m in net.modules()
              if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)) and m.bias is not None]
    assert all(torch.count_nonzero(b) == 0 for b in biases)


def test_dropout_only_when_asked():
    assert not any(isinstance(m, nn.Dropout2d) for m in Discriminator(ModelConfig(conv_dim=8)).modules())
    assert any(isinstance(m, nn.Dropout2d) for m in Discriminator(ModelConfig(conv_dim=8, dropout=0.3)).modules())


def test_too_many_layers_is_a_clear_error():
    with pytest.raises(FaceganError, match="--num-layers 6 does not fit 32x32"):
        Generator(ModelConfig(image_size=32, num_layers=6))


@pytest.mark.parametrize("size", [32, 64])
def test_mlp_baseline_shapes(size):
    mlp = ModelConfig(image_size=size, conv_dim=4, arch="mlp")
    generator, discriminator = build_models(mlp)
    assert not any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in generator.modules())
    images = generator(torch.randn(2, mlp.z_size))
    assert images.shape == (2, 3, size, size) and discriminator(images).shape == (2, 1)
    assert images.min() >= -1 and images.max() <= 1


def test_mlp_baseline_trains_and_generates_end_to_end(tmp_path):
    import numpy as np

    from facegan.config import DataConfig, TrainConfig
    from facegan.generate import generate, interpolate, load_generator
    from facegan.train import train

    cfg = TrainConfig(model=ModelConfig(conv_dim=8, arch="mlp"), data=DataConfig(num_images=64),
                      batch_size=16, epochs=1, num_samples=4)
    run = train(cfg, out=tmp_path, progress=False, log=lambda *a: None)
    generator, loaded = load_generator(run / "generator.pt")
    assert loaded.model.arch == "mlp"
    faces = generate(generator, [4, 1, 9], batch_size=2)
    assert faces.shape == (3, 32, 32, 3)
    assert np.array_equal(faces[1], generate(generator, [1], batch_size=1)[0])
    assert interpolate(generator, [0, 1], frames=3).shape == (3, 32, 32, 3)


def test_networks_take_config_fields_by_keyword_as_notebooks_write_them():
    torch.manual_seed(0)
    by_keyword = Generator(z_size=16, conv_dim=8, image_size=64)
    torch.manual_seed(0)
    by_config = Generator(ModelConfig(z_size=16, conv_dim=8, image_size=64))
    assert by_keyword.config == by_config.config
    assert all(torch.equal(a, b) for a, b in zip(by_keyword.state_dict().values(), by_config.state_dict().values()))
    assert Discriminator(conv_dim=8, image_size=64, d_head="linear")(torch.randn(2, 3, 64, 64)).shape == (2, 1)
    with pytest.raises(FaceganError, match="image size 36"):
        Generator(image_size=36)
    with pytest.raises(TypeError):
        Generator(ModelConfig(), conv_dim=8)


@pytest.mark.parametrize("shape", [(4,), (4, 1), (4, 1, 1, 1)])
def test_losses_accept_every_natural_logits_shape(shape):
    from facegan.losses import LOSSES, fake_loss, real_loss
    real, fake = torch.linspace(-2, 2, 4), torch.linspace(1, -1, 4)
    for name, cls in LOSSES.items():
        loss = cls(real_label=0.9)
        assert torch.allclose(loss.d_loss(real.reshape(shape), fake.reshape(shape)), loss.d_loss(real, fake)), name
        assert torch.allclose(loss.g_loss(fake.reshape(shape)), loss.g_loss(fake)), name
    bce = LOSSES["bce"](real_label=0.9)
    assert torch.allclose(real_loss(real.reshape(shape), smooth=True) + fake_loss(fake.reshape(shape)),
                          bce.d_loss(real, fake))
