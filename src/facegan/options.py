"""How a configuration option is declared: once, on its dataclass field, with everything that any
part of facegan needs to know about it (as EDM's train.py declares each click option once).

    lr_d: float = option(2e-4, "discriminator learning rate", "optimiser", low=0, low_open=True)

The declaration holds the default, the help text, the --help group, the range or choices, whether it
may change on resume, and the value that reproduces checkpoints made before the option existed.
From it are generated: `facegan train`'s argparse flags (cli.py), the range and choice checks of the
config (validate_declared, below), the resume check, the defaults for old checkpoints, old names,
and the option names a study spec accepts (config.py). A new option is one field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import FaceganError

MAX_NUMBER = 10 ** 15  # no whole-number option means anything beyond this (torch's and numpy's int64 end at 9.2e18)
NOT_OLD = object()  # `before`: the option is as old as checkpoints, nothing to fill in


@dataclass(frozen=True)
class Option:
    help: str                    # one line for --help; the default is appended there
    group: str                   # --help section: data, model, loss, optimiser, schedule, output, evaluation, system
    flag: str = ""               # the long flag; "" = --field-name
    metavar: str | None = None
    choices: tuple = ()          # the only values allowed
    items: tuple = ()            # a comma list: every item must be one of these
    low: float | None = None     # range of a number, closed unless low_open / high_open
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    resumable: bool = False      # may change when a run is resumed (schedule, logging, where it runs)
    before: Any = NOT_OLD        # value in checkpoints made before the option existed
    aliases: tuple = ()          # old names that keep working: flags and config keys (without dashes)
    in_studies: bool = True      # a study spec may set it (False: the study itself decides, e.g. device)
    key: str = ""                # dotted config key, filled in by options_of()
    kind: str = ""               # the field's type as written: int, float, str, bool, bool | None

    @property
    def long_flag(self) -> str:
        return self.flag or "--" + self.key.rsplit(".", 1)[-1].replace("_", "-")

    @property
    def names(self) -> tuple[str, ...]:
        """What a study spec may call it: the field's name, the flag's name and any old name."""
        field_name = self.key.rsplit(".", 1)[-1]
        return tuple(dict.fromkeys((field_name, self.long_flag[2:].replace("-", "_"), *self.aliases)))

    def range_text(self) -> str:
        if self.low is not None and self.high is not None:
            if self.kind == "int":
                return f"{self.low} to {self.high}"
            return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"a value above {self.low:g}" if self.low_open else f"{self.low:g} or more"
        return f"{self.high:g} or less"

    def problem(self, value) -> str | None:
        """Why `value` is not allowed, or None: the check argparse and the config share."""
        if self.choices and value not in self.choices:
            return f"unknown {self.long_flag} '{value}': use one of {', '.join(map(str, self.choices))}"
        if self.items and isinstance(value, str):
            odd = [item for item in split_list(value) if item not in self.items]
            if odd:
                return f"unknown {self.long_flag} '{odd[0]}': use a comma list from {', '.join(self.items)}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                return f"{self.long_flag} {value} must be a finite number"
            if isinstance(value, int) and abs(value) > MAX_NUMBER:  # a 400-digit integer overflows torch, numpy
                digits = str(value)
                shown = digits if len(digits) < 20 else f"{digits[:6]}... ({len(digits)} digits)"
                return f"{self.long_flag} {shown} is too large: use {self.range_text()}, at most {MAX_NUMBER:.0e}"
            low_fails = self.low is not None and (value <= self.low if self.low_open else value < self.low)
            high_fails = self.high is not None and (value >= self.high if self.high_open else value > self.high)
            if low_fails or high_fails:
                shown = f"{value:g}" if isinstance(value, float) else value
                return f"{self.long_flag} {shown} is out of range: use {self.range_text()}"
        return None

    def parse(self, text: str):
        """argparse's type= for this option: the text as the field's type, range-checked."""
        number = {"int": int, "float": float}.get(self.kind)
        return number_type(number, check=self.problem)(text) if number else text

    def add_to(self, parser, default_value, dest: str, default=None) -> None:
        """This option as an argparse flag (old names too), its default value shown in the help."""
        import argparse

        flags = (self.long_flag, *(f"--{alias.replace('_', '-')}" for alias in self.aliases))
        kwargs = dict(dest=dest, default=default, help=f"{self.help} (default: {shown(default_value)})")
        if self.kind.startswith("bool"):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif self.choices:
            kwargs.update(type=self.parse, choices=self.choices)
        else:
            kwargs.update(type=self.parse, metavar=self.metavar or self.long_flag[2:].upper().replace("-", "_"))
        parser.add_argument(*flags, **kwargs)


def number_type(kind=int, low: float | None = None, high: float | None = None, note: str = "", check=None):
    """argparse type=: text -> a `kind` number in [low, high] (or passing `check`, which returns a
    problem or None), else argparse's one-line error saying what is wrong."""
    import argparse

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"'{text}' is not {'a whole number' if kind is int else 'a number'}") from None
        problem = check(value) if check else None
        if (low is not None and value < low) or (high is not None and value > high):
            problem = (f"{value} is out of range: use {low:g} to {high:g}{note}" if high is not None
                       else f"{value} must be at least {low}" if low else f"{value} must be 0 or more")
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value
    return parse


def shown(value) -> str:
    """A default as --help says it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "auto" if value is None else "none" if value == "" else str(value)


def option(default, help: str, group: str, **declared):
    """A dataclass field with its option declaration (see the module docstring)."""
    return field(default=default, metadata={"option": Option(help, group, **declared)})


def split_list(text: str) -> list[str]:
    """'color, translation' -> ['color', 'translation'], without empty entries."""
    return [name.strip() for name in text.split(",") if name.strip()]


def options_of(kind, prefix: str = "") -> list[Option]:
    """The declared options of dataclass `kind`, nested sections included, with their dotted keys."""
    found = []
    for f in dataclasses.fields(kind):
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            found += options_of(f.default_factory, f"{prefix}{f.name}.")
        elif "option" in f.metadata:
            # the annotation as written: "int", "bool | None" (a string under postponed annotations)
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            found.append(dataclasses.replace(f.metadata["option"], key=prefix + f.name, kind=kind))
    return found


def validate_declared(config) -> None:
    """Every declared range and choice of `config`'s own fields (sections check themselves)."""
    for declared in options_of(type(config)):
        if "." in declared.key:
            continue
        problem = declared.problem(getattr(config, declared.key))
        if problem:
            raise FaceganError(problem)
