"""Steady-state training speed: textbook pytorch/examples DCGAN step vs facegan's, side by side.

    python benchmarks/train_speed.py                       # CPU, 64x64, batch 128, conv_dim 64
    python benchmarks/train_speed.py --device cuda --compile --amp

Warm-up steps (and torch.compile's compilation) are excluded; repeats alternate between the two
steps so drift on a shared machine hits both; medians are reported with GFLOP/s against a measured
fp32 matmul roofline. See facegan/bench.py for exactly what each step does.
"""

import argparse

import torch

from facegan import bench
from facegan.config import ModelConfig
from facegan.device import default_amp, resolve_device


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--conv-dim", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                        help="facegan's precision; auto = the training default for the device")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = PyTorch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    # The step comparison runs the paper's networks on both sides (no spectral norm, facegan's default since issue 12).
    cfg = ModelConfig(image_size=args.image_size, conv_dim=args.conv_dim, spectral_norm=False)
    bf16 = (default_amp(device) if args.amp == "auto" else args.amp) == "bf16"
    result = bench.run(cfg, args.batch_size, device, args.steps, args.repeats,
                       channels_last=not args.no_channels_last, compile=args.compile, amp=bf16)
    switches = [name for name, on in (("channels_last", not args.no_channels_last), ("compile", args.compile),
                                      ("bf16 autocast", bf16), ("fp32", not bf16)) if on]
    setup = (f"{device.type} ({torch.get_num_threads()} threads), {args.image_size}x{args.image_size}, "
             f"batch {args.batch_size}, conv_dim {args.conv_dim}; facegan: {', '.join(switches) or 'plain'}")
    print(bench.report(result, setup))


if __name__ == "__main__":
    main()
