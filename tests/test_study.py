"""Studies: spec validation, a 2x2 grid killed mid-way and finished by a re-run, two workers sharing
one Optuna storage with one killed, and the report (checked in headless Chromium where installed)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from facegan.cli import main

from conftest import child_pids, process_running

pytest.importorskip("optuna", reason="facegan study run needs Optuna: pip install -e '.[study]'")

BASE = """[base]
image_size = 32
num_images = 96
batch_size = 16
conv_dim = 8
z_size = 16
epochs = 2
log_every = 2
num_samples = 4
eval_samples = 16
"""
GRID = BASE + """[grid]
lr = [2e-4, 1e30]
batch_size = [32, 48]
epochs = [1, 2]
"""


def write(tmp_path, text, name="study.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def facegan(*argv, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "facegan", *map(str, argv)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def completed(db) -> dict:
    """trial name -> how many times it completed, read from the storage (an SQLite file or a URL)."""
    import optuna
    url = db if isinstance(db, str) else f"sqlite:///{db}"
    counts = {}
    for summary in optuna.get_all_study_summaries(url):
        study = optuna.load_study(study_name=summary.study_name, storage=url)
        for t in study.get_trials(deepcopy=False):
            if t.state == optuna.trial.TrialState.COMPLETE:
                counts[t.params["trial"]] = counts.get(t.params["trial"], 0) + 1
    return counts


@pytest.mark.parametrize("text,message", [
    (BASE + "[grid]\nconv_dimm = [8]\n", "conv_dimm: not a facegan train option"),
    (BASE + "[grid]\nconv_dim = ['wide']\n", "'model.conv_dim' must be a whole number"),
    (BASE + "[grid]\n", "[grid]: empty"),
    (BASE + "[grid]\nlr = []\n", "[grid] lr: must be a non-empty list"),
    (BASE + "[grid]\nlr = [1e-3]\n[random]\ntrials = 2\nlr = 'uniform(0, 1)'\n", "not both"),
    (BASE + "[random]\ntrials = 2\nlr = 'logunifrm(1e-4, 1e-3)'\n", "[random] lr: cannot read"),
    (BASE + "[random]\ntrials = 2\nlr = 'loguniform(1e-3, 1e-4)'\n", "[random] lr: loguniform needs two numbers"),
    ("[base]\nepochs = 'ten'\n[grid]\nlr = [1e-3]\n", "'epochs' must be a whole number"),
])
def test_bad_specs_fail_before_training_with_one_line_naming_the_key(tmp_path, capsys, text, message):
    assert main(["study", "run", str(write(tmp_path, text)), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # nothing started


def test_random_search_samples_reproducibly_from_its_distributions(tmp_path):
    from facegan.study.spec import load_spec
    text = BASE + "[random]\ntrials = 5\nseed = 3\nlr = 'loguniform(1e-4, 1e-3)'\nconv_dim = 'choice(8, 16)'\n"
    first, again = (load_spec(write(tmp_path, text)) for _ in range(2))
    lrs = [t.settings["lr"] for t in first.trials]
    assert lrs == [t.settings["lr"] for t in again.trials] and all(1e-4 <= v <= 1e-3 for v in lrs)
    assert {t.settings["conv_dim"] for t in first.trials} <= {8, 16} and first.trials[0].name == "trial-000"


def test_init_writes_a_spec_that_loads(tmp_path):
    from facegan.study.spec import load_spec
    assert main(["study", "init", str(tmp_path / "example.toml")]) == 0
    spec = load_spec(tmp_path / "example.toml")
    assert spec.mode == "grid" and {"lr", "batch_size", "epochs", "conv_dim", "num_layers"} <= set(spec.factors)
    assert any(t.view_of for t in spec.trials)  # epochs 1 and 5 read from the epochs=10 run


def test_grid_killed_midway_then_rerun_finishes_without_repeating_and_reports(tmp_path):
    spec, out = write(tmp_path, GRID), tmp_path / "out"
    first = facegan("study", "run", spec, "--out", out, "--no-progress")
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "batch_size=32").exists():  # third trial has started
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = json.loads((out / "study.json").read_text())
    finished_before = {t["name"] for t in before["trials"] if t["status"] in ("done", "diverged")}
    assert {"lr=0.0002", "lr=1e+30"} <= finished_before
    steps_before = (out / "lr=0.0002" / "metrics.jsonl").read_text()

    second = facegan("study", "run", spec, "--out", out, "--no-progress")
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output
    assert "trial lr=0.0002" not in output  # finished: not run again
    index = {t["name"]: t for t in json.loads((out / "study.json").read_text())["trials"]}
    assert (out / "lr=0.0002" / "metrics.jsonl").read_text() == steps_before
    assert index["lr=1e+30"]["status"] == "diverged" and "NaN" in index["lr=1e+30"]["reason"]
    assert index["batch_size=32"]["status"] == index["batch_size=48"]["status"] == "done"
    assert index["epochs=1"]["run"] == index["epochs=2"]["run"] == "lr=0.0002"  # [base] is lr 2e-4, 2 epochs
    assert index["epochs=1"]["step"] == 6 and index["epochs=2"]["step"] == 12  # read at epoch 1 and 2
    assert all(count == 1 for count in completed(out / "study.db").values())

    assert main(["study", "report", str(out)]) == 0
    report = (out / "report.html").read_text()
    assert report.count("<table>") == 3 and "★ best" in report and "diverged" in report
    assert report.count("data:image/png;base64,") >= 3 * 2 + 4  # grids, loss and metric plots per factor
    assert "src='http" not in report and "<script" not in report  # opens offline
    markdown = (out / "report.md").read_text()
    assert "## Factor: lr" in markdown and all((out / p).is_file() for p in
                                               __import__("re").findall(r"\((report/[^)]+)\)", markdown))


def test_two_workers_share_one_storage_and_a_killed_ones_trial_is_finished(tmp_path):
    _two_workers_one_killed(tmp_path, storage=None)


def test_two_workers_on_a_real_postgresql_server(tmp_path, postgres_url, capsys):
    """Studies across machines: the same kill test against PostgreSQL (a throw-away cluster), then the report."""
    _two_workers_one_killed(tmp_path, storage=postgres_url)
    assert main(["study", "report", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.html").stat().st_size > 1000


def _two_workers_one_killed(tmp_path, storage):
    from facegan.study.runner import default_storage, enqueue_missing, open_study, study_name
    from facegan.study.spec import load_spec
    text = BASE + "[grid]\nseed = [1, 2, 3]\n"
    spec_path, out = write(tmp_path, text), tmp_path / "out"
    out.mkdir()
    storage = storage or default_storage(out)
    enqueue_missing(open_study(storage, study_name(out)), load_spec(spec_path))
    workers = [facegan("study", "worker", spec_path, "--out", out, "--storage", storage, "--threads", "1")
               for _ in range(2)]
    deadline = time.time() + 240
    while time.time() < deadline and len([p for p in out.iterdir() if p.name.startswith("seed=")]) < 2:
        time.sleep(0.2)
    os.killpg(workers[0].pid, signal.SIGKILL)  # mid-trial
    output, _ = workers[1].communicate(timeout=300)
    assert workers[1].returncode == 0, output
    counts = completed(storage if not storage.startswith("sqlite") else out / "study.db")
    assert counts == {f"seed={i}": 1 for i in (1, 2, 3)}  # none lost, none run twice
    index = json.loads((out / "study.json").read_text())
    assert all(t["status"] == "done" for t in index["trials"])


def test_report_opens_in_a_real_browser(tmp_path, browser):
    from facegan.study.report import write_report
    out = tmp_path / "out"
    assert main(["study", "run", str(write(tmp_path, BASE + "[grid]\nlr = [2e-4, 1e-3]\n")), "--out", str(out),
                 "--no-progress"]) == 0
    html_path, _ = write_report(out)
    browser.get(html_path.as_uri())
    loaded = browser.execute_script("return [...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
    assert loaded == len(browser.find_elements("tag name", "img")) >= 4
    assert "Factor: lr" in browser.find_element("tag name", "body").text


SHORT = """[base]
image_size = 32
conv_dim = 8
z_size = 16
batch_size = 16
num_images = 256
max_steps = 12
num_samples = 4
eval_samples = 32
[grid]
lr = [1e-3, 2e-4]
beta1 = [0.5, 0.9]
"""


def test_trials_that_stop_inside_their_first_epoch_are_scored_and_show_their_faces(tmp_path, capsys):
    """The spec of issue 24 (smaller samples): every trial ends at max_steps 12, before its first
    epoch-end evaluation; each is still scored at its end and its last grid is in the report."""
    out = tmp_path / "out"
    assert main(["study", "run", str(write(tmp_path, SHORT)), "--out", str(out), "--no-progress"]) == 0
    trials = json.loads((out / "study.json").read_text())["trials"]
    assert len(trials) == 4 and all(isinstance(t.get("swd"), float) and isinstance(t.get("msssim"), float)
                                    for t in trials), trials
    assert main(["study", "report", str(out)]) == 0
    report = (out / "report.html").read_text()
    # per factor: one sample grid per trial (2 + 2), the overlaid losses and the metric plot
    grids = report.count("<figure>")
    assert grids == 4, grids
    assert report.count("data:image/png;base64,") == grids + 2 * 2


def test_dry_runs_print_the_plan_and_write_nothing(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FACEGAN_CACHE", str(cache))
    out = tmp_path / "out"
    assert main(["study", "run", str(write(tmp_path, SHORT)), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "lr=0.001: 12 steps" in text and "beta1=0.5: read from lr=0.0002's run" in text and "total: about" in text
    assert main(["train", "--conv-dim", "8", "--z-size", "16", "--num-images", "200", "--batch-size", "16",
                 "--epochs", "3", "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert '"conv_dim": 8' in text and "parameters: G " in text and "memory: about" in text
    assert "3 epochs, 36 steps: about" in text and "images/s (3 steps timed on cpu)" in text
    assert not out.exists() and (not cache.exists() or not any(cache.rglob("*")))  # nothing written


def test_report_escapes_every_value_and_runs_no_script(tmp_path, browser):
    """Issue 21: a spec value holding markup lands in report.html as text, and the page's
    Content-Security-Policy would stop any script that slipped through."""
    from facegan.study.report import write_report
    hostile = "<img src=x onerror=document.title='pwned'>"
    out = tmp_path / "out"
    out.mkdir()
    trial = {"name": f"lr={hostile}", "factor": "lr", "settings": {"lr": hostile}, "view_of": None,
             "status": "failed", "reason": hostile, "run": "lr_img_src_x-0123456789"}
    (out / "study.json").write_text(json.dumps({"spec": "t.toml", "mode": "grid", "base": {"data": hostile},
                                                "factors": {"lr": [hostile]}, "trials": [trial]}))
    html_path, _ = write_report(out)
    page = html_path.read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert all(p.resolve().parent == (out / "report").resolve() for p in (out / "report").iterdir())
    browser.get(html_path.as_uri())
    assert browser.title == "facegan study: out"  # the onerror never ran
    assert hostile in browser.find_element("tag name", "body").text  # shown as text


def test_a_trial_that_failed_on_a_full_disk_is_retried_and_the_report_says_why(tmp_path, monkeypatch, capsys):
    import facegan.train
    from facegan.errors import StorageFull
    from facegan.study.runner import default_storage, enqueue_missing, open_study, study_name, work
    from facegan.study.spec import load_spec

    spec_path, out = write(tmp_path, BASE.replace("epochs = 2", "epochs = 1") + "[grid]\nseed = [1]\n"), tmp_path / "o"
    out.mkdir()
    spec, storage = load_spec(spec_path), default_storage(out)
    enqueue_missing(open_study(storage, study_name(out)), spec)

    def full_disk(*args, **kwargs):
        raise StorageFull("no space left to write in /runs (0 MiB free): free some space")

    monkeypatch.setattr(facegan.train, "train", full_disk)
    work(spec, out, storage, log=lambda *a: None)  # the worker, in this process: its trial fails
    (entry,) = json.loads((out / "study.json").read_text())["trials"]
    assert entry["status"] == "failed" and "no space left" in entry["reason"] and entry["retry"] is True
    monkeypatch.undo()  # space freed: the next `study run` retries it (in a worker process of its own)
    assert main(["study", "run", str(spec_path), "--out", str(out), "--no-progress"]) == 0
    assert "retrying 1 failed trial(s): seed=1" in capsys.readouterr().out
    (entry,) = json.loads((out / "study.json").read_text())["trials"]
    assert entry["status"] == "done"
    assert completed(out / "study.db") == {"seed=1": 1}


def test_killing_the_study_parent_ends_its_workers(tmp_path):
    """kill -9 of `study run` itself (not its process group): its worker must not go on training the study."""
    spec_path, out = write(tmp_path, BASE + "[grid]\nseed = [1, 2, 3]\n"), tmp_path / "out"
    parent = facegan("study", "run", spec_path, "--out", out, "--no-progress")
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline and not (workers and any(p.name.startswith("seed=") for p in out.iterdir())):
        time.sleep(0.2)
        workers = child_pids(parent.pid) if out.exists() else []
    assert workers, "the study started no worker"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(process_running(pid) for pid in workers):
        time.sleep(0.2)
    assert not [pid for pid in workers if process_running(pid)], "a worker outlived its study"


