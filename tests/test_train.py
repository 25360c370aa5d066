"""Smoke runs of the training loop on tiny generated data: learning, exact resume, Ctrl-C."""

import json

import numpy as np
import pytest
import torch

from facegan import checkpoints
from facegan.config import DataConfig, ModelConfig, TrainConfig, resume_config
from facegan.data.prepare import PreparedData
from facegan.generate import load_generator
from facegan.train import Trainer, train


def tiny_config(**kw) -> TrainConfig:
    base = dict(model=ModelConfig(conv_dim=8, z_size=16), data=DataConfig(num_images=96), batch_size=16,
                epochs=2, log_every=2, num_samples=4)
    base.update(kw)
    return TrainConfig(**base)


def test_training_moves_samples_toward_the_data(tmp_path):
    # Easy data: orange with pixel noise (identical images would give D's BatchNorm zero variance).
    # G starts near grey (mean ~0 in [-1, 1]). A high lr lets 96 steps move the colour clearly.
    target = np.array([230, 120, 30])
    noise = np.random.default_rng(0).normal(0, 25, (256, 32, 32, 3))
    images = np.clip(target + noise, 0, 255).astype(np.uint8)
    prepared = PreparedData(images, {}, tmp_path / "x.u8", reused=False)
    cfg = tiny_config(epochs=6, data=DataConfig(flip=False), lr_d=2e-3, lr_g=2e-3)
    trainer = Trainer(cfg, tmp_path / "run", prepared, progress=False, log=lambda *a: None)
    target_tanh = torch.tensor(target / 127.5 - 1.0, dtype=torch.float32)

    def colour_error():
        trainer.generator.eval()
        with torch.no_grad():
            mean = trainer.generator(trainer.fixed_z).mean(dim=(0, 2, 3))
        trainer.generator.train()
        return (mean - target_tanh).abs().mean().item()

    before = colour_error()
    trainer.run()
    after = colour_error()
    assert before > 0.4
    assert after < before / 2, (before, after)


def _weights(run_dir):
    state = checkpoints.load(run_dir / "checkpoints" / "last.pt")
    return state


def _assert_same_state(a, b):
    for key in ("generator", "discriminator"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs"
    for key in ("opt_g", "opt_d"):
        for index, slots in a[key]["state"].items():
            for slot, tensor in slots.items():
                assert torch.equal(tensor, b[key]["state"][index][slot]), f"{key} {index} {slot} differs"
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]


def test_two_epochs_equal_one_plus_resume_plus_one_bit_for_bit(tmp_path):
    quiet = dict(progress=False, log=lambda *a: None)
    straight = train(tiny_config(), out=tmp_path / "a", **quiet)
    half = train(tiny_config(epochs=1), out=tmp_path / "b", **quiet)
    last = half / "checkpoints" / "last.pt"
    resumed = train(resume_config(checkpoints.config_of(checkpoints.load(last)), {"epochs": 2}),
                    resume_from=last, **quiet)
    assert resumed == half
    _assert_same_state(_weights(straight), _weights(resumed))


def test_mid_epoch_stop_and_resume_with_dropout_is_exact(tmp_path):
    # Mid-epoch stop exercises the data position; dropout exercises the global RNG state.
    quiet = dict(progress=False, log=lambda *a: None)
    cfg = tiny_config(model=ModelConfig(conv_dim=8, z_size=16, dropout=0.3))
    straight = train(cfg, out=tmp_path / "a", **quiet)
    stopped = train(tiny_config(model=ModelConfig(conv_dim=8, z_size=16, dropout=0.3), max_steps=5),
                    out=tmp_path / "b", **quiet)
    last = stopped / "checkpoints" / "last.pt"
    assert checkpoints.load(last)["step_in_epoch"] == 5
    train(resume_config(checkpoints.config_of(checkpoints.load(last)), {"max_steps": 0}), resume_from=last, **quiet)
    _assert_same_state(_weights(straight), _weights(stopped))


def test_long_runs_of_tiny_epochs_save_every_few_epochs_and_an_early_stop_still_saves(tmp_path):
    quiet = dict(progress=False, log=lambda *a: None)
    # 96 faces / batch 16 = 6 steps an epoch; 25 epochs: auto saves every ceil(200/6) = 34 -> only the last.
    run = train(tiny_config(epochs=25), out=tmp_path / "auto", **quiet)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch-0025.png"]
    run = train(tiny_config(epochs=25, save_every_epochs=10), out=tmp_path / "ten", **quiet)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch-0010.png", "epoch-0020.png", "epoch-0025.png"]
    # A stop at an epoch end that was not saved (max_steps 12 = the end of epoch 2) saves it as that epoch.
    run = train(tiny_config(epochs=25, max_steps=12), out=tmp_path / "stop", **quiet)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch-0002.png"]
    state = checkpoints.load(run / "checkpoints" / "epoch-0002.pt")
    assert (state["step"], state["epoch"], state["step_in_epoch"]) == (12, 2, 0)


def test_run_folder_contents_and_bounded_checkpoints(tmp_path):
    run = train(tiny_config(epochs=4, keep_checkpoints=2), out=tmp_path, progress=False, log=lambda *a: None)
    assert (run / "config.json").is_file() and (run / "reals.png").is_file() and (run / "losses.png").is_file()
    assert sorted(p.name for p in (run / "samples").iterdir()) == [f"epoch-000{i}.png" for i in range(1, 5)]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-0003.pt", "epoch-0004.pt", "last.pt"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum("loss_d" in r for r in rows) == 12  # 24 steps, one line every 2
    assert [r["step"] for r in rows if "samples_msssim" in r] == [6, 12, 18, 24]  # diversity check per epoch
    generator, cfg = load_generator(run / "generator.pt")
    assert not generator.training and cfg.epochs == 4


