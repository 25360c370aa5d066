"""Bias amplification: does the default recipe keep the skin-tone minorities of a biased data set, and
what does --balance skin change? (issue 23; README "Whose faces", docs/findings.md)

    python benchmarks/bias_study.py [--skin-mix 0.85,0.1,0.05] [--epochs 10] [--seeds 1,2]
                                    [--image-size 32] [--num-samples 1000] [--out bench-bias]

On the built-in faces rendered with --skin-mix (default: 85% light, 10% mid, 5% dark tones), it trains
the default recipe with and without `--balance skin`, the same steps each, once per seed, through
`facegan.train.train`, and evaluates each EMA generator with `facegan.metrics.evaluate` on the same
seeds: the audit (each ITA band's share in the samples against the training data's, the ratios, total
variation), SWD x1e3 and MS-SSIM against the biased training set, and SWD and total variation against
faces rendered with every band equally often (swd_even, audit_tv_even: what a balanced run aims at,
so the price of balance in quality shows apart from the shift it asks for). It prints the table,
writes OUT/results.json and OUT/bands.png: per run of the first seed, a row of samples per band
(very light at the top; white cells where a band had fewer samples than the row holds). Each run's
numbers are kept in OUT/RUN.json and not measured again (delete one to redo it). Wall time on a
2-core CPU at the defaults: 9-12 min per run (measured while other jobs ran).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facegan.config import resolve
from facegan.data.prepare import prepare
from facegan.generate import generate, load_generator
from facegan.images import make_grid
from facegan.metrics.audit import band_sheet
from facegan.metrics.evaluate import evaluate
from facegan.skin_tone import BANDS, band_of, image_ita
from facegan.train import train

ARMS = {"uniform": "", "balanced": "skin"}


EVEN_MIX = "1,1,1,1,1,1"  # the reference a balanced run aims at: the same renderer, every ITA band alike


def with_even_reference(result: dict, args) -> dict:
    """SWD and the audit of a run's samples against faces rendered with every band equally often: SWD
    against the biased training set penalises a balanced run for the very shift it was asked for."""
    if "swd_even" not in result:
        cfg, _ = resolve({"model.image_size": args.image_size, "data.skin_mix": EVEN_MIX})
        generator, _ = load_generator(Path(result["run"]) / "generator.pt", "cpu")
        even = evaluate(generator, prepare(cfg.data, cfg.model.image_size), ["swd", "audit"], args.num_samples)
        result.update(swd_even=even["swd"], audit_tv_even=even["audit_tv"])
    return result


def run_arm(name: str, balance: str, seed: int, args) -> dict:
    out = Path(args.out)
    record = out / f"{name}-seed{seed}.json"
    if record.is_file():
        result = with_even_reference(json.loads(record.read_text()), args)
        record.write_text(json.dumps(result, indent=1))
        return result
    cfg, _ = resolve({"model.image_size": args.image_size, "data.skin_mix": args.skin_mix,
                      "data.balance": balance, "epochs": args.epochs, "seed": seed})
    started = time.perf_counter()
    run = train(cfg, run_dir=out / "runs" / f"{name}-seed{seed}", progress=False, log=lambda *a: None, eta=False)
    minutes = (time.perf_counter() - started) / 60
    generator, _ = load_generator(run / "generator.pt", "cpu")
    prepared = prepare(cfg.data, cfg.model.image_size)
    results = evaluate(generator, prepared, ["swd", "msssim", "audit"], args.num_samples)
    results.update(run=str(run), minutes=round(minutes, 1), seed=seed, arm=name)
    results = with_even_reference(results, args)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(results, indent=1))
    return results


def bands_picture(runs: list[dict], path: Path, per_band: int = 10) -> None:
    """For each run, its samples sorted into rows by band, side by side with a title over each."""
    sheets = []
    for result in runs:
        generator, _ = load_generator(Path(result["run"]) / "generator.pt", "cpu")
        faces = generate(generator, range(200), 64, "cpu")
        sheets.append(make_grid(band_sheet(faces, band_of(image_ita(faces)), per_band), columns=per_band))
    scale = max(1, 256 // sheets[0].shape[0] * 2)
    gap = 24
    height = sheets[0].shape[0] * scale + 28
    canvas = Image.new("RGB", (sum(s.shape[1] * scale for s in sheets) + gap * (len(sheets) + 1) + 90, height),
                       "white")
    draw = ImageDraw.Draw(canvas)
    row = sheets[0].shape[0] * scale / len(BANDS)
    for number, band in enumerate(BANDS):
        draw.text((4, 28 + row * number + row / 2 - 6), band, fill="black")
    left = 90
    for result, sheet in zip(runs, sheets):
        image = Image.fromarray(sheet).resize((sheet.shape[1] * scale, sheet.shape[0] * scale), Image.NEAREST)
        canvas.paste(image, (left, 28))
        draw.text((left, 6), f"{result['arm']} (seed {result['seed']}): 200 samples by band", fill="black")
        left += image.width + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skin-mix", default="0.85,0.1,0.05", help="light,mid,dark shares of the biased set")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the 20,000 faces per run (default: 10)")
    parser.add_argument("--seeds", default="1,2", help="comma list of seeds (default: 1,2)")
    parser.add_argument("--image-size", type=int, default=32, help="pixels (default: 32)")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples evaluated per run (default: 1000)")
    parser.add_argument("--out", default="bench-bias", help="folder for runs and results (default: bench-bias)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = [run_arm(name, balance, seed, args) for seed in seeds for name, balance in ARMS.items()]
    data = results[0]["audit_data"]
    print(f"built-in faces, --skin-mix {args.skin_mix}, {args.epochs} epochs at {args.image_size} px, "
          f"{args.num_samples} samples per run; shares in %, ratio = sample share / data share")
    header = f"{'band':<13} {'data':>6}" + "".join(f" {r['arm'][:4]}-s{r['seed']:<2} ratio" for r in results)
    print(header)
    for band in BANDS:
        print(f"{band:<13} {100 * data[band]:>6.1f}" + "".join(
            f" {100 * r['audit_samples'][band]:>8.1f} {r['audit_ratio'][band] or 0:>5.2f}" for r in results))
    for key in ("audit_tv", "audit_min_ratio", "swd", "swd_even", "audit_tv_even", "msssim", "minutes"):
        print(f"{key:<20}" + "".join(f" {r[key]:>14}" for r in results))
    summary = {arm: {key: float(np.median([r[key] for r in results if r["arm"] == arm]))
                     for key in ("audit_tv", "audit_min_ratio", "swd", "swd_even", "msssim")} for arm in ARMS}
    print("medians over seeds:", json.dumps(summary))
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps({"runs": results, "medians": summary}, indent=1))
    bands_picture([r for r in results if r["seed"] == seeds[0]], out / "bands.png")
    print(f"wrote {out / 'results.json'} and {out / 'bands.png'}")


if __name__ == "__main__":
    main()
