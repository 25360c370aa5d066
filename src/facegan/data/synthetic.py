"""Procedural faces: the built-in training set, so everything runs offline.

Each face is drawn from signed-distance shapes (ellipses, bands, rings) evaluated for a whole
chunk of faces at once with numpy, composited back to front with anti-aliased coverage
(coverage = clamp(0.5 - distance / pixel_size)). Face i of seed s depends only on (s, i): its
parameters come from a counter-based hash, not a sequential RNG, so any subset or chunking of
indices renders identical pixels.
"""

from __future__ import annotations

import numpy as np

# Bump when the drawing changes: it is part of the cache key of prepared renderer data.
RENDERER_VERSION = 2

_HAIR_BALD, _HAIR_SHORT, _HAIR_FRINGE, _HAIR_LONG, _HAIR_SIDE = range(5)

_SKIN_TONES = np.array(  # light to dark, sRGB in [0, 1]
    [[0.98, 0.85, 0.74], [0.95, 0.78, 0.64], [0.87, 0.68, 0.52], [0.76, 0.56, 0.40],
     [0.60, 0.42, 0.29], [0.45, 0.30, 0.20], [0.33, 0.22, 0.15]], dtype=np.float32)
_HAIR_COLOURS = np.array(  # black, dark brown, brown, auburn, blond, ginger, grey
    [[0.08, 0.07, 0.07], [0.22, 0.14, 0.09], [0.40, 0.26, 0.15], [0.50, 0.22, 0.12],
     [0.86, 0.72, 0.45], [0.72, 0.38, 0.16], [0.70, 0.70, 0.70]], dtype=np.float32)
_EYE_COLOURS = np.array(  # brown, dark brown, hazel, green, blue, grey
    [[0.40, 0.24, 0.12], [0.20, 0.12, 0.07], [0.50, 0.42, 0.20], [0.28, 0.48, 0.28],
     [0.30, 0.50, 0.75], [0.52, 0.56, 0.60]], dtype=np.float32)


def _uniforms(seed: int, indices: np.ndarray, num_params: int) -> np.ndarray:
    """(len(indices), num_params) floats in [0, 1), a pure function of (seed, index, param)."""
    with np.errstate(over="ignore"):  # uint64 wrap-around is the point of the hash
        key = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
               + indices.astype(np.uint64)[:, None] * np.uint64(0xBF58476D1CE4E5B9)
               + np.arange(num_params, dtype=np.uint64)[None, :] * np.uint64(0x94D049BB133111EB))
        # splitmix64 finaliser: good avalanche, vectorises in plain uint64 arithmetic.
        key ^= key >> np.uint64(30)
        key *= np.uint64(0xBF58476D1CE4E5B9)
        key ^= key >> np.uint64(27)
        key *= np.uint64(0x94D049BB133111EB)
        key ^= key >> np.uint64(31)
    return ((key >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))).astype(np.float32)


class _Params:
    """Named per-face parameters drawn from the hash; each attribute is an (N, 1) array."""

    _NAMES = ("rot", "scale", "shift_x", "shift_y", "skin", "skin_jitter", "head_w", "head_h", "jaw",
              "hair_style", "hair_colour", "hairline", "eye_colour", "eye_gap", "eye_y", "eye_open",
              "brow_tilt", "brow_thick", "nose_len", "mouth_w", "smile", "lip_thick", "glasses",
              "glasses_r", "beard", "bg_r", "bg_g", "bg_b", "light_angle", "light_strength",
              "shirt_r", "shirt_g", "shirt_b", "grey_hair")

    def __init__(self, seed: int, indices: np.ndarray):
        values = _uniforms(seed, indices, len(self._NAMES))
        for column, name in enumerate(self._NAMES):
            setattr(self, name, values[:, column:column + 1])


def _lerp(u, low, high):
    return low + (high - low) * u


