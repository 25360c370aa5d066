"""The tools around a trained model: export, image and animation outputs, runs, help, TensorBoard."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facegan.cli import build_parser, main
from facegan.config import DataConfig, ModelConfig, TrainConfig
from facegan.generate import load_generator
from facegan.train import train

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference.md"  # where the export snippet lives


def run_cli(*argv):
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A folder of two tiny trained runs (dcgan, then mlp): 00000-faces32 and 00001-faces32."""
    root = tmp_path_factory.mktemp("runs")
    for arch in ("dcgan", "mlp"):
        cfg = TrainConfig(model=ModelConfig(conv_dim=8, z_size=16, arch=arch), data=DataConfig(num_images=64),
                          batch_size=16, epochs=1, num_samples=4, eval_every=4, eval_samples=16)
        train(cfg, out=root, progress=False, log=lambda *a: None)
    return root


# --- export ---------------------------------------------------------------------------------

def _readme_snippet(marker: str) -> str:
    """The python block that follows `marker` in docs/reference.md: tests run what users copy."""
    text = REFERENCE.read_text()
    return re.search(re.escape(marker) + r".*?```python\n(.*?)```", text, re.DOTALL).group(1)


@pytest.mark.parametrize("run_name", ["00000-faces32", "00001-faces32"])
def test_safetensors_export_runs_with_the_readme_snippet_alone(runs, tmp_path, run_name, monkeypatch):
    pytest.importorskip("safetensors")
    assert run_cli("export", runs / run_name, "--out", tmp_path / "generator.safetensors") == 0
    sidecar = json.loads((tmp_path / "generator.safetensors.json").read_text())
    assert sidecar["z_size"] == 16 and sidecar["image_size"] == 32 and sidecar["output_range"] == [-1.0, 1.0]
    assert sidecar["training_steps"] == 4 and sidecar["facegan_version"] and sidecar["ema"] is True  # on by default
    # The documented stand-alone code, run in a namespace with no facegan in it.
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(_readme_snippet("<!-- snippet: safetensors -->"), "docs/reference.md", "exec"), namespace)
    assert not any("facegan" in str(v) for k, v in namespace.items() if k != "__builtins__" and hasattr(v, "__name__"))
    generator, _ = load_generator(runs / run_name / "generator.pt")
    z = namespace["z"]
    assert namespace["faces"].shape == (8, 3, 32, 32)
    assert torch.allclose(namespace["faces"], generator(z), atol=1e-6)


