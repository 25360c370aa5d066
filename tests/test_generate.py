import numpy as np
import pytest
import torch

from facegan.config import DataConfig, ModelConfig, TrainConfig
from facegan.errors import FaceganError
from facegan.generate import (
    generate,
    interpolate,
    latent_walk,
    latents,
    load_generator,
    parse_seeds,
    write_per_seed,
)
from facegan.images import save_animation, save_grid
from facegan.train import train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    cfg = TrainConfig(model=ModelConfig(conv_dim=8, z_size=16), data=DataConfig(num_images=64), batch_size=16,
                      epochs=1, num_samples=4)
    return train(cfg, out=tmp_path_factory.mktemp("runs"), progress=False, log=lambda *a: None)


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("1,5,9-10") == [1, 5, 9, 10]
    for bad in ("a", "5-2", "1,,2", "-3"):
        with pytest.raises(FaceganError, match="bad seed list"):
            parse_seeds(bad)


def test_same_seed_same_face_whatever_the_batch(trained_run):
    generator, _ = load_generator(trained_run / "generator.pt")
    seeds = [7, 3, 11, 0, 42]
    one_batch = generate(generator, seeds, batch_size=64)
    one_by_one = generate(generator, seeds, batch_size=1)
    assert np.array_equal(one_batch, one_by_one)
    alone = generate(generator, [11], batch_size=8)
    assert np.array_equal(alone[0], one_batch[2])
    assert not np.array_equal(one_batch[0], one_batch[1])  # different seeds, different faces


def test_one_file_per_seed_named_by_seed(trained_run, tmp_path):
    generator, _ = load_generator(trained_run / "checkpoints" / "last.pt")
    paths = write_per_seed(generate(generator, [3, 12]), [3, 12], tmp_path)
    assert [p.name for p in paths] == ["seed0003.png", "seed0012.png"]


@pytest.mark.parametrize("slerp", [False, True])
def test_interpolation_passes_through_every_seed(trained_run, slerp):
    generator, _ = load_generator(trained_run / "generator.pt")
    path = interpolate(generator, [3, 9, 4], frames=5, slerp=slerp)
    keys = generate(generator, [3, 9, 4])
    assert path.shape[0] == 9  # two legs of 5 frames sharing seed 9's
    for index, key in zip((0, 4, 8), keys):
        assert np.abs(path[index].astype(int) - key).max() <= 1


def test_walk_there_and_back_and_slerp_keeps_the_norm():
    keys = torch.randn(2, 512, generator=torch.Generator().manual_seed(0))
    there_and_back = latent_walk(keys, 6, loop=True)
    assert len(there_and_back) == 10 and torch.equal(there_and_back[7], there_and_back[3])
    def middle(walk):
        return walk[len(walk) // 2].norm() / keys[0].norm()
    assert middle(latent_walk(keys, 5, slerp=True)) > 0.97  # on the sphere, as Gaussian z are
    assert middle(latent_walk(keys, 5, slerp=False)) < 0.8  # lerp cuts the corner toward the mean
    with pytest.raises(FaceganError, match="at least 2 seeds"):
        latent_walk(keys[:1], 5)


def test_truncation_pulls_latents_toward_the_mean(trained_run):
    z = latents([5, 6], 16)
    assert torch.allclose(latents([5, 6], 16, truncation=0.5), 0.5 * z)
    generator, _ = load_generator(trained_run / "generator.pt")
    def spread(faces):
        return faces.astype(float).std(axis=0).mean()
    seeds = list(range(16))
    assert spread(generate(generator, seeds, truncation=0.0)) == 0  # psi 0: every seed is the mean face
    assert spread(generate(generator, seeds, truncation=0.5)) < spread(generate(generator, seeds))
    with pytest.raises(FaceganError, match="truncation 3"):
        latents([1], 16, truncation=3)


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".jpg", b"\xff\xd8"), (".webp", b"RIFF")])
def test_image_format_follows_the_file_name(tmp_path, suffix, magic):
    path = save_grid(np.zeros((4, 8, 8, 3), np.uint8), tmp_path / f"grid{suffix}")
    assert path.read_bytes().startswith(magic)


def test_animation_is_a_real_multi_frame_file(tmp_path):
    from PIL import Image
    frames = np.stack([np.full((8, 8, 3), 40 * i, np.uint8) for i in range(5)])
    for name in ("walk.gif", "walk.webp"):
        path = save_animation(frames, tmp_path / name, fps=10)
        with Image.open(path) as animation:
            assert animation.n_frames == 5 and animation.is_animated
    with pytest.raises(FaceganError, match="end the file name in .gif, .webp"):
        save_animation(frames, tmp_path / "walk.mp4")
    with pytest.raises(FaceganError, match="end the file name in .jpeg, .jpg, .png, .webp"):
        save_grid(frames, tmp_path / "grid.bmp")
