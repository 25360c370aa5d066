"""Configuration dataclasses, frozen, each option declared once on its field (options.py says what a
declaration holds and what is generated from it), and `resolve`, the one place where presets and
architecture recipes are applied: `facegan train`, study trials and the benchmarks all call it.

The resolved TrainConfig is written to each run folder and stored in every checkpoint, so anything
downstream (resume, generate, evaluate) needs only the checkpoint. Change one with dataclasses.replace."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FaceganError
from .losses import LOSSES
from .metric_names import BEST_CHECKPOINT_METRICS, METRICS
from .options import NOT_OLD, option, options_of, split_list, validate_declared

# The one home of each list of choices: validation here, and argparse's choices= and help in cli.py.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 512
DCGAN_BASES = range(3, 8)         # a DCGAN's smallest feature map side: the image side is base x 2**layers
ARCHS = ("dcgan", "mlp", "image-noise")  # DCGAN; fully connected baseline; image-shaped noise -> convs -> fc
D_HEADS = ("conv", "linear")      # all-conv head (Radford et al.) or flatten -> fc (Udacity)
AMP_MODES = ("auto", "bf16", "off")
# Settings an architecture trains best with, applied by `resolve` under any option the user gives
# (docs/findings.md "The image-noise generator": measured, 20 epochs of the built-in faces).
ARCH_RECIPES = {
    "image-noise": {"lr_d": 1e-4,                  # D at half G's rate: with 2e-4 it won outright by epoch 15
                    "instance_noise_steps": 6240},  # noise fading over the whole default run, not 500 steps
}
OPTIMISERS = ("adam", "sgd")
# Named sets of options (--preset), applied by `resolve` under whatever the user types.
PRESETS = {
    # The paper's recipe as pytorch/examples/dcgan runs it: BCE with hard labels, Adam 2e-4/0.5, batch 128,
    # no spectral norm, no instance noise, no EMA, no augmentation, no flips.
    "dcgan": {"loss": "bce", "model.spectral_norm": False, "real_label": 1.0, "instance_noise": 0.0, "lr_d": 2e-4,
              "lr_g": 2e-4, "beta1": 0.5, "beta2": 0.999, "batch_size": 128, "ema_kimg": 0.0, "augment": "",
              "diffaug": "", "data.flip": False,
              "opt_d": "adam", "opt_g": "adam", "lr_decay": "none"},
}
LR_DECAYS = ("none", "linear", "cosine", "step")
DIFFAUG_POLICIES = ("color", "translation", "cutout")  # DiffAugment (Zhao et al. 2020), ranges in augment.py
AUGMENTATIONS = ("flip", "brightness", "contrast", "rotate", "translate")  # ranges in augment.py


def default_layers(image_size: int) -> int:
    """Strided layers down to the smallest map of side >= 3 that halving reaches exactly
    (32 -> 4x4 in 3, 64 -> 4x4 in 4, 28 -> 7x7 in 2, 48 -> 3x3 in 4)."""
    layers = 0
    while image_size % 2 ** (layers + 1) == 0 and image_size // 2 ** (layers + 1) >= 3:
        layers += 1
    return layers


def most_layers(image_size: int) -> int:
    """Strided layers until halving stops being exact (down to 1x1 for powers of two: 5 at 32)."""
    layers = 0
    while image_size % 2 ** (layers + 1) == 0:
        layers += 1
    return layers


def dcgan_size_fits(image_size: int) -> bool:
    return (MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE and default_layers(image_size) >= 1
            and image_size >> default_layers(image_size) in DCGAN_BASES)


def check_image_size(image_size: int, arch: str = "dcgan") -> None:
    """Refuse a side the architecture cannot build, naming the nearest sides that work."""
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise FaceganError(f"image size {image_size} is out of range: use {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}")
    if arch == "dcgan" and not dcgan_size_fits(image_size):
        below = next((s for s in range(image_size - 1, MIN_IMAGE_SIZE - 1, -1) if dcgan_size_fits(s)), None)
        above = next((s for s in range(image_size + 1, MAX_IMAGE_SIZE + 1) if dcgan_size_fits(s)), None)
        nearest = " or ".join(str(s) for s in (below, above) if s)
        raise FaceganError(f"image size {image_size} does not fit a DCGAN (its side must be 3-7 times a power of "
                           f"two, halved by each strided layer): use {nearest}, or --arch mlp / image-noise")


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = option(32, "training resolution: 32/64/128, or for dcgan any side 3-7 x 2**k (28, 48, 96); "
                             "mlp and image-noise 16-512", "model", metavar="PX", low=1)
    z_size: int = option(100, "latent vector length (the DCGAN paper's 100); image-noise draws 3 x S x S",
                         "model", low=1)
    conv_dim: int = option(32, "channels of D's first conv and G's last hidden layer, doubling per layer "
                           "(Udacity: 32)", "model", low=1)
    num_layers: int = option(0, "strided (de)conv layers of G and D; 0 = down to the smallest map of side >= 3 "
                             "(4x4 at 32/64, 7x7 at 28)", "model", metavar="N", low=0)
    g_conv_dim: int = option(0, "G's width only (MLP: hidden width 8 x this); 0 = --conv-dim", "model",
                             metavar="N", low=0)
    d_conv_dim: int = option(0, "D's width only; 0 = --conv-dim", "model", metavar="N", low=0)
    g_layers: int = option(0, "G's strided layers only; 0 = --num-layers", "model", metavar="N", low=0)
    d_layers: int = option(0, "D's strided layers only; 0 = --num-layers", "model", metavar="N", low=0)
    d_head: str = option("conv", "discriminator head: conv = all-conv as in Radford et al.; linear = flatten -> "
                         "fc (Udacity)", "model", choices=D_HEADS)
    dropout: float = option(0.0, "dropout after each D activation; 0 = off, as in the paper", "model",
                            low=0, high=1, high_open=True)
    batchnorm: bool = option(True, "BatchNorm in G and D, as in the paper; off makes each image's output "
                             "independent of its batch (exact multi-process tests, ablations)", "model")
    spectral_norm: bool = option(True, "spectral normalisation of every D layer (Miyato et al. 2018), which "
                                 "keeps PyTorch's default init: the quality benchmark's winner with hinge and EMA",
                                 "model", before=False)
    minibatch_std: bool | None = option(None, "D sees its features' std across the batch (Karras et al. 2018), "
                                        "a cue against mode collapse; default: on for image-noise, off otherwise",
                                        "model")
    arch: str = option("dcgan", "dcgan; mlp: the fully connected baseline (Goodfellow et al. 2014); image-noise: "
                       "image-shaped noise -> convs -> fc, with --lr-d 1e-4 and --instance-noise-steps 6240 unless "
                       "given (docs/findings.md)", "model", choices=ARCHS)

    @property
    def layers(self) -> int:
        """The number of strided layers used by both networks unless g_layers/d_layers say otherwise."""
        return self.num_layers or default_layers(self.image_size)

    @property
    def final_size(self) -> int:
        """Side of the smallest feature map at `layers`, e.g. 4 for 64x64 with 4 layers."""
        return self.image_size >> self.layers

    # Per network: what each of G and D is built with.
    g_width = property(lambda self: self.g_conv_dim or self.conv_dim)
    d_width = property(lambda self: self.d_conv_dim or self.conv_dim)
    g_depth = property(lambda self: self.g_layers or self.layers)
    d_depth = property(lambda self: self.d_layers or self.layers)
    use_minibatch_std = property(lambda self: self.arch == "image-noise" if self.minibatch_std is None
                                 else self.minibatch_std)

    @property
    def noise_size(self) -> int:
        """Numbers drawn per image as G's input: z_size, or 3 x S x S for image-shaped noise."""
        return 3 * self.image_size ** 2 if self.arch == "image-noise" else self.z_size

    def __post_init__(self):
        self.validate()  # a config is checked where it is made, so nothing downstream re-checks it

    def validate(self) -> None:
        validate_declared(self)
        check_image_size(self.image_size, self.arch)
        layered = {"--num-layers": self.num_layers, "--g-layers": self.g_layers, "--d-layers": self.d_layers}
        if self.arch != "dcgan":
            given = [flag for flag, value in layered.items() if value]
            if given:
                raise FaceganError(f"{', '.join(given)} applies to --arch dcgan only ({self.arch} has a fixed "
                                   f"depth): drop it, and use --g-conv-dim/--d-conv-dim for its widths")
        else:
            most = most_layers(self.image_size)
            for flag, value in layered.items():
                if value > most:
                    raise FaceganError(f"{flag} {value} does not fit {self.image_size}x{self.image_size} images: "
                                       f"use 1 to {most} (0 picks {default_layers(self.image_size)})")


