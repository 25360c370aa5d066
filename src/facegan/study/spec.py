"""A study spec: TOML with [base] (options every trial shares) and either [grid] (one factor at a time
around [base], or every combination with mode = "product") or [random] (trials sampled from
distributions). Every option is a `facegan train` option by its long name or its config key, dashes or underscores,
and `preset` names a preset.
Everything is checked, and every trial's config built, before any training starts."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import PRESETS, TrainConfig, resolve, study_option_keys
from ..errors import FaceganError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

_DISTRIBUTION = re.compile(r"^\s*(loguniform|uniform|choice|randint)\s*\((.*)\)\s*$")


def option_keys(name: str) -> str:
    """A `facegan train` option name ('conv-dim', 'lr', 'ema', 'num_images') -> the dotted config key
    (or shorthand) it sets, from the declarations in config.py."""
    return study_option_keys()[name.replace("-", "_")]


_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


def folder_name(trial_name: str) -> str:
    """The trial's folder under the study's: its name where that is a plain file name (lr=0.001), else
    a slug of it plus a hash of the whole name, so that no spec value (a '/../victim' path, a
    separator, a dot folder) can name a folder outside the study or clash with another trial's."""
    slug = _UNSAFE.sub("_", trial_name).lstrip(".")[:80]
    if slug == trial_name and trial_name:
        return trial_name
    return f"{slug or 'trial'}-{hashlib.sha256(trial_name.encode()).hexdigest()[:10]}"


def _value_text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass
class Trial:
    name: str                   # its folder under the study's output, e.g. "lr=0.001" or "trial-003"
    settings: dict              # option -> value, on top of [base]
    factor: str | None = None   # one-factor grid: the option this trial varies
    view_of: str | None = None  # epochs factor: the trial whose run this one reads (no training of its own)
    epochs_view: int = 0        # that run's epoch to read


@dataclass
class StudySpec:
    path: Path
    base: dict
    mode: str                   # "grid" (one factor at a time), "product" or "random"
    factors: dict               # grid: option -> values; random: option -> distribution text
    trials: list[Trial] = field(default_factory=list)
    random_seed: int = 0

    def config(self, trial: Trial) -> TrainConfig:
        """The TrainConfig a trial trains with."""
        return build_config({**self.base, **trial.settings}, self.path)

    @property
    def trained(self) -> list[Trial]:
        """Trials that train (epochs views read another trial's run)."""
        return [t for t in self.trials if t.view_of is None]


def _fail(path, where: str, problem: str) -> FaceganError:
    return FaceganError(f"study spec {Path(path).name}: {where}: {problem}")


def build_config(options: dict, path=".") -> TrainConfig:
    """A trial's config: through config.resolve, as `facegan train` with the same options would."""
    overrides, preset = {}, options.get("preset")
    for name, value in options.items():
        if name == "preset":
            continue
        try:
            overrides[option_keys(name)] = value
        except KeyError:
            raise _fail(path, name, "not a facegan train option (see 'facegan train --help'; dashes or "
                                    "underscores, e.g. conv_dim)") from None
    if preset is not None and not isinstance(preset, str):
        raise _fail(path, "preset", f"must be a preset's name ({', '.join(PRESETS)}), not {preset!r}")
    try:
        return resolve(overrides, preset=preset)[0]
    except FaceganError as exc:
        raise FaceganError(f"study spec {Path(path).name}: {exc}") from None


MAX_SAMPLED = 1e15     # a sampled value beyond this fits no option (and overflows numpy's int64 draws)
MAX_TRIALS = 10_000    # a grid or search larger than this is a typo, not a study: refused with its count