def _pick(table: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Choose a table row per face from a uniform: (N, 1) -> (N, 1, 3)."""
    row = np.minimum((u[:, 0] * len(table)).astype(np.int64), len(table) - 1)
    return table[row][:, None, :]


class _Canvas:
    """A chunk of N images of P pixels, with the face-frame coordinates of every pixel."""

    def __init__(self, params: _Params, size: int):
        n = params.rot.shape[0]
        centres = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]
        grid_y, grid_x = np.meshgrid(centres, centres, indexing="ij")
        grid_x, grid_y = grid_x.reshape(1, -1), grid_y.reshape(1, -1)  # (1, P)
        # Pose jitter: the face frame is the image frame shifted, rotated and scaled per face.
        angle = _lerp(params.rot, -0.14, 0.14)  # about +-8 degrees
        scale = _lerp(params.scale, 0.88, 1.04)
        dx = grid_x - _lerp(params.shift_x, -0.06, 0.06)
        dy = grid_y - _lerp(params.shift_y, -0.05, 0.05)
        cos, sin = np.cos(angle), np.sin(angle)
        self.x = (cos * dx + sin * dy) / scale  # (N, P)
        self.y = (-sin * dx + cos * dy) / scale
        self.pixel = (2.0 / size) / scale  # one pixel in face units, (N, 1)
        # Planar (3, N, P): compositing one contiguous channel at a time is ~2x faster than (N, P, 3).
        self.image = np.empty((3, n, size * size), dtype=np.float32)
        # Face-frame y range of each image row over the whole chunk, to find the rows a feature touches.
        rows_y = self.y.reshape(n, size, size)
        self._row_y_min = rows_y.min(axis=(0, 2)) - 2.0 * self.pixel.max()
        self._row_y_max = rows_y.max(axis=(0, 2)) + 2.0 * self.pixel.max()
        self._size = size

    def band(self, y_top: float, y_bottom: float) -> _Band:
        """The image rows where any face of the chunk has face-frame y in [y_top, y_bottom].

        Small features (eyes, mouth) touch a quarter of the rows; drawing only there halves the time."""
        touched = np.nonzero((self._row_y_max >= y_top) & (self._row_y_min <= y_bottom))[0]
        rows = slice(touched[0] * self._size, (touched[-1] + 1) * self._size) if len(touched) else slice(0, 0)
        return _Band(self, rows)

    def paint(self, distance: np.ndarray, colour, opacity=1.0, pixels: slice = slice(None)) -> None:
        alpha = np.clip(0.5 - distance / self.pixel, 0.0, 1.0)  # anti-aliased coverage of each pixel
        if not np.isscalar(opacity) or opacity != 1.0:
            alpha *= opacity
        colour = np.asarray(colour, dtype=np.float32)
        scratch = np.empty_like(alpha)
        for k, plane in enumerate(self.image):  # plane += alpha * (colour - plane), in place
            plane = plane[:, pixels]
            np.subtract(colour[..., k], plane, out=scratch)
            scratch *= alpha
            plane += scratch


class _Band:
    """A contiguous run of image rows of a canvas: its coordinates, and painting restricted to it."""

    def __init__(self, canvas: _Canvas, pixels: slice):
        self.canvas, self.pixels = canvas, pixels
        self.x, self.y = canvas.x[:, pixels], canvas.y[:, pixels]

    def paint(self, distance, colour, opacity=1.0) -> None:
        self.canvas.paint(distance, colour, opacity, self.pixels)


def _ellipse(x, y, cx, cy, a, b):
    """Approximate signed distance to an axis-aligned ellipse (exact for circles)."""
    return (np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2) - 1.0) * np.minimum(a, b)


# --skin-mix: the renderer's skin tones in groups, each group's tones drawn equally often within it.
# Three shares are light/mid/dark; six are the ITA bands of skin_tone.BANDS, each group holding the
# tones whose ITA falls in it at every jitter (tone 1 and tone 5 straddle a band edge by a few degrees:
# their label is read back from the colour actually painted, see skin_labels).
SKIN_GROUPS = {3: ((0, 1), (2, 3), (4, 5, 6)),
               6: ((0,), (1,), (2,), (3,), (4,), (5, 6))}


def parse_skin_mix(text: str) -> tuple[float, ...]:
    """'0.85,0.1,0.05' -> normalised shares; '' -> () (every tone equally often, the default set)."""
    from ..errors import FaceganError

    if not text.strip():
        return ()
    try:
        shares = tuple(float(v) for v in text.split(","))
    except ValueError:
        shares = ()
    if len(shares) not in SKIN_GROUPS or not all(np.isfinite(shares)) or min(shares) < 0 or sum(shares) <= 0:
        raise FaceganError(f"--skin-mix '{text}' is not a mix: give 3 shares (light,mid,dark) or 6 (the ITA bands "
                           f"very light..dark), none negative, e.g. 0.85,0.1,0.05")
    total = sum(shares)
    return tuple(v / total for v in shares)


def _skin_row(u: np.ndarray, mix: tuple[float, ...]) -> np.ndarray:
    """Each face's row of _SKIN_TONES from its uniform u (N, 1): equal tones, or the groups of `mix`."""
    if not mix:
        return np.minimum((u[:, 0] * len(_SKIN_TONES)).astype(np.int64), len(_SKIN_TONES) - 1)
    shares, groups = np.asarray(mix), SKIN_GROUPS[len(mix)]
    edges = np.cumsum(shares)
    # The first edge above u: an empty group has the same edge as the one before it, so it is never chosen.
    last = int(np.nonzero(shares)[0][-1])
    group = np.minimum(np.searchsorted(edges, u[:, 0], side="right"), last)
    # Where u lies inside its group's interval is again uniform: it picks the tone within the group.
    within = np.clip((u[:, 0] - (edges[group] - shares[group])) / shares[group], 0.0, 1.0 - 1e-9)
    table = np.array([[g[min(k, len(g) - 1)] for k in range(3)] for g in groups])  # (groups, 3), padded
    sizes = np.array([len(g) for g in groups])
    return table[group, (within * sizes[group]).astype(np.int64)]


def skin_colours(indices, seed: int = 0, skin_mix: tuple[float, ...] = ()) -> np.ndarray:
    """The flat skin colour (sRGB in [0, 1], (N, 3)) painted on faces `indices`: the renderer's ground truth."""
    p = _Params(seed, np.asarray(indices, dtype=np.int64).reshape(-1))
    return _SKIN_TONES[_skin_row(p.skin, skin_mix)] * _lerp(p.skin_jitter, 0.94, 1.06)


def skin_labels(indices, seed: int = 0, skin_mix: tuple[float, ...] = ()) -> np.ndarray:
    """The ITA band (skin_tone.BANDS index) of each face's painted skin colour, before lighting and shading."""
    from ..skin_tone import band_of, ita
    return band_of(ita(np.clip(skin_colours(indices, seed, skin_mix), 0.0, 1.0)))


def render_faces(indices, size: int = 64, seed: int = 0, chunk: int = 16,
                 skin_mix: tuple[float, ...] = ()) -> np.ndarray:
    """Render faces `indices` of set `seed` at `size`x`size`: uint8 array (N, size, size, 3).

    `skin_mix` (parse_skin_mix) sets the shares of skin-tone groups; () draws every tone equally often."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    out = np.empty((len(indices), size, size, 3), dtype=np.uint8)
    for start in range(0, len(indices), chunk):
        part = indices[start:start + chunk]
        out[start:start + len(part)] = _render_chunk(_Params(seed, part), size, skin_mix).reshape(
            len(part), size, size, 3)
    return out


def _render_chunk(p: _Params, size: int, skin_mix: tuple[float, ...] = ()) -> np.ndarray:
    c = _Canvas(p, size)
    x, y = c.x, c.y
    skin = _SKIN_TONES[_skin_row(p.skin, skin_mix)][:, None, :] * _lerp(p.skin_jitter, 0.94, 1.06)[:, :, None]
    hair = _pick(_HAIR_COLOURS, p.hair_colour)
    style = np.minimum((p.hair_style * 5).astype(np.int64), 4)  # (N, 1)
    bald, long_hair = style == _HAIR_BALD, style == _HAIR_LONG
    head_a = _lerp(p.head_w, 0.46, 0.58)  # half width
    head_b = _lerp(p.head_h, 0.60, 0.70)  # half height
    head_cy = -0.02

    # Background: a flat colour with a vertical brightness ramp.
    background = np.concatenate([_lerp(p.bg_r, 0.15, 0.95), _lerp(p.bg_g, 0.15, 0.95), _lerp(p.bg_b, 0.15, 0.95)], 1)
    ramp = 1.05 - 0.15 * (y + 1.0) / 2.0
    for k in range(3):
        c.image[k] = background[:, k:k + 1] * ramp

    # Long hair falls behind the head and shoulders.
    if long_hair.any():
        b = c.band(-0.76, 1.0)
        behind = np.maximum(_ellipse(b.x, b.y, 0.0, 0.18, head_a * 1.30, 0.92), b.y - 0.95)
        b.paint(np.where(long_hair, behind, 1.0), hair)

    # Shoulders (clothing) and neck.
    shirt = np.concatenate([_lerp(p.shirt_r, 0.1, 0.9), _lerp(p.shirt_g, 0.1, 0.9), _lerp(p.shirt_b, 0.1, 0.9)], 1)
    b = c.band(0.7, 1.0)
    b.paint(_ellipse(b.x, b.y, 0.0, 1.30, 0.95, 0.52), shirt[:, None, :])
    b = c.band(0.35, 1.0)
    b.paint(np.maximum(np.abs(b.x) - head_a * 0.48, np.abs(b.y - 0.62) - 0.25), skin * 0.82)

    # Ears, then the face, narrowing towards the chin by `jaw`.
    b = c.band(-0.1, 0.18)
    for side in (-1.0, 1.0):
        b.paint(_ellipse(b.x, b.y, side * head_a * 0.98, 0.04, 0.085, 0.13), skin * 0.93)
    jaw = _lerp(p.jaw, 0.0, 0.35)
    fb = c.band(-0.75, 0.75)
    narrowing = 1.0 - jaw * np.clip((fb.y - head_cy) / head_b, 0.0, 1.0) ** 2
    face = _ellipse(fb.x, fb.y, 0.0, head_cy, head_a * narrowing, head_b)
    # Soft shading towards the face's edge gives it volume.
    rim = np.clip((face + 0.18) / 0.18, 0.0, 1.0)
    fb.paint(face, skin * (1.0 - 0.22 * rim[..., None]))

    # Beard: the face below a line through the cheeks, in the hair colour.
    has_beard = (p.beard < 0.22) & ~long_hair
    if has_beard.any():
        b = c.band(0.0, 0.75)  # rows inside the face band: index the face's distances by offset
        offset = slice(b.pixels.start - fb.pixels.start, b.pixels.stop - fb.pixels.start)
        beard = np.maximum(face[:, offset], 0.20 - 0.18 * (b.x / head_a) ** 2 - b.y)
        b.paint(np.where(has_beard, beard, 1.0), hair * 0.9, 0.92)

    # Hair on top of the head: the head's outline above a hairline shaped by the style.
    hairline_y = _lerp(p.hairline, -0.42, -0.30)
    b = c.band(-0.85, 0.05)
    x, y = b.x, b.y
    top = _ellipse(x, y, 0.0, head_cy - 0.03, head_a * 1.10, head_b * 1.04)
    hairline = np.select(
        [style == _HAIR_FRINGE, style == _HAIR_SIDE],
        [np.full_like(x, -0.22) + 0.04 * np.abs(x),                 # straight fringe low on the brow
         hairline_y + 0.10 * (x + 0.2) - 0.12 * x ** 2],           # swept to one side
        default=hairline_y + 0.25 * (x / head_a) ** 2 - 0.1,        # rounded hairline
    )
    top = np.maximum(top, y - hairline)
    b.paint(np.where(bald, 1.0, top), hair)
    # Side hair reaches down past the ears for long hair.
    if long_hair.any():
        b = c.band(-0.7, 0.7)
        sides = np.maximum(_ellipse(b.x, b.y, 0.0, 0.0, head_a * 1.12, head_b * 0.95), head_a * 0.80 - np.abs(b.x))
        b.paint(np.where(long_hair, sides, 1.0), hair)

    # Eyes: white, iris, pupil, with a lid line above.
    eye_gap = _lerp(p.eye_gap, 0.19, 0.25)
    eye_y = _lerp(p.eye_y, -0.08, 0.0)
    eye_open = _lerp(p.eye_open, 0.045, 0.07)
    iris = _pick(_EYE_COLOURS, p.eye_colour)
    brow_colour = np.where(bald[:, :, None], skin * 0.45, hair * 0.85)
    tilt = _lerp(p.brow_tilt, -0.06, 0.06)
    brow_thick = _lerp(p.brow_thick, 0.018, 0.035)
    eyes, brows = c.band(-0.16, 0.08), c.band(-0.30, -0.06)
    for side in (-1.0, 1.0):
        ex = side * eye_gap
        x, y = eyes.x, eyes.y
        white = _ellipse(x, y, ex, eye_y, 0.095, eye_open)
        eyes.paint(white, np.float32([0.95, 0.95, 0.93]))
        eyes.paint(np.maximum(_ellipse(x, y, ex, eye_y, 0.048, 0.048), white), iris)
        eyes.paint(np.maximum(_ellipse(x, y, ex, eye_y, 0.022, 0.022), white), np.float32([0.03, 0.03, 0.03]))
        lid = np.maximum(np.abs(white + 0.006) - 0.008, eye_y - y)
        eyes.paint(lid, skin * 0.35, 0.8)
        # Brow: a band above the eye, tilted (inner end up or down).
        x, y = brows.x, brows.y
        brow_centre = eye_y - 0.13 + side * tilt * (x - ex) / 0.11
        brow = np.maximum(np.abs(y - brow_centre + 0.03 * ((x - ex) / 0.12) ** 2) - brow_thick, np.abs(x - ex) - 0.12)
        brows.paint(brow, brow_colour)

    # Nose: a shaded ridge and a tip.
    nose_len = _lerp(p.nose_len, 0.14, 0.22)
    b = c.band(-0.1, 0.3)
    b.paint(_ellipse(b.x, b.y, 0.03, eye_y + nose_len * 0.55, 0.035, nose_len * 0.55), skin * 0.80, 0.5)
    b.paint(_ellipse(b.x, b.y, 0.0, eye_y + nose_len + 0.02, 0.075, 0.04), skin * 0.72, 0.8)

    # Mouth: a parabola band; `smile` > 0 lifts the corners, < 0 drops them.
    mouth_w = _lerp(p.mouth_w, 0.13, 0.21)
    mouth_y = eye_y + nose_len + 0.17
    smile = _lerp(p.smile, -0.05, 0.09)
    lip = _lerp(p.lip_thick, 0.018, 0.032)
    b = c.band(0.10, 0.48)
    t = np.clip(b.x / mouth_w, -1.0, 1.0)
    from_centre_line = np.abs(b.y - (mouth_y - smile * t ** 2))
    mouth = np.maximum(from_centre_line - lip * (1.0 - 0.6 * t ** 2), np.abs(b.x) - mouth_w)
    lips = skin * np.float32([0.78, 0.48, 0.48])
    b.paint(mouth, lips)
    b.paint(np.maximum(from_centre_line - 0.006, np.abs(b.x) - mouth_w * 0.95), lips * 0.45)

    # Glasses: two rings and a bridge in a dark frame.
    has_glasses = p.glasses < 0.25
    if has_glasses.any():
        ring_r = _lerp(p.glasses_r, 0.10, 0.13)
        b = c.band(-0.24, 0.16)
        x, y = b.x, b.y
        frame = np.abs(np.sqrt((x - eye_gap) ** 2 + (y - eye_y) ** 2) - ring_r) - 0.014
        frame = np.minimum(frame, np.abs(np.sqrt((x + eye_gap) ** 2 + (y - eye_y) ** 2) - ring_r) - 0.014)
        bridge = np.maximum(np.abs(y - eye_y + 0.02) - 0.012, np.abs(x) - (eye_gap - ring_r))
        frame = np.minimum(frame, bridge)
        b.paint(np.where(has_glasses, frame, 1.0), np.float32([0.08, 0.08, 0.10]))

    # Lighting: a soft directional gradient over the whole picture.
    x, y = c.x, c.y
    angle = p.light_angle * 2.0 * np.pi
    strength = _lerp(p.light_strength, 0.0, 0.25)
    c.image *= 1.0 + strength * (np.cos(angle) * x + np.sin(angle) * y) * 0.5
    # Scale in the contiguous planar layout, then one interleaving copy to (N, P, 3) uint8.
    np.clip(c.image, 0.0, 1.0, out=c.image)
    c.image *= 255.0
    c.image += 0.5
    return c.image.astype(np.uint8).transpose(1, 2, 0)
