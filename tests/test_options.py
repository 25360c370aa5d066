"""Each option is declared once (config.py): the flags, the resume rule, the old-checkpoint values and
the names a study accepts all come from that declaration, and one resolver applies recipes for
`facegan train`, study trials and the benchmarks alike."""

import dataclasses

import pytest

from facegan import checkpoints
from facegan.cli import build_parser, resolve_train_args
from facegan.config import (
    OPTIONS,
    RENAMED_KEYS,
    RESUMABLE_KEYS,
    ModelConfig,
    TrainConfig,
    getattr_dotted,
    resolve,
    resume_config,
    study_option_keys,
)
from facegan.errors import FaceganError
from facegan.options import option, options_of
from facegan.study.spec import build_config


def _train_parser():
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices["train"]


def test_every_declared_option_is_a_train_flag_with_its_default_in_the_help():
    flags = {flag: action for action in _train_parser()._actions for flag in action.option_strings}
    for declared in OPTIONS:
        action = flags[declared.long_flag]
        assert action.dest == declared.key and action.default is None  # None = "not given"
        assert declared.help in action.help and "(default: " in action.help
    assert "--label-smoothing" in flags and flags["--label-smoothing"].dest == "real_label"  # an old name


def test_declarations_generate_the_resume_rule_old_names_and_study_keys():
    assert {"epochs", "max_steps", "device", "eval_every", "tensorboard"} <= RESUMABLE_KEYS
    assert not {"loss", "model.conv_dim", "batch_size", "seed"} & RESUMABLE_KEYS
    assert RENAMED_KEYS == {"label_smoothing": "real_label"}
    keys = study_option_keys()
    assert keys["conv_dim"] == "model.conv_dim" and keys["data"] == keys["source"] == "data.source"
    assert keys["ema"] == keys["ema_kimg"] == "ema_kimg" and keys["lr"] == "lr"
    assert "device" not in keys and "compile" not in keys  # the study decides those
    with pytest.raises(FaceganError, match="cannot resume with --conv-dim 64"):
        resume_config(TrainConfig(), {"model.conv_dim": 64})
    assert resume_config(TrainConfig(), {"epochs": 3}).epochs == 3


def test_a_new_field_is_a_complete_option():
    @dataclasses.dataclass(frozen=True)
    class Extra:
        width: int = option(4, "how wide", "model", low=1, resumable=True, before=2)

    (declared,) = options_of(Extra)
    assert (declared.key, declared.kind, declared.long_flag, declared.names) == ("width", "int", "--width", ("width",))
    assert declared.problem(0) == "--width 0 is out of range: use 1 or more" and declared.problem(3) is None
    assert declared.resumable and declared.before == 2


def test_configs_are_frozen_and_checked_when_made():
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3
    assert dataclasses.replace(cfg, epochs=3).epochs == 3
    for bad, message in (({"lr_d": 0.0}, "--lr-d 0 is out of range"), ({"ema_kimg": float("nan")}, "finite"),
                         ({"loss": "wgan"}, "unknown --loss 'wgan'"), ({"diffaug": "color,blur"}, "'blur'")):
        with pytest.raises(FaceganError, match=message):
            dataclasses.replace(cfg, **bad)
    with pytest.raises(FaceganError, match="--dropout 1 is out of range: use \\[0, 1\\)"):
        ModelConfig(dropout=1.0)


@pytest.mark.parametrize("cli_args,spec_options", [
    (["--arch", "image-noise", "--image-size", "32"], {"arch": "image-noise", "image_size": 32}),
    (["--preset", "dcgan", "--lr", "1e-3"], {"preset": "dcgan", "lr": 1e-3}),
    (["--preset", "dcgan", "--batch-size", "32", "--no-flip"], {"preset": "dcgan", "batch-size": 32, "flip": False}),
    (["--arch", "image-noise", "--lr-d", "3e-4"], {"arch": "image-noise", "lr_d": 3e-4}),
])
def test_a_study_trial_resolves_to_the_config_facegan_train_would_use(cli_args, spec_options, capsys):
    args = build_parser().parse_args(["train", *cli_args])
    from_cli, checkpoint, _ = resolve_train_args(args)
    assert checkpoint is None
    assert build_config(spec_options).to_dict() == from_cli.to_dict()


def test_recipes_sit_under_what_the_user_gives():
    cfg, recipe = resolve({"model.arch": "image-noise"})
    assert (cfg.lr_d, cfg.instance_noise_steps) == (1e-4, 6240) and recipe == {"lr_d": 1e-4,
                                                                            "instance_noise_steps": 6240}
    cfg, _ = resolve({"model.arch": "image-noise", "lr_d": 5e-4})
    assert cfg.lr_d == 5e-4
    cfg, _ = resolve({"loss": "lsgan"}, preset="dcgan")
    assert (cfg.loss, cfg.batch_size, cfg.model.spectral_norm, cfg.ema_kimg) == ("lsgan", 128, False, 0.0)
    cfg, _ = resolve({"lr": 1e-3, "lr_g": 5e-4})
    assert (cfg.lr_d, cfg.lr_g) == (1e-3, 5e-4)  # the specific option wins over the shorthand
    with pytest.raises(FaceganError, match="unknown preset 'dcgan2'"):
        resolve({}, preset="dcgan2")


def test_old_checkpoints_get_the_values_they_were_trained_with():
    raw = TrainConfig().to_dict()
    stale = {key: value for key, value in raw.items() if key not in ("ema_kimg", "r1_gamma", "diffaug")}
    stale["model"] = {k: v for k, v in raw["model"].items() if k != "spectral_norm"}
    old = checkpoints.config_of({"config": stale})
    assert (old.ema_kimg, old.r1_gamma, old.diffaug, old.model.spectral_norm) == (0.0, 0.0, "", False)
    assert getattr_dotted(old, "model.conv_dim") == 32
