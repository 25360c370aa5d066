import numpy as np
import torch

from facegan.data.batches import BatchSource, epoch_permutation


def make_source(n=50, batch=8, **kw):
    images = np.arange(n, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3)
    return BatchSource(images, batch, torch.device("cpu"), seed=1, **kw)


def test_batches_are_scaled_to_tanh_range_and_channels_first():
    images = np.zeros((16, 4, 4, 3), np.uint8)
    images[:8] = 255
    source = BatchSource(images, 16, torch.device("cpu"), seed=0, flip=False)
    batch = next(source.epoch(0, torch.Generator()))
    assert batch.shape == (16, 3, 4, 4) and batch.dtype == torch.float32
    assert set(batch.unique().tolist()) == {-1.0, 1.0}


def test_each_epoch_is_a_new_shuffle_without_repeats():
    source = make_source(flip=False)
    seen = [torch.cat([b[:, 0, 0, 0] for b in source.epoch(e, torch.Generator())]) for e in range(2)]
    for values in seen:
        assert len(values) == 48 and len(values.unique()) == 48  # 6 full batches, no image twice
    assert not torch.equal(seen[0], seen[1])
    assert torch.equal(epoch_permutation(50, 1, 0), epoch_permutation(50, 1, 0))


def test_flip_mirrors_some_images_exactly():
    images = np.zeros((32, 4, 4, 3), np.uint8)
    images[:, :, 0] = 255  # a bright left column
    source = BatchSource(images, 32, torch.device("cpu"), seed=0, flip=True)
    batch = next(source.epoch(0, torch.Generator().manual_seed(0)))
    left, right = batch[:, 0, 0, 0], batch[:, 0, 0, 3]
    assert 0 < int((right == 1).sum()) < 32  # some mirrored, some not
    assert torch.all((left == 1) ^ (right == 1))


def test_shards_are_disjoint_and_cover_the_epoch():
    shards = [make_source(n=64, batch=8, rank=r, world_size=2).shard(3) for r in range(2)]
    assert len(set(shards[0].tolist()) & set(shards[1].tolist())) == 0
    assert sorted(shards[0].tolist() + shards[1].tolist()) == list(range(64))
