"""Sources (built-in renderer, folder, zip) -> a uint8 cache (N, H, W, 3) on disk, made once.

The cache is a raw `.u8` array plus a `.json` record (source, options, count, checksum). The
record is written last, by rename, and is what makes a cache valid: an interrupted preparation
leaves no record, a truncated or edited array fails the size or checksum check, and a changed
source changes the key. Either way the cache is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import DataConfig
from ..errors import FaceganError
from ..fileio import no_space_error, remove_dead_temp_files, temp_path, write_text_atomic
from ..paths import cache_root
from . import synthetic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CACHE_FORMAT = 1  # bump when decoding or the file layout changes
MAX_IMAGE_BYTES = 64 * 2 ** 20  # one face image file; a zip entry larger than this is skipped unread
_PARALLEL_MIN_ITEMS = 4000  # below this, worker start-up costs more than it saves
_CHUNK = 256


@dataclass
class Source:
    """What to decode: `items` are face indices, file paths or zip member names."""
    kind: str           # "faces", "folder" or "zip"
    location: str       # "" for faces, else the absolute path
    items: list
    signature: str      # changes whenever the source's content may have changed
    describe: str       # for messages and run names

    @property
    def short_name(self) -> str:
        return "faces" if self.kind == "faces" else Path(self.location).stem.replace(" ", "_")


def resolve_source(data: DataConfig) -> Source:
    """Find the images a DataConfig names, or say exactly what is wrong with it."""
    if data.source == "faces":
        mix = synthetic.parse_skin_mix(data.skin_mix)
        mixed = ":mix" + ",".join(f"{share:.6f}" for share in mix) if mix else ""  # the default set keeps its key
        return Source("faces", "", list(range(data.num_images)),
                      f"renderer{synthetic.RENDERER_VERSION}:seed{data.render_seed}:n{data.num_images}{mixed}",
                      f"built-in faces ({data.num_images}, seed {data.render_seed}"
                      + (f", skin mix {data.skin_mix}" if mix else "") + ")")
    from .download import DATASETS, MAX_RATIO, MAX_UNZIPPED_BYTES, registered

    if data.source in DATASETS and not Path(data.source).exists():
        path = registered(data.source)
        if path is None:
            raise FaceganError(f"dataset '{data.source}' is not downloaded yet: run "
                               f"'facegan data download {data.source}' first")
    else:
        path = Path(data.source).expanduser()
    if not path.exists():
        raise FaceganError(f"data path {path} does not exist: pass a folder or .zip of face images, "
                           f"or leave out --data to use the built-in faces")
    path = path.resolve()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                       and not p.name.startswith("._"))  # macOS resource forks
        if not files:
            empty = not any(path.iterdir())
            raise FaceganError(f"folder {path} {'is empty' if empty else 'has no images'}: put "
                               f"{'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} files in it (subfolders are searched)")
        digest = hashlib.sha256()
        for f in files:  # names, sizes and times: a stat per file, no reading
            st = f.stat()
            # surrogateescape: a file name that is not UTF-8 (bytes from another system) still hashes
            digest.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        return Source("folder", str(path), [str(f) for f in files], digest.hexdigest(), str(path))
    if not path.is_file():  # a FIFO would block the zip check's read forever; /dev/zero would never end
        raise FaceganError(f"{path} is not a regular file or folder (a device, FIFO or socket): pass a folder or "
                           f".zip of face images")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                infos = [i for i in archive.infolist()
                         if not i.is_dir() and Path(i.filename).suffix.lower() in IMAGE_EXTENSIONS
                         and not Path(i.filename).name.startswith("._")]  # macOS resource forks
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise FaceganError(f"zip {path} is damaged ({str(exc)[:80]}): download or zip it again") from None
        members = sorted(i.filename for i in infos)
        total, packed = sum(i.file_size for i in infos), max(1, sum(i.compress_size for i in infos))
        if total > MAX_UNZIPPED_BYTES or total / packed > MAX_RATIO:  # the download's unzip limits
            raise FaceganError(f"refusing to read {path.name}: its images would expand to {total / 2**30:.1f} GiB "
                               f"from {packed / 2**20:.1f} MiB (a zip bomb or a damaged archive)")
        if not members:
            raise FaceganError(f"zip {path} has no images: it must contain "
                               f"{'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} files")
        st = path.stat()
        return Source("zip", str(path), members, f"{st.st_size}:{st.st_mtime_ns}", str(path))
    raise FaceganError(f"{path} is neither a folder nor a .zip file: pass a folder or .zip of face images")


class TooLarge(Exception):
    """An image over the pixel limit: skipped and counted, never decoded."""


def decode_image(raw, image_size: int, crop: int = 0, max_pixels: int = 50_000_000) -> np.ndarray:
    """Any image file (path or bytes) -> uint8 (size, size, 3): RGB, centre crop, antialiased resize.

    `crop` is the side of the centred square to keep, in source pixels (CelebA's 108/138/178);
    0 keeps the largest centred square. Small sources are upscaled. Images of more than
    `max_pixels` raise TooLarge after reading only the header."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels is the limit here
        try:
            img = Image.open(io.BytesIO(raw) if isinstance(raw, bytes) else raw)
        except Image.DecompressionBombError:
            raise TooLarge from None
    with img:
        if img.size[0] * img.size[1] > max_pixels:
            raise TooLarge
        source_width = img.size[0]
        side = min(crop, *img.size) if crop else min(img.size)
        if img.format == "JPEG":
            # libjpeg can decode at 1/2, 1/4 or 1/8 scale for almost free; ask for the smallest
            # scale that still leaves the crop at least image_size pixels wide.
            shrink = image_size / side
            img.draft("RGB", (max(1, int(img.size[0] * shrink)), max(1, int(img.size[1] * shrink))))
        side = side * img.size[0] / source_width  # the crop in decoded pixels
        img = img.convert("RGB")  # grayscale, RGBA, palette, CMYK -> RGB
        left, top = (img.size[0] - side) / 2, (img.size[1] - side) / 2
        img = img.resize((image_size, image_size), Image.LANCZOS, box=(left, top, left + side, top + side))
        return np.asarray(img, dtype=np.uint8)


def _worker_start(parent_pid: int) -> None:
    """A decoding worker ends when the preparing process dies (a kill -9 leaves no orphans decoding on)."""
    import signal

    from ..interrupt import die_with_parent
    die_with_parent(parent_pid, signal.SIGKILL)


# Each worker process keeps its zip open across chunks instead of re-reading the directory.
_open_zips: dict[str, zipfile.ZipFile] = {}


def _decode_chunk(kind: str, location: str, items: list, image_size: int, crop: int, render_seed: int,
                  max_pixels: int = 50_000_000, skin_mix: str = ""):
    """Decode one chunk of items -> (uint8 (k, S, S, 3) of the readable ones, unreadable, too large,
    the positions in `items` of those left out)."""
    if kind == "faces":
        mix = synthetic.parse_skin_mix(skin_mix)
        return synthetic.render_faces(items, size=image_size, seed=render_seed, skin_mix=mix), 0, 0, []
    images, unreadable, too_large, dropped = [], 0, 0, []
    for position, item in enumerate(items):
        try:
            if kind == "zip":
                archive = _open_zips.get(location) or _open_zips.setdefault(location, zipfile.ZipFile(location))
                with archive.open(item) as member:  # streamed and bounded: an entry's header can lie
                    raw = member.read(MAX_IMAGE_BYTES + 1)
                if len(raw) > MAX_IMAGE_BYTES:
                    raise TooLarge
            else:
                raw = item
            images.append(decode_image(raw, image_size, crop, max_pixels))
        except TooLarge:
            too_large += 1
            dropped.append(position)
        except Exception:  # noqa: BLE001 - any unreadable file is skipped and counted, whatever the cause
            unreadable += 1
            dropped.append(position)
    if not images:
        return np.empty((0, image_size, image_size, 3), np.uint8), unreadable, too_large, dropped
    return np.stack(images), unreadable, too_large, dropped


@dataclass
class PreparedData:
    images: np.ndarray   # uint8 (N, S, S, 3), memory-mapped copy-on-write: never a second copy in RAM
    record: dict         # the cache's JSON record
    path: Path           # the .u8 file
    reused: bool         # True when an existing cache was used
    weights: np.ndarray | None = None  # --balance: each image's sampling weight (data/balance.py), set by train()


def _cache_key(source: Source, image_size: int, crop: int, max_pixels: int) -> str:
    if source.kind == "faces":  # the renderer draws at the final size: crop and pixel limit have no meaning
        crop, max_pixels = 0, 0
    text = json.dumps([CACHE_FORMAT, source.kind, source.location, source.signature, image_size, crop]
                      + ([max_pixels] if max_pixels else []))  # built-in face caches keep their keys
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _checksum(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _load_valid(array_path: Path, record_path: Path, key: str):
    """The cached array if its record exists and it matches byte for byte; else None."""
    try:
        record = json.loads(record_path.read_text())
        shape = tuple(record["shape"])
        if record.get("key") != key or array_path.stat().st_size != int(np.prod(shape)):
            return None
        if _checksum(array_path) != record["checksum"]:
            return None
        return np.memmap(array_path, dtype=np.uint8, mode="c", shape=shape), record
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prepare(data: DataConfig, image_size: int, cache_dir=None, progress: bool = False,
            workers: int | None = None) -> PreparedData:
    """Return the prepared images for `data` at `image_size`, building the cache if needed."""
    source = resolve_source(data)
    crop = 0 if source.kind == "faces" else data.crop
    if crop < 0:
        raise FaceganError(f"--crop {crop} is negative: use a side in pixels such as 108, or 0 for none")
    key = _cache_key(source, image_size, crop, data.max_pixels)
    root = Path(cache_dir) if cache_dir else cache_root()
    stem = f"{source.short_name}-{image_size}px-{key}"
    array_path, record_path = root / f"{stem}.u8", root / f"{stem}.json"
    cached = _load_valid(array_path, record_path, key) if record_path.exists() else None
    if cached is not None:
        return PreparedData(cached[0], cached[1], array_path, reused=True)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FaceganError(f"cannot create the data cache folder {root} ({exc.strerror}): "
                           f"set FACEGAN_CACHE to a writable folder") from None
    record_path.unlink(missing_ok=True)  # from here on the old record must not vouch for a new array
    remove_dead_temp_files(root)  # half-written arrays of killed preparations (.NAME.u8.tmpPID)

    started = time.perf_counter()
    frame = image_size * image_size * 3
    tmp_path = temp_path(array_path)
    written = skipped = too_large = 0
    dropped = []  # source item indices left out, so labels (CelebA attributes) can be lined up with images
    chunks = [source.items[i:i + _CHUNK] for i in range(0, len(source.items), _CHUNK)]
    args = (source.kind, source.location)
    options = (image_size, crop, data.render_seed, data.max_pixels, data.skin_mix)
    bar = _progress_bar(len(source.items), f"preparing {source.describe}", progress)
    try:
        with open(tmp_path, "wb") as out:
            workers = workers or os.cpu_count() or 1
            if workers > 1 and len(source.items) >= _PARALLEL_MIN_ITEMS:
                import multiprocessing
                # spawn, not fork: the parent may hold torch's thread pools, which fork can deadlock.
                with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_worker_start, initargs=(os.getpid(),)) as pool:
                    results = pool.map(_decode_chunk, *zip(*[(*args, c, *options) for c in chunks]))
                    for number, (chunk, (images, bad, large, left_out)) in enumerate(zip(chunks, results)):
                        dropped += [number * _CHUNK + position for position in left_out]
                        out.write(images.tobytes())
                        written, skipped, too_large = written + len(images), skipped + bad, too_large + large
                        bar.update(len(chunk))
            else:
                for number, chunk in enumerate(chunks):
                    images, bad, large, left_out = _decode_chunk(*args, chunk, *options)
                    dropped += [number * _CHUNK + position for position in left_out]
                    out.write(images.tobytes())
                    written, skipped, too_large = written + len(images), skipped + bad, too_large + large
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        bar.close()
        if written == 0:
            if too_large:
                raise FaceganError(f"none of the {len(source.items)} images in {source.describe} could be used: "
                                   f"{too_large} are over --max-pixels {data.max_pixels:,}; raise --max-pixels")
            raise FaceganError(f"none of the {len(source.items)} images in {source.describe} could be read "
                               f"(all corrupt or not images): check the files, or point --data elsewhere")
        os.replace(tmp_path, array_path)
        record = {
            "key": key, "format": CACHE_FORMAT, "source": source.describe, "kind": source.kind,
            "image_size": image_size, "crop": crop, "shape": [written, image_size, image_size, 3],
            "found": len(source.items), "used": written, "skipped": skipped, "too_large": too_large,
            "max_pixels": data.max_pixels, "dropped": dropped,
            "bytes": written * frame, "checksum": _checksum(array_path),
            "seconds": round(time.perf_counter() - started, 2),
        }
        write_text_atomic(record_path, json.dumps(record, indent=1))  # the commit point: only now is the cache valid
    except OSError as exc:
        no_space_error(exc, root, needed=len(source.items) * frame)
        raise
    finally:
        bar.close()
        tmp_path.unlink(missing_ok=True)
    images = np.memmap(array_path, dtype=np.uint8, mode="c", shape=tuple(record["shape"]))
    return PreparedData(images, record, array_path, reused=False)


def summary(prepared: PreparedData) -> str:
    """One line: what was found, used and skipped, and where the cache lives."""
    r = prepared.record
    skipped = f", {r['skipped']} unreadable skipped" if r["skipped"] else ""
    if r.get("too_large"):
        skipped += f", {r['too_large']} over --max-pixels {r['max_pixels']:,} skipped"
    how = "reused cache" if prepared.reused else f"prepared in {r['seconds']:.1f}s"
    return (f"{r['source']}: {r['used']} of {r['found']} images at {r['image_size']}x{r['image_size']}"
            f"{skipped} ({r['bytes'] / 2**20:.1f} MiB, {how}: {prepared.path})")


def _progress_bar(total: int, description: str, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=description, unit="img", disable=not enabled, leave=False)


def prepare_source(source: str, image_size: int, crop: int = 0, num_images: int | None = None, render_seed: int = 0,
                   max_pixels: int | None = None, preview: tuple[int, str] | None = None, progress: bool = False,
                   log=print, skin_mix: str = "") -> PreparedData:
    """`facegan data prepare` / `preview`: build (or reuse) the cache of `source` for any architecture
    and print its summary; with `preview` = (count, file), also write a grid of the first images."""
    from ..config import check_image_size
    from ..images import save_grid

    check_image_size(image_size, arch="any")  # data for any architecture: only the range matters
    if num_images is None and preview and source == "faces":
        num_images = preview[0]  # a preview of the renderer needs only the faces it shows
    data = data_config_of(source, crop, num_images, render_seed, max_pixels, skin_mix)
    prepared = prepare(data, image_size, progress=progress)
    log(summary(prepared))
    if preview:
        count, out = preview
        out = save_grid(prepared.images[:count], out)
        log(f"wrote a grid of {min(count, len(prepared.images))} prepared images to {out}")
    return prepared


def data_config_of(source: str, crop: int = 0, num_images: int | None = None, render_seed: int = 0,
                   max_pixels: int | None = None, skin_mix: str = "") -> DataConfig:
    """The DataConfig of a `facegan data` command's options (None and 0 keep the defaults)."""
    return DataConfig(source=source, crop=crop, render_seed=render_seed, skin_mix=skin_mix or "",
                      **({"num_images": num_images} if num_images else {}),
                      **({"max_pixels": max_pixels} if max_pixels else {}))


def prepare_for_training(cfg, world, cache_dir=None, progress: bool = True, log=print) -> PreparedData:
    """The images a run trains on: rank 0 builds (or reuses) the cache and prints its summary while the
    other processes wait, then they reuse it; --max-images keeps the first N."""
    import dataclasses

    from .. import distributed

    if not world.is_main:
        distributed.barrier(world)
    prepared = prepare(cfg.data, cfg.model.image_size, cache_dir=cache_dir, progress=progress and world.is_main)
    if world.is_main:
        log(summary(prepared))
        distributed.barrier(world)
    if cfg.data.max_images and cfg.data.max_images < len(prepared.images):
        log(f"training on the first {cfg.data.max_images} of {len(prepared.images)} images (--max-images)")
        prepared = dataclasses.replace(prepared, images=prepared.images[:cfg.data.max_images])
    return prepared
