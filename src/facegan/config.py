"""Configuration dataclasses. The resolved TrainConfig is written to each run folder and stored in
every checkpoint, so anything downstream (resume, generate, evaluate) needs only the checkpoint."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FaceganError
from .losses import LOSSES
from .metrics.registry import BEST_CHECKPOINT_METRICS, parse_metrics

# The one home of each list of choices: validation here, and argparse's choices= and help in cli.py.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 512
DCGAN_BASES = range(3, 8)         # a DCGAN's smallest feature map side: the image side is base x 2**layers
ARCHS = ("dcgan", "mlp", "image-noise")  # DCGAN; fully connected baseline; image-shaped noise -> convs -> fc
D_HEADS = ("conv", "linear")      # all-conv head (Radford et al.) or flatten -> fc (Udacity)
AMP_MODES = ("auto", "bf16", "off")
# Settings an architecture trains best with, applied by `facegan train --arch X` under any option the
# user gives (README "The image-noise generator": measured, 20 epochs of the built-in faces).
ARCH_RECIPES = {
    "image-noise": {"lr_d": 1e-4,                  # D at half G's rate: with 2e-4 it won outright by epoch 15
                    "instance_noise_steps": 6240},  # noise fading over the whole default run, not 500 steps
}
OPTIMISERS = ("adam", "sgd")
# Named sets of options (--preset), applied under whatever the user types: the one registry of recipes.
PRESETS = {
    # The paper's recipe as pytorch/examples/dcgan runs it: BCE with hard labels, Adam 2e-4/0.5, batch 128,
    # no spectral norm, no instance noise, no EMA, no augmentation, no flips.
    "dcgan": {"loss": "bce", "model.spectral_norm": False, "real_label": 1.0, "instance_noise": 0.0, "lr_d": 2e-4,
              "lr_g": 2e-4, "beta1": 0.5, "beta2": 0.999, "batch_size": 128, "ema_kimg": 0.0, "augment": "", "diffaug": "", "data.flip": False,
              "opt_d": "adam", "opt_g": "adam", "lr_decay": "none"},
}
LR_DECAYS = ("none", "linear", "cosine", "step")
DIFFAUG_POLICIES = ("color", "translation", "cutout")  # DiffAugment (Zhao et al. 2020), ranges in augment.py
AUGMENTATIONS = ("flip", "brightness", "contrast", "rotate", "translate")  # ranges in augment.py
# Old configuration keys still read from config files and checkpoints -> their current names.
RENAMED_KEYS = {"label_smoothing": "real_label"}


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


@dataclass
class ModelConfig:
    image_size: int = 32    # side of the square images: 32/64/128, any 3-7 x 2**k for dcgan (28, 48, 96), 16-512 else
    z_size: int = 100       # length of the latent vector z (the DCGAN paper's 100); image-noise draws 3 x S x S
    conv_dim: int = 32      # channels of D's first conv and G's last hidden layer; doubles per layer (Udacity: 32)
    num_layers: int = 0     # strided (de)conv layers; 0 = down to the smallest map of side >= 3 (4x4 at 32/64)
    g_conv_dim: int = 0     # G's width when it differs from D's; 0 = conv_dim (MLP: hidden width 8 x this)
    d_conv_dim: int = 0     # D's width; 0 = conv_dim
    g_layers: int = 0       # G's strided layers when they differ from D's; 0 = num_layers
    d_layers: int = 0       # D's strided layers; 0 = num_layers
    d_head: str = "conv"    # "conv": all-conv head as in Radford et al.; "linear": flatten -> fc (Udacity)
    dropout: float = 0.0    # dropout after each D activation; 0 = off, as in the paper
    batchnorm: bool = True  # BatchNorm in G and D as in the paper; off makes each image's output independent
                            # of its batch (exact multi-process equivalence tests, ablations)
    spectral_norm: bool = True   # spectral normalisation of every D layer (Miyato et al. 2018); the quality
                                 # benchmark's winner with the hinge loss and EMA (README "Better faces")
    minibatch_std: bool | None = None  # D sees the std of its features across the batch (Karras et al. 2018), a
                                       # cue against collapse; None = on for image-noise, off otherwise
    arch: str = "dcgan"     # "dcgan"; "mlp": the fully connected baseline (Goodfellow et al. 2014);
                            # "image-noise": noise shaped like an image -> convs -> fc -> image (README)

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
        if self.arch not in ARCHS:
            raise FaceganError(f"unknown architecture '{self.arch}': use one of {', '.join(ARCHS)}")
        check_image_size(self.image_size, self.arch)
        if min(self.conv_dim, self.z_size) < 1 or min(self.g_conv_dim, self.d_conv_dim) < 0:
            raise FaceganError("--conv-dim and --z-size must be positive integers, --g/d-conv-dim 0 or more")
        layered = {"--num-layers": self.num_layers, "--g-layers": self.g_layers, "--d-layers": self.d_layers}
        if self.arch != "dcgan":
            given = [flag for flag, value in layered.items() if value]
            if given:
                raise FaceganError(f"{', '.join(given)} applies to --arch dcgan only ({self.arch} has a fixed "
                                   f"depth): drop it, and use --g-conv-dim/--d-conv-dim for its widths")
        else:
            most = most_layers(self.image_size)
            for flag, value in layered.items():
                if value < 0 or value > most:
                    raise FaceganError(f"{flag} {value} does not fit {self.image_size}x{self.image_size} images: use "
                                       f"1 to {most} (0 picks {default_layers(self.image_size)})")
        if self.d_head not in D_HEADS:
            raise FaceganError(f"unknown discriminator head '{self.d_head}': use {' or '.join(D_HEADS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise FaceganError(f"--dropout {self.dropout} is out of range: use a value in [0, 1)")


@dataclass
class DataConfig:
    source: str = "faces"   # "faces" = the built-in renderer; otherwise a folder or .zip of images
    num_images: int = 20000  # how many faces the built-in renderer draws (ignored for real data)
    render_seed: int = 0    # which built-in face set; the same seed always draws the same faces
    crop: int = 0           # centre crop side in source pixels before resizing; 0 = largest centred square
    flip: bool = True       # random horizontal flips while training (faces are left-right symmetric)
    max_images: int = 0     # train on the first N prepared images only; 0 = all
    max_pixels: int = 50_000_000  # images with more pixels are skipped and counted, not decoded (a 12000x12000
                                  # PNG is 420 KB on disk and 1.4 GB decoded); CelebA's are 39k pixels


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: str = "hinge"          # hinge, bce (non-saturating, the paper's) or lsgan (least squares)
    real_label: float = 0.9      # D's target for real images: < 1 is one-sided label smoothing; 1.0 = off
    lr_d: float = 2e-4           # discriminator Adam learning rate (DCGAN paper)
    lr_g: float = 2e-4           # generator Adam learning rate; differ from lr_d for TTUR
    instance_noise: float = 0.5  # std of Gaussian noise on D's real and fake inputs at step 0 (pixels in [-1, 1]); 0 = off
    instance_noise_steps: int = 500  # steps over which that std falls linearly to 0 (README: "Leaving mode collapse")
    beta1: float = 0.5           # Adam beta1; the paper's 0.5 steadies GAN training vs 0.9
    beta2: float = 0.999         # Adam beta2
    opt_d: str = "adam"          # D's optimiser: adam, or sgd (GAN hacks: SGD for D, Adam for G)
    opt_g: str = "adam"          # G's optimiser: adam or sgd
    momentum: float = 0.9        # SGD momentum (either network with sgd)
    lr_decay: str = "none"       # learning-rate schedule of both networks: none, linear or cosine (to 0 at the
                                 # last step, from lr_decay_start on), or step (x lr_decay_gamma every lr_decay_every)
    lr_decay_start: int = 0      # linear/cosine: step at which the decay begins (constant before)
    lr_decay_every: int = 0      # step: steps between decays (required for step)
    lr_decay_gamma: float = 0.5  # step: factor applied at each decay
    r1_gamma: float = 0.0        # R1 penalty weight on D's gradient at real images (Mescheder et al. 2018); 0 = off
    r1_every: int = 16           # apply R1 lazily every N steps, scaled by N (StyleGAN2)
    ema_kimg: float = 10.0       # half-life of the EMA of G's weights in thousands of images; 0 = off
    ema_rampup: float = 0.05     # the half-life is at most this fraction of the images seen so far (0 = no ramp)
    diffaug: str = ""            # DiffAugment policies on everything D sees: comma list of color,translation,cutout
    augment: str = ""            # comma list from AUGMENTATIONS applied to real batches on the device ("flip" is
                                 # data.flip, on by default); e.g. "brightness,contrast,rotate,translate"
    batch_size: int = 64         # images per step per process; the global batch is this x world size
    epochs: int = 20             # passes over the data set (20 x 20k faces: ~7 min on a 2-core CPU)
    max_steps: int = 0           # stop after this many steps in total; 0 = run all epochs
    seed: int = 0                # seeds weights, noise, shuffling and flips: same seed, same run
    device: str = "auto"         # auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps
    log_every: int = 50          # steps between metrics.jsonl lines (losses are synced only then)
    keep_checkpoints: int = 3    # per-epoch checkpoints kept besides last.pt
    checkpoint_every: int = 0    # steps between mid-epoch saves of last.pt; 0 = every checkpoint_minutes instead
    checkpoint_minutes: float = 10.0  # with checkpoint_every 0: minutes of training between saves (a kill loses at most this)
    num_samples: int = 64        # images in each fixed-noise progress grid
    sample_every: int = 0        # also write a progress grid every N steps (samples/step-NNNNNNN.png); 0 = per epoch only
    save_every_epochs: int = 0   # epochs between epoch-end saves (grid, epoch-NNNN.pt, loss plot); 0 = auto: every
                                 # epoch, except runs of over 20 epochs shorter than SAVE_MIN_STEPS (see epochs_per_save)
    channels_last: bool | None = None  # NHWC memory layout; None = on for cpu/cuda (measured faster)
    amp: str = "auto"            # mixed precision: auto (bf16 on cuda and native-bf16 CPUs, else off), bf16, off
    compile: bool = False        # torch.compile both networks (slow start; pays on long GPU runs)
    sync_bn: bool = False        # multi-GPU: BatchNorm statistics over the global batch (CUDA only)
    eval_every: int = 0          # steps between evaluations while training; 0 = off
    eval_metrics: str = "swd"    # comma list; the first (swd, fid or kid) picks checkpoints/best.pt
    eval_samples: int = 1000     # images per evaluation: fits a CPU; FID in papers uses 50,000
    inception_weights: str = ""  # path of pt_inception-2015-12-05-6726825d.pth, for fid/kid/pr
    tensorboard: bool = False    # also log losses, D outputs, images/s, evaluations and sample grids to RUN/tensorboard

    def __post_init__(self):
        self.validate()  # model and data were checked when they were made

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise FaceganError(f"unknown loss '{self.loss}': use one of {', '.join(LOSSES)}")
        if not 0.0 < self.real_label <= 1.0:
            raise FaceganError(f"--real-label {self.real_label} is out of range: use (0, 1], 1.0 = off")
        for name in ("lr_d", "lr_g"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise FaceganError(f"--{name.replace('_', '-')} {getattr(self, name)} must be a positive finite number")
        if not 0.0 <= self.instance_noise <= 2.0 or self.instance_noise_steps < 0:
            raise FaceganError(f"--instance-noise {self.instance_noise} must be in [0, 2] (a std in [-1, 1] pixel "
                               f"units) and --instance-noise-steps 0 or more")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise FaceganError(f"--{name} must be in [0, 1)")
        for name in ("batch_size", "epochs", "log_every", "num_samples", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise FaceganError(f"--{name.replace('_', '-')} must be at least 1")
        if self.checkpoint_every < 0 or not self.checkpoint_minutes > 0:
            raise FaceganError("--checkpoint-every must be 0 (time-based) or positive, and --checkpoint-minutes positive")
        if self.max_steps < 0:
            raise FaceganError("--max-steps must be 0 (no limit) or positive")
        if self.eval_every < 0 or self.eval_samples < 2:
            raise FaceganError("--eval-every must be 0 (off) or positive, and --eval-samples at least 2")
        if parse_metrics(self.eval_metrics)[0] not in BEST_CHECKPOINT_METRICS:
            raise FaceganError(f"--eval-metrics must start with {', '.join(BEST_CHECKPOINT_METRICS)} "
                               f"(the metric best.pt follows), "
                               f"not '{self.eval_metrics.split(',')[0]}'")
        if self.amp not in AMP_MODES:
            raise FaceganError(f"unknown --amp '{self.amp}': use {', '.join(AMP_MODES)}")
        if self.data.num_images < 1:
            raise FaceganError("--num-images must be at least 1")
        if self.data.max_pixels < 1:
            raise FaceganError("--max-pixels must be at least 1")
        if self.r1_gamma < 0 or self.r1_every < 1:
            raise FaceganError("--r1 must be 0 (off) or positive, --r1-every at least 1")
        if self.ema_kimg < 0 or not 0 <= self.ema_rampup <= 1:
            raise FaceganError("--ema must be 0 (off) or a half-life in thousands of images, --ema-rampup in [0, 1]")
        if self.data.max_images < 0 or self.sample_every < 0 or self.save_every_epochs < 0:
            raise FaceganError("--max-images, --sample-every and --save-every-epochs must be 0 (off/auto) or positive")
        for name in ("opt_d", "opt_g"):
            if getattr(self, name) not in OPTIMISERS:
                raise FaceganError(f"unknown --{name.replace('_', '-')} '{getattr(self, name)}': use {' or '.join(OPTIMISERS)}")
        if not 0.0 <= self.momentum < 1.0:
            raise FaceganError(f"--momentum {self.momentum} is out of range: use [0, 1)")
        if self.lr_decay not in LR_DECAYS:
            raise FaceganError(f"unknown --lr-decay '{self.lr_decay}': use one of {', '.join(LR_DECAYS)}")
        if self.lr_decay_start < 0 or self.lr_decay_every < 0 or not 0.0 < self.lr_decay_gamma <= 1.0:
            raise FaceganError("--lr-decay-start and --lr-decay-every must be 0 or more, --lr-decay-gamma in (0, 1]")
        if self.lr_decay == "step" and self.lr_decay_every < 1:
            raise FaceganError("--lr-decay step needs --lr-decay-every N (steps between decays)")
        if self.lr_decay not in ("linear", "cosine") and self.lr_decay_start:
            raise FaceganError("--lr-decay-start applies to --lr-decay linear or cosine: drop it or pick one of those")
        odd = [p for p in self.diffaug_policies if p not in DIFFAUG_POLICIES]
        if odd:
            raise FaceganError(f"unknown --diffaug '{odd[0]}': use a comma list from {', '.join(DIFFAUG_POLICIES)}")
        unknown = [name for name in self.augmentations if name not in AUGMENTATIONS]
        if unknown:
            raise FaceganError(f"unknown --augment '{unknown[0]}': use a comma list from {', '.join(AUGMENTATIONS)}")
        if "flip" in self.augmentations and not self.data.flip:
            raise FaceganError("--augment flip and --no-flip contradict each other: drop one")

    @property
    def diffaug_policies(self) -> list[str]:
        return [name.strip() for name in self.diffaug.split(",") if name.strip()]

    @property
    def augmentations(self) -> list[str]:
        """--augment as a list, without empty entries."""
        return [name.strip() for name in self.augment.split(",") if name.strip()]

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
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FaceganError(f"config file {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


# What may change when a run is resumed: the schedule and where it runs. Everything else shapes
# the model, the data or the optimisation, and changing it would not be the same run.
RESUMABLE_KEYS = {"epochs", "max_steps", "device", "log_every", "keep_checkpoints", "checkpoint_every",
                  "checkpoint_minutes", "compile", "eval_every",
                  "eval_metrics", "eval_samples", "inception_weights", "tensorboard", "sample_every",
                  "save_every_epochs"}


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
            flag = "--" + dotted.split(".")[-1].replace("_", "-")
            raise FaceganError(f"cannot resume with {flag} {value}: the checkpoint was trained with {current}; "
                               f"drop {flag}, or start a new run without --resume")
    return TrainConfig.from_dict(apply_overrides(saved_raw, overrides))
