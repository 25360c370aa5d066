"""Running a study: every trial is an ordinary run (the same train() a user calls) in OUT/<trial name>.

The trial queue lives in an Optuna storage (an SQLite file OUT/study.db by default; a PostgreSQL or
MySQL URL lets workers on several machines share one study). Optuna is used as the engine: it hands
each waiting trial to exactly one worker, notices a killed worker by its missing heartbeat and puts
its trial back in the queue, and that trial then resumes from its run folder's checkpoint. facegan
adds only what a study of GAN runs needs: trials named after their settings, resume, divergence
recorded as a result (not a crash), and OUT/study.json, the index the report reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..errors import FaceganError
from ..fileio import write_text_atomic
from ..metric_names import STUDY_COLUMNS
from .spec import StudySpec, Trial, folder_name

HEARTBEAT_S, GRACE_S = 2, 8  # a worker silent for GRACE_S seconds is dead: its trial goes back in the queue


def _optuna():
    try:
        import optuna
    except ImportError:
        raise FaceganError("facegan study run needs Optuna, its trial engine: pip install 'facegan[study]'") from None
    import warnings
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # facegan prints one line per trial itself
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, fail_stale_trials
    return optuna


def default_storage(out: Path) -> str:
    return f"sqlite:///{(Path(out) / 'study.db').resolve()}"


def open_study(storage_url: str, name: str):
    optuna = _optuna()
    import optuna.storages as storages
    retry = {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(max_retry=3)} \
        if hasattr(storages, "RetryHeartbeatStaleTrialCallback") else \
        {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=3)}  # Optuna < 4.9
    try:
        storage = storages.RDBStorage(storage_url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, **retry,
                                      engine_kwargs={"connect_args": {"timeout": 60}}
                                      if storage_url.startswith("sqlite") else {})
    except Exception as exc:  # a bad URL, an unreachable server: one line
        raise FaceganError(f"cannot open the study storage {storage_url} ({str(exc).splitlines()[0][:120]}): "
                           f"check the URL (sqlite:///path.db, postgresql://user:pass@host/db)") from None
    return optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)


def trial_name_of(frozen) -> str | None:
    """The facegan trial an Optuna trial runs (enqueued trials carry it before they start)."""
    return frozen.params.get("trial") or frozen.system_attrs.get("fixed_params", {}).get("trial")


def enqueue_missing(study, spec: StudySpec) -> int:
    """Put every trial that the storage has never seen in the queue; returns how many were added."""
    known = {trial_name_of(t) for t in study.get_trials(deepcopy=False)}
    missing = [t.name for t in spec.trained if t.name not in known]
    for name in missing:
        study.enqueue_trial({"trial": name})
    return len(missing)


# Written into every trial folder facegan makes: the only folders a study ever deletes.
TRIAL_MARK = ".facegan-trial"


def trial_dir(out, name: str) -> Path:
    """The folder of trial `name` (spec.folder_name), checked to lie inside the study's folder `out`."""
    root = Path(out).resolve()
    path = (root / folder_name(name)).resolve()
    if path.parent != root:
        raise FaceganError(f"trial {name!r} would be written outside the study's folder {root}: rename it")
    return path


