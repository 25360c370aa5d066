"""The `facegan` command: parse, validate, call the library, print. No training logic lives here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import OPTION_BY_KEY, OPTIONS, PRESETS, SHORTHANDS, TrainConfig, expand_shorthands, getattr_dotted
from .errors import FaceganError
from .metric_names import METRICS
from .options import number_type


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line naming the problem and pointing at --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


_positive_int, _non_negative_int = number_type(int, 1), number_type(int, 0)


# --help's sections of `facegan train`, in order; every option declares its own (config.py).
TRAIN_GROUPS = ("data", "model", "loss", "optimiser", "schedule", "output", "evaluation", "system")


def _declared_argument(parser, key: str, dest: str | None = None, default=None) -> None:
    """One flag from its declaration in config.py; its default None means "not given", so in `facegan
    train` only what the user typed overrides a config file or a checkpoint."""
    OPTION_BY_KEY[key].add_to(parser, getattr_dotted(TrainConfig(), key), dest=dest or key, default=default)


def _add_train(subparsers) -> None:
    """`facegan train`'s flags, generated from the option declarations in config.py."""
    p = subparsers.add_parser("train", help="train a DCGAN", description="Train a DCGAN on faces. Options not "
                              "given come from --preset, --config, then from the defaults in facegan/config.py.")
    groups = {name: p.add_argument_group(name) for name in TRAIN_GROUPS}
    for declared in OPTIONS:
        _declared_argument(groups[declared.group], declared.key)
    for name, (_, help_text, group) in SHORTHANDS.items():
        groups[group].add_argument(f"--{name}", type=OPTION_BY_KEY["lr_d"].parse, default=None, help=help_text)
    output = groups["output"]
    output.add_argument("--preset", choices=tuple(PRESETS), help="a named recipe, under any option you give: "
                        + "; ".join(f"{name}: {', '.join(f'{k.split(chr(46))[-1]}={v}' for k, v in values.items())}"
                                    for name, values in PRESETS.items()))
    output.add_argument("--config", metavar="FILE", help="JSON config, e.g. a run's config.json")
    output.add_argument("--out", default="runs", help="folder holding the numbered run folders (default: runs)")
    output.add_argument("--resume", metavar="RUN", help="continue a run: its folder, id or id prefix, a .pt, "
                                                         "or 'latest'")
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    output.add_argument("--dry-run", action="store_true", help="print the resolved config, parameters, memory, "
                        "steps and an ETA from a 3-step timing, and write nothing")
    p.set_defaults(func=_train)


def resolve_train_args(args):
    """(config, checkpoint, state) of `facegan train` ARGS: what a new run or a resumed one trains with."""
    from .config import load_config_file, resolve
    from .runs import resume_point

    names = [declared.key for declared in OPTIONS] + list(SHORTHANDS)  # dotted keys, as the flags' dest
    options = {name: getattr(args, name) for name in names if getattr(args, name) is not None}  # what was typed
    if args.resume is not None:  # '' too: resume_point refuses it rather than start a new run
        if args.config or args.preset:
            raise FaceganError("--config and --preset do not mix with --resume: a resumed run keeps its own config")
        return resume_point(args.resume, args.out, expand_shorthands(options), log=print)
    cfg, recipe = resolve(options, preset=args.preset, base=load_config_file(args.config) if args.config else None)
    if recipe:
        print(f"--{'preset ' + args.preset if args.preset else 'arch ' + cfg.model.arch}: "
              + ", ".join(f"{k} {v}" for k, v in recipe.items()) + " (give an option to change one)")
    return cfg, None, None


def _train(args) -> None:
    from .estimate import dry_run_report
    from .train import train

    cfg, checkpoint, state = resolve_train_args(args)
    if args.dry_run:
        print(dry_run_report(cfg))
    else:
        train(cfg, out=args.out, resume_from=checkpoint, progress=not args.no_progress, state=state)


def _add_run_argument(p, what: str = "the generator") -> None:
    """The run a command reads, named the same way in every command."""
    p.add_argument("run", nargs="?", default=None, metavar="RUN",
                   help=f"{what}: a run folder, a run id or prefix of one (see 'facegan runs'), a folder of runs "
                        f"(its newest), a .pt file, or 'latest' (default: the newest run under --runs)")
    p.add_argument("--runs", default="runs", metavar="DIR",
                   help="where run ids and 'latest' are looked up (default: runs)")


def _checkpoint(args, prefer: str = "generator"):
    from .runs import resolve_checkpoint
    return resolve_checkpoint(args.run, args.runs, prefer=prefer, log=print)


