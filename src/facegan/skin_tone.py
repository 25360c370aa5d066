"""Skin tone as the Individual Typology Angle (ITA) of a face-centre patch, binned into the six
standard bands. ITA is a proxy for the skin colour an image shows under its lighting: it says
nothing about a person's ethnicity or race, and facegan never labels a face with one.

    ITA = arctan((L* - 50) / b*) * 180 / pi      (CIELAB, D65 white)

The bands (Chardon et al. 1991, as face-dataset audits use them), from the top:
very light > 55 > light > 41 > intermediate > 28 > tan > 10 > brown > -30 > dark.
"""

from __future__ import annotations

import numpy as np

from .errors import FaceganError

BANDS = ("very light", "light", "intermediate", "tan", "brown", "dark")
BAND_EDGES = (55.0, 41.0, 28.0, 10.0, -30.0)  # degrees, high to low: a face at an edge goes to the lower band

# Where the skin is, as boxes (left, top, right, bottom) in fractions of the prepared square image.
# Both the built-in faces and CelebA's aligned crops (--crop 108..178) centre the face with the eyes
# a little above the middle: the boxes are the two cheeks below the eyes, clear of nose and mouth,
# and the middle of the forehead below any fringe. The median over all of them is skin even when
# glasses, a beard or a fringe cover one box (measured on the built-in faces: docs/findings.md).
DEFAULT_PATCH = ((0.33, 0.52, 0.42, 0.58), (0.58, 0.52, 0.67, 0.58), (0.40, 0.37, 0.60, 0.41))

_SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1], (..., 3) -> CIELAB (..., 3) under D65."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def ita(rgb: np.ndarray) -> np.ndarray:
    """ITA in degrees of sRGB colours in [0, 1], (..., 3) -> (...). arctan2 keeps a b* of 0 finite (+-90)."""
    values = lab(rgb)
    return np.degrees(np.arctan2(values[..., 0] - 50.0, values[..., 2]))


def band_of(angles) -> np.ndarray:
    """ITA degrees -> band index 0 (very light) .. 5 (dark)."""
    return np.searchsorted(-np.asarray(BAND_EDGES), -np.asarray(angles), side="right").astype(np.int64)


def parse_patch(text: str) -> tuple:
    """'0.3,0.5,0.4,0.6' or several boxes joined by ';' -> ((left, top, right, bottom), ...), checked."""
    boxes = []
    for part in text.split(";"):
        try:
            box = tuple(float(v) for v in part.split(","))
        except ValueError:
            box = ()
        if len(box) != 4 or not all(np.isfinite(box)):
            raise FaceganError(f"--patch '{part}' is not a box: give left,top,right,bottom as fractions of the image, "
                               f"e.g. 0.3,0.5,0.7,0.6 (several boxes joined by ';')")
        left, top, right, bottom = box
        if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
            raise FaceganError(f"--patch {part} lies outside the image or is empty: each value is a fraction in "
                               f"0..1 with left < right and top < bottom, e.g. 0.3,0.5,0.7,0.6")
        boxes.append(box)
    return tuple(boxes)


def patch_mask(boxes, size: int) -> np.ndarray:
    """(size, size) bool: the pixels whose centres lie in any box; at least one pixel per box."""
    mask = np.zeros((size, size), dtype=bool)
    for left, top, right, bottom in boxes:
        # Pixel i covers [i, i+1)/size; take the pixels whose centre is inside, or the nearest one.
        x0, x1 = int(round(left * size)), max(int(round(left * size)) + 1, int(round(right * size)))
        y0, y1 = int(round(top * size)), max(int(round(top * size)) + 1, int(round(bottom * size)))
        mask[min(y0, size - 1):y1, min(x0, size - 1):x1] = True
    return mask


def image_ita(images: np.ndarray, boxes=DEFAULT_PATCH, chunk: int = 4096) -> np.ndarray:
    """uint8 (N, S, S, 3) -> float32 (N,): each image's median ITA over the patch's pixels."""
    mask = patch_mask(boxes, images.shape[1])
    out = np.empty(len(images), dtype=np.float32)
    for start in range(0, len(images), chunk):  # bounded memory on a 200k-image memory map
        pixels = np.asarray(images[start:start + chunk])[:, mask].astype(np.float64) / 255.0  # (n, P, 3)
        out[start:start + len(pixels)] = np.median(ita(pixels), axis=1)
    return out


def band_shares(bands: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Band indices (N,) -> the share of each of the six bands (6,), optionally weighted."""
    counts = np.bincount(bands, weights=weights, minlength=len(BANDS)).astype(np.float64)
    return counts / max(counts.sum(), 1e-12)
