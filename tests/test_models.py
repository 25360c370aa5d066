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
    assert discriminator(images).shape == (3,)


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


def test_init_statistics():
    torch.manual_seed(0)
    generator, discriminator = build_models(ModelConfig(conv_dim=64))
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
    with pytest.raises(FaceganError, match="--num-layers 5 does not fit 32x32"):
        Generator(ModelConfig(image_size=32, num_layers=5))


@pytest.mark.parametrize("size", [32, 64])
def test_mlp_baseline_shapes(size):
    mlp = ModelConfig(image_size=size, conv_dim=4, arch="mlp")
    generator, discriminator = build_models(mlp)
    assert not any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in generator.modules())
    images = generator(torch.randn(2, mlp.z_size))
    assert images.shape == (2, 3, size, size) and discriminator(images).shape == (2,)
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
    assert interpolate(generator, 0, 1, steps=3).shape == (3, 32, 32, 3)