@dataclass(frozen=True)
class DataConfig:
    source: str = option("faces", "folder or .zip of face images, or celeba / celeba-small after 'facegan data "
                         "download'; 'faces' = the built-in renderer", "data", flag="--data", metavar="PATH")
    num_images: int = option(20000, "how many faces the built-in renderer draws (ignored for real data)", "data",
                             low=1, high=10_000_000)
    render_seed: int = option(0, "which built-in face set; the same seed always draws the same faces", "data",
                              low=0)
    crop: int = option(0, "centre crop side in source pixels before resizing, e.g. CelebA 108/138/178; "
                       "0 = largest centred square", "data", metavar="PX", low=0)
    flip: bool = option(True, "random horizontal flips while training (faces are left-right symmetric)", "data")
    max_images: int = option(0, "train on the first N prepared images only; 0 = all", "data", metavar="N", low=0)
    max_pixels: int = option(50_000_000, "skip (and count) images with more pixels, undecoded (a 12000x12000 PNG "
                             "is 420 KB on disk and 1.4 GB decoded; CelebA's are 39k)", "data", metavar="N", low=1)
    skin_mix: str = option("", "built-in faces only: shares of skin-tone groups, 3 (light,mid,dark) or 6 (the ITA "
                           "bands), e.g. 0.85,0.1,0.05 for a light-heavy set; '' = every tone equally often", "data",
                           metavar="SHARES", before="")
    balance: str = option("", "draw batches evenly over groups: 'skin' = the ITA skin-tone bands of 'facegan data "
                          "audit' (a proxy for skin colour under the image's lighting, never a race), or a CelebA "
                          "attribute such as Male (list_attr_celeba.txt); '' = uniform", "data", metavar="GROUPS",
                          before="")
    balance_max_weight: float = option(10.0, "with --balance: no image is drawn more than this many times as often "
                                       "as uniform sampling would, so a tiny group is not repeated endlessly",
                                       "data", metavar="X", low=1, before=10.0)

    def __post_init__(self):
        validate_declared(self)
        if not self.source.strip():  # "" would be the current folder, searched recursively
            raise FaceganError("--data '' names no data: pass a folder or .zip of face images, or leave --data "
                               "out for the built-in faces")
        if self.balance and not re.fullmatch(r"\w+", self.balance):
            raise FaceganError(f"--balance '{self.balance}' is not a group name: use skin, or a CelebA attribute "
                               f"such as Male or Eyeglasses")
        from .data.synthetic import parse_skin_mix  # numpy only; checks the shares
        if parse_skin_mix(self.skin_mix) and self.source != "faces":
            raise FaceganError(f"--skin-mix applies to the built-in faces only, not --data {self.source}: drop it "
                               f"(use --balance skin to even out real data)")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: str = option("hinge", "GAN loss: hinge, bce (non-saturating, the paper's) or lsgan (least squares)",
                       "loss", choices=tuple(LOSSES))
    real_label: float = option(0.9, "D's target for real images (bce/lsgan): < 1 is one-sided label smoothing; "
                               "1.0 = off", "loss", low=0, high=1, low_open=True, aliases=("label_smoothing",))
    lr_d: float = option(2e-4, "discriminator learning rate (DCGAN paper)", "optimiser", low=0, low_open=True)
    lr_g: float = option(2e-4, "generator learning rate; differ from --lr-d for TTUR", "optimiser",
                         low=0, low_open=True)
    instance_noise: float = option(0.5, "std of the Gaussian noise on D's real and fake inputs at step 0 (in [-1, 1] "
                                   "pixel units); 0 = off", "loss", metavar="STD", low=0, high=2, before=0.0)
    instance_noise_steps: int = option(500, "steps over which that noise fades linearly to 0", "loss",
                                       metavar="N", low=0)
    beta1: float = option(0.5, "Adam beta1; the paper's 0.5 steadies GAN training vs 0.9", "optimiser",
                          low=0, high=1, high_open=True)
    beta2: float = option(0.999, "Adam beta2", "optimiser", low=0, high=1, high_open=True)
    opt_d: str = option("adam", "D's optimiser (GAN hacks: SGD for D, Adam for G)", "optimiser", choices=OPTIMISERS)
    opt_g: str = option("adam", "G's optimiser", "optimiser", choices=OPTIMISERS)
    momentum: float = option(0.9, "SGD momentum (either network with sgd)", "optimiser",
                             low=0, high=1, high_open=True)
    lr_decay: str = option("none", "learning-rate schedule of both networks: linear or cosine to 0 at the last "
                           "step from --lr-decay-start, or step (x gamma every --lr-decay-every)", "schedule",
                           choices=LR_DECAYS)
    lr_decay_start: int = option(0, "linear/cosine: step where the decay begins", "schedule", metavar="STEP", low=0)
    lr_decay_every: int = option(0, "step: steps between decays", "schedule", metavar="STEPS", low=0)
    lr_decay_gamma: float = option(0.5, "step: factor applied at each decay", "schedule",
                                   low=0, high=1, low_open=True)
    r1_gamma: float = option(0.0, "R1 penalty weight on D's gradient at real images (Mescheder et al. 2018); "
                             "0 = off", "loss", flag="--r1", metavar="GAMMA", low=0, before=0.0)
    r1_every: int = option(16, "lazy R1: every N steps, scaled by N (StyleGAN2)", "loss", metavar="N", low=1)
    ema_kimg: float = option(10.0, "half-life of a moving average of G's weights in thousands of images; samples, "
                             "generate and export use it; 0 = off", "optimiser", flag="--ema", metavar="KIMG",
                             low=0, before=0.0)
    ema_rampup: float = option(0.05, "the EMA half-life is at most this fraction of the images seen (0 = no ramp)",
                               "optimiser", low=0, high=1)
    diffaug: str = option("", "DiffAugment on everything D sees, real and fake: comma list of "
                          + ",".join(DIFFAUG_POLICIES), "data", metavar="LIST", items=DIFFAUG_POLICIES, before="")
    augment: str = option("", "random changes of the real batches, small ranges: comma list from "
                          + ",".join(AUGMENTATIONS) + " (flips are --flip)", "data", metavar="LIST",
                          items=AUGMENTATIONS)
    batch_size: int = option(64, "images per step per process; the global batch is this x world size",
                             "optimiser", low=1)
    epochs: int = option(20, "passes over the data (20 x 20k faces: ~7 min on a 2-core CPU)", "schedule",
                         low=1, resumable=True)
    max_steps: int = option(0, "stop after this many steps in total; 0 = run all epochs", "schedule",
                            low=0, resumable=True)
    seed: int = option(0, "seeds weights, noise, shuffling and flips: same seed, same run", "system", low=0,
                       high=2 ** 32 - 1)
    device: str = option("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps", "system",
                         resumable=True, in_studies=False)
    log_every: int = option(50, "steps between metrics.jsonl lines (losses are synced only then)", "output",
                            low=1, resumable=True)
    keep_checkpoints: int = option(3, "per-epoch checkpoints kept besides last.pt", "output", low=1, resumable=True)
    checkpoint_every: int = option(0, "steps between mid-epoch saves of last.pt; 0 = every --checkpoint-minutes",
                                   "output", metavar="STEPS", low=0, resumable=True)
    checkpoint_minutes: float = option(10.0, "with --checkpoint-every 0: minutes of training between saves (a kill "
                                       "loses at most this)", "output", metavar="MIN", low=0, low_open=True,
                                       resumable=True)
    num_samples: int = option(64, "images in each fixed-noise progress grid", "output", low=1, high=1024)
    sample_every: int = option(0, "also write a progress grid every N steps (samples/step-NNNNNNN.png); 0 = per "
                               "epoch only", "output", metavar="STEPS", low=0, resumable=True)
    save_every_epochs: int = option(0, "epochs between epoch-end saves (grid, epoch-NNNN.pt, loss plot); 0 = every "
                                    "epoch, but every ~200 steps in long runs of tiny epochs", "output",
                                    metavar="N", low=0, resumable=True)
    channels_last: bool | None = option(None, "NHWC memory layout; default: on for cpu and cuda (measured faster)",
                                        "system")
    amp: str = option("auto", "mixed precision: auto = bf16 on cuda and native-bf16 CPUs, else off", "system",
                      choices=AMP_MODES)
    threads: int = option(0, "CPU threads for torch; 0 = torch's default (physical cores, or "
                          "OMP_NUM_THREADS); on a shared CPU training names the free cores", "system",
                          low=0, high=4096, resumable=True, in_studies=False, before=0)
    compile: bool = option(False, "torch.compile both networks (slow start; pays on long GPU runs)", "system",
                           resumable=True, in_studies=False)
    sync_bn: bool = option(False, "multi-GPU: BatchNorm statistics over the global batch (SyncBatchNorm, CUDA)",
                           "system")
    eval_every: int = option(0, "steps between evaluations while training; 0 = off", "evaluation",
                             low=0, resumable=True)
    eval_metrics: str = option("swd", "comma list from " + ",".join(METRICS) + "; the first (swd, fid or kid) "
                               "picks checkpoints/best.pt", "evaluation", items=tuple(METRICS), resumable=True)
    eval_samples: int = option(1000, "images per evaluation: fits a CPU; FID in papers uses 50,000",
                               "evaluation", low=2, high=100_000, resumable=True)
    inception_weights: str = option("", "path of pt_inception-2015-12-05-6726825d.pth, for fid/kid/pr",
                                    "evaluation", metavar="PTH", resumable=True)
    tensorboard: bool = option(False, "also log losses, D outputs, images/s, evaluations and sample grids to "
                               "RUN/tensorboard (pip install 'facegan[tensorboard]')", "output", resumable=True)

    def __post_init__(self):
        self.validate()  # model and data were checked when they were made

    def validate(self) -> None:
        validate_declared(self)
        if self.eval_metrics.split(",")[0].strip() not in BEST_CHECKPOINT_METRICS:
            raise FaceganError(f"--eval-metrics must start with {', '.join(BEST_CHECKPOINT_METRICS)} "
                               f"(the metric best.pt follows), not '{self.eval_metrics.split(',')[0]}'")
        if self.lr_decay == "step" and self.lr_decay_every < 1:
            raise FaceganError("--lr-decay step needs --lr-decay-every N (steps between decays)")
        if self.lr_decay not in ("linear", "cosine") and self.lr_decay_start:
            raise FaceganError("--lr-decay-start applies to --lr-decay linear or cosine: drop it or pick one of those")
        if "flip" in self.augmentations and not self.data.flip:
            raise FaceganError("--augment flip and --no-flip contradict each other: drop one")

    @property
    def diffaug_policies(self) -> list[str]:
        return split_list(self.diffaug)

    @property
    def augmentations(self) -> list[str]:
        """--augment as a list, without empty entries."""
        return split_list(self.augment)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        """Build from nested dicts, naming any unknown key (a typo in a config file) in the error."""
        if not isinstance(raw, dict):
            raise FaceganError(f"bad configuration: expected keys and values (a JSON object), not {raw!r}")
        try:
            top = {RENAMED_KEYS.get(k, k): v for k, v in raw.items() if k not in ("model", "data")}
            return cls(model=_build(ModelConfig, raw.get("model", {}), "model"),
                       data=_build(DataConfig, raw.get("data", {}), "data"), **_checked(cls, top, ""))
        except TypeError as exc:
            raise FaceganError(f"bad configuration: {exc}") from None


