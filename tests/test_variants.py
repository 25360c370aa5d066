"""The variants people try (issue 11): any image size, separate G/D shapes, the image-noise and MLP
variants, optimisers per network, learning-rate schedules, augmentations, samples every N steps,
--max-images; each in the saved config and exactly resumable."""

import json

import pytest
import torch
from torch import nn

from facegan import checkpoints
from facegan.augment import ROTATION_DEGREES, augment
from facegan.cli import main
from facegan.config import DataConfig, ModelConfig
from facegan.errors import FaceganError
from facegan.generate import generate, load_generator
from facegan.models import MinibatchStd, build_models
from facegan.optim import lr_factor
from facegan.train import train

from conftest import killed_copy, tiny_train_config

QUIET = {"progress": False, "log": lambda *a: None}


tiny = tiny_train_config


def params(net) -> int:
    return sum(p.numel() for p in net.parameters())


# --- sizes and shapes -----------------------------------------------------------------------

@pytest.mark.parametrize("arch,size", [("dcgan", 28), ("dcgan", 48), ("dcgan", 96), ("mlp", 20), ("image-noise", 28),
                                       ("image-noise", 36)])
def test_any_reasonable_image_size(arch, size):
    cfg = ModelConfig(image_size=size, conv_dim=4, arch=arch)
    generator, discriminator = build_models(cfg)
    images = generator(torch.randn(2, cfg.noise_size))
    assert images.shape == (2, 3, size, size) and discriminator(images).numel() == 2


def test_dcgan_sizes_it_cannot_reach_name_the_nearest_that_work(capsys):
    assert ModelConfig(image_size=28).layers == 2 and ModelConfig(image_size=28).final_size == 7
    assert ModelConfig(image_size=48).final_size == 3 and ModelConfig(image_size=64).final_size == 4
    with pytest.raises(FaceganError, match="use 32 or 40"):
        ModelConfig(image_size=36)
    assert main(["train", "--image-size", "30"]) == 2
    assert "use 28 or 32, or --arch mlp / image-noise" in capsys.readouterr().err
    with pytest.raises(FaceganError, match="out of range"):
        ModelConfig(image_size=8, arch="mlp")


def test_separate_generator_and_discriminator_shapes():
    cfg = ModelConfig(image_size=32, conv_dim=8, g_conv_dim=16, d_conv_dim=4, g_layers=2, d_layers=5)
    generator, discriminator = build_models(cfg)
    d_convs = [m for m in discriminator.features.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in d_convs] == [4, 8, 16, 32, 64]       # 5 layers at 32 px: down to 1x1
    g_convs = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in g_convs] == [32, 16, 3]              # project + 1 + to_rgb = 2 strided
    assert generator(torch.randn(2, 16 * 0 + 100)).shape == (2, 3, 32, 32)
    assert ModelConfig(conv_dim=8, num_layers=3).g_depth == 3 == ModelConfig(conv_dim=8, num_layers=3).d_depth
    with pytest.raises(FaceganError, match="--g-layers applies to --arch dcgan only"):
        ModelConfig(arch="mlp", g_layers=3)
    with pytest.raises(FaceganError, match="--d-layers 6 does not fit 32x32"):
        ModelConfig(d_layers=6)


def test_mlp_with_the_write_ups_sizes_about_1m_and_3m_parameters():
    generator, discriminator = build_models(ModelConfig(arch="mlp", image_size=28, g_conv_dim=12, d_conv_dim=32))
    assert 0.9e6 < params(generator) < 1.1e6 and 2.9e6 < params(discriminator) < 3.2e6


def test_image_noise_generator_takes_image_shaped_noise_through_a_narrow_fc():
    cfg = ModelConfig(arch="image-noise", image_size=28, g_conv_dim=112)
    generator, _ = build_models(cfg)
    assert cfg.noise_size == 3 * 28 * 28
    # the fully connected layer sees about z_size numbers (3 channels x 7 x 7 = 147 >= 100), not 12,544
    assert generator.to_image.in_features == 147 and generator.to_image.out_features == 3 * 28 * 28
    noise = torch.randn(2, 3, 28, 28)
    generator.eval()
    assert torch.equal(generator(noise), generator(noise.flatten(1)))  # (N, 3, S, S) or flat