def _generator(args):
    """(generator, checkpoint, device) of a command that runs a trained generator."""
    from .device import resolve_device
    from .generate import load_generator

    device, checkpoint = resolve_device(args.device), _checkpoint(args)
    return load_generator(checkpoint, device, ema=not args.no_ema)[0], checkpoint, device


_truncation = number_type(float, 0.0, 1.0, " (1 = off, 0.7 is common)")


def _add_generator_options(p, batch: bool = True) -> None:
    """What every command that runs a trained generator shares."""
    p.add_argument("--no-ema", action="store_true",
                   help="use the raw generator even when the run keeps a moving average (--ema) of it")
    _declared_argument(p, "device", dest="device", default="auto")
    if batch:
        p.add_argument("--batch-size", type=_positive_int, default=64, help="faces per forward pass (default: 64)")


def _add_generate(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate faces from a trained run",
                              description="Generate faces from a checkpoint. Seed N always gives the same face. "
                                          "The file name's ending picks the format: .png, .jpg or .webp.")
    _add_run_argument(p)
    p.add_argument("--num", type=number_type(int, 1, 100_000), default=64,
                   help="faces, seeds 0..N-1: a grid of up to 4,096, or up to 100,000 with --outdir (default: 64)")
    p.add_argument("--seeds", help="seeds such as 0-63 or 1,5,9 (overrides --num)")
    p.add_argument("--truncation", type=_truncation, default=1.0, metavar="PSI",
                   help="pull z toward the mean: < 1 trades variety for cleaner faces (default: 1 = off)")
    p.add_argument("--out", metavar="FILE",
                   help="grid file, .png/.jpg/.webp (default: generated.png in the run folder)")
    p.add_argument("--outdir", metavar="DIR", help="write one file per seed here instead of a grid")
    p.add_argument("--ext", choices=("png", "jpg", "webp"), default="png",
                   help="with --outdir: file type (default: png)")
    _add_generator_options(p)
    p.set_defaults(func=_generate)


def _generate(args) -> None:
    from .generate import parse_seeds, write_faces
    from .runs import run_of

    seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.num))  # checked before the model loads
    generator, checkpoint, device = _generator(args)
    write_faces(generator, seeds, Path(args.out) if args.out else run_of(checkpoint).generated_png, args.outdir,
                args.ext, args.batch_size, device, args.truncation, log=print)


def _add_interpolate(subparsers) -> None:
    p = subparsers.add_parser(
        "interpolate", help="faces morphing between seeds: a strip or an animation",
        description="Walk through the latents of two or more seeds and draw the faces on the way. A .png/.jpg "
                    "file gets a strip (one row per leg); a .gif or .webp file gets an animation.")
    _add_run_argument(p)
    p.add_argument("--seeds", help="the seeds to walk through, e.g. 1,5,9 (default: --from-seed then --to-seed)")
    p.add_argument("--from-seed", type=_non_negative_int, default=0, help="start seed (default: 0)")
    p.add_argument("--to-seed", type=_non_negative_int, default=1, help="end seed (default: 1)")
    p.add_argument("--frames", "--steps", type=number_type(int, 1, 1000), default=None, metavar="N",
                   help="faces per leg, both ends included (default: 8 in a strip, 24 in an animation)")
    p.add_argument("--slerp", action="store_true",
                   help="spherical interpolation: keeps |z| typical, so middle faces are not washed out "
                        "(default: straight line)")
    p.add_argument("--loop", action="store_true", help="there and back, so an animation repeats smoothly")
    p.add_argument("--fps", type=number_type(float, 1, 100), default=12.0,
                   help="animation frames per second (default: 12)")
    p.add_argument("--truncation", type=_truncation, default=1.0, metavar="PSI",
                   help="pull z toward the mean, as in generate (default: 1 = off)")
    p.add_argument("--out", metavar="FILE", help=".png/.jpg strip or .gif/.webp animation "
                                                 "(default: interpolation.png in the run folder)")
    _add_generator_options(p)
    p.set_defaults(func=_interpolate)


def _interpolate(args) -> None:
    from .generate import parse_seeds, write_interpolation
    from .runs import run_of

    generator, checkpoint, device = _generator(args)
    seeds = parse_seeds(args.seeds) if args.seeds else [args.from_seed, args.to_seed]
    write_interpolation(generator, seeds, Path(args.out) if args.out else run_of(checkpoint).interpolation_png,
                        device, frames=args.frames, slerp=args.slerp, loop=args.loop, truncation=args.truncation,
                        batch_size=args.batch_size, fps=args.fps, log=print)


