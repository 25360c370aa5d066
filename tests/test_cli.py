"""End to end through the command line, in temporary folders: files written, resume, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

from PIL import Image

from facegan.cli import main

from conftest import closed_port, write_image_folder

TINY = ["--conv-dim", "8", "--z-size", "16", "--num-images", "96", "--batch-size", "16", "--log-every", "2",
        "--num-samples", "4", "--no-progress"]


def run_cli(*argv):
    return main([str(a) for a in argv])


def test_train_generate_resume_end_to_end(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert run_cli("train", *TINY, "--epochs", "1", "--out", runs) == 0
    (run,) = runs.iterdir()
    assert run.name == "00000-faces32"
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["conv_dim"] == 8 and config["epochs"] == 1 and config["loss"] == "hinge"
    for name in ("reals.png", "losses.png", "metrics.jsonl", "generator.pt", "checkpoints/last.pt",
                 "checkpoints/epoch-0001.pt", "samples/epoch-0001.png"):
        assert (run / name).is_file(), name
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert {"step", "epoch", "loss_d", "loss_g", "d_real", "d_fake", "images_per_s"} <= set(row)

    # Resume the newest run for one more epoch; it keeps writing into the same folder.
    assert run_cli("train", "--resume", "latest", "--epochs", "2", "--out", runs, "--no-progress") == 0
    assert sorted(p.name for p in runs.iterdir()) == ["00000-faces32"]
    assert (run / "samples" / "epoch-0002.png").is_file()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 12

    # Generate from the newest run with no checkpoint argument: a grid, then one file per seed.
    assert run_cli("generate", "--runs", runs, "--num", "9", "--out", tmp_path / "grid.png") == 0
    assert Image.open(tmp_path / "grid.png").size[0] > 3 * 32
    assert run_cli("generate", run, "--seeds", "0-3", "--outdir", tmp_path / "each") == 0
    assert sorted(os.listdir(tmp_path / "each")) == [f"seed000{i}.png" for i in range(4)]
    assert run_cli("interpolate", run, "--steps", "4", "--out", tmp_path / "lerp.png") == 0
    assert (tmp_path / "lerp.png").is_file()


def test_config_file_then_flags_override_it(tmp_path):
    runs = tmp_path / "runs"
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 1, "loss": "lsgan", "model": {"conv_dim": 8}}))
    assert run_cli("train", *TINY, "--config", tmp_path / "c.json", "--loss", "hinge", "--out", runs) == 0
    config = json.loads(next(runs.iterdir()).joinpath("config.json").read_text())
    assert config["loss"] == "hinge" and config["epochs"] == 1


def test_data_prepare_and_preview(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "imgs")
    assert run_cli("data", "prepare", folder, "--image-size", "32") == 0
    assert "6 of 7 images" in capsys.readouterr().out
    assert run_cli("data", "preview", folder, "--out", tmp_path / "p.png") == 0
    assert "reused cache" in capsys.readouterr().out
    assert Image.open(tmp_path / "p.png").size[0] > 64


def bad(capsys, *argv):
    code = run_cli(*argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_bad_inputs_are_one_line_each(tmp_path, capsys):
    runs = tmp_path / "runs"
    empty, no_images, corrupt = tmp_path / "empty", tmp_path / "txt", tmp_path / "corrupt"
    for folder in (empty, no_images, corrupt):
        folder.mkdir()
    (no_images / "readme.txt").write_text("x")
    (corrupt / "a.jpg").write_bytes(b"not a jpeg")
    assert "does not exist" in bad(capsys, "train", *TINY, "--data", tmp_path / "nope", "--out", runs)
    assert "is empty" in bad(capsys, "train", *TINY, "--data", empty, "--out", runs)
    assert "has no images" in bad(capsys, "train", *TINY, "--data", no_images, "--out", runs)
    assert "could be read" in bad(capsys, "train", *TINY, "--data", corrupt, "--out", runs)
    assert "image size 36 does not fit a DCGAN" in bad(capsys, "train", "--image-size", "36")
    assert "unknown device 'tpu'" in bad(capsys, "train", *TINY, "--device", "tpu", "--out", runs)
    assert "no run with a checkpoint" in bad(capsys, "train", "--resume", "latest", "--out", runs)
    assert "no run with a checkpoint" in bad(capsys, "generate", "--runs", runs)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert "cannot write to output folder" in bad(capsys, "train", *TINY, "--out", blocker / "runs")
    assert not runs.exists() or not any(runs.iterdir())  # no half-made run folders from bad input


def test_incompatible_resume_and_small_dataset(tmp_path, capsys):
    runs = tmp_path / "runs"
    folder = write_image_folder(tmp_path / "imgs")  # 6 readable images, batch 16
    assert run_cli("train", *TINY, "--data", folder, "--epochs", "1", "--out", runs) == 0
    assert "using batch size 6" in capsys.readouterr().out
    err = bad(capsys, "train", "--resume", "latest", "--image-size", "64", "--out", runs)
    assert "cannot resume with --image-size 64" in err and "trained with 32" in err
    assert "not a facegan checkpoint" in bad(capsys, "generate", tmp_path / "imgs" / "one.png")


def test_ctrl_c_saves_and_resumes(tmp_path):
    """A real SIGINT to a real training process: it stops cleanly with a loadable checkpoint."""
    runs = tmp_path / "runs"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "facegan", "train", *TINY, "--num-images", "4000",
                                "--epochs", "1", "--out", str(runs)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    metrics = None
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        found = list(runs.glob("*/metrics.jsonl")) if runs.exists() else []
        if found and found[0].stat().st_size > 0:
            metrics = found[0]
            break
        time.sleep(0.1)
    assert metrics is not None, process.communicate()[0]
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130, output  # saved, and the shell learns it was a Ctrl-C
    assert "stopped by Ctrl-C" in output
    from facegan import checkpoints
    state = checkpoints.load(metrics.parent / "checkpoints" / "last.pt")
    assert 0 < state["step"] < 250 and state["step_in_epoch"] == state["step"]


def test_evaluate_command_and_evaluation_during_training(tmp_path, capsys, monkeypatch):
    from facegan import checkpoints

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    monkeypatch.setattr("facegan.metrics.inception.WEIGHTS_URL", f"http://127.0.0.1:{closed_port()}/weights.pth")
    runs = tmp_path / "runs"
    assert run_cli("train", *TINY, "--epochs", "1", "--eval-every", "3", "--eval-samples", "16", "--out", runs) == 0
    (run,) = runs.iterdir()
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "eval.png").is_file()
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [e["step"] for e in evals] == [3, 6]
    best = checkpoints.load(run / "checkpoints" / "best.pt")["best"]
    assert best["metric"] == "swd" and best["value"] == min(e["eval"]["swd"] for e in evals)
    capsys.readouterr()
    assert run_cli("evaluate", run, "--num-samples", "16") == 0
    out = capsys.readouterr().out
    assert "swd_levels" in out and "msssim_real" in out
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["eval"]["num_samples"] == 16 and last["step"] == 6
    assert "pt_inception-2015-12-05-6726825d.pth" in bad(capsys, "evaluate", run, "--metrics", "fid")
    assert "unknown metric" in bad(capsys, "evaluate", run, "--metrics", "is")


def test_old_label_smoothing_name_still_works_on_the_command_line_and_in_config_files(tmp_path):
    from facegan.config import TrainConfig

    assert TrainConfig.from_dict({"label_smoothing": 0.8}).real_label == 0.8  # a config.json from before the rename
    runs = tmp_path / "runs"
    assert run_cli("train", *TINY, "--max-steps", "1", "--label-smoothing", "0.7", "--out", runs) == 0
    (run,) = runs.iterdir()
    saved = json.loads((run / "config.json").read_text())
    assert saved["real_label"] == 0.7 and "label_smoothing" not in saved
    assert saved["instance_noise"] == 0.5 and saved["instance_noise_steps"] == 500  # the new defaults are recorded


def test_help_shows_config_defaults_and_registry_choices(capsys):
    assert run_cli("train", "--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "{bce,lsgan,hinge}" in text and "{dcgan,mlp,image-noise}" in text and "32/64/128" in text
    assert "(least squares) (default: hinge)" in text and "(default: 0.5)" in text and "(default: 500)" in text


def test_the_whole_runs_eta_comes_first_and_is_refreshed_once(tmp_path, capsys):
    assert run_cli("train", *TINY, "--epochs", "2", "--out", tmp_path) == 0
    lines = capsys.readouterr().out.splitlines()
    first = next(i for i, line in enumerate(lines) if "2 epochs, 12 steps: about" in line)
    assert "images/s (a short timing)" in lines[first]
    assert first < next(i for i, line in enumerate(lines) if line.startswith("epoch 1/2 done"))  # before training
    refreshed = [line for line in lines if line.startswith("measured: 2 epochs, 12 steps (10 to go): about")]
    assert len(refreshed) == 1  # after the first log window (step 2), not every window
