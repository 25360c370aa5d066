"""Multi-process training with torchrun + DDP on CPU (gloo), two processes on this machine."""

import os
import subprocess
import sys

import pytest
import torch

from facegan import checkpoints
from facegan.cli import main

# No BatchNorm: each image's output is then independent of its batch, so 2 processes x batch 16
# must match 1 process x batch 32 up to float summation order.
TINY = ["--conv-dim", "8", "--z-size", "16", "--num-images", "96", "--log-every", "1", "--num-samples", "4",
        "--amp", "off", "--no-progress"]  # fp32: the comparisons below are at float-rounding tolerance


def torchrun(*argv, nproc=2):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "facegan", "train", *map(str, argv)]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # two processes on two cores
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def final_state(runs):
    (run,) = list(runs.iterdir())
    return checkpoints.load(run / "checkpoints" / "last.pt")


def assert_close_states(a, b):
    for net in ("generator", "discriminator"):
        for name, tensor in a[net].items():
            torch.testing.assert_close(b[net][name], tensor, rtol=1e-4, atol=2e-5, msg=f"{net}.{name}")


@pytest.fixture(scope="module")
def single_two_epochs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("single")
    assert main(["train", *TINY, "--no-batchnorm", "--batch-size", "32", "--epochs", "2", "--out", str(runs)]) == 0
    return final_state(runs)


def test_two_processes_match_one_process_with_the_global_batch(tmp_path, single_two_epochs):
    output = torchrun(*TINY, "--no-batchnorm", "--batch-size", "16", "--epochs", "2", "--out", tmp_path)
    assert "parameters identical across 2 ranks" in output
    assert "global batch 32" in output
    assert len(list(tmp_path.iterdir())) == 1  # rank 1 made no run folder of its own
    state = final_state(tmp_path)
    assert state["world_size"] == 2 and state["step"] == 6
    assert_close_states(single_two_epochs, state)


def test_resume_single_process_run_on_two_processes(tmp_path, single_two_epochs):
    assert main(["train", *TINY, "--no-batchnorm", "--batch-size", "32", "--epochs", "1", "--out", str(tmp_path)]) == 0
    output = torchrun("--resume", "latest", "--epochs", "2", "--out", tmp_path, "--no-progress")
    assert "batch 16 per process keeps the global batch of 32" in output
    assert_close_states(single_two_epochs, final_state(tmp_path))


def test_balanced_batches_are_the_same_global_stream_on_two_processes(tmp_path):
    """--balance skin draws one weighted global order that ranks slice: 2 x 16 must match 1 x 32."""
    balanced = [*TINY, "--no-batchnorm", "--balance", "skin", "--skin-mix", "0.7,0.2,0.1", "--epochs", "1"]
    assert main(["train", *balanced, "--batch-size", "32", "--out", str(tmp_path / "one")]) == 0
    output = torchrun(*balanced, "--batch-size", "16", "--out", tmp_path / "two")
    assert "--balance skin: draws per group" in output
    assert_close_states(final_state(tmp_path / "one"), final_state(tmp_path / "two"))


def test_resume_two_process_run_in_one_process_with_batchnorm(tmp_path, capsys):
    output = torchrun(*TINY, "--batch-size", "16", "--epochs", "1", "--out", tmp_path)
    assert "parameters identical across 2 ranks" in output
    assert main(["train", "--resume", "latest", "--epochs", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "batch 32 per process keeps the global batch of 32" in capsys.readouterr().out
    state = final_state(tmp_path)
    assert state["epoch"] == 2 and state["world_size"] == 1


def test_a_rank_that_dies_ends_the_job_instead_of_hanging(tmp_path):
    """SIGKILL one worker mid-training: torchrun must end the job, with an error, within a minute."""
    import signal
    import time

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "facegan", "train", *TINY, "--num-images", "4000", "--batch-size", "16", "--epochs", "5",
               "--out", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("*/metrics.jsonl")):
        time.sleep(0.2)
    workers = subprocess.run(["pgrep", "-f", "-P", str(process.pid), "facegan"], capture_output=True, text=True)
    pids = [int(p) for p in workers.stdout.split()]
    assert len(pids) == 2, workers.stdout
    os.kill(pids[-1], signal.SIGKILL)
    started = time.time()
    output = process.communicate(timeout=90)[0]
    assert process.returncode != 0
    assert time.time() - started < 60
    assert "Signal 9" in output or "SIGKILL" in output or "exitcode" in output, output[-2000:]