def _distribution(text, name: str, path):
    """'loguniform(1e-4, 1e-3)' -> a function rng -> value."""
    match = _DISTRIBUTION.match(text) if isinstance(text, str) else None
    try:
        args = ast.literal_eval(f"({match.group(2)},)") if match else None
    except (ValueError, SyntaxError):
        args = None
    if not match or not args:
        raise _fail(path, f"[random] {name}", f"cannot read {text!r}: use loguniform(a, b), uniform(a, b), "
                                              f"randint(a, b) or choice(x, y, ...)")
    kind = match.group(1)
    if kind == "choice":
        return lambda rng: args[int(rng.integers(len(args)))]
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args) \
            or not all(math.isfinite(a) and abs(a) <= MAX_SAMPLED for a in args) or not args[0] < args[1] \
            or (kind == "randint" and not all(isinstance(a, int) for a in args)) \
            or (kind == "loguniform" and args[0] <= 0):
        raise _fail(path, f"[random] {name}", f"{kind} needs two {'whole ' if kind == 'randint' else ''}numbers "
                                              f"low < high{' above 0' if kind == 'loguniform' else ''}, each "
                                              f"within +-{MAX_SAMPLED:.0e}, not {text!r}")
    low, high = args
    if kind == "randint":
        return lambda rng: int(rng.integers(low, high + 1))
    if kind == "loguniform":
        return lambda rng: float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return lambda rng: float(rng.uniform(low, high))


def load_spec(path) -> StudySpec:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise FaceganError(f"study spec {path} does not exist: write one with 'facegan study init {path}'") from None
    except IsADirectoryError:
        raise FaceganError(f"study spec {path} is a folder: pass the study's .toml file") from None
    except UnicodeDecodeError as exc:
        raise _fail(path, "text", f"byte {exc.start} is not UTF-8: save the spec as UTF-8 text") from None
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise _fail(path, "TOML", str(exc) or "nested too deeply") from None
    for section in ("base", "grid", "random"):
        if section in raw and not isinstance(raw[section], dict):
            raise _fail(path, f"[{section}]", f"must be a section of options ([{section}] on its own line), "
                                              f"not {raw[section]!r}")
    unknown = sorted(set(raw) - {"base", "grid", "random"})
    if unknown:
        raise _fail(path, f"[{unknown[0]}]", "unknown section: use [base] and one of [grid] or [random]")
    if "grid" in raw and "random" in raw:
        raise _fail(path, "[grid] and [random]", "a study is a grid or a random search, not both: keep one")
    if "grid" not in raw and "random" not in raw:
        raise _fail(path, "[grid]", "missing: add [grid] (or [random]) with the options to vary")
    base = dict(raw.get("base", {}))
    build_config(base, path)  # the base alone must be a valid config
    if "grid" in raw:
        spec = _grid(path, base, dict(raw["grid"]))
    else:
        spec = _random(path, base, dict(raw["random"]))
    first_with: dict[str, str] = {}  # config -> the first trial that trains it
    for trial in spec.trained:
        try:
            config = spec.config(trial)
        except FaceganError as exc:
            raise FaceganError(f"{exc} (trial {trial.name})") from None
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key in first_with:  # e.g. batch_size=64 when [base] already says 64: train it once
            trial.view_of, trial.epochs_view = first_with[key], config.epochs
        else:
            first_with[key] = trial.name
    by_name = {t.name: t for t in spec.trials}
    for trial in spec.trials:  # a view of a view reads the run that trains
        while trial.view_of and by_name[trial.view_of].view_of:
            trial.view_of = by_name[trial.view_of].view_of
    return spec


