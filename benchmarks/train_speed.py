"""Training speed of what users run: the default recipe's whole step against `--preset dcgan` and the
textbook pytorch/examples DCGAN step, side by side, at 32 and 64 px, in fp32 and bf16.

    python benchmarks/train_speed.py                     # CPU: 32 px/conv 32/batch 64 and 64 px/conv 64/batch 128
    python benchmarks/train_speed.py --sizes 64 --precisions bf16 --variants
    python benchmarks/train_speed.py --device cuda --compile

Each recipe is resolved by `facegan.config.resolve` exactly as `facegan train` resolves it, and its step
is the Trainer's own (facegan/bench.py RecipeStep: batch path, z, instance noise, spectral norm, loss,
both optimiser steps, EMA update). The textbook step is pytorch/examples/dcgan's (facegan/bench.py
TextbookDCGAN: Sigmoid + BCELoss, fp32, channels-first, .item() every step) on the paper's networks.
Within each size, every repeat runs every recipe in turn (alternating, so machine drift hits all);
warm-up steps are excluded; medians are reported with the ratios. --variants adds the default recipe
without spectral norm, without EMA, without instance noise and with BCE: what each part costs.
--profile prints torch.profiler's top operators of the default recipe's step instead. --ceiling adds
what 3x the textbook would need: the steps' FLOPs per image (counted by PyTorch) against the best fp32
and bf16 matmul rates this machine sustains.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from facegan import bench
from facegan.config import ModelConfig, resolve
from facegan.device import resolve_amp, resolve_device

SHAPES = {32: {"model.conv_dim": 32, "batch_size": 64}, 64: {"model.conv_dim": 64, "batch_size": 128}}
RECIPES = {"default": ({}, None), "preset dcgan": ({}, "dcgan")}
VARIANTS = {"default, no spectral norm": {"model.spectral_norm": False}, "default, --ema 0": {"ema_kimg": 0.0},
            "default, --instance-noise 0": {"instance_noise": 0.0}, "default, --loss bce": {"loss": "bce"}}


def recipe_config(size: int, amp: str, options: dict, preset, args):
    base = {"model.image_size": size, **SHAPES[size], "amp": amp, "device": args.device, "compile": args.compile,
            # a run long enough that instance noise is still on while timing, as in its first 500 steps
            "instance_noise_steps": 10_000}
    return resolve({**base, **options}, preset=preset)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="32,64", help="comma list of image sizes from 32, 64 (default: both)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list from fp32, bf16 (default: both)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per repeat and recipe")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile facegan's networks")
    parser.add_argument("--variants", action="store_true", help="also time the default without each of its parts")
    parser.add_argument("--profile", action="store_true", help="torch.profiler table of the default step instead")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = facegan's default")
    parser.add_argument("--memory", action="store_true", help="CUDA: also each recipe's peak GPU memory in 2 steps")
    parser.add_argument("--ceiling", action="store_true",
                        help="also the GFLOP/s that 3x the textbook needs against the best matmul rates here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    sizes = [int(s) for s in args.sizes.split(",")]
    precisions = args.precisions.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        if args.profile:
            return profile(sizes, precisions, device, args, Path(tmp))
        table = []
        for size in sizes:
            runners = {}
            for precision in precisions:
                amp = "bf16" if precision == "bf16" else "off"
                if precision == "bf16" and resolve_amp("bf16", device) != "bf16":
                    print(f"bf16 is not available on {device}: skipped")
                    continue
                recipes = {**RECIPES, **({name: (options, None) for name, options in VARIANTS.items()}
                                         if args.variants else {})}
                for name, (options, preset) in recipes.items():
                    cfg = recipe_config(size, amp, options, preset, args)
                    runners[f"{name} {precision}"] = bench.RecipeStep(cfg, device, Path(tmp))
            model = ModelConfig(image_size=size, conv_dim=SHAPES[size]["model.conv_dim"], spectral_norm=False)
            runners["textbook fp32"] = bench.TextbookSteps(model, SHAPES[size]["batch_size"], device)
            print(f"{size} px, conv_dim {SHAPES[size]['model.conv_dim']}, batch {SHAPES[size]['batch_size']}, "
                  f"{device.type} with {torch.get_num_threads()} threads:")
            rates = bench.alternate(runners, args.steps, args.repeats, args.warmup, device)
            table.append((size, {name: statistics.median(r) for name, r in rates.items()}))
            if args.memory and device.type == "cuda":
                print_peak_memory(runners)
        print_table(table)
        if args.ceiling:
            print_ceiling(table, device)


def print_ceiling(table, device) -> None:
    """Whether 3x the textbook fits under this machine's matmul rates: FLOPs per image x images/s."""
    fp32, bf16 = (bench.matmul_roofline(device, dtype=dtype) for dtype in (torch.float32, torch.bfloat16))
    print(f"\nbest matmul here: fp32 {fp32:,.0f} GFLOP/s, bf16 {bf16:,.0f} GFLOP/s")
    for size, medians in table:
        # The default's convolutions have the same shapes; spectral norm's power iteration adds < 0.1% FLOPs.
        model = ModelConfig(image_size=size, conv_dim=SHAPES[size]["model.conv_dim"], spectral_norm=False)
        batch = SHAPES[size]["batch_size"]
        textbook_flops, facegan_flops = (f / batch / 1e9 for f in bench.step_flops(model, batch))
        textbook = medians["textbook fp32"]
        need = 3 * textbook * facegan_flops
        print(f"{size:>4} px: textbook {textbook_flops:.3f} GFLOP/image x {textbook:,.1f}/s = "
              f"{textbook * textbook_flops:,.0f} GFLOP/s; facegan's step {facegan_flops:.3f} GFLOP/image, so 3x "
              f"the textbook ({3 * textbook:,.1f}/s) needs {need:,.0f} GFLOP/s = {need / bf16:.2f}x the bf16 matmul")


def print_peak_memory(runners: dict) -> None:
    """Peak GPU memory of 2 steps of each recipe, measured alone (after the timing, so warm)."""
    for name, runner in runners.items():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        runner.steps(2)
        torch.cuda.synchronize()
        print(f"peak GPU memory, {name}: {torch.cuda.max_memory_allocated() / 2 ** 20:,.0f} MiB")


def print_table(table) -> None:
    print(f"\n{'size':>4}  {'recipe':<34}{'images/s':>10}{'x textbook':>12}{'x preset dcgan':>16}")
    for size, medians in table:
        textbook = medians["textbook fp32"]
        for name, rate in medians.items():
            precision = name.rsplit(" ", 1)[1]
            preset = medians.get(f"preset dcgan {precision}")
            print(f"{size:>4}  {name:<34}{rate:>10,.1f}{rate / textbook:>11.2f}x"
                  + (f"{rate / preset:>15.2f}x" if preset and name != "textbook fp32" else ""))


def profile(sizes, precisions, device, args, tmp: Path) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for size in sizes:
        for precision in precisions:
            cfg = recipe_config(size, "bf16" if precision == "bf16" else "off", {}, None, args)
            runner = bench.RecipeStep(cfg, device, tmp)
            runner.steps(args.warmup)
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                runner.steps(args.steps)
            print(f"default recipe, {size} px, {precision}: {args.steps} steps")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


if __name__ == "__main__":
    main()
