"""`facegan data audit`: what a data set looks like in skin tone (ITA bands, skin_tone.py) and, for
CelebA, in its 40 annotated attributes; and the per-image labels that `--balance` draws evenly over.

Everything is cached beside the prepared data (same stem, keyed by the patch), valid only for the
prepared array it was measured on (its checksum), so a second audit and every later balanced run
read it instead of measuring again.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import FaceganError
from ..fileio import atomic_write, write_text_atomic
from ..skin_tone import BAND_EDGES, BANDS, DEFAULT_PATCH, band_of, band_shares, image_ita
from . import synthetic
from .prepare import PreparedData, data_config_of, prepare, resolve_source

ATTRIBUTE_FILE = "list_attr_celeba.txt"  # CelebA's annotations: a count line, 40 names, then "000001.jpg -1 1 ..."
AUDIT_VERSION = 1  # bump when the measure or the file layout changes
MAX_ATTRIBUTE_FILE_BYTES = 64 * 2 ** 20  # the real file is 26 MB
HONESTY = ("ITA of a face-centre patch is a proxy for the skin colour the image shows under its lighting; "
           "it says nothing about anyone's ethnicity or race")


def band_ranges() -> list[str]:
    """'> 55', '41 to 55', ... '< -30': each band's ITA range in degrees, for tables and charts."""
    edges = (None, *BAND_EDGES, None)
    return [f"> {low:g}" if high is None else f"< {high:g}" if low is None else f"{low:g} to {high:g}"
            for high, low in zip(edges[:-1], edges[1:])]


# --- CelebA attributes ----------------------------------------------------------------------------
def find_attribute_file(data: DataConfig) -> Path | None:
    """list_attr_celeba.txt beside the images: in the folder (or the zip's folder) or up to two levels
    above it, where CelebA's own layout puts it (celeba/list_attr_celeba.txt, celeba/img_align_celeba/)."""
    if data.source == "faces":
        return None
    source = resolve_source(data)
    start = Path(source.location)
    for folder in ([start] if source.kind == "folder" else []) + list(start.parents)[:2 + (source.kind == "zip")]:
        if (folder / ATTRIBUTE_FILE).is_file():
            return folder / ATTRIBUTE_FILE
    return None


