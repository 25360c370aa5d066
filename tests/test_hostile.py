"""Issue 21, round 2: hostile checkpoints, config files, seeds, study specs, run folders, demo options and
sizes each get one line (and no run folder), never a traceback, a hang or unbounded memory."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_hardening import TINY, one_line_error

from facegan import checkpoints
from facegan.cli import main

from conftest import child_pids, process_running


@pytest.fixture(scope="module")
def training_state(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert main(["train", *TINY, "--epochs", "1", "--out", str(runs)]) == 0
    (run,) = runs.iterdir()
    return checkpoints.load(run / "checkpoints" / "last.pt")


def _shared_nesting(depth: int, width: int = 2):
    """a = [t]; then a = [a, a] `depth` times: a small file whose tree has width**depth paths."""
    a = [torch.zeros(1)]
    for _ in range(depth):
        a = [a] * width
    return a


@pytest.mark.parametrize("change, message", [
    ({"config": "x"}, "'config' is not a section of keys but str"),
    ({"config": 5}, "'config' is not a section of keys but int"),
    ({"config": [1]}, "'config' is not a section of keys but list"),
    ({"generator": "x"}, "'generator' is not names and tensors"),
    ({"discriminator": {"w": 3}}, "'discriminator' is not names and tensors"),
    ({"rng": "x"}, "'rng' is not random states"),
    ({"opt_d": [1]}, "'opt_d' is not an optimiser state"),
    ({"step": "5"}, "'step' is not a whole number"),
    ({"step": -5}, "'step' is not a whole number"),
    ({"step": 10 ** 30}, "'step' is not a whole number"),
    ({"epoch": 1.5}, "'epoch' is not a whole number"),
    ({"extra": _shared_nesting(40)}, "nest deeper than 8 levels"),
    ({"extra": _shared_nesting(6, width=20)}, "more than 200,000 entries"),  # 20**6 paths, 6 deep
])
def test_hostile_checkpoints_with_valid_checksums_are_one_line(training_state, change, message, tmp_path, capsys):
    path = tmp_path / "hostile.pt"
    if "extra" in change:  # the real state's checksums: computing them over 2**40 paths would never end
        torch.save({**training_state, **change, "checksums": checkpoints.tensor_checksums(training_state)}, path)
    else:
        checkpoints.atomic_save({**training_state, **change}, path)  # checksums made anew: they hold
    started = time.monotonic()
    for command in (["generate"], ["train", "--resume"], ["evaluate"], ["export"]):
        assert message in one_line_error(capsys, *command, path)
    assert time.monotonic() - started < 30  # the 2**40-path file is refused, not walked


def test_a_deeply_nested_checkpoint_is_one_line(tmp_path, capsys):
    deep = [torch.zeros(1)]
    for _ in range(50):
        deep = [deep]
    path = checkpoints.atomic_save({"format": checkpoints.GENERATOR_SNAPSHOT, "config": {}, "generator": {},
                                    "extra": deep}, tmp_path / "deep.pt")
    assert "nest deeper than 8 levels" in one_line_error(capsys, "generate", path)


def test_text_files_as_checkpoints_are_one_line(capsys):
    assert "cannot read checkpoint /etc/passwd" in one_line_error(capsys, "generate", "/etc/passwd")


@pytest.mark.parametrize("content, message", [
    (b'{"seed": ' + b"9" * 400 + b"}", "is too large"),
    (b"[" * 100_000 + b"]" * 100_000, "is not a config"),
    (b'{"seed": "\xff\xfe"}', "is not UTF-8 text"),
])
def test_hostile_config_files_are_one_line(content, message, tmp_path, capsys):
    (tmp_path / "c.json").write_bytes(content)
    assert message in one_line_error(capsys, "train", "--config", tmp_path / "c.json", "--out", tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_huge_seeds_and_counts_are_refused_before_anything_is_written(tmp_path, capsys):
    assert "--seed 100000000000000 is out of range: use 0 to 4294967295" in one_line_error(
        capsys, "train", "--seed", "100000000000000", "--out", tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    assert "is too large: seeds go from 0 to" in one_line_error(capsys, "generate", "--seeds",
                                                                 "18446744073709551616")
    assert "at most 100,000 at once" in one_line_error(capsys, "generate", "--seeds", "0-100000000")
    for argv in (["generate", "--num", "1000000"], ["interpolate", "--frames", "1000000"],
                 ["data", "preview", "--num", "1000000"], ["evaluate", "--num-samples", "10000000"],
                 ["train", "--num-images", "100000000"], ["train", "--num-samples", "100000"],
                 ["train", "--eval-samples", "10000000"], ["demo", "--port", "99999"],
                 ["evaluate", "--num-samples", "1"]):
        err = one_line_error(capsys, *argv)
        assert "range" in err or "too large" in err or "at most" in err, err


def test_activations_count_in_the_memory_check(tmp_path, capsys):
    err = one_line_error(capsys, "train", "--image-size", "512", "--conv-dim", "64", "--batch-size", "256",
                         "--out", tmp_path / "runs")
    assert "GiB activations of one step" in err and "lower --batch-size" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, message", [
    (b"[base]\nseed = '\xff'\n", "is not UTF-8"),
    (b"base = 5\n[grid]\nlr = [1e-3]\n", "[base]: must be a section of options"),
    (b"[base]\n[random]\ntrials = 2\nseed = 'abc'\nlr = 'uniform(1e-4, 1e-3)'\n", "[random] seed: must be a whole"),
    (b"[base]\n[random]\ntrials = 2\nseed = -1\nlr = 'uniform(1e-4, 1e-3)'\n", "[random] seed: must be a whole"),
    (b"[base]\n[random]\ntrials = 2\nseed = 1.5\nlr = 'uniform(1e-4, 1e-3)'\n", "[random] seed: must be a whole"),
    (b"[base]\n[random]\ntrials = 2\nbatch_size = 'randint(1, 100000000000000000000000)'\n", "within +-1e+15"),
    (b"[base]\n[random]\ntrials = 2\nlr = 'uniform(1e-4, 1e309)'\n", "within +-1e+15"),
    (b"[base]\n[random]\ntrials = 1000000000\nlr = 'uniform(1e-4, 1e-3)'\n", "must be a whole number 1 to 10,000"),
    (b"[base]\n[grid]\nmode = 'product'\nseed = [" + b",".join(b"%d" % i for i in range(1000)) + b"]\nlr = ["
     + b",".join(b"%d" % (i + 1) for i in range(1000)) + b"]\n", "1,000,000 trials is more than 10,000"),
])
def test_hostile_study_specs_are_one_line(text, message, tmp_path, capsys):
    (tmp_path / "s.toml").write_bytes(text)
    assert message in one_line_error(capsys, "study", "run", tmp_path / "s.toml", "--out", tmp_path / "o",
                                     "--dry-run")


def test_runs_and_resume_survive_hostile_run_files(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(runs)]) == 0
    (run,) = runs.iterdir()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('5\n[1, 2]\n{"step": 1, "eval": {"swd": "abc"}}\n{"step": "x"}\n')
    (run / "progress.json").write_text("[1, 2]")
    fake = runs / "00009-faces32"
    fake.mkdir()
    (fake / "config.json").write_text("[1, 2]")
    (runs / "00010-\x1b[31mred").mkdir()
    capsys.readouterr()
    assert main(["runs", str(runs)]) == 0
    listing = capsys.readouterr().out
    assert "00009-faces32" in listing and "\x1b" not in listing
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0


def test_a_damaged_study_index_and_a_truncated_stats_cache_are_handled(tmp_path, capsys):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study.json").write_text("{broken")
    err = one_line_error(capsys, "study", "report", tmp_path / "study")
    assert "study.json" in err
    from facegan.metrics.evaluate import _cached
    path = tmp_path / "stats" / "x.npz"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 truncated")
    import numpy as np
    assert _cached(path, lambda: {"a": np.ones(2)})["a"].tolist() == [1.0, 1.0]  # recomputed, not BadZipFile


def test_download_never_deletes_a_folder_it_did_not_make(tmp_path, capsys):
    dest = tmp_path / "data"
    (dest / "celeba-small").mkdir(parents=True)
    (dest / "celeba-small" / "mine.txt").write_text("the user's")
    (dest / "processed-celeba-small.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    err = one_line_error(capsys, "data", "download", "celeba-small", "--dest", dest)
    assert "already exists and was not made by facegan" in err
    assert (dest / "celeba-small" / "mine.txt").read_text() == "the user's"


def test_demo_refuses_an_empty_host(tmp_path, capsys):
    from facegan.config import ModelConfig
    from facegan.demo import make_server
    from facegan.errors import FaceganError
    from facegan.models import Generator
    with pytest.raises(FaceganError, match="every network interface"):
        make_server(Generator(ModelConfig(conv_dim=8, z_size=16)), {}, host="", port=0)


def test_killed_prepare_leaves_no_workers_and_its_temp_file_is_cleaned(tmp_path):
    """kill -9 of `data prepare` while its workers decode: they die with it, and the next prepare removes the
    half-written array it left."""
    cache = tmp_path / "cache"
    env = dict(os.environ, FACEGAN_CACHE=str(cache))
    proc = subprocess.Popen([sys.executable, "-m", "facegan", "data", "prepare", "--num-images", "60000",
                             "--image-size", "64"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (list(cache.glob(".*.tmp*")) and child_pids(proc.pid)):
        time.sleep(0.2)
    workers = child_pids(proc.pid)
    assert workers, "the preparation never started its workers"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(process_running(pid) for pid in workers):
        time.sleep(0.2)
    assert not [pid for pid in workers if process_running(pid)], "workers outlived their parent"
    assert list(cache.glob(".*.tmp*"))
    from facegan.config import DataConfig
    from facegan.data.prepare import prepare
    prepare(DataConfig(num_images=16), 16, cache_dir=cache)
    assert not list(cache.glob(".*.tmp*"))



def _zips(tmp_path):
    """An intact zip of 3 PNGs, and copies with a broken central directory, an encrypted first entry and an
    unknown compression method in its first entry."""
    import io
    import zipfile

    from PIL import Image
    png = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 100, 50)).save(png, "PNG")
    with zipfile.ZipFile(tmp_path / "ok.zip", "w") as archive:
        for i in range(3):
            archive.writestr(f"a/{i}.png", png.getvalue())
    data = (tmp_path / "ok.zip").read_bytes()
    central = data.rfind(b"PK\x01\x02")
    made = {"broken": data[:central] + b"XX" + data[central + 2:]}
    for name, offsets in (("encrypted", (6, 8)), ("method", (8, 10))):
        damaged = bytearray(data)
        local, header = damaged.find(b"PK\x03\x04"), damaged.find(b"PK\x01\x02")
        if name == "encrypted":
            damaged[local + offsets[0]] |= 1
            damaged[header + offsets[1]] |= 1
        else:
            damaged[local + offsets[0]] = damaged[header + offsets[1]] = 99
        made[name] = bytes(damaged)
    return made


def test_hostile_zips_are_one_line_in_prepare_and_download(tmp_path, capsys):
    zips = _zips(tmp_path)
    (tmp_path / "broken.zip").write_bytes(zips["broken"])
    assert "is damaged (Bad magic number" in one_line_error(capsys, "data", "prepare", tmp_path / "broken.zip")
    for name, message in (("broken", "is damaged"), ("encrypted", "is encrypted"), ("method", "not supported")):
        dest = tmp_path / f"dl-{name}"
        dest.mkdir()
        (dest / "processed-celeba-small.zip").write_bytes(zips[name])
        assert message in one_line_error(capsys, "data", "download", "celeba-small", "--dest", dest)
        assert not (dest / "celeba-small").exists()
    # In training data an unreadable entry is skipped and counted, as a corrupt file in a folder is.
    (tmp_path / "enc.zip").write_bytes(zips["encrypted"])
    assert main(["data", "prepare", str(tmp_path / "enc.zip")]) == 0
    assert "2 of 3 images" in capsys.readouterr().out


def test_special_files_and_odd_names_as_data(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for source in (fifo, "/dev/zero"):  # a FIFO blocked the zip check forever; /dev/zero never ended
        assert "is not a regular file or folder" in one_line_error(capsys, "data", "prepare", source)
    folder = tmp_path / "odd"
    folder.mkdir()
    from PIL import Image
    Image.new("RGB", (32, 32), (10, 20, 30)).save(folder / "ok.png")
    Image.new("RGB", (32, 32), (10, 20, 30)).save(os.path.join(os.fsencode(folder), b"\xff\xfe.png"))
    assert main(["data", "prepare", str(folder)]) == 0  # a file name that is not UTF-8 is read like any other
    assert "2 of 2 images" in capsys.readouterr().out


@pytest.mark.parametrize("url, message", [("not a url", "is not a web address"),
                                          ("http://[::1", "is not a web address (Invalid IPv6 URL)"),
                                          ("ftp://example.com/x.zip", "is not a web address")])
def test_bad_download_urls_are_one_line(url, message, tmp_path, capsys):
    assert message in one_line_error(capsys, "data", "download", "celeba-small", "--url", url, "--dest", tmp_path)


def test_nonsense_size_headers_mean_an_unknown_size():
    from facegan.data.download import _total_size

    class Response:
        def __init__(self, **headers):
            self.headers = headers

    assert _total_size(Response(**{"Content-Length": "abc"}), 0) == 0
    assert _total_size(Response(**{"Content-Range": "bytes garbage/xyz", "Content-Length": "10"}), 5) == 15
    assert _total_size(Response(**{"Content-Range": "bytes 5-9/10"}), 5) == 10


def test_evaluate_works_with_a_read_only_cache(tmp_path, capsys, monkeypatch):
    """The statistics cache cannot be written (a read-only FACEGAN_CACHE; as root chmod does not stop writes,
    so the write itself is made to fail): evaluate computes them and goes on."""
    import facegan.metrics.evaluate as evaluate_module

    runs = tmp_path / "runs"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(runs)]) == 0

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(args[0]))

    monkeypatch.setattr(evaluate_module, "atomic_write", read_only)
    capsys.readouterr()
    assert main(["evaluate", "--runs", str(runs), "--num-samples", "16", "--metrics", "swd,msssim"]) == 0
    assert "msssim_real" in capsys.readouterr().out


def test_a_torchscript_file_as_a_checkpoint_is_one_line(tmp_path, capsys):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "script.pt"))
    err = one_line_error(capsys, "generate", tmp_path / "script.pt")
    assert "facegan checkpoint" in err or "cannot read checkpoint" in err


def test_a_walk_at_truncation_zero_is_the_mean_face_not_black():
    from facegan.config import ModelConfig
    from facegan.generate import generate, interpolate
    from facegan.models import Generator
    torch.manual_seed(0)
    generator = Generator(ModelConfig(conv_dim=8, z_size=16)).eval()
    frames = interpolate(generator, [0, 1], 4, slerp=True, truncation=0.0)
    mean_face = generate(generator, [0], truncation=0.0)[0]
    assert all((frame == mean_face).all() for frame in frames)  # psi 0: every latent is the mean
