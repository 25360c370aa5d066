"""A torch Dataset over the prepared cache, for users who bring their own DataLoader.

facegan's own training never uses it: BatchSource gathers whole batches from the cache on the
device, with no per-image Python call. This is the notebook-friendly door to the same images."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import DataConfig
from .prepare import prepare


class FaceDataset(Dataset):
    """Items are float (3, H, W) tensors in [-1, 1], prepared (decoded, cropped, resized) once and cached.

        FaceDataset("faces", image_size=64)                  # the built-in faces
        FaceDataset("data/celeba", image_size=64, crop=108)  # a folder, a .zip, celeba, celeba-small
        DataLoader(FaceDataset("faces", num_images=2000), batch_size=64, shuffle=True)

    `flip=True` mirrors each item at random (torch's global RNG, so DataLoader seeding applies)."""

    def __init__(self, source: str = "faces", image_size: int = 32, crop: int = 0, num_images: int | None = None,
                 render_seed: int = 0, flip: bool = False, cache_dir=None, progress: bool = False):
        data = DataConfig(source=str(source), crop=crop, render_seed=render_seed)
        if num_images is not None:
            data = dataclasses.replace(data, num_images=num_images)
        self.images = prepare(data, image_size, cache_dir=cache_dir, progress=progress).images  # uint8 (N, H, W, 3)
        self.flip = flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = torch.from_numpy(np.array(self.images[index]))   # (H, W, 3) uint8, a copy off the memmap
        image = image.permute(2, 0, 1).float().mul_(2.0 / 255.0).sub_(1.0)  # (3, H, W) in [-1, 1]
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(2)
        return image
