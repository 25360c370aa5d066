"""Is the generator copying its training images? Nearest neighbours of samples in the training set.

A generator that memorised its data puts its samples much closer to training images than new
real images of the same kind are. So the number to read is the ratio of two medians: the distance
from each sample to its nearest training image, over the distance from held-out real images to
their nearest training image (images past --max-images when the run used fewer than all; else
leave-one-out: each of a subset of training images against all the others). A ratio well below 1
means copying; about 1 or above means the samples are no closer to the training set than new
faces are. Distances are RMS pixel differences in [0, 1] units, and Inception pool3 distances when
the weights are present."""

from __future__ import annotations

import numpy as np
import torch

from ..images import make_grid


def _flat(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(images)).reshape(len(images), -1).float().div_(255.0)


def nearest(queries: torch.Tensor, pool: torch.Tensor, k: int = 1, exclude: torch.Tensor | None = None,
            block: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices), each (Q, k): the k nearest rows of `pool` (P, D) to each query (Q, D), by
    RMS difference; exclude[i] is a pool index query i may not match (itself, for leave-one-out)."""
    best_d = torch.full((len(queries), k), float("inf"))
    best_i = torch.zeros((len(queries), k), dtype=torch.long)
    q_norm = queries.pow(2).sum(1, keepdim=True)
    for start in range(0, len(pool), block):
        part = pool[start:start + block]
        squared = (q_norm + part.pow(2).sum(1)[None] - 2 * queries @ part.T).clamp_min_(0)  # (Q, block)
        if exclude is not None:
            inside = (exclude >= start) & (exclude < start + len(part))
            squared[inside.nonzero().flatten(), exclude[inside] - start] = float("inf")
        distances = torch.cat([best_d, squared.div_(queries.shape[1]).sqrt_()], 1)
        indices = torch.cat([best_i, torch.arange(start, start + len(part)).expand(len(queries), -1)], 1)
        best_d, order = distances.topk(k, dim=1, largest=False)
        best_i = indices.gather(1, order)
    return best_d, best_i


def nearest_neighbour_report(samples: np.ndarray, images: np.ndarray, train_count: int, seed: int = 0,
                             features=None, neighbours: int = 4, sheet_rows: int = 16) -> tuple[dict, np.ndarray]:
    """Results for `facegan evaluate --metrics nn`, and the sheet: each of the first `sheet_rows`
    samples beside its nearest training images, uint8 (rows*(1+neighbours) images as one grid).

    `features`, when given, maps uint8 images to feature rows (Inception space) for a second ratio."""
    train = images[:train_count]
    held_out = images[train_count:train_count + len(samples)]
    train_flat, sample_flat = _flat(train), _flat(samples)
    sample_d, sample_i = nearest(sample_flat, train_flat, k=neighbours)
    if len(held_out) >= 2:
        real_d, _ = nearest(_flat(held_out), train_flat)
        baseline = "held-out images"
    else:
        chosen = torch.from_numpy(np.random.default_rng(seed).choice(len(train), min(len(samples), len(train)),
                                                                     replace=False))
        real_d, _ = nearest(train_flat[chosen], train_flat, exclude=chosen)
        baseline = "leave-one-out training images"
    results = {"nn_sample_median": round(float(sample_d[:, 0].median()), 4),
               "nn_real_median": round(float(real_d[:, 0].median()), 4), "nn_baseline": baseline}
    results["nn_ratio"] = round(results["nn_sample_median"] / max(results["nn_real_median"], 1e-12), 3)
    if features is not None:
        limit = min(len(train), 5000)  # Inception features of a whole CelebA would take an hour on a CPU
        train_f = torch.from_numpy(features(train[:limit])).float()
        sample_f = torch.from_numpy(features(samples)).float()
        real_f = torch.from_numpy(features(held_out)).float() if len(held_out) >= 2 else None
        f_sample, _ = nearest(sample_f, train_f)
        if real_f is None:
            chosen = torch.arange(min(len(samples), limit))
            f_real, _ = nearest(train_f[chosen], train_f, exclude=chosen)
        else:
            f_real, _ = nearest(real_f, train_f)
        results["nn_inception_ratio"] = round(float(f_sample.median() / max(float(f_real.median()), 1e-12)), 3)
        results["nn_inception_train_images"] = limit
    rows = min(sheet_rows, len(samples))
    tiles = []
    for r in range(rows):
        tiles.append(samples[r])
        tiles.extend(np.asarray(train[int(i)]) for i in sample_i[r])
    return results, make_grid(np.stack(tiles), columns=1 + neighbours)