# --- what the declarations generate -----------------------------------------------------------
OPTIONS = options_of(TrainConfig)  # every train option, in declaration order, with its dotted key
OPTION_BY_KEY = {declared.key: declared for declared in OPTIONS}
RESUMABLE_KEYS = frozenset(declared.key for declared in OPTIONS if declared.resumable)
# Old configuration keys still read from config files and checkpoints -> their current names.
RENAMED_KEYS = {alias: declared.key for declared in OPTIONS if "." not in declared.key
                for alias in declared.aliases}
# Options that set several keys at once; the specific keys win where both are given.
SHORTHANDS = {"lr": (("lr_d", "lr_g"), "learning rate for both D and G (--lr-d/--lr-g win)", "optimiser")}
# A field's annotation -> (does a JSON value fit it, how to say what fits). Config files are JSON, so
# a float field takes whole numbers too; bool is an int in Python but never a number here.
_JSON_TYPES = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "str": (lambda v: isinstance(v, str), "text"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "bool | None": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
}


def _checked(kind, values: dict, section: str) -> dict:
    """`values` for dataclass `kind`, with unknown keys and wrongly typed values named in one line."""
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - set(fields))
    where = f" in section '{section}'" if section else ""
    if unknown:
        raise FaceganError(f"unknown configuration key(s) {', '.join(unknown)}{where}: "
                           f"known keys are {', '.join(sorted(fields))}")
    for key, value in values.items():
        fits, what = _JSON_TYPES.get(str(fields[key].type), (lambda v: True, ""))
        if not fits(value):
            name = f"{section}.{key}" if section else key
            raise FaceganError(f"bad configuration: '{name}' must be {what}, not {value!r}")
    return values