def read_attribute_file(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """(attribute names, image file name -> bool array of them) from a list_attr_celeba.txt."""
    path = Path(path)
    if path.stat().st_size > MAX_ATTRIBUTE_FILE_BYTES:
        raise FaceganError(f"{path} is {path.stat().st_size / 2**20:.0f} MB, far more than CelebA's attribute "
                           f"file (26 MB): is it the right file?")
    lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    names = lines[1].split() if len(lines) > 1 else []
    if not names or not all(re.fullmatch(r"\w+", name) for name in names):
        raise FaceganError(f"{path} is not CelebA's attribute file: its second line must name the attributes "
                           f"(5_o_Clock_Shadow Arched_Eyebrows ...)")
    rows = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1 or any(v not in ("1", "-1") for v in fields[1:]):
            raise FaceganError(f"{path} line {number} is not 'FILE' and {len(names)} values of 1 or -1: the file "
                               f"is damaged; download it again")
        rows[fields[0]] = np.array([v == "1" for v in fields[1:]])
    return names, rows


def prepared_items(data: DataConfig, prepared: PreparedData) -> list:
    """The source item (file path, zip member or face index) of every prepared image, in order."""
    items = resolve_source(data).items
    dropped = prepared.record.get("dropped")
    if dropped is None:  # a cache made before the record listed what it left out
        if prepared.record.get("skipped") or prepared.record.get("too_large"):
            raise FaceganError("the prepared cache skipped some images but does not say which, so labels cannot "
                               "be lined up with images: delete it (facegan data prepare rebuilds it)")
        dropped = []
    left_out = set(dropped)
    kept = [item for index, item in enumerate(items) if index not in left_out]
    if len(kept) != prepared.record["used"]:
        raise FaceganError("the data changed since it was prepared: run 'facegan data prepare' again")
    return kept


def attribute_matrix(data: DataConfig, prepared: PreparedData) -> tuple[list[str], np.ndarray, Path] | None:
    """(names, bool (N, A) per prepared image, the file) when the data has CelebA attributes; else None."""
    path = find_attribute_file(data)
    if path is None:
        return None
    names, rows = read_attribute_file(path)
    items = prepared_items(data, prepared)[:len(prepared.images)]
    keys = [Path(str(item)).name for item in items]
    missing = [key for key in keys if key not in rows]
    if missing:
        raise FaceganError(f"{path} has no row for {len(missing)} of the {len(keys)} images (first: {missing[0]}): "
                           f"it belongs to other images; remove it, or put the matching file there")
    return names, np.stack([rows[key] for key in keys]), path


# --- skin tone --------------------------------------------------------------------------------------
def _patch_key(patch) -> str:
    return hashlib.sha256(json.dumps([AUDIT_VERSION, patch]).encode()).hexdigest()[:10]


def _beside(prepared: PreparedData, patch, suffix: str) -> Path:
    return prepared.path.with_name(f"{prepared.path.stem}.audit-{_patch_key(patch)}{suffix}")


def image_itas(prepared: PreparedData, patch=DEFAULT_PATCH) -> np.ndarray:
    """float32 (N,): each prepared image's ITA, measured once per cache and patch (.npz beside it,
    valid for the prepared array whose checksum it holds)."""
    path, count = _beside(prepared, patch, ".npz"), len(prepared.images)  # --max-images: the first `count`
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["checksum"]) == prepared.record["checksum"] and len(saved["ita"]) == prepared.record["used"]:
                return saved["ita"][:count]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # absent or damaged (truncated by a crash): measure again
    values = image_ita(prepared.images, patch)
    if count != prepared.record["used"]:
        return values  # a part of the cache: measured, but only the whole is kept
    try:
        with atomic_write(path, mode=None, suffix=".npz") as tmp:
            np.savez(tmp, ita=values, checksum=np.array(prepared.record["checksum"]))
    except OSError:
        pass  # a read-only cache: measured, just not kept
    return values


@dataclass
class Audit:
    result: dict      # what audit.json holds
    json_path: Path
    png_path: Path
    reused: bool


def audit(data: DataConfig, image_size: int, patch=DEFAULT_PATCH, cache_dir=None, progress: bool = False,
          log=print) -> Audit:
    """Measure (or reuse) the skin-tone bands and any CelebA attributes of a data source."""
    from ..images import plot_bands

    prepared = prepare(data, image_size, cache_dir=cache_dir, progress=progress)
    json_path, png_path = _beside(prepared, patch, ".json"), _beside(prepared, patch, ".png")
    attribute_file = find_attribute_file(data)
    signature = [prepared.record["checksum"], _file_signature(attribute_file)]
    try:
        saved = json.loads(json_path.read_text())
        if saved.get("signature") == signature and png_path.is_file():
            return Audit(saved, json_path, png_path, reused=True)
    except (OSError, ValueError, AttributeError):
        pass
    bands = band_of(image_itas(prepared, patch))
    counts = np.bincount(bands, minlength=len(BANDS))
    result = {
        "source": prepared.record["source"], "images": int(len(bands)), "image_size": image_size,
        "patch": [list(box) for box in patch], "measure": "median ITA (degrees) over the patch, CIELAB D65",
        "note": HONESTY,
        "bands": [{"band": name, "ita": span, "count": int(count), "share": round(float(count) / len(bands), 4)}
                  for name, span, count in zip(BANDS, band_ranges(), counts)],
        "signature": signature,
    }
    if data.source == "faces":  # the renderer knows what it painted: the measure's ground truth
        truth = band_shares(synthetic.skin_labels(range(len(bands)), data.render_seed,
                                                  synthetic.parse_skin_mix(data.skin_mix)))
        result["renderer_truth"] = {name: round(float(share), 4) for name, share in zip(BANDS, truth)}
    attributes = attribute_matrix(data, prepared) if attribute_file else None
    if attributes:
        names, matrix, path = attributes
        result["attribute_file"] = str(path)
        result["attributes"] = {name: round(float(share), 4) for name, share in zip(names, matrix.mean(0))}
    try:
        write_text_atomic(json_path, json.dumps(result, indent=1))
        plot_bands({"data": [b["share"] for b in result["bands"]]}, png_path, labels=BANDS,
                   title=f"Skin tone (ITA) of {result['source']}", attributes=result.get("attributes"))
    except OSError as exc:
        raise FaceganError(f"cannot write the audit beside the data cache ({exc.strerror}): set FACEGAN_CACHE to "
                           f"a writable folder") from None
    return Audit(result, json_path, png_path, reused=False)