def _add_evaluate(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="quality metrics for a trained run",
                              description="SWD and MS-SSIM need nothing; FID, KID and precision/recall need the "
                                          "Inception weights file (see docs/reference.md, 'Evaluating').")
    _add_run_argument(p, "the generator to evaluate")
    p.add_argument("--data", help="images to compare with (default: the data the run trained on)")
    p.add_argument("--metrics", default="swd,msssim", help=f"comma list from {','.join(METRICS)} (default: swd,msssim)")
    p.add_argument("--num-samples", type=number_type(int, 2, 100_000), default=1000,
                   help="generated and real images compared, 2-100,000 (default: 1000)")
    p.add_argument("--inception-weights", metavar="PTH",
                   help="pt_inception-2015-12-05-6726825d.pth, for fid, kid and pr (see docs/reference.md)")
    _add_generator_options(p)
    p.set_defaults(func=_evaluate)


def _evaluate(args) -> None:
    from .device import resolve_device
    from .metrics.evaluate import evaluate_checkpoint, format_table, parse_metrics

    metrics = parse_metrics(args.metrics)
    results, written_to = evaluate_checkpoint(_checkpoint(args), metrics, args.num_samples,
                                              resolve_device(args.device), args.inception_weights, args.batch_size,
                                              data=args.data, ema=not args.no_ema, progress=sys.stderr.isatty())
    print(format_table(results))
    print(f"appended to {written_to}")


def _add_data(subparsers) -> None:
    p = subparsers.add_parser("data", help="prepare and preview data sets")
    sub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    q = sub.add_parser("download", help="download and unzip CelebA (celeba-small or celeba)")
    q.add_argument("name", choices=("celeba-small", "celeba"))
    q.add_argument("--dest", default="data", help="folder for the archive and the images (data)")
    q.add_argument("--url", help="a mirror to download the zip from instead")
    q.add_argument("--attr-url", metavar="URL", help="celeba: a mirror for list_attr_celeba.txt, the 40 attributes "
                   "per image that 'data audit' and --balance ATTR read (default: CelebA's Google Drive)")
    q.set_defaults(func=_data_download)
    for name, helptext in (("prepare", "build the training cache ahead of time and print a summary"),
                           ("preview", "write a grid of prepared training images"),
                           ("audit", "measure the skin-tone balance (and CelebA attributes) of a data set")):
        q = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ". The cache "
                           "is keyed by the source and the options, so training reuses it." + (
                               " Skin tone is the ITA angle of a face-centre patch, binned into six bands: a proxy "
                               "for the skin colour under the image's lighting, never a person's ethnicity or "
                               "race. Cached beside the prepared data." if name == "audit" else ""))
        q.add_argument("source", nargs="?", default="faces",
                       help="folder, .zip, a downloaded set (celeba, celeba-small) or 'faces' (faces)")
        for key in ("model.image_size", "data.crop", "data.num_images", "data.render_seed", "data.max_pixels",
                    "data.skin_mix"):
            field_name = key.rpartition(".")[2]
            default = None if field_name == "num_images" else getattr_dotted(TrainConfig(), key)
            _declared_argument(q, key, dest=field_name, default=default)
        if name == "preview":
            q.add_argument("--num", type=number_type(int, 1, 4096), default=64, help="images in the grid, at most "
                           "4,096 (64)")
            q.add_argument("--out", default="preview.png", metavar="FILE",
                           help="grid file, .png/.jpg/.webp (default: preview.png)")
        if name == "audit":
            q.add_argument("--patch", metavar="BOXES", help="where the skin is: left,top,right,bottom fractions of "
                           "the image, several boxes joined by ';' (default: both cheeks and the forehead of "
                           "centred faces such as CelebA's aligned crops and the built-in ones)")
            q.add_argument("--out", default=".", metavar="DIR", help="also write audit.json and audit.png here "
                           "(default: the current folder)")
        q.set_defaults(func=_data)


def _data_download(args) -> None:
    from .data.download import download

    folder = download(args.name, args.dest, url=args.url, progress=sys.stderr.isatty(),
                      extra_urls={"list_attr_celeba.txt": args.attr_url} if args.attr_url else None)
    print(f"ready: train with --data {args.name} (or --data {folder})")


def _data(args) -> None:
    from .data.prepare import prepare_source

    if args.data_command == "audit":
        from .data.audit import audit_source
        audit_source(args.source, args.image_size, args.patch, args.out, crop=args.crop, num_images=args.num_images,
                     render_seed=args.render_seed, max_pixels=args.max_pixels, skin_mix=args.skin_mix,
                     progress=sys.stderr.isatty(), log=print)
        return
    prepare_source(args.source, args.image_size, crop=args.crop, num_images=args.num_images,
                   render_seed=args.render_seed, max_pixels=args.max_pixels, skin_mix=args.skin_mix,
                   preview=(args.num, args.out) if args.data_command == "preview" else None,
                   progress=sys.stderr.isatty(), log=print)


