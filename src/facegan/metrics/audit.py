"""`evaluate --metrics audit`: does the generator keep the skin-tone bands of its data, or amplify the
majority? The same ITA measure (skin_tone.py) on samples and on the training images, band by band.

amplification ratio of a band = its share in the samples / its share in the data (1 = kept, < 1 = lost)
total variation = half the sum of |sample share - data share| over the bands (0 = the same mix)
"""

from __future__ import annotations

import numpy as np

from ..data.audit import image_itas
from ..skin_tone import BANDS, band_of, band_shares, image_ita

# Bands under this share of the data are reported but not rated: from 1,000 samples, a band of 1% of the
# data is 10 faces, and its ratio would be mostly noise.
MIN_RATED_SHARE = 0.02
SAMPLES_PER_BAND_SHOWN = 10


def skin_tone_audit(fake: np.ndarray, prepared, train_count: int, chart_path=None) -> dict:
    """Band shares of `fake` (uint8 (N, S, S, 3)) against the first `train_count` prepared images."""
    data_bands = band_of(image_itas(prepared)[:train_count])
    fake_bands = band_of(image_ita(fake))
    data_share, fake_share = band_shares(data_bands), band_shares(fake_bands)
    ratios = {name: (round(float(f / d), 3) if d > 0 else None) for name, f, d in zip(BANDS, fake_share, data_share)}
    rated = [index for index in range(len(BANDS)) if data_share[index] >= MIN_RATED_SHARE]
    smallest = min(rated, key=lambda index: data_share[index])
    results = {
        "audit_tv": round(float(np.abs(fake_share - data_share).sum() / 2), 4),
        "audit_min_band": BANDS[smallest],
        "audit_min_ratio": ratios[BANDS[smallest]],
        "audit_ratio": ratios,
        "audit_samples": {name: round(float(share), 4) for name, share in zip(BANDS, fake_share)},
        "audit_data": {name: round(float(share), 4) for name, share in zip(BANDS, data_share)},
    }
    if chart_path is not None:
        from ..images import plot_bands, save_grid

        plot_bands({f"training data ({train_count:,})": list(data_share), f"samples ({len(fake):,})": list(fake_share)},
                   chart_path, labels=BANDS, title="Skin tone (ITA) of samples vs their training data")
        results["audit_chart"] = str(chart_path)
        sheet = band_sheet(fake, fake_bands)
        if sheet is not None:
            results["audit_sheet"] = str(save_grid(sheet, chart_path.with_name(chart_path.stem + "-samples.png"),
                                                   columns=SAMPLES_PER_BAND_SHOWN))
    return results


def band_sheet(images: np.ndarray, bands: np.ndarray, per_band: int = SAMPLES_PER_BAND_SHOWN) -> np.ndarray | None:
    """A row of up to `per_band` images per band, very light at the top; a band with fewer images leaves
    white cells and an empty band a white row, so the rows line up with BANDS. None without images."""
    if not len(images):
        return None
    blank = np.full_like(images[0], 255)
    cells = []
    for index in range(len(BANDS)):
        chosen = images[bands == index][:per_band]
        cells += list(chosen) + [blank] * (per_band - len(chosen))
    return np.stack(cells)
