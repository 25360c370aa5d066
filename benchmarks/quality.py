"""Quality at equal images seen: the textbook recipe (--preset dcgan) against facegan's recipes.

    python benchmarks/quality.py [--setting a|b|c] [--seeds 1,2,3] [--recipes textbook,default]
                                 [--quick] [--out bench-quality]

Settings (issue 12), each 399,360 images seen (20 epochs of the 19,968 images a batch of 64 or 128 uses):
  (a) the built-in faces at 32 px;  (b) the same at 64 px;
  (c) the small-data regime: the first 500 of those faces at 32 px, the same images seen (about 800
      epochs). SWD and MS-SSIM are measured against all 20,000 faces (the distribution, not the 500),
      and `nn` (metrics/nearest.py) says whether samples sit closer to the 500 than held-out faces do.
Each recipe is trained through `facegan.train.train` once per seed and evaluated with
`facegan.metrics.evaluate` (SWD x1e3 on 1,000 samples, per level and average; MS-SSIM diversity,
lower = more diverse). For (a) and (b) it also reports equal wall time: each run is evaluated at its
last epoch checkpoint written within the textbook's median training time (a recipe faster than the
textbook is taken at its end), and time to the textbook's SWD: the training time at which each run's
epoch checkpoints first reach the textbook's final SWD (median over its seeds), and that time over the
textbook's own training time ("faces per minute": below 1 is faster). It prints medians and min-max
over seeds, writes OUT/SETTING/results.json
and OUT/SETTING/side-by-side.png
(textbook | facegan default, seed 1, the same 36 latents). --quick: 1 seed, 1/10 of the images.
Each run's numbers are kept in OUT/SETTING/RECIPE/seed-N.json and are not measured again (delete the
file to redo one), so seeds can run in two processes at once: --seeds 1 --threads 1 beside --seeds 2
--threads 1 (then a last call with all seeds prints the table).

Wall time of one run on a 2-core CPU, two runs at a time with --threads 1: (a) 3.7 min textbook /
4.4 min default, (b) 20.3 / 21.6 min, (c) 3.4 / 4.3 min (README "Better faces").
"""

import argparse
import dataclasses
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from facegan.config import DataConfig, TrainConfig, resolve
from facegan.data.prepare import prepare
from facegan.generate import generate, load_generator
from facegan.images import make_grid
from facegan.metrics.evaluate import evaluate

IMAGES_SEEN = 20 * 19_968
SETTINGS = {"a": {"image_size": 32, "train_images": 0},
            "b": {"image_size": 64, "train_images": 0},
            "c": {"image_size": 32, "train_images": 500}}
# facegan's defaults before issue 12; the candidates below change one thing each (or two, "+").
V1 = {"loss": "bce", "model.spectral_norm": False, "ema_kimg": 0.0, "diffaug": "", "r1_gamma": 0.0,
      "batch_size": 64, "lr_d": 2e-4, "lr_g": 2e-4, "beta1": 0.5, "beta2": 0.999, "model.minibatch_std": None}
RECIPES = {
    "textbook": {"preset": "dcgan"},
    "default": {},  # whatever `facegan train` does today
    "v1": V1,
    "v1+ema": {**V1, "ema_kimg": 10.0},
    "v1+lsgan": {**V1, "loss": "lsgan"},
    "v1+ttur": {**V1, "lr_d": 4e-4, "lr_g": 1e-4},
    "v1+batch32": {**V1, "batch_size": 32},
    "v1+mbstd": {**V1, "model.minibatch_std": True},
    "v1+diffaug": {**V1, "diffaug": "color,translation"},
    "v1+r1": {**V1, "r1_gamma": 0.2},
    "v1+sn": {**V1, "model.spectral_norm": True},
    "v1+hinge": {**V1, "loss": "hinge"},
    "v1+hinge+sn": {**V1, "loss": "hinge", "model.spectral_norm": True},
    "v1+hinge+sn+ema": {**V1, "loss": "hinge", "model.spectral_norm": True, "ema_kimg": 10.0},
    "v1+hinge+sn+beta0": {**V1, "loss": "hinge", "model.spectral_norm": True, "beta1": 0.0, "beta2": 0.9},
    "default+diffaug": {"diffaug": "color,translation,cutout"},
}


LABELS = {"textbook": "textbook (--preset dcgan)", "default": "facegan default"}


