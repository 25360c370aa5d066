"""Evaluate a generator against its data: SWD and MS-SSIM always, FID/KID/precision-recall with the
Inception weights. Real-side statistics are cached per prepared dataset and settings (.npz)."""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import FaceganError
from ..fileio import atomic_write
from ..generate import generate
from ..metric_names import parse_metrics  # noqa: F401  (parse_metrics: the public name here too)
from ..paths import cache_root
from .msssim import diversity
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
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a damaged or truncated cache file is recomputed
    values = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, mode=None, suffix=".npz") as tmp:
            np.savez(tmp, **values)
    except (OSError, FaceganError):
        pass  # a read-only or full cache: the statistics are computed, just not kept for next time
    return values


# Below this many samples FID is biased upward by a noticeable amount (the pytorch-fid README's advice).
FID_UNBIASED_SAMPLES = 2048


@dataclass
class EvalInputs:
    """What every metric function reads: the samples, the real subset, and how to reach the rest."""
    fake: np.ndarray             # uint8 (N, H, W, 3) generated from seeds seed..seed+N-1
    real: np.ndarray             # uint8 (N, H, W, 3), a fixed random subset of the prepared images
    prepared: object             # the PreparedData the run trained on (its path keys the stats cache)
    device: object
    seed: int = 0
    cache_dir: object = None
    inception_weights: str | None = None
    train_count: int | None = None  # nn: how many prepared images the run trained on (the rest are held out)
    sheet_path: object = None       # nn: where to write the sheet of samples beside their neighbours
    audit_path: object = None       # audit: where to write the chart of bands (and the samples per band beside it)
    _inception: dict = field(default_factory=dict)

    def inception(self):
        """The Inception network, loaded once however many metrics use it."""
        if "model" not in self._inception:
            from .inception import load_inception
            self._inception["model"] = load_inception(self.inception_weights, self.device)
        return self._inception["model"]

    def inception_reference(self) -> dict:
        """Real-side Inception features and their mean/covariance, cached per data set (.npz)."""
        settings = {"metric": "inception-pool3", "n": len(self.real), "seed": self.seed, "resize": "bilinear299"}
        return _cached(stats_path(self.prepared.path, settings, self.cache_dir),
                       lambda: _inception_reference(self.inception(), self.real, self.device))

    def inception_fake(self) -> np.ndarray:
        if "fake" not in self._inception:
            self._inception["fake"] = inception_features(self.inception(), self.fake, self.device)
        return self._inception["fake"]


def _swd(inputs: EvalInputs) -> dict:
    # The real side of SWD is cheap (well under a second per thousand images) and its patch
    # descriptors are tens of MB, so it is recomputed rather than cached.
    distances = swd(inputs.real, inputs.fake, seed=inputs.seed)
    return {"swd": round(distances["avg"], 3),
            "swd_levels": {str(k): round(v, 3) for k, v in distances["levels"].items()}}


def _msssim(inputs: EvalInputs) -> dict:
    settings = {"metric": "msssim", "pairs": 1000, "n": len(inputs.real), "seed": inputs.seed}
    reference = _cached(stats_path(inputs.prepared.path, settings, inputs.cache_dir),
                        lambda: {"msssim": np.array(diversity(inputs.real, seed=inputs.seed))})
    return {"msssim": round(diversity(inputs.fake, seed=inputs.seed), 4),
            "msssim_real": round(float(reference["msssim"]), 4)}


