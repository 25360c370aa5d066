"""Training speed on a shared CPU: the default recipe's step, alone and beside CPU hogs, under
different thread settings, against its fair share of the machine.

    python benchmarks/cpu_hog.py                          # 32 px, 2 spinning hogs, all settings
    python benchmarks/cpu_hog.py --size 64 --hogs 1
    python benchmarks/cpu_hog.py --hog train              # the hogs are other facegan trainings

Each measurement is a fresh process (thread settings such as OMP_WAIT_POLICY are read once, when
torch loads) that builds the default recipe as `facegan train` resolves it, applies facegan's own
thread choice (facegan.device.configure_threads) or the setting's override, warms up, then steps
for --seconds and reports images/s. "Fair share" is what the training would get if the CPU were
split evenly between processes: its quiet rate x max(cpus - hogs, cpus / (hogs + 1)) / cpus, for
hogs that each keep one core busy. The issue's bar is half of that.

Settings: facegan = what `facegan train` does (torch's default thread count; on a busy CPU it prints
the one-line fix, shown under the table); all-threads = --threads <this process's CPUs>; 1-thread =
OMP_NUM_THREADS=1 and --threads 1; passive = OMP_WAIT_POLICY=PASSIVE with all threads.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {32: {"model.conv_dim": 32, "batch_size": 64}, 64: {"model.conv_dim": 64, "batch_size": 128}}
# environment and --threads of each setting; None = leave facegan's own choice
ALL = len(os.sched_getaffinity(0))
SETTINGS = {
    "facegan": ({}, None),
    "all-threads": ({}, ALL),
    "1-thread": ({"OMP_NUM_THREADS": "1"}, 1),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, ALL),
}


def child(size: int, seconds: float, threads) -> None:
    """One measurement, in this process: images/s of the default step, as JSON on stdout."""
    import torch

    from facegan import bench
    from facegan.config import resolve
    from facegan.device import configure_threads, resolve_device

    cfg = resolve({"model.image_size": size, **SHAPES[size], "device": "cpu", "instance_noise_steps": 10_000,
                   **({"threads": threads} if threads else {})})[0]
    configure_threads(cfg, log=lambda line: print(line, file=sys.stderr))
    with tempfile.TemporaryDirectory() as tmp:
        runner = bench.RecipeStep(cfg, resolve_device("cpu"), Path(tmp))
        runner.steps(3)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            runner.steps(2)
            steps += 2
        elapsed = time.perf_counter() - start
    print(json.dumps({"images_per_s": steps * cfg.batch_size / elapsed, "threads": torch.get_num_threads()}))


def spin() -> None:
    while True:
        pass


def start_hogs(kind: str, count: int, size: int) -> list:
    hogs = []
    for _ in range(count):
        if kind == "spin":
            command = [sys.executable, __file__, "--as-hog"]
        else:  # another facegan training step loop, stepping until it is killed
            command = [sys.executable, __file__, "--as-child", "--size", str(size), "--seconds", "100000"]
        hogs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(3 if kind == "spin" else 15)  # let the load average and the hogs' own warm-up settle
    return hogs


def measure(setting: str, size: int, seconds: float) -> dict:
    env_changes, threads = SETTINGS[setting]
    env = {**os.environ, **env_changes}
    command = [sys.executable, __file__, "--as-child", "--size", str(size), "--seconds", str(seconds)]
    if threads:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["message"] = done.stderr.strip()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32, choices=sorted(SHAPES))
    parser.add_argument("--hogs", type=int, default=2, help="busy processes beside the training")
    parser.add_argument("--hog", choices=("spin", "train"), default="spin",
                        help="spin = a Python busy loop; train = another default-recipe training")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma list from " + ", ".join(SETTINGS))
    parser.add_argument("--seconds", type=float, default=12.0, help="timed seconds per measurement")
    parser.add_argument("--as-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--as-hog", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_hog:
        return spin()
    if args.as_child:
        return child(args.size, args.seconds, args.threads)
    settings = args.settings.split(",")
    cpus = len(os.sched_getaffinity(0))
    share = max(cpus - args.hogs, cpus / (args.hogs + 1)) / cpus
    print(f"{args.size} px, default recipe, {cpus} CPUs, {args.hogs} {args.hog} hog(s); fair share {share:.2f}")
    quiet = {setting: measure(setting, args.size, args.seconds) for setting in settings}
    hogs = start_hogs(args.hog, args.hogs, args.size)
    try:
        loaded = {setting: measure(setting, args.size, args.seconds) for setting in settings}
    finally:
        for hog in hogs:
            hog.kill()
    reference = quiet.get("facegan", quiet[settings[0]])["images_per_s"]
    print(f"\n{'setting':<12}{'threads':>8}{'quiet img/s':>13}{'loaded img/s':>14}{'x fair share':>14}")
    for setting in settings:
        rate = loaded[setting]["images_per_s"]
        print(f"{setting:<12}{loaded[setting]['threads']:>8}{quiet[setting]['images_per_s']:>13,.0f}"
              f"{rate:>14,.0f}{rate / (reference * share):>13.2f}x")
        if loaded[setting]["message"]:
            print(f"  {setting} said: {loaded[setting]['message']}")
    print("(x fair share: loaded rate / (quiet facegan rate x fair share); >= 0.5 is the bar)")


if __name__ == "__main__":
    main()
