import numpy as np
import pytest

from facegan.config import DataConfig, ModelConfig, TrainConfig
from facegan.errors import FaceganError
from facegan.generate import generate, interpolate, load_generator, parse_seeds, write_per_seed
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


def test_interpolation_ends_at_the_two_seeds(trained_run):
    generator, _ = load_generator(trained_run / "generator.pt")
    path = interpolate(generator, 3, 9, steps=5)
    ends = generate(generator, [3, 9])
    assert path.shape[0] == 5
    assert np.abs(path[0].astype(int) - ends[0]).max() <= 1 and np.abs(path[-1].astype(int) - ends[1]).max() <= 1