def _nearest(inputs: EvalInputs) -> dict:
    from ..images import save_image
    from .nearest import nearest_neighbour_report

    features = None
    if inputs.inception_weights:
        features = lambda images: inception_features(inputs.inception(), images, inputs.device)  # noqa: E731
    images = inputs.prepared.images
    report, sheet = nearest_neighbour_report(inputs.fake, images, inputs.train_count or len(images),
                                             seed=inputs.seed, features=features)
    if inputs.sheet_path is not None:
        save_image(sheet, inputs.sheet_path, upscale=max(1, 96 // inputs.fake.shape[1]))
        report["nn_sheet"] = str(inputs.sheet_path)
    return report


def _fid(inputs: EvalInputs) -> dict:
    from .fid import fid

    reference = inputs.inception_reference()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported once, below, in the table's own words
        results = {"fid": round(fid(None, inputs.inception_fake(), (reference["mu"], reference["sigma"])), 3)}
    if len(inputs.fake) < FID_UNBIASED_SAMPLES:
        results["fid_note"] = (f"fewer than {FID_UNBIASED_SAMPLES:,} samples: biased upward, compare only like "
                               f"with like")
    return results


def _kid(inputs: EvalInputs) -> dict:
    from .fid import kid

    mean, std = kid(inputs.inception_reference()["features"], inputs.inception_fake(),
                    subset_size=min(1000, len(inputs.fake)))
    return {"kid": round(mean, 5), "kid_std": round(std, 5)}


def _precision_recall(inputs: EvalInputs) -> dict:
    from .fid import precision_recall

    precision, recall = precision_recall(inputs.inception_reference()["features"], inputs.inception_fake())
    return {"precision": round(precision, 4), "recall": round(recall, 4)}


def _audit(inputs: EvalInputs) -> dict:
    from .audit import skin_tone_audit

    count = inputs.train_count or len(inputs.prepared.images)
    return skin_tone_audit(inputs.fake, inputs.prepared, count, inputs.audit_path)


# metric name (metric_names.METRICS) -> the function that computes it: a new metric is one entry here
# and one in metric_names.py; callers never branch on names.
METRIC_FUNCTIONS = {"swd": _swd, "msssim": _msssim, "nn": _nearest, "fid": _fid, "kid": _kid,
                    "pr": _precision_recall, "audit": _audit}


def evaluate(generator, prepared, metrics, num_samples: int = 1000, device="cpu", inception_weights=None,
             batch_size: int = 64, cache_dir=None, seed: int = 0, train_count: int | None = None,
             sheet_path=None, audit_path=None) -> dict:
    """Metric name -> value for `generator` against the prepared images.

    For "nn", `train_count` is how many of the images the run trained on (the rest are held out) and
    `sheet_path`, when given, receives the sheet of samples beside their nearest training images."""
    if num_samples < 2 or len(prepared.images) < 2:
        few = f"--num-samples {num_samples}" if num_samples < 2 else f"a data set of {len(prepared.images)} image"
        raise FaceganError(f"cannot evaluate with {few}: the metrics compare pairs and distributions, so they need "
                           f"at least 2 samples and 2 real images (1,000 is the default)")
    was_training = generator.training
    generator.eval()
    fake = generate(generator, range(seed, seed + num_samples), batch_size, device)
    generator.train(was_training)
    inputs = EvalInputs(fake, real_subset(prepared.images, num_samples, seed), prepared, device, seed, cache_dir,
                        inception_weights, train_count, sheet_path, audit_path)
    results = {"num_samples": int(num_samples)}
    for name in METRIC_FUNCTIONS:  # in the registry's order, whatever order they were asked in
        if name in metrics:
            results.update(METRIC_FUNCTIONS[name](inputs))
    return results


def evaluate_checkpoint(checkpoint, metrics, num_samples: int = 1000, device="cpu", inception_weights=None,
                        batch_size: int = 64, data: str | None = None, ema: bool = True, progress: bool = False):
    """`facegan evaluate`: the checkpoint's generator against its training data (or the images at `data`);
    the results are appended to the run's metrics.jsonl. Returns (results, that file)."""
    import dataclasses
    import time

    from .. import checkpoints
    from ..data.prepare import prepare
    from ..generate import generator_from_state
    from ..runs import run_of

    state = checkpoints.load(checkpoint)
    generator, cfg = generator_from_state(state, device, ema=ema)
    prepared = prepare(dataclasses.replace(cfg.data, source=data) if data else cfg.data, cfg.model.image_size,
                       progress=progress)
    run = run_of(checkpoint)
    results = evaluate(generator, prepared, metrics, num_samples, device, inception_weights, batch_size,
                       train_count=None if data else (cfg.data.max_images or None), sheet_path=run.nearest_png,
                       audit_path=run.audit_png)
    run.append_metrics({"step": state.get("step"), "eval": results, "checkpoint": str(checkpoint),
                        "time": round(time.time(), 3)})
    return results, run.metrics_jsonl


def _inception_reference(model, real, device) -> dict:
    from .fid import statistics

    features = inception_features(model, real, device)
    mu, sigma = statistics(features)
    return {"features": features, "mu": mu, "sigma": sigma}


def format_table(results: dict) -> str:
    rows = [("metric", "value")]
    for key, value in results.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}{'px' if key == 'swd_levels' else ':'} {v}" for k, v in value.items())
        rows.append((key, str(value)))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
