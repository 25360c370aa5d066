"""Quality at equal images seen: the textbook recipe (--preset dcgan) against facegan's candidates.

    python benchmarks/quality.py [--setting a|b|c] [--seeds 1,2,3] [--recipes textbook,default,ema]
                                 [--quick] [--out bench-quality]

Settings (issue 12): (a) the built-in faces at 32 px, 20 epochs of 20,000 (400,000 images seen);
(b) the same at 64 px; (c) 500 built-in faces, small-data regime, the same images seen. Each recipe is
trained through `facegan.train.train` once per seed, then evaluated with `facegan.metrics.evaluate`
(SWD x1e3 on 1,000 samples, MS-SSIM diversity). Prints a table of medians and spreads (min-max over
seeds), wall time and images/s, and writes OUT/results.json. --quick: 1 seed, 1/10 of the images.
Wall times on this 2-core CPU: (a) about 2.5 min a run, (b) 6-12 min, (c) as (a).
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from facegan.config import PRESETS, DataConfig, ModelConfig, TrainConfig, apply_overrides
from facegan.data.prepare import prepare
from facegan.generate import load_generator
from facegan.metrics.evaluate import evaluate

SETTINGS = {"a": {"image_size": 32, "num_images": 20000, "epochs": 20},
            "b": {"image_size": 64, "num_images": 20000, "epochs": 20},
            "c": {"image_size": 32, "num_images": 500, "epochs": 800}}  # 400,000 images seen, as (a)
RECIPES = {"textbook": dict(PRESETS["dcgan"]), "default": {}, "ema": {"ema_kimg": 10.0},
           "ema+diffaug": {"ema_kimg": 10.0, "diffaug": "color,translation,cutout"}}


def config(setting: dict, recipe: dict, seed: int, quick: bool) -> TrainConfig:
    raw = TrainConfig(model=ModelConfig(image_size=setting["image_size"]),
                      data=DataConfig(num_images=setting["num_images"]), epochs=setting["epochs"], seed=seed).to_dict()
    cfg = TrainConfig.from_dict(apply_overrides(raw, recipe))
    if quick:
        cfg.epochs = max(1, cfg.epochs // 10)
    return cfg


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=tuple(SETTINGS), default="a")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--recipes", default="textbook,default,ema")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench-quality")
    args = parser.parse_args()
    from facegan.train import train

    seeds = [1] if args.quick else [int(s) for s in args.seeds.split(",")]
    setting = SETTINGS[args.setting]
    out = Path(args.out) / args.setting
    results = {}
    for name in args.recipes.split(","):
        rows = []
        for seed in seeds:
            cfg = config(setting, RECIPES[name], seed, args.quick)
            started = time.perf_counter()
            run = train(cfg, out=out / name, progress=False, log=lambda *a: None)
            wall = time.perf_counter() - started
            generator, _ = load_generator(run / "generator.pt")
            prepared = prepare(cfg.data, cfg.model.image_size)
            scores = evaluate(generator, prepared, ["swd", "msssim"], 1000)
            images = cfg.epochs * (len(prepared.images) // cfg.batch_size) * cfg.batch_size
            rows.append({"seed": seed, "swd": scores["swd"], "msssim": scores["msssim"],
                         "msssim_real": scores["msssim_real"], "wall_s": round(wall, 1),
                         "images_per_s": round(images / wall, 1), "run": str(run)})
            print(f"{args.setting} {name} seed {seed}: SWD {scores['swd']:.2f}, MS-SSIM {scores['msssim']:.3f} "
                  f"(reals {scores['msssim_real']:.3f}), {wall / 60:.1f} min", flush=True)
        results[name] = rows
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nsetting {args.setting}, {len(seeds)} seed(s): median (min-max)")
    print(f"{'recipe':<14}{'SWD x1e3':>22}{'MS-SSIM':>22}{'images/s':>10}")
    for name, rows in results.items():
        cell = lambda k: f"{statistics.median(r[k] for r in rows):.3f} ({min(r[k] for r in rows):.2f}-{max(r[k] for r in rows):.2f})"  # noqa: E731
        print(f"{name:<14}{cell('swd'):>22}{cell('msssim'):>22}{statistics.median(r['images_per_s'] for r in rows):>10.0f}")


if __name__ == "__main__":
    main()