def test_onnx_export_matches_pytorch_at_batch_1_and_8(runs, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    assert run_cli("export", runs / "00000-faces32", "--format", "onnx", "--out", tmp_path / "g.onnx") == 0
    session = ort.InferenceSession(str(tmp_path / "g.onnx"))
    assert session.get_inputs()[0].name == "z" and not isinstance(session.get_inputs()[0].shape[0], int)
    generator, _ = load_generator(runs / "00000-faces32" / "generator.pt")
    for batch in (1, 8):
        z = torch.randn(batch, 16)
        (images,) = session.run(None, {"z": z.numpy()})
        assert images.shape == (batch, 3, 32, 32)
        np.testing.assert_allclose(images, generator(z).detach().numpy(), atol=1e-4)


def test_torchscript_export_by_file_name_and_default_location(runs, capsys):
    assert run_cli("export", runs / "00000-faces32", "--format", "torchscript") == 0
    path = runs / "00000-faces32" / "export" / "generator.torchscript.pt"
    scripted = torch.jit.load(str(path))
    generator, _ = load_generator(runs / "00000-faces32" / "generator.pt")
    z = torch.randn(3, 16)
    assert torch.equal(scripted(z), generator(z))
    assert json.loads(Path(str(path) + ".json").read_text())["export"] == "torchscript"
    assert run_cli("export", runs / "00000-faces32", "--out", runs / "g.bin") == 2
    assert "cannot tell the export format from g.bin" in capsys.readouterr().err


# --- output formats, truncation, animations -------------------------------------------------

def test_generate_writes_the_format_its_file_name_names(runs, tmp_path, capsys):
    for name, kind in (("g.jpg", "JPEG"), ("g.webp", "WEBP"), ("g.png", "PNG")):
        assert run_cli("generate", runs / "00000-faces32", "--num", "4", "--out", tmp_path / name) == 0
        with Image.open(tmp_path / name) as image:
            assert image.format == kind
    assert run_cli("generate", runs / "00000-faces32", "--num", "4", "--out", tmp_path / "g.gif") == 2
    assert "end the file name in .jpeg, .jpg, .png, .webp" in capsys.readouterr().err
    assert run_cli("generate", runs / "00000-faces32", "--seeds", "3,4", "--outdir", tmp_path / "each",
                   "--ext", "jpg") == 0
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["seed0003.jpg", "seed0004.jpg"]
    assert run_cli("generate", runs / "00000-faces32", "--truncation", "1.5") == 2
    assert "out of range" in capsys.readouterr().err


def test_interpolate_animation_through_several_seeds_there_and_back(runs, tmp_path):
    out = tmp_path / "walk.gif"
    assert run_cli("interpolate", runs / "00000-faces32", "--seeds", "1,5,9", "--frames", "6", "--loop",
                   "--slerp", "--fps", "20", "--out", out) == 0
    with Image.open(out) as animation:
        assert animation.format == "GIF" and animation.n_frames == 2 * (6 + 5) - 2  # 11 there, 9 back
        assert animation.info["duration"] == 50 and animation.info["loop"] == 0
    assert run_cli("interpolate", runs / "00000-faces32", "--seeds", "1,5", "--frames", "4",
                   "--out", tmp_path / "walk.webp") == 0
    with Image.open(tmp_path / "walk.webp") as animation:
        assert animation.format == "WEBP" and animation.n_frames == 4
    assert run_cli("interpolate", runs / "00000-faces32", "--out", tmp_path / "strip.png", "--frames", "5") == 0
    with Image.open(tmp_path / "strip.png") as strip:
        assert strip.width > 4 * strip.height  # one row of 5 faces


# --- runs -----------------------------------------------------------------------------------

def test_runs_lists_every_run_with_its_progress(runs, capsys):
    assert run_cli("runs", runs) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["ID", "DATA", "SIZE", "STEPS"]
    assert [line.split()[0] for line in lines[1:]] == ["00000-faces32", "00001-faces32"]
    first = lines[1].split()
    assert first[1:5] == ["faces", "32px", "4", "1/1"] and first[5] == "swd" and lines[1].rstrip().endswith("done")


def test_a_run_can_be_named_by_parent_folder_id_or_prefix(runs, tmp_path, capsys):
    assert run_cli("generate", runs, "--num", "2", "--out", tmp_path / "a.png") == 0
    assert f"using {runs / '00001-faces32'} (the newest run in {runs})" in capsys.readouterr().out
    for name in ("0", "00000", "00000-fa", "00000-faces32"):
        assert run_cli("generate", name, "--runs", runs, "--num", "2", "--out", tmp_path / f"{name}.png") == 0
    first = np.asarray(Image.open(tmp_path / "0.png"))
    assert all(np.array_equal(first, np.asarray(Image.open(tmp_path / f"{n}.png"))) for n in ("00000", "00000-fa"))
    assert not np.array_equal(first, np.asarray(Image.open(tmp_path / "a.png")))  # a.png came from run 1
    capsys.readouterr()
    assert run_cli("generate", "00009", "--runs", runs) == 2
    assert "facegan runs" in capsys.readouterr().err
    shutil.copytree(runs / "00000-faces32", tmp_path / "copies" / "00000-faces32")
    shutil.copytree(runs / "00000-faces32", tmp_path / "copies" / "00000-faces32-copy")  # copied by hand
    assert run_cli("generate", "0", "--runs", tmp_path / "copies") == 2
    assert "ambiguous" in capsys.readouterr().err


def test_a_run_being_trained_says_so(runs, tmp_path):
    from facegan.runs import describe_runs

    copy = tmp_path / "00007-faces32"
    shutil.copytree(runs / "00000-faces32", copy)
    (copy / ".lock").write_text(f"{os.getppid()}\n")  # a live process other than us holds it
    assert describe_runs(tmp_path)[0]["writing"] is True
    (copy / ".lock").write_text("999999999\n")       # its process is gone: not training any more
    assert describe_runs(tmp_path)[0]["writing"] is False


# --- help -------------------------------------------------------------------------------------

def _subparser(name, *path):
    parser = build_parser()
    for part in (name, *path):
        parser = next(a for a in parser._actions if a.dest in ("command", "data_command")).choices[part]
    return parser


def test_train_help_is_grouped_and_every_flag_is_in_one_group():
    from facegan.cli import TRAIN_GROUPS
    train_parser = _subparser("train")
    titles = [g.title for g in train_parser._action_groups if g._group_actions]
    assert titles[-8:] == list(TRAIN_GROUPS)
    ungrouped = [a.option_strings for g in train_parser._action_groups if g.title not in TRAIN_GROUPS
                 for a in g._group_actions if a.dest != "help"]
    assert ungrouped == []  # every flag sits in a named section
    assert all(a.help for a in train_parser._actions)


@pytest.mark.parametrize("command", [("interpolate",), ("evaluate",), ("data", "preview"), ("generate",),
                                     ("export",), ("demo",), ("runs",)])
def test_every_option_has_help_text(command):
    parser = _subparser(*command)
    assert parser.description
    for action in parser._actions:
        assert action.help, f"{' '.join(command)} {action.option_strings or action.dest} has no help"


# --- TensorBoard ------------------------------------------------------------------------------

def test_tensorboard_logs_scalars_evaluations_and_sample_grids(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert run_cli("train", "--conv-dim", "8", "--z-size", "16", "--num-images", "64", "--batch-size", "16",
                   "--epochs", "1", "--log-every", "2", "--num-samples", "4", "--eval-every", "4",
                   "--eval-samples", "16", "--tensorboard", "--no-progress", "--out", tmp_path) == 0
    events = EventAccumulator(str(tmp_path / "00000-faces32" / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"loss/discriminator", "loss/generator", "D/real (D(x))", "D/fake (D(G(z)))",
            "speed/images_per_s", "eval/swd"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("loss/discriminator")] == [2, 4]
    (grid,) = events.Images("samples (fixed z)")
    assert grid.step == 4 and grid.width > 64
