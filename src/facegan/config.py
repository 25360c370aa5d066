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
SUPPORTED_IMAGE_SIZES = (32, 64, 128)
ARCHS = ("dcgan", "mlp")          # dcgan, or the fully connected baseline
D_HEADS = ("conv", "linear")      # all-conv head (Radford et al.) or flatten -> fc (Udacity)
AMP_MODES = ("auto", "bf16", "off")
# Old configuration keys still read from config files and checkpoints -> their current names.
RENAMED_KEYS = {"label_smoothing": "real_label"}


@dataclass
class ModelConfig:
    image_size: int = 32    # side of the square images, one of SUPPORTED_IMAGE_SIZES
    z_size: int = 100       # length of the latent vector z (the DCGAN paper's 100)
    conv_dim: int = 32      # channels of D's first conv and G's last hidden layer; doubles per layer (Udacity: 32)
    num_layers: int = 0     # strided (de)conv layers; 0 = log2(image_size) - 2, i.e. down to 4x4
    d_head: str = "conv"    # "conv": all-conv head as in Radford et al.; "linear": flatten -> fc (Udacity)
    dropout: float = 0.0    # dropout after each D activation; 0 = off, as in the paper
    batchnorm: bool = True  # BatchNorm in G and D as in the paper; off makes each image's output independent
                            # of its batch (exact multi-process equivalence tests, ablations)
    arch: str = "dcgan"     # "dcgan", or "mlp": the fully connected GAN baseline (Goodfellow et al. 2014)

    @property
    def layers(self) -> int:
        """The number of strided layers actually used (resolves the 0 default)."""
        return self.num_layers or int(math.log2(self.image_size)) - 2

    @property
    def final_size(self) -> int:
        """Side of D's last feature map (and G's first), e.g. 4 for 64x64 with 4 layers."""
        return self.image_size >> self.layers

    def __post_init__(self):
        self.validate()  # a config is checked where it is made, so nothing downstream re-checks it

    def validate(self) -> None:
        if self.image_size not in SUPPORTED_IMAGE_SIZES:
            raise FaceganError(f"image size {self.image_size} is not supported: use one of "
                               f"{', '.join(map(str, SUPPORTED_IMAGE_SIZES))}")
        most = int(math.log2(self.image_size)) - 1  # stop at 2x2: a 1x1 map leaves nothing for the head
        if not 1 <= self.layers <= most:
            raise FaceganError(f"--num-layers {self.num_layers} does not fit {self.image_size}x{self.image_size} "
                               f"images: use 1 to {most} (0 picks {most - 1})")
        if self.conv_dim < 1 or self.z_size < 1:
            raise FaceganError("--conv-dim and --z-size must be positive integers")
        if self.arch not in ARCHS:
            raise FaceganError(f"unknown architecture '{self.arch}': use {' or '.join(ARCHS)}")
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
    max_pixels: int = 50_000_000  # images with more pixels are skipped and counted, not decoded (a 12000x12000
                                  # PNG is 420 KB on disk and 1.4 GB decoded); CelebA's are 39k pixels


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: str = "bce"            # bce (non-saturating), lsgan (least squares) or hinge
    real_label: float = 0.9      # D's target for real images: < 1 is one-sided label smoothing; 1.0 = off
    lr_d: float = 2e-4           # discriminator Adam learning rate (DCGAN paper)
    lr_g: float = 2e-4           # generator Adam learning rate; differ from lr_d for TTUR
    instance_noise: float = 0.5  # std of Gaussian noise on D's real and fake inputs at step 0 (pixels in [-1, 1]); 0 = off
    instance_noise_steps: int = 500  # steps over which that std falls linearly to 0 (README: "Leaving mode collapse")
    beta1: float = 0.5           # Adam beta1; the paper's 0.5 steadies GAN training vs 0.9
    beta2: float = 0.999         # Adam beta2
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
                  "eval_metrics", "eval_samples", "inception_weights", "tensorboard"}


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
