"""Built-in face renderer throughput on one core (issue target: >= 1,000 faces/s at 64x64).

    python benchmarks/render_speed.py [--size 64] [--count 4000] [--repeats 5]

Rendering is single-threaded numpy, so this measures one core; prepare() runs one renderer
per core. Prints the median of the repeats (the machine is shared; the median resists noise).
"""

import argparse
import statistics
import time

from facegan.data.synthetic import render_faces


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    render_faces(range(64), size=args.size)  # warm-up
    rates = []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        render_faces(range(repeat * args.count, (repeat + 1) * args.count), size=args.size)
        rates.append(args.count / (time.perf_counter() - start))
    print(f"render {args.size}x{args.size}: median {statistics.median(rates):,.0f} faces/s on one core "
          f"(min {min(rates):,.0f}, max {max(rates):,.0f}, {args.repeats} x {args.count} faces)")


if __name__ == "__main__":
    main()