def _grid(path, base: dict, grid: dict) -> StudySpec:
    mode = grid.pop("mode", "one-factor")
    if mode not in ("one-factor", "product"):
        raise _fail(path, "[grid] mode", f"'{mode}' is not a mode: use \"one-factor\" (default) or \"product\"")
    if not grid:
        raise _fail(path, "[grid]", "empty: list at least one option with its values, e.g. lr = [1e-3, 1e-4]")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise _fail(path, f"[grid] {name}", f"must be a non-empty list of values, e.g. {name} = [1, 2], "
                                                f"not {values!r}")
    count = math.prod(len(v) for v in grid.values()) if mode == "product" else sum(len(v) for v in grid.values())
    if count > MAX_TRIALS:
        raise _fail(path, "[grid]", f"{count:,} trials is more than {MAX_TRIALS:,}: list fewer values (or use "
                                    f"[random] with trials = N)")
    spec = StudySpec(path, base, "grid" if mode == "one-factor" else "product", grid)
    if mode == "product":
        import itertools
        names = list(grid)
        for combo in itertools.product(*(grid[n] for n in names)):
            settings = dict(zip(names, combo))
            spec.trials.append(Trial(",".join(f"{n}={_value_text(v)}" for n, v in settings.items()), settings))
        return spec
    for name, values in grid.items():
        if name.replace("-", "_") == "epochs":
            # One run to the largest value; the smaller ones are read from its per-epoch outputs.
            if not all(isinstance(v, int) and v >= 1 for v in values):
                raise _fail(path, "[grid] epochs", f"must be whole numbers >= 1, not {values!r}")
            longest = f"{name}={max(values)}"
            for value in sorted(set(values)):
                view = None if value == max(values) else longest
                spec.trials.append(Trial(f"{name}={value}", {name: max(values) if view else value}, name,
                                         view_of=view, epochs_view=value))
            continue
        for value in values:
            spec.trials.append(Trial(f"{name}={_value_text(value)}", {name: value}, name))
    return spec


def _random(path, base: dict, section: dict) -> StudySpec:
    trials = section.pop("trials", None)
    seed = section.pop("seed", 0)
    if not isinstance(trials, int) or isinstance(trials, bool) or not 1 <= trials <= MAX_TRIALS:
        raise _fail(path, "[random] trials", f"must be a whole number 1 to {MAX_TRIALS:,}, not {trials!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63:
        raise _fail(path, "[random] seed", f"must be a whole number 0 or more, not {seed!r}")
    if not section:
        raise _fail(path, "[random]", "no options to sample: add e.g. lr = \"loguniform(1e-4, 1e-3)\"")
    samplers = {name: _distribution(text, name, path) for name, text in section.items()}
    rng = np.random.default_rng(seed)
    spec = StudySpec(path, base, "random", section, random_seed=seed)
    for i in range(trials):
        spec.trials.append(Trial(f"trial-{i:03d}", {name: sample(rng) for name, sample in samplers.items()}))
    return spec


EXAMPLE = '''\
# A facegan study. Run it:   facegan study run THIS_FILE --out studies/example [--jobs 2]
# Then read it:              facegan study report studies/example   (report.html, report.md)
# Options are `facegan train` options by their long names (dashes or underscores).
# This is the write-ups' study (epochs, layers, batch size, conv_dim, learning rate, one factor at a
# time) scaled to about an hour on 2 CPU cores: 11 trained trials of 5,000 built-in faces x 10 epochs
# (estimated from the measured study in docs/findings.md: ~2 min a trial at conv_dim 32, more at 64 and 128).

[base]              # what every trial shares
image_size = 32
num_images = 5000
epochs = 10
conv_dim = 32
batch_size = 64
eval_samples = 500  # images per evaluation (SWD and MS-SSIM every epoch, for the report)

[grid]              # one factor at a time around [base]
epochs = [1, 5, 10]           # trains once, to 10; epochs 1 and 5 are read from that run
num_layers = [3, 4]
batch_size = [64, 128, 256, 512]
conv_dim = [32, 64, 128]
lr = [1e-2, 1e-3, 1e-4]
# mode = "product"            # every combination instead of one factor at a time

# [random]          # instead of [grid]: a random search
# trials = 20
# seed = 0
# lr = "loguniform(1e-4, 1e-3)"
# beta1 = "uniform(0.1, 0.9)"
# conv_dim = "choice(32, 64)"
'''


def write_example(path) -> Path:
    """Write the commented example spec to `path`, never over an existing file."""
    from ..fileio import write_text_atomic

    path = Path(path)
    if path.exists():
        raise FaceganError(f"{path} exists already: pick another name or delete it")
    return write_text_atomic(path, EXAMPLE)
