"""The `facegan` command: parse, validate, call the library, print. No training logic lives here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import (AMP_MODES, ARCH_RECIPES, ARCHS, AUGMENTATIONS, D_HEADS, DIFFAUG_POLICIES, LR_DECAYS, MAX_IMAGE_SIZE,
                     MIN_IMAGE_SIZE, OPTIMISERS, PRESETS)
from .errors import FaceganError
from .losses import LOSSES
from .metrics.registry import METRICS


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line naming the problem and pointing at --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


# flag -> (dotted config key, argparse keyword arguments). Defaults live in config.py alone: every
# flag defaults to "not given", so only what the user typed overrides a config file or checkpoint,
# and --help shows config.py's default (appended by _help_with_default), never a retyped copy.
_TRAIN_OPTIONS = {
    "--data": ("data.source", dict(metavar="PATH", help="folder or .zip of face images, or celeba / celeba-small "
                                                        "after 'facegan data download'; 'faces' = built-in")),
    "--num-images": ("data.num_images", dict(type=_positive_int, help="size of the built-in face set")),
    "--render-seed": ("data.render_seed", dict(type=_non_negative_int, help="which built-in face set")),
    "--crop": ("data.crop", dict(type=_non_negative_int, metavar="PX",
                                 help="centre crop side in source pixels, e.g. CelebA 108/138/178; 0 = largest square")),
    "--max-pixels": ("data.max_pixels", dict(type=_positive_int, metavar="N",
                                             help="skip (and count) images with more pixels than this")),
    "--max-images": ("data.max_images", dict(type=_non_negative_int, metavar="N",
                                             help="train on the first N images of the data set; 0 = all")),
    "--diffaug": ("diffaug", dict(metavar="LIST", help=f"DiffAugment on all D inputs, real and fake: comma list "
                                                       f"from {','.join(DIFFAUG_POLICIES)}")),
    "--augment": ("augment", dict(metavar="LIST", help=f"comma list from {','.join(AUGMENTATIONS)}: random changes "
                                                       "of the real batches, small ranges (README)")),
    "--image-size": ("model.image_size", dict(type=_positive_int, metavar="PX",
                                              help="training resolution: 32/64/128, or for dcgan any side 3-7 x 2**k "
                                                   "(28, 48, 96); mlp and image-noise 16-512")),
    "--conv-dim": ("model.conv_dim", dict(type=_positive_int, help="width of the first/last conv layer, G and D")),
    "--g-conv-dim": ("model.g_conv_dim", dict(type=_non_negative_int, metavar="N", help="G's width only; 0 = --conv-dim")),
    "--d-conv-dim": ("model.d_conv_dim", dict(type=_non_negative_int, metavar="N", help="D's width only; 0 = --conv-dim")),
    "--z-size": ("model.z_size", dict(type=_positive_int, help="latent vector length")),
    "--num-layers": ("model.num_layers", dict(type=_non_negative_int, metavar="N",
                                              help="strided (de)conv layers of G and D; 0 = down to the smallest "
                                                   "map of side >= 3 (4x4 at 32/64, 7x7 at 28)")),
    "--g-layers": ("model.g_layers", dict(type=_non_negative_int, metavar="N", help="G's layers only; 0 = --num-layers")),
    "--d-layers": ("model.d_layers", dict(type=_non_negative_int, metavar="N", help="D's layers only; 0 = --num-layers")),
    "--d-head": ("model.d_head", dict(choices=D_HEADS, help="discriminator head")),
    "--dropout": ("model.dropout", dict(type=float, help="dropout in D, 0 = off")),
    "--arch": ("model.arch", dict(choices=ARCHS, help="dcgan; mlp: the fully connected baseline; image-noise: "
                                                      "image-shaped noise -> convs -> fc, with --lr-d 1e-4 and "
                                                      "--instance-noise-steps 6240 unless given (README)")),
    "--epochs": ("epochs", dict(type=_positive_int, help="passes over the data")),
    "--max-steps": ("max_steps", dict(type=_non_negative_int, help="stop after this many steps; 0 = no limit")),
    "--batch-size": ("batch_size", dict(type=_positive_int, help="images per step per process")),
    "--lr-d": ("lr_d", dict(type=float, help="discriminator learning rate")),
    "--lr-g": ("lr_g", dict(type=float, help="generator learning rate")),
    "--beta1": ("beta1", dict(type=float, help="Adam beta1")),
    "--beta2": ("beta2", dict(type=float, help="Adam beta2")),
    "--opt-d": ("opt_d", dict(choices=OPTIMISERS, help="D's optimiser")),
    "--opt-g": ("opt_g", dict(choices=OPTIMISERS, help="G's optimiser")),
    "--momentum": ("momentum", dict(type=float, help="SGD momentum")),
    "--lr-decay": ("lr_decay", dict(choices=LR_DECAYS, help="learning-rate schedule of both networks")),
    "--lr-decay-start": ("lr_decay_start", dict(type=_non_negative_int, metavar="STEP",
                                                help="linear/cosine: step where the decay to 0 begins")),
    "--lr-decay-every": ("lr_decay_every", dict(type=_non_negative_int, metavar="STEPS",
                                                help="step: steps between decays")),
    "--lr-decay-gamma": ("lr_decay_gamma", dict(type=float, help="step: factor at each decay")),
    "--r1": ("r1_gamma", dict(type=float, metavar="GAMMA", help="R1 penalty on D's gradient at real images; 0 = off")),
    "--r1-every": ("r1_every", dict(type=_positive_int, metavar="N", help="lazy R1: every N steps, scaled by N")),
    "--ema": ("ema_kimg", dict(type=float, metavar="KIMG",
                               help="keep a moving average of G with this half-life in thousands of images; "
                                    "samples, generate and export use it; 0 = off")),
    "--ema-rampup": ("ema_rampup", dict(type=float, help="EMA half-life at most this fraction of images seen")),
    "--loss": ("loss", dict(choices=tuple(LOSSES), help="GAN loss")),
    "--real-label": ("real_label", dict(type=float, help="D's target for real images (one-sided label "
                                                         "smoothing); 1.0 = off; --label-smoothing is the old name")),
    "--instance-noise": ("instance_noise", dict(type=float, metavar="STD",
                                                help="std of the Gaussian noise added to D's real and fake inputs "
                                                     "at the start (in [-1, 1] pixel units); 0 = off")),
    "--instance-noise-steps": ("instance_noise_steps", dict(type=_non_negative_int, metavar="N",
                                                            help="steps over which that noise fades linearly to 0")),
    "--seed": ("seed", dict(type=_non_negative_int, help="random seed for the whole run")),
    "--device": ("device", dict(help="auto, cpu, cuda, cuda:N or mps")),
    "--log-every": ("log_every", dict(type=_positive_int, help="steps between metrics lines")),
    "--keep-checkpoints": ("keep_checkpoints", dict(type=_positive_int, help="per-epoch checkpoints kept")),
    "--checkpoint-every": ("checkpoint_every", dict(type=_non_negative_int, metavar="STEPS",
                                                    help="save last.pt every STEPS steps mid-epoch; 0 = by time")),
    "--checkpoint-minutes": ("checkpoint_minutes", dict(type=float, metavar="MIN",
                                                        help="with --checkpoint-every 0: minutes between saves")),
    "--sample-every": ("sample_every", dict(type=_non_negative_int, metavar="STEPS",
                                            help="also write a progress grid every STEPS steps; 0 = per epoch only")),
    "--save-every-epochs": ("save_every_epochs", dict(
        type=_non_negative_int, metavar="N", help="epochs between progress grids, epoch checkpoints and the loss plot; "
        "0 = every epoch, but every ~200 steps for long runs of tiny epochs (a few hundred images)")),
    "--num-samples": ("num_samples", dict(type=_positive_int, help="images in each progress grid")),
    "--amp": ("amp", dict(choices=AMP_MODES, help="mixed precision; auto = bf16 on cuda and CPUs with native bf16")),
    "--eval-every": ("eval_every", dict(type=_non_negative_int, help="steps between evaluations; 0 = off")),
    "--eval-metrics": ("eval_metrics", dict(help=f"comma list from {','.join(METRICS)}; the first picks best.pt")),
    "--eval-samples": ("eval_samples", dict(type=_positive_int, help="images per evaluation")),
    "--inception-weights": ("inception_weights", dict(metavar="PTH", help="FID Inception weights file")),
}
_ALIASES = {"--real-label": ("--label-smoothing",)}  # old flag names that keep working

# --help's sections, in order: every train flag belongs to exactly one (a test checks).
_TRAIN_GROUPS = {
    "data": ("--data", "--num-images", "--render-seed", "--crop", "--max-pixels", "--max-images", "--no-flip",
             "--augment", "--diffaug"),
    "model": ("--arch", "--image-size", "--conv-dim", "--g-conv-dim", "--d-conv-dim", "--z-size", "--num-layers",
              "--g-layers", "--d-layers", "--d-head", "--dropout", "--batchnorm", "--minibatch-std",
              "--spectral-norm"),
    "loss": ("--loss", "--real-label", "--instance-noise", "--instance-noise-steps", "--r1", "--r1-every"),
    "optimiser": ("--lr", "--lr-d", "--lr-g", "--opt-d", "--opt-g", "--beta1", "--beta2", "--momentum",
                  "--batch-size", "--ema", "--ema-rampup"),
    "schedule": ("--epochs", "--max-steps", "--lr-decay", "--lr-decay-start", "--lr-decay-every", "--lr-decay-gamma"),
    "output": ("--preset", "--out", "--resume", "--config", "--log-every", "--num-samples", "--sample-every",
               "--save-every-epochs", "--keep-checkpoints", "--checkpoint-every", "--checkpoint-minutes", "--tensorboard",
               "--no-progress"),
    "evaluation": ("--eval-every", "--eval-metrics", "--eval-samples", "--inception-weights"),
    "system": ("--seed", "--device", "--amp", "--channels-last", "--compile", "--sync-bn"),
}


def _config_default(dotted: str):
    """The default config.py declares for a dotted key such as 'model.conv_dim'."""
    from .config import TrainConfig

    value = TrainConfig()
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _help_with_default(text: str, dotted: str) -> str:
    default = _config_default(dotted)
    return f"{text} (default: {default if default not in ('', None) else 'none'})"


def _add_train(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a DCGAN", description="Train a DCGAN on faces. Options not "
                              "given come from --config, then from the defaults in facegan/config.py.")
    groups = {name: p.add_argument_group(name) for name in _TRAIN_GROUPS}
    group_of = {flag: groups[name] for name, flags in _TRAIN_GROUPS.items() for flag in flags}
    for flag, (key, kwargs) in _TRAIN_OPTIONS.items():
        kwargs = dict(kwargs, help=_help_with_default(kwargs["help"], key))
        group_of[flag].add_argument(flag, *_ALIASES.get(flag, ()), dest=key.split(".")[-1], default=None, **kwargs)
    add = lambda flag, **kwargs: group_of[flag].add_argument(flag, **kwargs)
    add("--lr", type=float, default=None, help="learning rate for both D and G (--lr-d/--lr-g win)")
    add("--no-flip", action="store_true", help="do not mirror training images at random (default: flip)")
    add("--channels-last", action=argparse.BooleanOptionalAction, default=None,
        help="NHWC memory layout (default: on for cpu and cuda)")
    add("--compile", action="store_true", default=None, help=_help_with_default("torch.compile both networks", "compile"))
    add("--batchnorm", action=argparse.BooleanOptionalAction, default=None,
        help=_help_with_default("BatchNorm in G and D, as in the paper", "model.batchnorm"))
    add("--spectral-norm", action=argparse.BooleanOptionalAction, default=None,
        help=_help_with_default("spectral normalisation on every D layer", "model.spectral_norm"))
    add("--minibatch-std", action=argparse.BooleanOptionalAction, default=None,
        help="D sees its features' std across the batch, a cue against mode collapse (default: on for "
             "image-noise, off otherwise)")
    add("--sync-bn", action="store_true", default=None,
        help="multi-GPU: BatchNorm statistics over the global batch (SyncBatchNorm; default: off)")
    add("--tensorboard", action="store_true", default=None,
        help=_help_with_default("also log to RUN/tensorboard (pip install 'facegan[tensorboard]')", "tensorboard"))
    add("--preset", choices=tuple(PRESETS), help="a named recipe, under any option you give: "
        + "; ".join(f"{name}: {', '.join(f'{k.split(chr(46))[-1]}={v}' for k, v in values.items())}"
                    for name, values in PRESETS.items()))
    add("--config", metavar="FILE", help="JSON config, e.g. a run's config.json")
    add("--out", default="runs", help="folder holding the numbered run folders (default: runs)")
    add("--resume", metavar="RUN", help="continue a run: its folder, id or id prefix, a .pt, or 'latest'")
    add("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _train_overrides(args) -> dict:
    overrides = {key: getattr(args, key.split(".")[-1]) for key, _ in _TRAIN_OPTIONS.values()}
    if args.lr is not None:  # --lr sets both; --lr-d / --lr-g win where given (TTUR)
        overrides["lr_d"] = args.lr if args.lr_d is None else args.lr_d
        overrides["lr_g"] = args.lr if args.lr_g is None else args.lr_g
    if args.no_flip:
        overrides["data.flip"] = False
    overrides["channels_last"] = args.channels_last
    overrides["compile"] = args.compile
    overrides["model.batchnorm"] = args.batchnorm
    overrides["sync_bn"] = args.sync_bn
    overrides["model.minibatch_std"] = args.minibatch_std
    overrides["model.spectral_norm"] = args.spectral_norm
    overrides["tensorboard"] = args.tensorboard
    return {k: v for k, v in overrides.items() if v is not None}


def _train(args) -> None:
    from . import checkpoints
    from .config import TrainConfig, apply_overrides, load_config_file, resume_config
    from .runs import resolve_checkpoint
    from .train import train

    overrides = _train_overrides(args)
    if args.resume:
        if args.config:
            raise FaceganError("--config and --resume do not mix: a resumed run keeps its own config")
        checkpoint = resolve_checkpoint(args.resume, args.out, log=print)
        state = checkpoints.load(checkpoint)
        cfg = resume_config(checkpoints.config_of(state), overrides)
        print(f"resuming from {checkpoint}")
    else:
        checkpoint = state = None
        raw = load_config_file(args.config) if args.config else TrainConfig().to_dict()
        # The architecture's measured settings, under whatever the user typed (not under a config file).
        recipe = {key: value for key, value in ARCH_RECIPES.get(overrides.get("model.arch"), {}).items()
                  if key not in overrides and not args.config}
        if args.preset:  # a preset sits under what the user typed, like an architecture's recipe
            recipe.update({key: value for key, value in PRESETS[args.preset].items() if key not in overrides})
        if recipe:
            overrides = {**recipe, **overrides}
            print(f"--{'preset ' + args.preset if args.preset else 'arch ' + overrides['model.arch']}: "
                  + ", ".join(f"{k} {v}" for k, v in recipe.items()) + " (give an option to change one)")
        cfg = TrainConfig.from_dict(apply_overrides(raw, overrides))
    train(cfg, out=args.out, resume_from=checkpoint, progress=not args.no_progress, state=state)


def _add_run_argument(p, what: str = "the generator") -> None:
    """The run a command reads, named the same way in every command."""
    p.add_argument("run", nargs="?", default=None, metavar="RUN",
                   help=f"{what}: a run folder, a run id or prefix of one (see 'facegan runs'), a folder of runs "
                        f"(its newest), a .pt file, or 'latest' (default: the newest run under --runs)")
    p.add_argument("--runs", default="runs", metavar="DIR", help="where run ids and 'latest' are looked up (default: runs)")


def _checkpoint(args, prefer: str = "generator"):
    from .runs import resolve_checkpoint
    return resolve_checkpoint(args.run, args.runs, prefer=prefer, log=print)


def _truncation(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is out of range: use 0 to 1 (1 = off, 0.7 is common)")
    return value


def _add_generator_options(p) -> None:
    """What every command that runs a trained generator shares."""
    p.add_argument("--no-ema", action="store_true",
                   help="use the raw generator even when the run keeps a moving average (--ema) of it")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="faces per forward pass (default: 64)")


def _add_generate(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate faces from a trained run",
                              description="Generate faces from a checkpoint. Seed N always gives the same face. "
                                          "The file name's ending picks the format: .png, .jpg or .webp.")
    _add_run_argument(p)
    p.add_argument("--num", type=_positive_int, default=64, help="faces in the grid, seeds 0..N-1 (default: 64)")
    p.add_argument("--seeds", help="seeds such as 0-63 or 1,5,9 (overrides --num)")
    p.add_argument("--truncation", type=_truncation, default=1.0, metavar="PSI",
                   help="pull z toward the mean: < 1 trades variety for cleaner faces (default: 1 = off)")
    p.add_argument("--out", metavar="FILE", help="grid file, .png/.jpg/.webp (default: generated.png in the run folder)")
    p.add_argument("--outdir", metavar="DIR", help="write one file per seed here instead of a grid")
    p.add_argument("--ext", choices=("png", "jpg", "webp"), default="png", help="with --outdir: file type (default: png)")
    _add_generator_options(p)
    p.set_defaults(func=_generate)


def _generate(args) -> None:
    from .device import resolve_device
    from .generate import generate, load_generator, parse_seeds, write_per_seed
    from .images import save_grid
    from .runs import run_of

    device = resolve_device(args.device)
    checkpoint = _checkpoint(args)
    generator, _ = load_generator(checkpoint, device, ema=not args.no_ema)
    seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.num))
    images = generate(generator, seeds, args.batch_size, device, truncation=args.truncation)
    if args.outdir:
        paths = write_per_seed(images, seeds, args.outdir, extension=args.ext)
        print(f"wrote {len(paths)} images to {args.outdir} ({paths[0].name} ...)")
    else:
        out = Path(args.out) if args.out else run_of(checkpoint).generated_png
        save_grid(images, out)
        print(f"wrote a grid of {len(images)} faces to {out}")


def _add_interpolate(subparsers) -> None:
    p = subparsers.add_parser(
        "interpolate", help="faces morphing between seeds: a strip or an animation",
        description="Walk through the latents of two or more seeds and draw the faces on the way. A .png/.jpg "
                    "file gets a strip (one row per leg); a .gif or .webp file gets an animation.")
    _add_run_argument(p)
    p.add_argument("--seeds", help="the seeds to walk through, e.g. 1,5,9 (default: --from-seed then --to-seed)")
    p.add_argument("--from-seed", type=_non_negative_int, default=0, help="start seed (default: 0)")
    p.add_argument("--to-seed", type=_non_negative_int, default=1, help="end seed (default: 1)")
    p.add_argument("--frames", "--steps", type=_positive_int, default=None, metavar="N",
                   help="faces per leg, both ends included (default: 8 in a strip, 24 in an animation)")
    p.add_argument("--slerp", action="store_true",
                   help="spherical interpolation: keeps |z| typical, so middle faces are not washed out "
                        "(default: straight line)")
    p.add_argument("--loop", action="store_true", help="there and back, so an animation repeats smoothly")
    p.add_argument("--fps", type=float, default=12.0, help="animation frames per second (default: 12)")
    p.add_argument("--truncation", type=_truncation, default=1.0, metavar="PSI",
                   help="pull z toward the mean, as in generate (default: 1 = off)")
    p.add_argument("--out", metavar="FILE", help=".png/.jpg strip or .gif/.webp animation "
                                                 "(default: interpolation.png in the run folder)")
    _add_generator_options(p)
    p.set_defaults(func=_interpolate)


def _interpolate(args) -> None:
    from .device import resolve_device
    from .generate import interpolate, load_generator, parse_seeds
    from .images import ANIMATION_FORMATS, save_animation, save_grid
    from .runs import run_of

    if not 0 < args.fps <= 100:
        raise FaceganError(f"--fps {args.fps} is out of range: use 1 to 100")
    device = resolve_device(args.device)
    checkpoint = _checkpoint(args)
    generator, _ = load_generator(checkpoint, device, ema=not args.no_ema)
    seeds = parse_seeds(args.seeds) if args.seeds else [args.from_seed, args.to_seed]
    out = Path(args.out) if args.out else run_of(checkpoint).interpolation_png
    animated = out.suffix.lower() in ANIMATION_FORMATS
    frames = args.frames or (24 if animated else 8)
    images = interpolate(generator, seeds, frames, device, slerp=args.slerp, loop=args.loop and animated,
                         truncation=args.truncation, batch_size=args.batch_size)
    if animated:
        save_animation(images, out, fps=args.fps, upscale=max(1, 128 // images.shape[1]))
        print(f"wrote a {len(images)}-frame animation through seeds {','.join(map(str, seeds))} to {out}")
    else:
        if args.loop:
            print("note: --loop applies to animations (.gif, .webp); the strip shows the way there")
        save_grid(images, out, columns=frames if len(seeds) == 2 else len(images))
        print(f"wrote {len(images)} faces through seeds {','.join(map(str, seeds))} to {out}")


def _add_evaluate(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="quality metrics for a trained run",
                              description="SWD and MS-SSIM need nothing; FID, KID and precision/recall need the "
                                          "Inception weights file (see README).")
    _add_run_argument(p, "the generator to evaluate")
    p.add_argument("--data", help="images to compare with (default: the data the run trained on)")
    p.add_argument("--metrics", default="swd,msssim", help=f"comma list from {','.join(METRICS)} (default: swd,msssim)")
    p.add_argument("--num-samples", type=_positive_int, default=1000,
                   help="generated and real images compared (default: 1000)")
    p.add_argument("--inception-weights", metavar="PTH",
                   help="pt_inception-2015-12-05-6726825d.pth, for fid, kid and pr (see README)")
    _add_generator_options(p)
    p.set_defaults(func=_evaluate)


def _evaluate(args) -> None:
    import time

    from . import checkpoints
    from .data.prepare import prepare
    from .device import resolve_device
    from .generate import generator_from_state
    from .metrics.evaluate import evaluate, format_table, parse_metrics
    from .runs import run_of

    metrics = parse_metrics(args.metrics)
    device = resolve_device(args.device)
    checkpoint = _checkpoint(args)
    state = checkpoints.load(checkpoint)
    generator, cfg = generator_from_state(state, device, ema=not args.no_ema)
    data = cfg.data
    if args.data:
        data.source = args.data
    prepared = prepare(data, cfg.model.image_size, progress=sys.stderr.isatty())
    run = run_of(checkpoint)
    results = evaluate(generator, prepared, metrics, args.num_samples, device, args.inception_weights,
                       args.batch_size, train_count=None if args.data else (cfg.data.max_images or None),
                       sheet_path=run.nearest_png)
    print(format_table(results))
    run.append_metrics({"step": state.get("step"), "eval": results, "checkpoint": str(checkpoint),
                        "time": round(time.time(), 3)})
    print(f"appended to {run.metrics_jsonl}")


def _add_data(subparsers) -> None:
    p = subparsers.add_parser("data", help="prepare and preview data sets")
    sub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    q = sub.add_parser("download", help="download and unzip CelebA (celeba-small or celeba)")
    q.add_argument("name", choices=("celeba-small", "celeba"))
    q.add_argument("--dest", default="data", help="folder for the archive and the images (data)")
    q.add_argument("--url", help="a mirror to download the zip from instead")
    q.set_defaults(func=_data_download)
    for name, helptext in (("prepare", "build the training cache ahead of time and print a summary"),
                           ("preview", "write a grid of prepared training images")):
        q = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ". The cache "
                           "is keyed by the source and the options, so training reuses it.")
        q.add_argument("source", nargs="?", default="faces",
                       help="folder, .zip, a downloaded set (celeba, celeba-small) or 'faces' (faces)")
        q.add_argument("--image-size", type=_positive_int, metavar="PX", default=_config_default("model.image_size"),
                       help=f"side of the prepared images, {MIN_IMAGE_SIZE}-{MAX_IMAGE_SIZE} (default: %(default)s)")
        q.add_argument("--crop", type=_non_negative_int, default=0, metavar="PX",
                       help="centre crop side in source pixels before resizing, e.g. CelebA 108; "
                            "0 = largest centred square (default: 0)")
        q.add_argument("--num-images", type=_positive_int, default=None, help="built-in faces only (20000)")
        q.add_argument("--render-seed", type=_non_negative_int, default=0, help="which built-in face set (default: 0)")
        q.add_argument("--max-pixels", type=_positive_int, default=_config_default("data.max_pixels"), metavar="N",
                       help="skip (and count) images with more pixels than this (default: %(default)s)")
        if name == "preview":
            q.add_argument("--num", type=_positive_int, default=64, help="images in the grid (64)")
            q.add_argument("--out", default="preview.png", metavar="FILE",
                           help="grid file, .png/.jpg/.webp (default: preview.png)")
        q.set_defaults(func=_data)


def _data_download(args) -> None:
    from .data.download import download

    folder = download(args.name, args.dest, url=args.url, progress=sys.stderr.isatty())
    print(f"ready: train with --data {args.name} (or --data {folder})")


def _data(args) -> None:
    from .config import DataConfig, check_image_size
    from .data.prepare import prepare, summary
    from .images import save_grid

    check_image_size(args.image_size, arch="any")  # data for any architecture: only the range matters
    data = DataConfig(source=args.source, crop=args.crop, render_seed=args.render_seed, max_pixels=args.max_pixels)
    if args.num_images:
        data.num_images = args.num_images
    if args.data_command == "preview" and args.source == "faces" and not args.num_images:
        data.num_images = args.num  # a preview of the renderer needs only the faces it shows
    prepared = prepare(data, args.image_size, progress=sys.stderr.isatty())
    print(summary(prepared))
    if args.data_command == "preview":
        out = save_grid(prepared.images[:args.num], args.out)
        print(f"wrote a grid of {min(args.num, len(prepared.images))} prepared images to {out}")


def _add_runs(subparsers) -> None:
    p = subparsers.add_parser("runs", help="list training runs", description="List the runs in a folder: id, "
                              "data, image size, progress, last evaluation, age, and whether one is training now.")
    p.add_argument("folder", nargs="?", default="runs", help="the folder holding run folders (default: runs)")
    p.set_defaults(func=_runs)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def _runs(args) -> None:
    import time

    from .runs import describe_runs

    rows = describe_runs(args.folder)
    if not rows:
        print(f"no runs in {args.folder}/: start one with 'facegan train'")
        return
    table = [("ID", "DATA", "SIZE", "STEPS", "EPOCHS", "LAST EVAL", "MODIFIED", "STATE")]
    for r in rows:
        state = "training" if r["writing"] else ("done" if r["epochs"] and r["epoch"] >= r["epochs"] else
                                                 "stopped" if r["checkpoint"] else "no checkpoint")
        table.append((r["id"], r["data"], f"{r['size']}px" if r["size"] else "?", str(r["step"]),
                      f"{r['epoch']:g}/{r['epochs'] or '?'}", r["metric"] or "-", _age(time.time() - r["modified"]),
                      state))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _add_export(subparsers) -> None:
    from .export import FORMATS

    p = subparsers.add_parser("export", help="export the generator: safetensors, ONNX or TorchScript",
                              description="Write the run's generator (the EMA one when the run has it) for use "
                                          "outside facegan, with a JSON sidecar FILE.json (z size, image size, "
                                          "output range, version, training steps). Needs pip install "
                                          "'facegan[export]' for safetensors and ONNX.")
    _add_run_argument(p, "the run to export")
    p.add_argument("--format", choices=tuple(FORMATS), default=None,
                   help="file format (default: from --out's ending, else safetensors)")
    p.add_argument("--out", metavar="FILE", help="output file (default: RUN/export/generator.<format ending>)")
    p.add_argument("--no-ema", action="store_true", help="export the raw generator even when an EMA one exists")
    p.set_defaults(func=_export)


def _export(args) -> None:
    from .export import FORMATS, export, format_from_path
    from .runs import run_of

    fmt = args.format or (format_from_path(args.out) if args.out else "safetensors")
    checkpoint = _checkpoint(args)
    out = Path(args.out) if args.out else run_of(checkpoint).path / "export" / f"generator{FORMATS[fmt][0]}"
    written, sidecar = export(checkpoint, fmt, out, ema=not args.no_ema)
    print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB) and {sidecar}")


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser("demo", help="a web page to explore a trained generator",
                              description="Serve a page with a seed slider, random batches, truncation, "
                                          "interpolation and downloads. Ctrl-C stops it.")
    _add_run_argument(p, "the generator to show")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 exposes it to your network (default: 127.0.0.1)")
    p.add_argument("--port", type=_non_negative_int, default=7860, help="port; 0 = any free one (default: 7860)")
    p.add_argument("--no-ema", action="store_true", help="show the raw generator even when the run has an EMA one")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.set_defaults(func=_demo)


def _demo(args) -> None:
    from . import checkpoints
    from .demo import make_server
    from .device import resolve_device
    from .generate import generator_from_state, generator_weights
    from .runs import run_of

    device = resolve_device(args.device)
    checkpoint = _checkpoint(args)
    state = checkpoints.load(checkpoint)
    generator, cfg = generator_from_state(state, device, ema=not args.no_ema)
    info = {"run": run_of(checkpoint).path.name, "image_size": cfg.model.image_size, "z_size": cfg.model.noise_size,
            "steps": state.get("step"), "ema": generator_weights(state, ema=not args.no_ema)[1]}
    server = make_server(generator, info, args.host, args.port, device)
    print(f"facegan demo of {checkpoint} at http://{args.host}:{server.server_port}/ (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _add_study(subparsers) -> None:
    p = subparsers.add_parser("study", help="hyperparameter studies: many runs, one report",
                              description="Run a grid or random search of training settings from a TOML spec "
                                          "and write a report across the runs (README, 'Studies').")
    sub = p.add_subparsers(dest="study_command", required=True, parser_class=_Parser)
    q = sub.add_parser("init", help="write a commented example spec",
                       description="Write a commented example study spec (about an hour on 2 CPU cores).")
    q.add_argument("file", help="the TOML file to write, e.g. study.toml")
    q.set_defaults(func=_study_init)
    q = sub.add_parser("run", help="run (or finish) a study",
                       description="Run every trial of SPEC as an ordinary run in OUT/<setting>. Running it again "
                                   "skips finished trials and resumes a killed one. Needs pip install "
                                   "'facegan[study]' (Optuna).")
    q.add_argument("spec", help="the study's TOML file")
    q.add_argument("--out", required=True, metavar="DIR", help="folder of the study's trials, study.json, report")
    q.add_argument("--jobs", type=_positive_int, default=1,
                   help="trials at once on this machine, CPU threads split between them; one GPU each when "
                        "there are several (default: 1)")
    q.add_argument("--storage", metavar="URL",
                   help="Optuna storage shared by workers on several machines, e.g. postgresql://user:pw@host/db "
                        "(default: sqlite file DIR/study.db)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_study_run)
    q = sub.add_parser("worker", help="one worker process (what run --jobs starts)",
                       description="Take waiting trials of a study until none is left; what 'study run --jobs' "
                                   "starts on this machine.")
    q.add_argument("spec", help="the study's TOML file")
    q.add_argument("--out", required=True, metavar="DIR", help="the study's folder")
    q.add_argument("--storage", required=True, metavar="URL", help="the study's Optuna storage")
    q.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: all)")
    q.set_defaults(func=_study_worker)
    q = sub.add_parser("report", help="write DIR/report.html and DIR/report.md",
                       description="Tables, sample grids, overlaid loss curves and metric plots per factor.")
    q.add_argument("dir", help="the study's folder (its --out)")
    q.set_defaults(func=_study_report)


def _study_init(args) -> None:
    from .fileio import write_text_atomic
    from .study.spec import EXAMPLE

    path = Path(args.file)
    if path.exists():
        raise FaceganError(f"{path} exists already: pick another name or delete it")
    write_text_atomic(path, EXAMPLE)
    print(f"wrote {path}: run it with 'facegan study run {path} --out studies/{path.stem}'")


def _study_run(args) -> None:
    from .study.runner import run_study
    from .study.spec import load_spec

    spec = load_spec(args.spec)
    index = run_study(spec, args.out, jobs=args.jobs, storage=args.storage, progress=not args.no_progress)
    print(f"wrote {index}; make the report with 'facegan study report {args.out}'")


def _study_worker(args) -> None:
    import torch

    from .study.runner import work
    from .study.spec import load_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    work(load_spec(args.spec), Path(args.out), args.storage, log=lambda line: print(line, flush=True))


def _study_report(args) -> None:
    from .study.report import write_report

    html_path, md_path = write_report(args.dir)
    print(f"wrote {html_path} and {md_path}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="facegan", description="Train DCGANs on faces and generate new ones.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"facegan {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(subparsers)
    _add_generate(subparsers)
    _add_interpolate(subparsers)
    _add_evaluate(subparsers)
    _add_runs(subparsers)
    _add_export(subparsers)
    _add_demo(subparsers)
    _add_study(subparsers)
    _add_data(subparsers)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad option already printed as one line
        return exc.code if isinstance(exc.code, int) else 2
    try:
        args.func(args)
    except FaceganError as exc:
        print(f"facegan: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facegan: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a path that cannot be read or written: say which, not a traceback
        where = f" {exc.filename}" if exc.filename else ""
        print(f"facegan: error: cannot use{where} ({exc.strerror or exc}): check the path exists and that you "
              f"may write there", file=sys.stderr)
        return 2
    return 0