def _steps_per_epoch(cfg) -> int:
    from ..data.prepare import prepare
    count = len(prepare(cfg.data, cfg.model.image_size).images)  # cached after the first trial
    if cfg.data.max_images:
        count = min(count, cfg.data.max_images)
    return max(1, count // cfg.batch_size)


def trial_config(spec: StudySpec, trial: Trial):
    """The trial's config, with an evaluation at every epoch's end unless [base] says otherwise: the
    report's metrics, and the per-epoch values an epochs factor reads."""
    import dataclasses
    cfg = spec.config(trial)
    if not cfg.eval_every:
        eval_metrics = cfg.eval_metrics if "msssim" in cfg.eval_metrics else cfg.eval_metrics + ",msssim"
        cfg = dataclasses.replace(cfg, eval_every=_steps_per_epoch(cfg), eval_metrics=eval_metrics)
    return cfg


def run_trial(spec: StudySpec, trial: Trial, out: Path, log=print) -> dict:
    """Train (or resume, or skip when finished) one trial; returns its record for study.json."""
    from .. import checkpoints
    from ..config import resume_config
    from ..errors import StorageFull
    from ..runs import RunFolder
    from ..train import TrainingDiverged, train

    cfg = trial_config(spec, trial)
    run = RunFolder(trial_dir(out, trial.name))
    started = time.time()
    record = {"status": "done"}
    try:
        if run.last_pt.is_file():
            state = checkpoints.load(run.last_pt)
            if state["epoch"] < cfg.epochs:
                log(f"trial {trial.name}: resuming at epoch {state['epoch']}, step {state['step']}")
                train(resume_config(checkpoints.config_of(state), {}), resume_from=run.last_pt, progress=False,
                      log=lambda *a: None, state=state, eta=False)
        else:
            if run.path.exists():  # killed before its first checkpoint: nothing in it is worth keeping
                if not (run.path / TRIAL_MARK).is_file():
                    raise FaceganError(f"{run.path} exists and was not made by facegan for this trial: move it "
                                       f"away (facegan deletes only the trial folders it made)")
                shutil.rmtree(run.path)
            run.path.mkdir(parents=True)
            write_text_atomic(run.path / TRIAL_MARK, f"{trial.name}\n")
            train(cfg, run_dir=run.path, progress=False, log=lambda *a: None, eta=False)
        score_at_end(run, cfg)
    except TrainingDiverged as exc:
        record = {"status": "diverged", "reason": str(exc).split(":")[0] + ": losses became NaN or infinite"}
    except StorageFull as exc:  # the disk, not the settings: the next `study run` retries it
        record = {"status": "failed", "reason": str(exc), "retry": True}
    except FaceganError as exc:
        record = {"status": "failed", "reason": str(exc)}
    except OSError as exc:  # an I/O error the code did not foresee (a network disk gone): retried as well
        record = {"status": "failed", "reason": f"I/O error: {exc}", "retry": True}
    record["wall_s"] = round(time.time() - started, 1)
    return record


def score_at_end(run, cfg) -> None:
    """Evaluate the trial's final generator unless its last evaluation already was at its last step:
    a trial that stops inside its first epoch (--max-steps) is ranked too."""
    from .. import checkpoints
    from ..device import resolve_device
    from ..metrics.evaluate import evaluate_checkpoint, parse_metrics

    final_step = checkpoints.load(run.generator_pt)["step"]
    evals = run.read_metrics("eval")
    if not evals or evals[-1]["step"] < final_step:
        evaluate_checkpoint(run.generator_pt, parse_metrics(cfg.eval_metrics), cfg.eval_samples,
                            resolve_device(cfg.device), cfg.inception_weights or None)


def _objective(spec: StudySpec, out: Path, log):
    optuna = _optuna()
    by_name = {t.name: t for t in spec.trained}

    def objective(trial):
        me = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        if "fixed_params" not in me.system_attrs:  # the queue ran dry while we asked: nothing to do
            raise optuna.TrialPruned("no waiting trial")
        name = trial.suggest_categorical("trial", list(by_name))
        done = [t for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if trial_name_of(t) == name]
        if done:  # enqueued twice by workers that started together: it already ran
            raise optuna.TrialPruned("duplicate")
        record = run_trial(spec, by_name[name], out, log)
        for key, value in record.items():
            trial.set_user_attr(key, value)
        summary = summarise(trial_dir(out, name))
        for key, value in summary.items():
            trial.set_user_attr(key, value)
        write_index(spec, out, trial.study)
        if record["status"] != "done":
            log(f"trial {name}: {record['status']} ({record['reason']})")
            raise optuna.TrialPruned(record["status"])
        scores = (f"SWD {summary['swd']:.2f}, MS-SSIM {summary['msssim']:.3f}" if "swd" in summary and
                  "msssim" in summary else "not evaluated (no evaluation in metrics.jsonl; see eval_metrics)")
        log(f"trial {name}: done in {record['wall_s']:.0f} s, {scores}")
        return summary.get("swd", float("inf"))

    return objective


def work(spec: StudySpec, out: Path, storage_url: str, log=print, threads: int | None = None) -> None:
    """One worker: take waiting trials until none is waiting or running anywhere (on `threads` CPU
    threads when given)."""
    if os.environ.get("FACEGAN_PARENT_PID", "").isdigit():  # started by `study run`: end with it
        from ..interrupt import die_with_parent
        die_with_parent(int(os.environ["FACEGAN_PARENT_PID"]))
    if threads:
        import torch
        torch.set_num_threads(threads)
    optuna = _optuna()
    from optuna.storages import fail_stale_trials

    study = open_study(storage_url, study_name(out))
    objective = _objective(spec, Path(out), log)
    while True:
        fail_stale_trials(study)  # trials of dead workers: failed, and queued again by the retry callback
        states = [t.state for t in study.get_trials(deepcopy=False)]
        if optuna.trial.TrialState.WAITING in states:
            study.optimize(objective, n_trials=1, catch=(Exception,))
        elif optuna.trial.TrialState.RUNNING in states:
            time.sleep(1)  # another worker's trial: wait for it to finish or for its heartbeat to stop
        else:
            break
    write_index(spec, out, study)


def study_name(out: Path) -> str:
    return f"facegan:{Path(out).resolve().name}"


def requeue_failed(study, spec: StudySpec, every_failure: bool = False) -> list[str]:
    """Queue again the trials whose last attempt failed on a full disk or an I/O error (with `every_failure`,
    every failed one; diverged trials are final). Returns their names."""
    from optuna.trial import TrialState

    latest, busy = {}, set()
    for frozen in study.get_trials(deepcopy=False):
        name = trial_name_of(frozen)
        if frozen.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE):
            busy.add(name)
        elif frozen.user_attrs.get("status"):
            latest[name] = frozen.user_attrs
    names = [t.name for t in spec.trained if t.name not in busy and t.name in latest
             and _retryable(latest[t.name], every_failure)]
    for name in names:
        study.enqueue_trial({"trial": name})
    return names


