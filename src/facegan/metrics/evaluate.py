"""Evaluate a generator against its data: SWD and MS-SSIM always, FID/KID/precision-recall with the
Inception weights. Real-side statistics are cached per prepared dataset and settings (.npz)."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from ..fileio import atomic_write
from ..generate import generate
from ..paths import cache_root
from .msssim import diversity
from .registry import INCEPTION_METRICS, parse_metrics  # noqa: F401  (parse_metrics: the public name here too)
from .swd import swd

def real_subset(images: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """A fixed random subset of the prepared images (sorted reads keep the memory map sequential)."""
    count = min(count, len(images))
    index = np.sort(np.random.default_rng(seed).choice(len(images), count, replace=False))
    return np.asarray(images[index])


@torch.no_grad()
def inception_features(model, images: np.ndarray, device, batch_size: int = 50) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float64 (N, 2048)."""
    parts = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start:start + batch_size]).to(device).permute(0, 3, 1, 2).float() / 255
        parts.append(model(batch).double().cpu().numpy())
    return np.concatenate(parts)


def stats_path(dataset_file: Path, settings: dict, cache_dir=None) -> Path:
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir or cache_root()) / "stats" / f"{Path(dataset_file).stem}-{key}.npz"


def _cached(path: Path, compute) -> dict:
    """Load the .npz at `path`, or compute the arrays and store them atomically."""
    if path.is_file():
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed
    values = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, mode=None, suffix=".npz") as tmp:
        np.savez(tmp, **values)
    return values


def evaluate(generator, prepared, metrics, num_samples: int = 1000, device="cpu", inception_weights=None,
             batch_size: int = 64, cache_dir=None, seed: int = 0, train_count: int | None = None,
             sheet_path=None) -> dict:
    """Metric name -> value for `generator` against the prepared images.

    For "nn", `train_count` is how many of the images the run trained on (the rest are held out) and
    `sheet_path`, when given, receives the sheet of samples beside their nearest training images."""
    metrics = list(metrics)
    was_training = generator.training
    generator.eval()
    fake = generate(generator, range(seed, seed + num_samples), batch_size, device)
    generator.train(was_training)
    real = real_subset(prepared.images, num_samples, seed)
    results = {"num_samples": int(num_samples)}
    if "swd" in metrics:
        # The real side of SWD is cheap (well under a second per thousand images) and its patch
        # descriptors are tens of MB, so it is recomputed rather than cached.
        distances = swd(real, fake, seed=seed)
        results["swd"] = round(distances["avg"], 3)
        results["swd_levels"] = {str(k): round(v, 3) for k, v in distances["levels"].items()}
    if "msssim" in metrics:
        settings = {"metric": "msssim", "pairs": 1000, "n": len(real), "seed": seed}
        reference = _cached(stats_path(prepared.path, settings, cache_dir),
                            lambda: {"msssim": np.array(diversity(real, seed=seed))})
        results["msssim"] = round(diversity(fake, seed=seed), 4)
        results["msssim_real"] = round(float(reference["msssim"]), 4)
    if "nn" in metrics:
        from ..images import save_image
        from .nearest import nearest_neighbour_report

        features = None
        if inception_weights:
            from .inception import load_inception
            model = load_inception(inception_weights, device)
            features = lambda images: inception_features(model, images, device)  # noqa: E731
        report, sheet = nearest_neighbour_report(fake, prepared.images, train_count or len(prepared.images),
                                                 seed=seed, features=features)
        results.update(report)
        if sheet_path is not None:
            save_image(sheet, sheet_path, upscale=max(1, 96 // fake.shape[1]))
            results["nn_sheet"] = str(sheet_path)
    if INCEPTION_METRICS & set(metrics):
        from .fid import fid, kid, precision_recall
        from .inception import load_inception

        model = load_inception(inception_weights, device)
        settings = {"metric": "inception-pool3", "n": len(real), "seed": seed, "resize": "bilinear299"}
        reference = _cached(stats_path(prepared.path, settings, cache_dir),
                            lambda: _inception_reference(model, real, device))
        fake_features = inception_features(model, fake, device)
        if "fid" in metrics:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # reported once, below, in the table's own words
                results["fid"] = round(fid(None, fake_features, (reference["mu"], reference["sigma"])), 3)
            if num_samples < 2048:
                results["fid_note"] = "fewer than 2,048 samples: biased upward, compare only like with like"
        if "kid" in metrics:
            mean, std = kid(reference["features"], fake_features, subset_size=min(1000, num_samples))
            results["kid"], results["kid_std"] = round(mean, 5), round(std, 5)
        if "pr" in metrics:
            results["precision"], results["recall"] = (round(v, 4) for v in
                                                       precision_recall(reference["features"], fake_features))
    return results


def _inception_reference(model, real, device) -> dict:
    from .fid import statistics

    features = inception_features(model, real, device)
    mu, sigma = statistics(features)
    return {"features": features, "mu": mu, "sigma": sigma}


def format_table(results: dict) -> str:
    rows = [("metric", "value")]
    for key, value in results.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}px {v}" for k, v in value.items())
        rows.append((key, str(value)))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
