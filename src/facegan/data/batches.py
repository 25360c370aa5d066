"""Prepared uint8 images -> shuffled float batches in [-1, 1] on the training device.

No per-image Python work: a batch is one gather from the uint8 array (memory-mapped on CPU,
resident on a GPU), then scaling and flipping as whole-batch tensor ops on the device.
"""

from __future__ import annotations

import numpy as np
import torch


def epoch_permutation(num_images: int, seed: int, epoch: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The order of `epoch`: a pure function of (seed, epoch), so resume needs only the epoch number.

    Without `weights`, a shuffle. With them (--balance), num_images draws with replacement, image i
    with probability weights[i] / sum: still one global order that every rank slices the same way."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if weights is not None:
        return torch.multinomial(weights, num_images, replacement=True, generator=generator)
    return torch.randperm(num_images, generator=generator)


class BatchSource:
    """Serves batches of one epoch at a time; `rank`/`world_size` give each process a disjoint shard."""

    def __init__(self, images: np.ndarray, batch_size: int, device: torch.device, seed: int,
                 flip: bool = True, memory_format=torch.contiguous_format, rank: int = 0, world_size: int = 1,
                 weights=None):
        self.num_images = len(images)
        # --balance: per-image sampling weights (data/balance.py); None = every image once per epoch.
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.flip = flip
        self.memory_format = memory_format
        self.rank, self.world_size = rank, world_size
        if device.type == "cpu":
            # The copy-on-write memmap as a tensor: pages are read on demand, nothing is duplicated.
            self.images = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        else:
            # A GPU holds even all of CelebA at 64x64 as uint8 (2.5 GB); batches never cross PCIe.
            self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device)

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch per process (the ragged end is dropped: BatchNorm dislikes tiny batches)."""
        return self.num_images // (self.batch_size * self.world_size)

    def shard(self, epoch: int) -> torch.Tensor:
        """This process's indices for `epoch`: every world_size-th of the shared permutation."""
        usable = self.steps_per_epoch * self.batch_size * self.world_size
        return epoch_permutation(self.num_images, self.seed, epoch, self.weights)[:usable][self.rank::self.world_size]

    def epoch(self, epoch: int, generator: torch.Generator, start_step: int = 0):
        """Yield batches (B, 3, S, S) float in [-1, 1] for `epoch`, from step `start_step` on.

        Flips are drawn from `generator` (the run's noise stream), so they resume exactly."""
        order = self.shard(epoch)
        if self.device.type != "cpu":
            order = order.to(self.device)
        for step in range(start_step, self.steps_per_epoch):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            # index_select, not images[index]: the same gather, measured 6x faster on a 2.3 GB memmap.
            yield self.to_float(self.images.index_select(0, index), generator)

    def to_float(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, S, S, 3) -> float (B, 3, S, S) in [-1, 1], randomly mirrored when flip is on.

        Mirroring happens on the uint8 gather (a quarter of the bytes) and only for the chosen
        images; scaling is x * 2/255 (uint8 -> float in the same kernel) then - 1, whose output
        keeps the gather's NHWC memory, i.e. channels_last (measured ~2.5x faster than flipping
        and scaling floats). The fused -1 + x * 2/255 would be one pass fewer, but its rounding
        maps 255 to 1.0000001, outside tanh's range."""
        batch = batch.to(self.device, non_blocking=True)
        if self.flip and generator is not None:
            # Every rank draws the flips of the whole global batch and keeps its own slice, so the
            # noise stream is the same in every process and for any world size.
            mirror = torch.rand(len(batch) * self.world_size, generator=generator, device=generator.device) < 0.5
            chosen = torch.nonzero(mirror[self.rank::self.world_size].to(self.device)).flatten()
            batch.index_copy_(0, chosen, batch.index_select(0, chosen).flip(2))
        images = batch.permute(0, 3, 1, 2).mul(2.0 / 255.0).sub_(1.0)
        return images.contiguous(memory_format=self.memory_format)