def _build(kind, values: dict, section: str):
    if not isinstance(values, dict):
        raise FaceganError(f"bad configuration: '{section}' must be a section of keys, not {values!r}")
    return kind(**_checked(kind, values, section))


def load_config_file(path) -> dict:
    """Read a JSON config (such as a run's config.json) as nested dicts."""
    path = Path(path)
    if not path.is_file():
        raise FaceganError(f"config file {path} does not exist: pass a JSON file such as a run's config.json")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FaceganError(f"config file {path} is not UTF-8 text (byte {exc.start}): pass a JSON file such as a "
                           f"run's config.json") from None
    except json.JSONDecodeError as exc:
        raise FaceganError(f"config file {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (RecursionError, ValueError) as exc:  # nesting too deep; an integer of thousands of digits
        raise FaceganError(f"config file {path} is not a config ({str(exc)[:60] or 'nested too deeply'}): pass a "
                           f"JSON file such as a run's config.json") from None


def apply_overrides(raw: dict, overrides: dict) -> dict:
    """Nested config dict with dotted-key overrides applied, e.g. {"model.image_size": 64}."""
    merged = json.loads(json.dumps(raw))
    for dotted, value in overrides.items():
        *sections, key = dotted.split(".")
        target = merged
        for section in sections:
            target = target.setdefault(section, {})
        target[key] = value
    return merged


def resume_config(saved: TrainConfig, overrides: dict) -> TrainConfig:
    """The checkpoint's config with the allowed overrides; a clear error for the rest."""
    saved_raw = saved.to_dict()
    for dotted, value in overrides.items():
        current = saved_raw
        for part in dotted.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if dotted not in RESUMABLE_KEYS and current != value:
            flag = OPTION_BY_KEY[dotted].long_flag if dotted in OPTION_BY_KEY else dotted
            raise FaceganError(f"cannot resume with {flag} {value}: the checkpoint was trained with {current}; "
                               f"drop {flag}, or start a new run without --resume")
    return TrainConfig.from_dict(apply_overrides(saved_raw, overrides))


def with_old_defaults(raw: dict) -> dict:
    """A checkpoint's config dict with every option it predates set to the value it was trained with
    (a config file may leave an option out and get today's default; a checkpoint may not)."""
    raw = {key: dict(value) if isinstance(value, dict) else value for key, value in raw.items()}
    for declared in OPTIONS:
        if declared.before is not NOT_OLD:
            section, _, name = declared.key.rpartition(".")
            target = raw.setdefault(section, {}) if section else raw
            if isinstance(target, dict):
                target.setdefault(name, declared.before)
    return raw


def resolve(options: dict, preset: str | None = None, base: dict | None = None) -> tuple[TrainConfig, dict]:
    """The config a run trains with, and the recipe settings that were applied to it.

    `options` are what the user gave (dotted keys; shorthands such as "lr" allowed), `preset` a name in
    PRESETS, `base` a config file's nested dict (None = the defaults). Each preset and the architecture's
    measured recipe (ARCH_RECIPES) sit under the options; an architecture's recipe is not applied over
    a config file, which holds a resolved config already."""
    options = expand_shorthands(options)
    if preset is not None and preset not in PRESETS:
        raise FaceganError(f"unknown preset '{preset}': use one of {', '.join(PRESETS)}")
    recipe = dict(ARCH_RECIPES.get(options.get("model.arch"), {})) if base is None else {}
    recipe.update(PRESETS.get(preset, {}))
    recipe = {key: value for key, value in recipe.items() if key not in options}
    raw = base if base is not None else TrainConfig().to_dict()
    return TrainConfig.from_dict(apply_overrides(raw, {**recipe, **options})), recipe


def expand_shorthands(options: dict) -> dict:
    """{"lr": x} -> {"lr_d": x, "lr_g": x}, under any lr_d/lr_g also given."""
    expanded = {}
    for name, value in options.items():
        if name in SHORTHANDS:
            expanded.update({key: value for key in SHORTHANDS[name][0] if key not in options})
        else:
            expanded[name] = value
    return expanded


def getattr_dotted(config, key: str):
    """config's value at a dotted key such as 'model.conv_dim'."""
    for part in key.split("."):
        config = getattr(config, part)
    return config


def study_option_keys() -> dict[str, str]:
    """Option name in a study spec (field name, flag name or old name, underscores) -> dotted key."""
    names = {name: d.key for d in OPTIONS if d.in_studies for name in d.names}
    return {**names, **{name: name for name in SHORTHANDS}}