def test_minibatch_std_feature_is_zero_for_identical_images_and_positive_otherwise():
    layer = MinibatchStd(group=4)
    same = layer(torch.ones(8, 2, 3, 3))
    assert same.shape == (8, 3, 3, 3) and same[:, 2].abs().max() < 1e-3
    assert layer(torch.randn(8, 2, 3, 3))[:, 2].min() > 0.3


# --- optimisers and schedules ---------------------------------------------------------------

def test_lr_schedules():
    linear = tiny(lr_decay="linear", lr_decay_start=10)
    assert [lr_factor(linear, s, 110) for s in (0, 10, 60, 110, 200)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    cosine = tiny(lr_decay="cosine")
    assert lr_factor(cosine, 50, 100) == pytest.approx(0.5) and lr_factor(cosine, 0, 100) == 1.0
    step = tiny(lr_decay="step", lr_decay_every=10, lr_decay_gamma=0.1)
    assert [lr_factor(step, s, 100) for s in (0, 9, 10, 25)] == pytest.approx([1.0, 1.0, 0.1, 0.01])
    with pytest.raises(FaceganError, match="needs --lr-decay-every"):
        tiny(lr_decay="step")
    with pytest.raises(FaceganError, match="unknown --opt-d 'rmsprop'"):
        tiny(opt_d="rmsprop")


def test_options_are_saved_and_resume_is_bit_exact_with_all_of_them_on(tmp_path):
    cfg = tiny(opt_d="sgd", momentum=0.8, lr_decay="cosine", lr_d=0.01,
               augment="flip,brightness,contrast,rotate,translate", sample_every=4)
    straight = train(cfg, out=tmp_path / "a", **QUIET)
    saved = json.loads((straight / "config.json").read_text())
    assert saved["opt_d"] == "sgd" and saved["lr_decay"] == "cosine" and "rotate" in saved["augment"]
    state = checkpoints.load(straight / "checkpoints" / "last.pt")
    assert "momentum_buffer" in next(iter(state["opt_d"]["state"].values()))      # SGD with momentum
    assert state["opt_d"]["param_groups"][0]["lr"] == pytest.approx(0.01 * lr_factor(cfg, 11, 12))
    assert state["planned_steps"] == 12
    assert sorted(p.name for p in (straight / "samples").iterdir()) == [
        "epoch-0001.png", "epoch-0002.png", "step-0000004.png", "step-0000008.png"]  # 12 is an epoch end
    # A run killed after epoch 1 and resumed from there (a copy of the run, resumed from epoch-0001.pt)
    killed = tmp_path / "b" / straight.name
    epoch_one = killed_copy(straight, killed)
    train(checkpoints.config_of(checkpoints.load(epoch_one)), resume_from=epoch_one, **QUIET)
    a, b = (checkpoints.load(run / "checkpoints" / "last.pt") for run in (straight, killed))
    for key in ("generator", "discriminator"):
        assert all(torch.equal(t, b[key][name]) for name, t in a[key].items()), key


# --- augmentations --------------------------------------------------------------------------

def test_augmentations_are_small_reproducible_and_sliced_per_rank():
    batch = torch.rand(8, 3, 16, 16) * 2 - 1
    names = ["brightness", "contrast", "rotate", "translate"]
    out = augment(batch, names, torch.Generator().manual_seed(0))
    again = augment(batch, names, torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and out.shape == batch.shape and out.abs().max() <= 1.0
    assert not torch.equal(out, batch)
    halves = [augment(batch[rank::2], names, torch.Generator().manual_seed(0), rank, 2) for rank in (0, 1)]
    assert torch.allclose(halves[0], out[0::2], atol=1e-6) and torch.allclose(halves[1], out[1::2], atol=1e-6)
    # a rotation of a square keeps its centre and moves its corners by less than the range allows
    square = torch.zeros(1, 3, 32, 32)
    square[..., 8:24, 8:24] = 1.0
    turned = augment(square * 2 - 1, ["rotate"], torch.Generator().manual_seed(3))
    assert turned[0, 0, 16, 16] == 1.0 and ROTATION_DEGREES <= 10
    assert torch.equal(augment(batch, ["flip"], torch.Generator()), batch)  # flips are made with the batches


def test_unknown_augmentation_and_contradiction_are_refused():
    with pytest.raises(FaceganError, match="unknown --augment 'blur'"):
        tiny(augment="flip,blur")
    with pytest.raises(FaceganError, match="contradict"):
        tiny(augment="flip", data=DataConfig(num_images=96, flip=False))


# --- data limits and variants end to end -------------------------------------------------------

def test_max_images_trains_on_the_first_n(tmp_path):
    run = train(tiny(data=DataConfig(num_images=96, max_images=32), epochs=1), out=tmp_path, **QUIET)
    assert checkpoints.load(run / "checkpoints" / "last.pt")["step"] == 2  # 32 images / batch 16


@pytest.mark.parametrize("arch", ["image-noise", "mlp"])
def test_variants_train_and_generate_end_to_end(tmp_path, arch):
    cfg = tiny(model=ModelConfig(arch=arch, image_size=28, conv_dim=4), epochs=1)
    run = train(cfg, out=tmp_path, **QUIET)
    generator, saved = load_generator(run / "generator.pt")
    assert saved.model.arch == arch and generate(generator, [1, 2]).shape == (2, 28, 28, 3)


# --- is it copying? -----------------------------------------------------------------------------

def test_nearest_matches_brute_force_and_excludes_itself():
    from facegan.metrics.nearest import nearest
    queries, pool = torch.rand(5, 12), torch.rand(30, 12)
    distances, indices = nearest(queries, pool, k=2, block=7)
    brute = torch.cdist(queries, pool) / 12 ** 0.5
    assert torch.allclose(distances, brute.topk(2, largest=False).values, atol=1e-5)
    assert torch.equal(indices, brute.topk(2, largest=False).indices)
    itself = torch.tensor([3, 4])
    _, found = nearest(pool[itself], pool, exclude=itself, block=7)
    assert not torch.equal(found.flatten(), itself)


def test_nn_ratio_tells_a_copier_from_a_generator_of_new_faces():
    from facegan.data.synthetic import render_faces
    from facegan.metrics.nearest import nearest_neighbour_report
    train_images = render_faces(range(300), 16)
    copies, sheet = nearest_neighbour_report(train_images[:40], train_images, 300)
    new_faces, _ = nearest_neighbour_report(render_faces(range(40), 16, seed=7), train_images, 300)
    held_out, _ = nearest_neighbour_report(render_faces(range(40), 16, seed=7), train_images, 250)
    assert copies["nn_ratio"] < 0.05 and copies["nn_baseline"] == "leave-one-out training images"
    assert 0.7 < new_faces["nn_ratio"] < 1.5 and held_out["nn_baseline"] == "held-out images"
    assert sheet.shape == (16 * 18 + 2, 5 * 18 + 2, 3)  # 16 rows: sample + 4 neighbours, 16 px + padding


def test_evaluate_nn_writes_the_sheet(tmp_path, capsys):
    run = train(tiny(epochs=1), out=tmp_path, **QUIET)
    assert main(["evaluate", str(run), "--metrics", "nn", "--num-samples", "32"]) == 0
    out = capsys.readouterr().out
    assert "nn_ratio" in out and (run / "nearest.png").is_file()


def test_arch_recipe_applies_under_explicit_options(tmp_path, capsys):
    common = ["train", "--arch", "image-noise", "--num-images", "32", "--batch-size", "16", "--conv-dim", "4",
              "--max-steps", "1", "--no-progress", "--out", str(tmp_path)]
    assert main(common) == 0
    assert "lr_d 0.0001, instance_noise_steps 6240" in capsys.readouterr().out
    assert main(common + ["--lr-d", "3e-4"]) == 0
    configs = sorted(tmp_path.glob("*/config.json"))
    first, second = (json.loads(p.read_text()) for p in configs)
    assert first["lr_d"] == 1e-4 and first["instance_noise_steps"] == 6240
    assert second["lr_d"] == 3e-4 and second["instance_noise_steps"] == 6240  # what was typed wins


def test_nn_reports_a_second_ratio_in_feature_space_when_features_are_given():
    from facegan.data.synthetic import render_faces
    from facegan.metrics.nearest import nearest_neighbour_report
    train_images = render_faces(range(120), 16)
    calls = []

    def features(images):  # stands in for Inception pool3: any (N, D) float array
        calls.append(len(images))
        return images.reshape(len(images), -1)[:, ::7].astype("float32")

    copies, _ = nearest_neighbour_report(train_images[:20], train_images, 120, features=features)
    assert copies["nn_inception_ratio"] < 0.05 and copies["nn_inception_train_images"] == 120 and calls