def _file_signature(path: Path | None) -> str:
    if path is None:
        return ""
    st = path.stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def format_audit(result: dict) -> str:
    """The terminal table: one row per band (and the renderer's truth for built-in faces), then attributes."""
    truth = result.get("renderer_truth")
    lines = [f"skin tone of {result['source']}: {result['images']:,} images ({HONESTY})",
             f"{'band':<13} {'ITA':>11} {'images':>8} {'share':>7}" + ("  truth" if truth else "")]
    for row in result["bands"]:
        lines.append(f"{row['band']:<13} {row['ita']:>11} {row['count']:>8,} {row['share']:>7.1%}"
                     + (f" {truth[row['band']]:>6.1%}" if truth else ""))
    if result.get("attributes"):
        lines.append("CelebA attributes (the data set's own annotations, with their noise), share of images:")
        shares = sorted(result["attributes"].items(), key=lambda item: -item[1])
        for start in range(0, len(shares), 4):
            lines.append("  " + "  ".join(f"{name:<20} {share:>5.1%}" for name, share in shares[start:start + 4]))
    return "\n".join(lines)


# --- labels for --balance -------------------------------------------------------------------------
def group_labels(data: DataConfig, prepared: PreparedData) -> tuple[np.ndarray, list[str]]:
    """(group index per prepared image, group names) for data.balance: the six ITA bands, or an attribute's
    two values."""
    if data.balance == "skin":
        return band_of(image_itas(prepared)), list(BANDS)
    attributes = attribute_matrix(data, prepared) if data.source != "faces" else None
    if attributes is None:
        raise FaceganError(f"--balance {data.balance} needs CelebA's {ATTRIBUTE_FILE} beside the images (it comes "
                           f"with 'facegan data download celeba'); this data has none: use --balance skin")
    names, matrix, _ = attributes
    if data.balance not in names:
        raise FaceganError(f"--balance {data.balance} is not an attribute of this data: use skin or one of "
                           f"{', '.join(names)}")
    column = matrix[:, names.index(data.balance)]
    return column.astype(np.int64), [f"not {data.balance}", data.balance]


def audit_source(source: str, image_size: int, patch: str | None = None, out=".", crop: int = 0,
                 num_images: int | None = None, render_seed: int = 0, max_pixels: int | None = None,
                 skin_mix: str = "", progress: bool = False, log=print) -> Audit:
    """`facegan data audit`: audit a source, print the table, copy audit.json/.png into `out`."""
    from ..config import check_image_size
    from ..skin_tone import parse_patch

    check_image_size(image_size, arch="any")
    boxes = parse_patch(patch) if patch else DEFAULT_PATCH
    data = data_config_of(source, crop, num_images, render_seed, max_pixels, skin_mix)
    found = audit(data, image_size, boxes, progress=progress)
    log(format_audit(found.result))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for cached, name in ((found.json_path, "audit.json"), (found.png_path, "audit.png")):
        with atomic_write(out / name) as f:
            f.write(cached.read_bytes())
    how = "reused the audit cached" if found.reused else "cached"
    log(f"wrote {out / 'audit.json'} and {out / 'audit.png'} ({how} beside the data: {found.json_path})")
    return found
