"""The one list of metric names: what --eval-metrics and `facegan evaluate --metrics` accept, which
can pick checkpoints/best.pt, how each result is titled, and which
results a study summarises. The functions that compute them are metrics/evaluate.py's registry, keyed
by these names. This module sits outside metrics/ and imports nothing of facegan's but errors, so the
lower layers (config, images, runs) read the names without importing the metrics package."""

from __future__ import annotations

from .errors import FaceganError

# name -> what it measures (shown in --help)
METRICS = {
    "swd": "sliced Wasserstein distance of Laplacian-pyramid patches, x1e3 (no download)",
    "msssim": "MS-SSIM between random pairs of samples: diversity (no download)",
    "fid": "Frechet Inception distance (needs the Inception weights)",
    "kid": "kernel Inception distance (needs the Inception weights)",
    "pr": "precision and recall in Inception space (needs the Inception weights)",
    "nn": "nearest training images of samples vs of held-out reals: is G copying? (+ a sheet; no download)",
    "audit": "skin-tone (ITA) bands of samples vs the training data: each band's amplification ratio, their "
             "total-variation distance (+ a chart; no download)",
}
BEST_CHECKPOINT_METRICS = ("swd", "fid", "kid")  # lower is better: what checkpoints/best.pt can follow

# result key in an evaluation -> plot title ("pr" reports two keys)
RESULT_TITLES = {
    "swd": "SWD x1e3 (lower is better)", "fid": "FID (lower is better)", "kid": "KID (lower is better)",
    "msssim": "MS-SSIM between samples (lower = more diverse)", "precision": "precision", "recall": "recall",
    "nn_ratio": "nearest-neighbour ratio (< 1: closer to training images than new faces are)",
    "audit_min_ratio": "smallest skin-tone band: sample share / data share (1 = kept)",
}
# result key -> its column heading in a study's table and index, in the order shown
STUDY_COLUMNS = {"swd": "SWD x1e3", "msssim": "MS-SSIM (diversity)", "msssim_real": "MS-SSIM of real faces",
                 "fid": "FID", "kid": "KID"}


def parse_metrics(text: str) -> list[str]:
    """'swd, fid' -> ['swd', 'fid']; an unknown or empty list is one clear error."""
    chosen = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise FaceganError(f"unknown metric(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(METRICS)}")
    return chosen