def test_checkpoint_loads_with_weights_only_and_refuses_code(tmp_path):
    import pickle

    run = train(tiny_config(epochs=1), out=tmp_path, progress=False, log=lambda *a: None)
    torch.load(run / "checkpoints" / "last.pt", weights_only=True)  # must not raise

    class Evil:
        def __reduce__(self):
            return (print, ("this ran code",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": checkpoints.TRAINING_STATE, "x": Evil()}, f, protocol=2)
    from facegan.errors import FaceganError
    with pytest.raises(FaceganError, match="refusing to load"):
        checkpoints.load(tmp_path / "evil.pt")


def test_a_save_that_crashes_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    run = train(tiny_config(epochs=1), out=tmp_path, progress=False, log=lambda *a: None)
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()

    def crash(obj, f):
        f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.atomic_save({"x": 1}, last)
    assert last.read_bytes() == before
    assert [p.name for p in last.parent.iterdir() if p.name.startswith(".")] == []


def test_instance_noise_reaches_every_discriminator_input_and_fades(tmp_path):
    from torch import nn

    from facegan.losses import make_loss
    from facegan.step import DInput, StepModules, train_step

    seen = []

    class RecordingD(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            seen.append(x.detach().clone())
            return (x.flatten(1).mean(1) * self.w)

    generator = nn.Sequential(nn.Linear(4, 12), nn.Unflatten(1, (3, 2, 2)))
    d = RecordingD()
    real, z = torch.zeros(2, 3, 2, 2), torch.randn(2, 4)
    real_noise, fake_noise = torch.full_like(real, 0.5), torch.full_like(real, -0.25)
    opt = lambda m: torch.optim.SGD(m.parameters(), lr=0.0)  # noqa: E731  (weights stay put: inputs are comparable)
    train_step(StepModules(generator, d, opt(generator), opt(d)), make_loss("bce"), real, z,
               DInput(real_noise=real_noise, fake_noise=fake_noise))
    fake = generator(z).detach()
    assert torch.equal(seen[0], real + 0.5)              # D step, reals
    assert torch.allclose(seen[1], fake - 0.25)          # D step, fakes
    assert torch.allclose(seen[2], fake - 0.25)          # G step: the same noisy view of the fakes

    from facegan.augment import instance_noise, instance_noise_std

    assert [instance_noise_std(0.3, 10, step) for step in (0, 5, 10, 20)] == [0.3, 0.15, 0.0, 0.0]
    assert instance_noise_std(0.3, 0, 0) == 0.0  # no fade steps: off
    batch = torch.zeros(64, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    for_reals, for_fakes = instance_noise(batch, 0.3, torch.Generator().manual_seed(0))
    assert for_reals.shape == batch.shape and for_reals.is_contiguous(memory_format=torch.channels_last)
    assert abs(for_reals.std().item() - 0.3) < 0.01 and not torch.equal(for_reals, for_fakes)
    # two processes slice the global draw: together they hold exactly what one process draws for 2B
    whole = instance_noise(torch.zeros(4, 3, 2, 2), 0.3, torch.Generator().manual_seed(1))
    halves = [instance_noise(torch.zeros(2, 3, 2, 2), 0.3, torch.Generator().manual_seed(1), rank, 2)
              for rank in (0, 1)]
    assert torch.equal(whole[0][0::2], halves[0][0]) and torch.equal(whole[1][1::2], halves[1][1])


def test_checkpoints_from_before_an_option_existed_resume_without_it():
    raw = TrainConfig().to_dict()
    del raw["instance_noise"], raw["instance_noise_steps"], raw["model"]["spectral_norm"], raw["ema_kimg"]
    raw["label_smoothing"] = raw.pop("real_label")  # and with the old name of real_label
    old = checkpoints.config_of({"config": raw})
    assert old.instance_noise == 0.0 and old.real_label == 0.9
    assert old.model.spectral_norm is False and old.ema_kimg == 0.0  # their weights have no spectral norm
    assert TrainConfig.from_dict({"epochs": 3}).instance_noise == 0.5  # a partial config file gets the default


def test_a_diverging_run_stops_with_a_clear_error_and_keeps_good_checkpoints(tmp_path, monkeypatch):
    import facegan.train as training
    real_step, calls = training.train_step, []

    def step_that_diverges_at_4(*args, **kwargs):
        calls.append(1)
        return real_step(*args, **kwargs) if len(calls) < 4 else torch.full((4,), float("nan"))

    monkeypatch.setattr(training, "train_step", step_that_diverges_at_4)
    with pytest.raises(training.TrainingDiverged, match="diverged at step 4"):
        train(tiny_config(epochs=1, checkpoint_every=1), out=tmp_path, progress=False, log=lambda *a: None)
    (run,) = tmp_path.iterdir()
    state = checkpoints.load(run / "checkpoints" / "last.pt")
    assert state["step"] == 3  # saved at steps 1-3; not at 4, whose losses were NaN
    assert len(calls) == 4  # stopped at the first log window that saw NaN