def _add_runs(subparsers) -> None:
    p = subparsers.add_parser("runs", help="list training runs", description="List the runs in a folder: id, "
                              "data, image size, progress, last evaluation, age, and whether one is training now.")
    p.add_argument("folder", nargs="?", default="runs", help="the folder holding run folders (default: runs)")
    p.set_defaults(func=_runs)


def _runs(args) -> None:
    from .runs import describe_runs, runs_table

    rows = describe_runs(args.folder)
    print(runs_table(rows) if rows else f"no runs in {args.folder}/: start one with 'facegan train'")


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
    from .export import export

    written, sidecar = export(_checkpoint(args), args.format, args.out, ema=not args.no_ema)
    print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB) and {sidecar}")


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser("demo", help="a web page to explore a trained generator",
                              description="Serve a page with a seed slider, random batches, truncation, "
                                          "interpolation and downloads. Ctrl-C stops it.")
    _add_run_argument(p, "the generator to show")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 exposes it to your network (default: 127.0.0.1)")
    p.add_argument("--port", type=number_type(int, 0, 65535), default=7860,
                   help="port, 1-65535; 0 = any free one (default: 7860)")
    _add_generator_options(p, batch=False)
    p.set_defaults(func=_demo)


def _demo(args) -> None:
    from .demo import serve_checkpoint
    from .device import resolve_device

    serve_checkpoint(_checkpoint(args), args.host, args.port, resolve_device(args.device), ema=not args.no_ema,
                     log=lambda line: print(line, flush=True))


def _add_study(subparsers) -> None:
    p = subparsers.add_parser("study", help="hyperparameter studies: many runs, one report",
                              description="Run a grid or random search of training settings from a TOML spec "
                                          "and write a report across the runs (docs/reference.md, 'Studies').")
    sub = p.add_subparsers(dest="study_command", required=True, parser_class=_Parser)
    q = sub.add_parser("init", help="write a commented example spec",
                       description="Write a commented example study spec (about an hour on 2 CPU cores).")
    q.add_argument("file", help="the TOML file to write, e.g. study.toml")
    q.set_defaults(func=_study)
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
    q.add_argument("--dry-run", action="store_true", help="print each trial's steps and the total ETA; write nothing")
    q.add_argument("--retry-failed", action="store_true", help="also retry trials that failed on their settings "
                   "(those that failed on a full disk or an I/O error are retried anyway; diverged ones never)")
    q.set_defaults(func=_study)
    q = sub.add_parser("worker", help="one worker process (what run --jobs starts)",
                       description="Take waiting trials of a study until none is left; what 'study run --jobs' "
                                   "starts on this machine.")
    q.add_argument("spec", help="the study's TOML file")
    q.add_argument("--out", required=True, metavar="DIR", help="the study's folder")
    q.add_argument("--storage", required=True, metavar="URL", help="the study's Optuna storage")
    q.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: all)")
    q.set_defaults(func=_study)
    q = sub.add_parser("report", help="write DIR/report.html and DIR/report.md",
                       description="Tables, sample grids, overlaid loss curves and metric plots per factor.")
    q.add_argument("dir", help="the study's folder (its --out)")
    q.set_defaults(func=_study)


def _study(args) -> None:
    from .study.report import write_report
    from .study.runner import dry_run_report, run_study, work
    from .study.spec import load_spec, write_example

    if args.study_command == "init":
        path = write_example(args.file)
        print(f"wrote {path}: run it with 'facegan study run {path} --out studies/{path.stem}'")
    elif args.study_command == "run" and args.dry_run:
        print(dry_run_report(load_spec(args.spec), args.jobs))
    elif args.study_command == "run":
        index = run_study(load_spec(args.spec), args.out, jobs=args.jobs, storage=args.storage,
                          progress=not args.no_progress, retry_failed=args.retry_failed)
        print(f"wrote {index}; make the report with 'facegan study report {args.out}'")
    elif args.study_command == "worker":
        work(load_spec(args.spec), Path(args.out), args.storage, log=lambda line: print(line, flush=True),
             threads=args.threads)
    else:
        print("wrote {} and {}".format(*write_report(args.dir)))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="facegan", description="Train DCGANs on faces and generate new ones.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"facegan {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_train, _add_generate, _add_interpolate, _add_evaluate, _add_runs, _add_export, _add_demo,
                _add_study, _add_data):
        add(subparsers)
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