def config(setting: dict, recipe: dict, seed: int, quick: bool) -> TrainConfig:
    # Through config.resolve, as `facegan train` with these options would.
    options = {"model.image_size": setting["image_size"], "data.num_images": 20_000,
               "data.max_images": setting["train_images"], "seed": seed}
    options.update({key: value for key, value in recipe.items() if key != "preset"})
    cfg, _ = resolve(options, preset=recipe.get("preset"))
    max_steps = IMAGES_SEEN // (10 if quick else 1) // cfg.batch_size
    epochs = math.ceil(max_steps / ((setting["train_images"] or 20_000) // cfg.batch_size))
    # Every epoch's state for the equal-wall-time column (not with (c)'s hundreds of tiny epochs).
    keep = epochs if not setting["train_images"] else cfg.keep_checkpoints
    return dataclasses.replace(cfg, max_steps=max_steps, epochs=epochs, keep_checkpoints=keep)


def _started(run: Path) -> float:
    return (run / "config.json").stat().st_mtime


def checkpoint_within(run: Path, seconds: float) -> Path:
    """The newest epoch checkpoint the run had written `seconds` after it started (its last.pt if none later)."""
    start = _started(run)
    epochs = sorted((run / "checkpoints").glob("epoch-*.pt"))
    inside = [p for p in epochs if p.stat().st_mtime - start <= seconds]
    return inside[-1] if inside else epochs[0]


def _trained_s(run: Path, checkpoint: Path) -> float:
    return checkpoint.stat().st_mtime - _started(run)


def _trained_to_end(row: dict) -> float:
    run = Path(row["run"])
    return _trained_s(run, max((run / "checkpoints").glob("epoch-*.pt")))


def time_to_swd(row: dict, target: float, prepared) -> float | None:
    """Seconds of training until the run's first epoch checkpoint with SWD <= target (None: never); the
    SWD of each checkpoint looked at is kept in the row, so a second call measures nothing."""
    run = Path(row["run"])
    seen = row.setdefault("swd_by_checkpoint", {})
    for checkpoint in sorted((run / "checkpoints").glob("epoch-*.pt")):
        if checkpoint.name not in seen:
            seen[checkpoint.name] = measure(checkpoint, prepared, 0)["swd"]
        if seen[checkpoint.name] <= target:
            return round(_trained_s(run, checkpoint), 1)
    return None


def measure(checkpoint: Path, prepared, train_images: int) -> dict:
    generator, _ = load_generator(checkpoint)
    metrics = ["swd", "msssim"] + (["nn"] if train_images else [])
    scores = evaluate(generator, prepared, metrics, 1000, train_count=train_images or None)
    row = {"swd": scores["swd"], "swd_levels": scores["swd_levels"], "msssim": scores["msssim"],
           "msssim_real": scores["msssim_real"]}
    if train_images:
        row["nn_ratio"] = scores["nn_ratio"]
    return row


def side_by_side(runs: dict, path: Path, count: int = 36) -> None:
    """One labelled picture: each recipe's faces for the same `count` seeds, next to each other."""
    panels = []
    for name, run in runs.items():
        generator, _ = load_generator(run / "generator.pt")
        grid = make_grid(generate(generator, range(count)), columns=6)
        scale = max(1, round(480 / grid.shape[1]))
        panel = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
        labelled = Image.new("RGB", (panel.width, panel.height + 18), "white")
        labelled.paste(panel, (0, 18))
        ImageDraw.Draw(labelled).text((4, 3), LABELS.get(name, name), fill="black")
        panels.append(labelled)
    canvas = Image.new("RGB", (sum(p.width for p in panels) + 12 * (len(panels) - 1), panels[0].height), "white")
    left = 0
    for panel in panels:
        canvas.paste(panel, (left, 0))
        left += panel.width + 12
    canvas.save(path)


def _write_json(path: Path, value) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)  # a kill mid-write never leaves half a record


def _cell(rows: list[dict], key: str, digits: int = 2) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return "-"
    median = statistics.median(values)
    return f"{median:.{digits}f}" if len(values) == 1 else \
        f"{median:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=tuple(SETTINGS), default="a")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--recipes", default="textbook,default",
                        help=f"comma-separated, from: {', '.join(RECIPES)}")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench-quality")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from facegan.train import train

    names = args.recipes.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe {unknown[0]}: choose from {', '.join(RECIPES)}")
    seeds = [1] if args.quick else [int(s) for s in args.seeds.split(",")]
    setting = SETTINGS[args.setting]
    out = Path(args.out) / (args.setting + ("-quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    prepared = prepare(DataConfig(num_images=20_000), setting["image_size"])
    for name in names:
        for seed in seeds:
            record = out / name / f"seed-{seed}.json"
            if record.is_file():
                continue
            cfg = config(setting, RECIPES[name], seed, args.quick)
            started = time.perf_counter()
            run = train(cfg, out=out / name, progress=False, log=lambda *a: None)
            wall = time.perf_counter() - started
            row = {"seed": seed, "run": str(run), "wall_s": round(wall, 1), "threads": torch.get_num_threads(),
                   "images_per_s": round(cfg.max_steps * cfg.batch_size / wall, 1),
                   **measure(run / "generator.pt", prepared, setting["train_images"])}
            _write_json(record, row)
            print(f"{args.setting} {name} seed {seed}: SWD {row['swd']:.2f}, MS-SSIM {row['msssim']:.3f} "
                  f"(reals {row['msssim_real']:.3f}), {wall / 60:.1f} min", flush=True)
    results = {name: [json.loads((out / name / f"seed-{seed}.json").read_text()) for seed in seeds
                      if (out / name / f"seed-{seed}.json").is_file()] for name in names}
    results = {name: rows for name, rows in results.items() if rows}
    if set(results) != set(names) or any(len(rows) < len(seeds) for rows in results.values()):
        print("(some runs are still missing: the table shows those measured)")

    equal_wall = None
    if not setting["train_images"] and "textbook" in results:
        equal_wall = statistics.median(r["wall_s"] for r in results["textbook"])
        for name, rows in results.items():
            for row in rows:
                # The reference is taken at its end (its median run defines the time; the others are close).
                checkpoint = checkpoint_within(Path(row["run"]), equal_wall) \
                    if row["wall_s"] > equal_wall and name != "textbook" else Path(row["run"]) / "generator.pt"
                if (row.get("equal_wall_s"), row.get("equal_wall_checkpoint")) != (equal_wall, checkpoint.name):
                    row["equal_wall_s"] = equal_wall
                    row["swd_equal_wall"] = measure(checkpoint, prepared, 0)["swd"]
                    row["equal_wall_checkpoint"] = checkpoint.name
                    _write_json(out / name / f"seed-{row['seed']}.json", row)
        # Faces per minute: when does each recipe first draw faces as good as the textbook's final ones?
        target = statistics.median(r["swd"] for r in results["textbook"])
        textbook_s = statistics.median(_trained_to_end(r) for r in results["textbook"])
        for name, rows in results.items():
            for row in rows:
                if row.get("target_swd") != target or "time_to_target_s" not in row:
                    row["target_swd"] = target
                    row["time_to_target_s"] = time_to_swd(row, target, prepared) if name != "textbook" else \
                        round(_trained_to_end(row), 1)
                    _write_json(out / name / f"seed-{row['seed']}.json", row)
    shown = {n: Path(next(r["run"] for r in results[n] if r["seed"] == seeds[0])) for n in ("textbook", "default")
             if n in results and any(r["seed"] == seeds[0] for r in results[n])}
    if len(shown) == 2:
        side_by_side(shown, out / "side-by-side.png")

    print(f"\nsetting {args.setting}, seeds {','.join(map(str, seeds))}: median (min-max); SWD x1e3, lower is better")
    header = f"{'recipe':<12}{'SWD':>22}{'vs textbook':>12}{'MS-SSIM':>22}{'images/s':>10}"
    header += f"{'SWD equal wall':>22}" if equal_wall else f"{'nn ratio':>20}"
    print(header)
    reference = statistics.median(r["swd"] for r in results["textbook"]) if "textbook" in results else None
    for name, rows in results.items():
        ratio = f"{statistics.median(r['swd'] for r in rows) / reference:.2f}x" if reference else "-"
        line = f"{name:<12}{_cell(rows, 'swd'):>22}{ratio:>12}{_cell(rows, 'msssim', 3):>22}"
        line += f"{statistics.median(r['images_per_s'] for r in rows):>10.0f}"
        line += f"{_cell(rows, 'swd_equal_wall'):>22}" if equal_wall else f"{_cell(rows, 'nn_ratio'):>20}"
        print(line)
    if equal_wall:
        print(f"equal wall time: {equal_wall:.0f} s (the textbook's median)")
        print(f"\ntime to the textbook's final SWD ({target:.2f}); the textbook's own training: {textbook_s:.0f} s")
        for name, rows in results.items():
            times = [r["time_to_target_s"] for r in rows]
            reached = [t for t in times if t is not None]
            when = f"{statistics.median(reached):.0f} s = {statistics.median(reached) / textbook_s:.2f}x the textbook" \
                if reached else "never within its run"
            print(f"{name:<12}{when}" + (f" ({len(reached)} of {len(times)} seeds reached it)"
                                        if len(reached) != len(times) else ""))
    reals = statistics.median(r["msssim_real"] for rows in results.values() for r in rows)
    print(f"MS-SSIM of real faces: {reals:.3f}")


if __name__ == "__main__":
    main()
