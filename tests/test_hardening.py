"""Issue 9: bad input gets one clear line, never a traceback, and nothing already written is lost."""

import json

import pytest
import torch
from PIL import Image

from facegan import checkpoints
from facegan.cli import main

TINY = ["--conv-dim", "8", "--z-size", "16", "--num-images", "48", "--batch-size", "16", "--log-every", "1",
        "--num-samples", "4", "--no-progress"]


def one_line_error(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def trained_run(tmp_path):
    runs = tmp_path / "runs"
    assert main([*map(str, ["train", *TINY, "--epochs", "1", "--out", runs])]) == 0
    (run,) = runs.iterdir()
    return run


def test_empty_and_random_checkpoints(tmp_path, capsys):
    empty, noise = tmp_path / "e.pt", tmp_path / "r.pt"
    empty.write_bytes(b"")
    noise.write_bytes(bytes(range(256)) * 8)
    assert "is empty (0 bytes)" in one_line_error(capsys, "generate", empty)
    assert "is empty (0 bytes)" in one_line_error(capsys, "train", "--resume", empty)
    err = one_line_error(capsys, "generate", noise)
    assert "not a facegan checkpoint" in err and "code" not in err


def test_resume_from_a_generator_snapshot_names_the_file_that_can(tmp_path, capsys):
    run = trained_run(tmp_path)
    err = one_line_error(capsys, "train", "--resume", run / "generator.pt", "--epochs", "2")
    assert "generator snapshot, which cannot resume" in err and "checkpoints/last.pt" in err


def test_damaged_checkpoints_are_named_not_traced(tmp_path, capsys):
    run = trained_run(tmp_path)
    state = checkpoints.load(run / "checkpoints" / "last.pt")
    wrong = dict(state, config={**state["config"], "model": {**state["config"]["model"], "conv_dim": 16}})
    torch.save(wrong, tmp_path / "wrong.pt")  # an edited config: its weights (and their checksums) are the old model's
    assert "do not match the model" in one_line_error(capsys, "train", "--resume", tmp_path / "wrong.pt",
                                                      "--epochs", "2")
    del state["config"]
    torch.save(state, tmp_path / "no-config.pt")
    for command in (["generate"], ["train", "--resume"]):
        assert "is damaged: it lacks config" in one_line_error(capsys, *command, tmp_path / "no-config.pt")


def test_a_one_image_data_set_trains(tmp_path, capsys):
    folder = tmp_path / "one"
    folder.mkdir()
    Image.new("RGB", (40, 40), (200, 120, 90)).save(folder / "face.png")
    runs = tmp_path / "runs"
    assert main(["train", "--data", str(folder), "--batch-size", "16", "--num-samples", "16", "--conv-dim", "8",
                 "--epochs", "2", "--no-progress", "--out", str(runs)]) == 0
    (run,) = runs.iterdir()
    assert checkpoints.load(run / "checkpoints" / "last.pt")["step"] == 2


def test_a_torn_metrics_line_does_not_block_resume(tmp_path, capsys):
    run = trained_run(tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss_d": 0.5, "los')  # a kill mid-write
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert "dropped a partial last line" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 6


def test_unwritable_output_is_one_line(tmp_path, capsys):
    run = trained_run(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert "cannot use" in one_line_error(capsys, "generate", run, "--out", blocker / "x.png")
    assert "cannot use" in one_line_error(capsys, "generate", run, "--outdir", blocker / "faces")


def test_config_file_values_of_the_wrong_type_name_the_key(tmp_path, capsys):
    for raw, named in (({"lr_d": "x"}, "'lr_d' must be a number"), ({"model": {"conv_dim": 1.5}}, "'model.conv_dim'"),
                       ({"data": "faces"}, "'data' must be a section"), ([1, 2], "a JSON object")):
        path = tmp_path / "c.json"
        path.write_text(json.dumps(raw))
        assert named in one_line_error(capsys, "train", "--config", path)
    assert "finite" in one_line_error(capsys, "train", "--lr", "inf")


def test_a_model_too_large_for_memory_is_refused_before_anything_is_written(tmp_path, capsys):
    err = one_line_error(capsys, "train", "--conv-dim", "100000", "--out", tmp_path / "runs")
    assert "parameters and needs" in err and "--conv-dim" in err
    assert not (tmp_path / "runs").exists()


def test_runs_started_at_once_take_different_numbers(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from facegan.runs import new_run

    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda _: new_run(tmp_path, "faces32").path.name, range(16)))
    assert sorted(runs) == [f"{i:05d}-faces32" for i in range(16)]


def test_a_second_writer_is_refused_and_a_dead_ones_lock_and_temp_files_are_taken_over(tmp_path, capsys):
    import os
    import subprocess

    from facegan.errors import FaceganError
    from facegan.runs import RunFolder

    run = trained_run(tmp_path)
    folder = RunFolder(run)
    with folder.lock():
        err = one_line_error(capsys, "train", "--resume", run, "--epochs", "2")
        assert f"being trained by process {os.getpid()}" in err
    dead = subprocess.run(["true"]).returncode == 0 and subprocess.Popen(["true"])
    dead.wait()  # a pid that existed and is gone
    (run / ".lock").write_text(f"{dead.pid}\n")
    stale = run / "checkpoints" / f".last.pt.tmp{dead.pid}"
    stale.write_bytes(b"")  # what a kill -9 mid-write leaves
    ours = run / "checkpoints" / f".last.pt.tmp{os.getpid()}"
    ours.write_bytes(b"")
    with folder.lock():
        assert not stale.exists() and ours.exists()  # only dead writers' files are removed
    assert not (run / ".lock").exists()
    ours.unlink()
    try:
        with folder.lock():
            with folder.lock():
                pass
    except FaceganError as exc:
        assert "being trained by process" in str(exc)


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(tmp_path):
    """kill -9 at three random steps (with a checkpoint every step, so some kills land mid-write);
    each time resume; the finished run must hold exactly the weights of a run never interrupted."""
    import random
    import signal
    import subprocess
    import sys
    import time

    options = [*TINY, "--num-images", "96", "--epochs", "4", "--checkpoint-every", "1"]
    straight = tmp_path / "straight"
    assert main([*map(str, ["train", *options, "--out", straight])]) == 0
    (reference,) = straight.iterdir()

    runs = tmp_path / "killed"
    rng = random.Random(0)
    killed_mid_run = 0
    for target in sorted(rng.sample(range(2, 23), 3)):
        have_checkpoint = any(runs.glob("*/checkpoints/last.pt"))
        command = ["train", "--resume", "latest", "--out", runs, "--no-progress"] if have_checkpoint else \
                  ["train", *options, "--out", runs]
        process = subprocess.Popen([sys.executable, "-m", "facegan", *map(str, command)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and process.poll() is None:
            logged = [p for p in runs.glob("*/metrics.jsonl")]
            if logged and sum(1 for line in logged[0].read_text().splitlines() if '"loss_d"' in line) >= target:
                break
            time.sleep(0.005)
        killed_mid_run += process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert killed_mid_run == 3
    assert main(["train", "--resume", "latest", "--out", str(runs), "--no-progress"]) == 0
    finished = checkpoints.load(next(runs.glob("*/checkpoints/last.pt")))
    expected = checkpoints.load(reference / "checkpoints" / "last.pt")
    assert finished["step"] == expected["step"] == 24
    for net in ("generator", "discriminator"):
        for name, tensor in expected[net].items():
            assert torch.equal(tensor, finished[net][name]), f"{net}.{name}"
    assert not list(runs.glob("*/checkpoints/.*.tmp*"))  # dead writers' temporary files were cleaned up


def _facegan_with_file_size_limit(limit: int, *argv, env=None):
    """Run the CLI where no file may grow past `limit` bytes: writes fail as on a full disk (EFBIG)."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    def limit_writes():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with an error instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "facegan", *map(str, argv)], capture_output=True, text=True,
                          preexec_fn=limit_writes, env=dict(os.environ, **(env or {})), timeout=120)


def test_a_full_disk_is_one_line_and_keeps_what_was_written(tmp_path):
    run = trained_run(tmp_path)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    result = _facegan_with_file_size_limit(20_000, "train", "--resume", run, "--epochs", "2", "--no-progress")
    err = result.stderr.strip()
    assert result.returncode == 2 and len(err.splitlines()) == 1 and "no space left to write in" in err, err
    assert str(run / "checkpoints") in err and "MiB needed" in err
    assert (run / "checkpoints" / "last.pt").read_bytes() == before  # the last good checkpoint is intact
    assert not list((run / "checkpoints").glob(".*.tmp*"))

    cache = tmp_path / "cache"
    result = _facegan_with_file_size_limit(20_000, "data", "prepare", "--num-images", "64",
                                           env={"FACEGAN_CACHE": str(cache)})
    err = result.stderr.strip()
    assert result.returncode == 2 and len(err.splitlines()) == 1 and f"no space left to write in {cache}" in err, err
    assert not list(cache.glob("*.json"))  # no record: the half-written cache is never used


def test_huge_images_are_skipped_and_counted_not_decoded(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 48), (30 * i, 90, 150)).save(folder / f"face{i}.png")
    Image.new("RGB", (3000, 3000), (10, 10, 10)).save(folder / "huge.png")  # 9 MP
    assert main(["data", "prepare", str(folder), "--max-pixels", "1000000"]) == 0
    out = capsys.readouterr().out
    assert "3 of 4 images" in out and "1 over --max-pixels 1,000,000 skipped" in out
    err = one_line_error(capsys, "data", "prepare", str(folder), "--max-pixels", "100")
    assert "4 are over --max-pixels 100; raise --max-pixels" in err


def test_a_zip_bomb_given_as_data_is_refused_before_reading(tmp_path, capsys):
    import zipfile

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("faces/huge.png", b"\0" * (64 * 2 ** 20))  # 64 MiB of zeros packs to ~64 KiB
    err = one_line_error(capsys, "data", "prepare", str(bomb))
    assert "refusing to read bomb.zip" in err and "zip bomb" in err


def test_damaged_or_clashing_archives_in_download_are_one_line(tmp_path):
    import zipfile

    import pytest

    from facegan.data.download import safe_unzip
    from facegan.errors import FaceganError

    clash = tmp_path / "clash.zip"
    with zipfile.ZipFile(clash, "w") as archive:
        archive.writestr("a", b"a file")
        archive.writestr("a/b.jpg", b"and a folder of the same name")
    with pytest.raises(FaceganError, match="clashes with another entry"):
        safe_unzip(clash, tmp_path / "out")
    damaged = tmp_path / "crc.zip"
    with zipfile.ZipFile(damaged, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("img/0.jpg", b"0123456789" * 100)
    raw = bytearray(damaged.read_bytes())
    raw[raw.index(b"0123456789") + 5] ^= 0xFF  # flip a byte of the stored data: its CRC no longer matches
    damaged.write_bytes(bytes(raw))
    with pytest.raises(FaceganError, match="is damaged .*download again"):
        safe_unzip(damaged, tmp_path / "out2")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out2.unzipping").exists()


def test_a_flipped_bit_in_a_checkpoint_is_reported_not_trained_on(tmp_path, capsys):
    run = trained_run(tmp_path)
    last = run / "checkpoints" / "last.pt"
    state = checkpoints.load(last)
    weight = state["generator"]["project.bn.weight"]  # 1-D: its bytes on disk are its values in order
    raw = bytearray(last.read_bytes())
    at = raw.index(weight.numpy().tobytes()[:64])
    raw[at + 3] ^= 0x10  # one bit of one float of a G BatchNorm weight
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(raw))
    err = one_line_error(capsys, "train", "--resume", damaged, "--epochs", "2")
    assert "fail their checksum" in err and "generator.project.bn.weight" in err


# --- round 2 (issue 21): non-finite states, study folders ------------------------------------

def test_a_diverged_run_is_never_saved_or_reported_as_good(tmp_path, capsys):
    """lr 1e30 makes NaN weights inside the first epoch; with a log window longer than the run, only the
    check before each save can see it (the issue's case ended 'finished (complete)' with NaN files)."""
    runs = tmp_path / "runs"
    err = one_line_error(capsys, "train", *TINY[:-3], "--log-every", "50", "--lr", "1e30", "--epochs", "3",
                         "--no-progress", "--out", runs)
    assert "diverged" in err
    for saved in runs.rglob("*.pt"):
        assert checkpoints._weights_finite(torch.load(saved, weights_only=True)), saved


@pytest.mark.parametrize("flag,value", [("--r1", "nan"), ("--r1", "inf"), ("--ema", "nan"), ("--lr", "nan"),
                                        ("--instance-noise", "inf")])
def test_non_finite_options_are_refused(tmp_path, capsys, flag, value):
    assert "finite" in one_line_error(capsys, "train", *TINY, flag, value, "--out", tmp_path)
    assert not tmp_path.joinpath("00000-faces32").exists()


def test_a_non_finite_checkpoint_is_refused_naming_the_last_finite_one(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main([*map(str, ["train", *TINY, "--epochs", "2", "--out", runs])]) == 0
    (run,) = runs.iterdir()
    last = run / "checkpoints" / "last.pt"
    state = checkpoints.load(last)
    state["generator"] = {k: v.float() * float("nan") if v.is_floating_point() else v
                          for k, v in state["generator"].items()}
    checkpoints.atomic_save({k: v for k, v in state.items() if k != "checksums"}, last)
    for command in (("generate", last, "--out", tmp_path / "g.png"), ("train", "--resume", last, "--epochs", "3")):
        err = one_line_error(capsys, *command)
        assert "NaN or infinite" in err and "epoch-0002.pt" in err, err


def test_a_study_spec_cannot_write_or_delete_outside_its_folder(tmp_path, capsys):
    pytest.importorskip("optuna")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    spec = tmp_path / "t.toml"
    spec.write_text("[base]\nimage_size = 32\nnum_images = 32\nbatch_size = 16\nconv_dim = 8\nz_size = 16\n"
                    "max_steps = 2\nnum_samples = 4\neval_samples = 8\n"
                    '[grid]\ninception_weights = ["", "/../../victim", "../victim"]\n')
    out = tmp_path / "out" / "study"
    assert main(["study", "run", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert (victim / "keep.txt").read_text() == "mine" and sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    trials = json.loads((out / "study.json").read_text())["trials"]
    folders = [out / t["run"] for t in trials]
    assert all(f.resolve().parent == out.resolve() and (f / "generator.pt").is_file() for f in folders), folders
    # a folder in the way that facegan did not make is refused, not deleted
    from facegan.study.runner import run_trial, trial_dir
    from facegan.study.spec import load_spec
    loaded = load_spec(spec)
    mine = trial_dir(tmp_path / "other", loaded.trials[0].name)
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    record = run_trial(loaded, loaded.trials[0], tmp_path / "other")
    assert record["status"] == "failed" and "not made by facegan" in record["reason"]
    assert (mine / "notes.txt").read_text() == "mine"


def test_the_run_lock_holds_when_six_processes_start_together(tmp_path):
    """Issue 21: the lock file was created before its pid was written, so a second process read it
    empty, called it stale and took it (two holders in 11 of 25 trials with 6 processes)."""
    import subprocess
    import sys

    run = tmp_path / "run"
    run.mkdir()
    log = tmp_path / "held.log"
    # each process imports, says it is ready, spins until all six are, then takes the lock at once
    holder = ("import pathlib, sys, time; from facegan.runs import RunFolder; from facegan.errors import FaceganError\n"
              "gate = pathlib.Path(sys.argv[1]); (gate / sys.argv[4]).touch()\n"
              "while len(list(gate.iterdir())) < 6: pass\n"
              "try:\n"
              "    with RunFolder(sys.argv[2]).lock():\n"
              "        t0 = time.time(); time.sleep(0.3)\n"
              "        open(sys.argv[3], 'a').write(f'{t0} {time.time()}\\n')\n"
              "except FaceganError:\n"
              "    pass\n")
    for round_ in range(2):
        gate = tmp_path / f"gate{round_}"
        gate.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", holder, str(gate), str(run), str(log), str(i)])
                 for i in range(6)]
        assert all(p.wait(timeout=120) == 0 for p in procs)
    spans = sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines())
    assert spans and all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    # The race, made certain: a holder that has taken the lock but not yet written its pid (the old
    # lock's window, which the old code read as an empty, stale lock and took over).
    from facegan.errors import FaceganError
    from facegan.runs import RunFolder
    hold = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                             "fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX)\n"
                             "print('held', flush=True); time.sleep(30)", str(run / ".lock")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert hold.stdout.readline().strip() == "held" and (run / ".lock").read_text() == ""
        with pytest.raises(FaceganError, match="being trained by process"):
            with RunFolder(run).lock():
                pass
        assert (run / ".lock").exists()  # and the holder's file was left alone
    finally:
        hold.kill()
        hold.wait()


def test_empty_resume_and_data_are_refused_not_silently_taken(tmp_path, capsys):
    assert "--resume '' names no run" in one_line_error(capsys, "train", "--resume", "", "--out", tmp_path)
    assert "--data '' names no data" in one_line_error(capsys, "train", *TINY, "--data", "", "--out", tmp_path)
    assert not any(tmp_path.iterdir())


def test_output_writes_never_replace_special_files(tmp_path, capsys):
    import os

    from facegan.errors import FaceganError
    from facegan.fileio import write_text_atomic

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(FaceganError, match="not a regular file"):
        write_text_atomic(fifo, "x")
    with pytest.raises(FaceganError, match="not a regular file"):
        write_text_atomic(tmp_path, "x")  # a folder
    assert fifo.is_fifo() and not fifo.is_file()
    grid = tmp_path / "pipe.png"  # `facegan generate --out` onto a FIFO: refused in one line, left as it was
    os.mkfifo(grid)
    assert "not a regular file" in one_line_error(capsys, "generate", trained_run(tmp_path), "--out", grid)
    assert grid.is_fifo()