def _retryable(record: dict, every_failure: bool) -> bool:
    return record.get("status") == "failed" and (every_failure or bool(record.get("retry")))


def run_study(spec: StudySpec, out, jobs: int = 1, storage: str | None = None, log=print,
              progress: bool = True, retry_failed: bool = False) -> Path:
    """Run every trial of `spec` under `out` with `jobs` local workers; returns out/study.json. Trials that
    failed on a full disk or an I/O error are retried (with `retry_failed`, every failed trial)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage_url = storage or default_storage(out)
    study = open_study(storage_url, study_name(out))
    added = enqueue_missing(study, spec)
    retried = requeue_failed(study, spec, every_failure=retry_failed)
    if retried:
        log(f"retrying {len(retried)} failed trial(s): {', '.join(retried)}")
    finished = _finished(study)
    log(f"study {out}: {len(spec.trained)} trials to train ({len(finished)} finished already, {added} newly queued), "
        f"{jobs} worker(s), storage {storage_url}")
    write_text_atomic(out / "spec.toml", Path(spec.path).read_text())
    _run_workers(spec, out, storage_url, jobs, study, progress)  # one process per job, even for one
    return write_index(spec, out, study)


def dry_run_report(spec: StudySpec, jobs: int = 1) -> str:
    """`facegan study run --dry-run`: every trial with its steps and ETA, from a 3-step timing of each
    distinct network and recipe on the real device; nothing is written."""
    import json

    from ..device import resolve_device
    from ..estimate import duration, plan_of, time_step

    lines, rates, total = [f"study {Path(spec.path).name}: {len(spec.trials)} trials, {len(spec.trained)} to "
                           f"train, {jobs} worker(s)"], {}, 0.0
    for trial in spec.trials:
        if trial.view_of:
            lines.append(f"  {trial.name}: read from {trial.view_of}'s run (no training of its own)")
            continue
        cfg = spec.config(trial)
        plan = plan_of(cfg)
        speed_key = json.dumps({k: v for k, v in cfg.to_dict().items() if k not in _NOT_SPEED}, sort_keys=True)
        if speed_key not in rates:
            rates[speed_key] = time_step(cfg, resolve_device(cfg.device)).images_per_s
        seconds = plan.steps * plan.global_batch / rates[speed_key]
        total += seconds
        lines.append(f"  {trial.name}: {plan.steps:,} steps ({plan.epochs:g} epochs of {plan.images:,} images), "
                     f"about {duration(seconds)} at {rates[speed_key]:,.0f} images/s")
    lines.append(f"total: about {duration(total)} of training, one trial at a time, plus an evaluation per epoch "
                 f"({len(rates)} timing(s) of 3 steps); --jobs splits the CPU threads, so on one CPU it gains "
                 f"little, and on several GPUs each worker takes one")
    lines.append("dry run: nothing was written")
    return "\n".join(lines)


# Options that do not change a step's cost: trials differing only in these share one timing.
_NOT_SPEED = {"data", "epochs", "max_steps", "seed", "log_every", "keep_checkpoints", "checkpoint_every",
              "checkpoint_minutes", "num_samples", "sample_every", "save_every_epochs", "eval_every",
              "eval_metrics", "eval_samples", "inception_weights", "tensorboard", "lr_d", "lr_g", "beta1", "beta2",
              "momentum", "lr_decay", "lr_decay_start", "lr_decay_every", "lr_decay_gamma", "real_label"}


def _finished(study) -> set[str]:
    """Trials that are done for good: completed, or ended with a status that a re-run does not retry
    (diverged, or failed on their settings). A trial queued again is not finished, whatever came before."""
    from optuna.trial import TrialState
    finished, queued = set(), set()
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE or (t.state == TrialState.PRUNED and t.user_attrs.get("status")):
            finished.add(trial_name_of(t))
        elif t.state in (TrialState.WAITING, TrialState.RUNNING):
            queued.add(trial_name_of(t))
    completed = {trial_name_of(t) for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE}
    return (finished - queued) | completed


def _run_workers(spec: StudySpec, out: Path, storage_url: str, jobs: int, study, progress: bool) -> None:
    """`jobs` worker processes on this machine, CPU threads split between them (and one GPU each where
    there are several), with an overall progress bar."""
    import torch
    from tqdm import tqdm
    threads = max(1, (os.cpu_count() or 1) // jobs)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    workers = []
    for i in range(jobs):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   FACEGAN_PARENT_PID=str(os.getpid()))  # the worker ends when this process dies
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        command = [sys.executable, "-m", "facegan", "study", "worker", str(spec.path), "--out", str(out),
                   "--storage", storage_url, "--threads", str(threads)]
        workers.append(subprocess.Popen(command, env=env))
    total = len(spec.trained)
    bar = tqdm(total=total, initial=len(_finished(study)), desc="trials", unit="trial", disable=not progress)
    try:
        while any(w.poll() is None for w in workers):
            time.sleep(2)
            bar.update(len(_finished(study)) - bar.n)
        bar.update(len(_finished(study)) - bar.n)
    finally:
        bar.close()
        for w in workers:
            if w.poll() is None:
                w.terminate()
    if any(w.returncode not in (0, None) for w in workers):
        raise FaceganError(f"a study worker failed (exit codes {[w.returncode for w in workers]}): re-run the "
                           f"same command to finish the study; finished trials are kept")


# --- the index the report reads -------------------------------------------------------------------

def summarise(run_dir: Path, epoch: int | None = None) -> dict:
    """Final numbers of a trial's run, or those at the end of `epoch` (an epochs view)."""
    from ..runs import RunFolder
    run = RunFolder(run_dir)
    steps = run.read_metrics("loss_d")
    evals = run.read_metrics("eval")
    if epoch is not None and steps:
        per_epoch = steps[-1]["step"] / max(steps[-1]["epoch"], 1e-9)
        limit = round(epoch * per_epoch)
        steps = [r for r in steps if r["step"] <= limit]
        evals = [r for r in evals if r["step"] <= limit]
    summary = {}
    if steps:
        last = steps[-1]
        # training speed: the median log window that holds no evaluation (those are mostly eval time)
        eval_steps = [r["step"] for r in evals]
        starts = [0] + [r["step"] for r in steps[:-1]]
        clean = [r["images_per_s"] for start, r in zip(starts, steps)
                 if not any(start < e <= r["step"] for e in eval_steps)] or [r["images_per_s"] for r in steps]
        summary.update(loss_d=last["loss_d"], loss_g=last["loss_g"], step=last["step"],
                       images_per_s=sorted(clean)[len(clean) // 2])
    if evals:
        for key in STUDY_COLUMNS:
            if key in evals[-1]["eval"]:
                summary[key] = evals[-1]["eval"][key]
    return summary


def write_index(spec: StudySpec, out, study=None) -> Path:
    """OUT/study.json: every trial with its settings, status, reason, wall time and final numbers."""
    out = Path(out)
    records = {}
    if study is not None:
        for frozen in study.get_trials(deepcopy=False):
            name = trial_name_of(frozen)
            if name and frozen.user_attrs.get("status"):
                records[name] = dict(frozen.user_attrs)
    trials = []
    for trial in spec.trials:
        entry = {"name": trial.name, "factor": trial.factor, "settings": trial.settings, "view_of": trial.view_of}
        source = trial.view_of or trial.name
        if source in records:
            entry.update(records[source])
            # numbers from the run folder itself (the record's copy was taken when the trial ended)
            entry.update(summarise(trial_dir(out, source), trial.epochs_view if trial.view_of else None))
            if trial.view_of:
                entry["wall_s"] = None
        else:
            entry["status"] = "pending"
        entry["run"] = folder_name(source)
        trials.append(entry)
    index = {"spec": str(spec.path), "mode": spec.mode, "base": spec.base, "factors": spec.factors, "trials": trials}
    return write_text_atomic(out / "study.json", json.dumps(index, indent=2, default=str) + "\n")
