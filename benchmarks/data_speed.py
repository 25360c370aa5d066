"""Data path speed and memory (issue targets: >= 1,500 images/s preparing 178x218 JPEGs -> 64x64 on
2 cores; >= 50,000 images/s batches from the cache; peak RSS within ~cache size + 1 GB on 200k images).

    python benchmarks/data_speed.py prepare [--count 6000] [--crop 178]
    python benchmarks/data_speed.py batches [--images 200000] [--batch-size 128] [--augment LIST] [--balance]

`prepare` makes CelebA-shaped JPEGs (178x218, quality 90) from the built-in renderer once, under
$TMPDIR, then times a cold `prepare` of them with all cores. `batches` writes a uint8 cache of
--images 64x64 faces (tiled renderer output), then runs one full shuffled epoch through
BatchSource exactly as training does and reports images/s and the process's peak RSS. With
--augment (e.g. brightness,contrast,rotate,translate) each batch also goes through augment(), as the
training loop does, so the rate shows what the augmentations cost next to a training step. With
--balance the epochs are drawn as `--balance skin` draws them (weighted, with replacement), after
measuring every image's skin tone once as `facegan data audit` does; both costs are printed.
"""

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from facegan.config import DataConfig
from facegan.data.prepare import prepare
from facegan.data.synthetic import render_faces

# prepare's worker processes are spawned and re-import this script. facegan.config imports torch
# (through the loss registry), so each worker's start includes torch's import: about a second here,
# paid once per worker, not per image.


def make_celeba_like(folder: Path, count: int) -> None:
    done = len(list(folder.glob("*.jpg"))) if folder.exists() else 0
    if done >= count:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(done, count, 256):
        faces = render_faces(range(start, min(start + 256, count)), size=218)
        for i, face in enumerate(faces):
            # 218x218 rendered, centre 178 columns kept: CelebA aligned's 178 wide x 218 high.
            Image.fromarray(face[:, 20:198]).save(folder / f"{start + i:06d}.jpg", quality=90)


def bench_prepare(args) -> None:
    folder = Path(tempfile.gettempdir()) / f"facegan-celeba-like-{args.count}"
    make_celeba_like(folder, args.count)
    cache = Path(tempfile.mkdtemp(prefix="facegan-bench-cache-"))
    try:
        start = time.perf_counter()
        prepared = prepare(DataConfig(source=str(folder), crop=args.crop), 64, cache_dir=cache)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"prepare {len(prepared.images)} JPEGs 178x218 -> 64x64 (crop {args.crop}) with {os.cpu_count()} cores: "
          f"{len(prepared.images) / seconds:,.0f} images/s ({seconds:.1f} s, cold cache, files in page cache)")


def bench_batches(args) -> None:
    import torch

    from facegan.augment import augment
    from facegan.data.batches import BatchSource

    workdir = Path(tempfile.mkdtemp(prefix="facegan-bench-batches-"))
    path = workdir / "faces.u8"
    tile = render_faces(range(2000), size=64)
    with open(path, "wb") as f:
        for start in range(0, args.images, len(tile)):
            f.write(tile[:min(len(tile), args.images - start)].tobytes())
    size_gb = path.stat().st_size / 2 ** 30
    try:
        images = np.memmap(path, dtype=np.uint8, mode="c", shape=(args.images, 64, 64, 3))
        weights, balance_note = None, ""
        if args.balance:
            from facegan.data.balance import balance_weights
            from facegan.skin_tone import BANDS, band_of, image_ita

            start = time.perf_counter()
            labels = band_of(image_ita(images))
            audit_seconds = time.perf_counter() - start
            weights, _ = balance_weights(labels, list(BANDS), 10.0)
            balance_note = (f", --balance skin (measuring {args.images:,} skin tones: {audit_seconds:.1f} s, once "
                            f"per cache)")
        source = BatchSource(images, args.batch_size, torch.device("cpu"), seed=0, flip=True,
                             memory_format=torch.channels_last, weights=weights)
        noise = torch.Generator().manual_seed(0)
        seen = source.steps_per_epoch * args.batch_size
        rates = []
        names = [n for n in args.augment.split(",") if n]
        for epoch in range(2):  # the first epoch also maps every page of the file in
            start = time.perf_counter()
            checksum = 0.0
            for batch in source.epoch(epoch, noise):
                if names:
                    batch = augment(batch, names, noise).contiguous(memory_format=torch.channels_last)
                checksum += float(batch[0, 0, 0, 0])  # consume each batch
            rates.append(seen / (time.perf_counter() - start))
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
        print(f"batches: shuffled epochs of {seen:,} images 64x64, batch {args.batch_size}, flips on"
              f"{', augment ' + args.augment if names else ''}{balance_note}: "
              f"first epoch {rates[0]:,.0f} images/s, second {rates[1]:,.0f} images/s; cache {size_gb:.2f} GiB, "
              f"peak RSS {peak_gb:.2f} GiB (mapped cache pages count towards RSS; no second copy)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--count", type=int, default=6000)
    p.add_argument("--crop", type=int, default=178)
    p.set_defaults(func=bench_prepare)
    b = sub.add_parser("batches")
    b.add_argument("--images", type=int, default=200_000)
    b.add_argument("--batch-size", type=int, default=128)
    b.add_argument("--augment", default="", help="comma list as for facegan train --augment")
    b.add_argument("--balance", action="store_true", help="draw the epochs as --balance skin does")
    b.set_defaults(func=bench_batches)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
