"""The one owner of a run folder's layout: its file names, metrics.jsonl, its checkpoint files, and
finding runs. Nothing else in facegan spells a run-folder file name.

    runs/NNNNN-<data><size>/
        config.json        the resolved TrainConfig
        metrics.jsonl      one JSON row per log window, evaluation, diversity check or alert
        reals.png          the first training images, beside which samples are judged
        samples/NAME.png   fixed-z progress grids (epoch-NNNN, step-NNNNNNN)
        tensorboard/       event files, with --tensorboard
        losses.png eval.png
        generator.pt       light generator snapshot: what generate/evaluate read
        progress.json      step and epoch of checkpoints/last.pt (what 'facegan runs' shows, without loading it)
        checkpoints/       last.pt, epoch-NNNN.pt (the newest few), best.pt: full training states
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from . import checkpoints, distributed
from .errors import FaceganError
from .fileio import no_space_error, pid_alive, remove_dead_temp_files, temp_path, write_text_atomic
from .metric_names import RESULT_TITLES

_RUN_NAME = re.compile(r"^(\d{5})-")


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _take_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on `path` with our pid in it, or None when a live
    process holds it. The kernel drops a killed holder's flock, so there is no stale state to judge,
    and the pid is written under the lock, so nobody reads a half-made lock as free. A lock file
    unlinked by its releasing holder between our open and our flock is a dead inode: open again."""
    import fcntl

    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)




class RunFolder:
    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # --- file names -------------------------------------------------------------------------
    config_json = property(lambda self: self.path / "config.json")
    metrics_jsonl = property(lambda self: self.path / "metrics.jsonl")
    reals_png = property(lambda self: self.path / "reals.png")
    losses_png = property(lambda self: self.path / "losses.png")
    eval_png = property(lambda self: self.path / "eval.png")
    generator_pt = property(lambda self: self.path / "generator.pt")
    progress_json = property(lambda self: self.path / "progress.json")          # step/epoch of last.pt, for listings
    generated_png = property(lambda self: self.path / "generated.png")          # facegan generate's default
    interpolation_png = property(lambda self: self.path / "interpolation.png")  # facegan interpolate's default
    nearest_png = property(lambda self: self.path / "nearest.png")              # evaluate --metrics nn's sheet
    audit_png = property(lambda self: self.path / "audit.png")                  # evaluate --metrics audit's chart
    checkpoint_dir = property(lambda self: self.path / "checkpoints")
    last_pt = property(lambda self: self.checkpoint_dir / "last.pt")
    best_pt = property(lambda self: self.checkpoint_dir / "best.pt")

    samples_dir = property(lambda self: self.path / "samples")
    tensorboard_dir = property(lambda self: self.path / "tensorboard")         # --tensorboard's event files

    def samples_png(self, name: str) -> Path:
        return self.samples_dir / f"{name}.png"

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"epoch-{epoch:04d}.pt"

    # --- config and metrics -----------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        write_text_atomic(self.config_json, json.dumps(config, indent=2) + "\n")

    def append_metrics(self, row: dict) -> None:
        try:
            with open(self.metrics_jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as exc:
            no_space_error(exc, self.path)
            raise

    def read_metrics(self, key: str | None = None) -> list[dict]:
        """The rows of metrics.jsonl (those holding `key`, if given); a torn last line is skipped."""
        if not self.metrics_jsonl.exists():
            return []
        rows = []
        for line in self.metrics_jsonl.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                continue  # a write cut short by a kill; the rows before it are intact
            if isinstance(row, dict) and isinstance(row.get("step", 0), int):  # a row facegan wrote, not `5`
                rows.append(row)
        return [r for r in rows if key is None or key in r]

    def drop_metrics_after(self, step: int) -> int:
        """On resume, forget rows logged after the checkpoint (a crash can leave some) and any torn
        line a kill left mid-write. Returns how many torn lines were dropped."""
        if not self.metrics_jsonl.exists():
            return 0
        lines = self.metrics_jsonl.read_text(errors="replace").splitlines()
        kept, torn = [], 0
        for line in lines:
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                row = None
            if not isinstance(row, dict) or not isinstance(row.get("step", 0), int):  # torn, or not facegan's
                torn += 1
                continue
            if row.get("step", 0) <= step:
                kept.append(line)
        if len(kept) != len(lines):
            write_text_atomic(self.metrics_jsonl, "".join(line + "\n" for line in kept))
        return torn

    # --- one writer at a time ------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """Hold RUN/.lock while training writes here: a second process refuses, naming the holder;
        a lock left by a killed process is stale and is taken over (with its dead temporary files)."""
        path = self.path / ".lock"
        fd = _take_lock(path)
        if fd is None:
            holder = _pid_in(path)
            raise FaceganError(f"run folder {self.path} is being trained by process {holder or 'another'}: wait for "
                               f"it to finish, or stop it (Ctrl-C) and resume then")
        self._remove_dead_temp_files()
        try:
            yield self
        finally:
            path.unlink(missing_ok=True)  # while still holding it, so a waiter re-checks the inode
            os.close(fd)

    def _remove_dead_temp_files(self) -> None:
        """Temporary files a killed writer left (.last.pt.tmp1234): never valid, never cleaned up otherwise."""
        remove_dead_temp_files(self.path, self.checkpoint_dir, self.samples_dir)

    # --- checkpoints ------------------------------------------------------------------------
    def save_training_state(self, state: dict, epoch: int | None = None, keep: int = 3) -> Path:
        """checkpoints/last.pt; at an epoch end also epoch-NNNN.pt, keeping the newest `keep`."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        last = checkpoints.atomic_save(state, self.last_pt)
        write_text_atomic(self.progress_json, json.dumps({"step": state["step"], "epoch": state["epoch"],
                                                          "step_in_epoch": state["step_in_epoch"]}) + "\n")
        if epoch is not None:
            numbered = self.epoch_checkpoint(epoch)
            tmp = temp_path(numbered)
            tmp.unlink(missing_ok=True)
            os.link(last, tmp)  # a second name for the same bytes: no second write
            os.replace(tmp, numbered)
            self._prune_epoch_checkpoints(keep)
        return last

    def save_best(self, state: dict) -> Path:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        return checkpoints.atomic_save(state, self.best_pt)

    def save_snapshot(self, snapshot: dict) -> Path:
        return checkpoints.atomic_save(snapshot, self.generator_pt)

    def _prune_epoch_checkpoints(self, keep: int) -> None:
        epochs = sorted(self.checkpoint_dir.glob("epoch-*.pt"))
        for old in epochs[:-keep] if keep > 0 else epochs:
            old.unlink(missing_ok=True)


def new_run(root, name: str) -> RunFolder:
    """Create root/NNNNN-name with the next free number (stylegan2-ada's layout)."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for p in root.iterdir() if (m := _RUN_NAME.match(p.name))]
        number = max(numbers, default=-1) + 1
        while True:  # another run started at the same instant may take a number first: take the next
            run = root / f"{number:05d}-{name}"
            try:
                run.mkdir()
                break
            except FileExistsError:
                number += 1
        probe = run / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise FaceganError(f"cannot write to output folder {root} ({exc.strerror}): "
                           f"pass --out with a folder you can write to") from None
    return RunFolder(run)


def _run_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and _RUN_NAME.match(p.name)) if root.is_dir() else []


def _is_run(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "checkpoints").is_dir() or (path / "generator.pt").is_file()


def latest_run(root) -> RunFolder:
    """The highest-numbered run under root that has a checkpoint."""
    root = Path(root)
    runs = [p for p in _run_folders(root) if RunFolder(p).last_pt.is_file()]
    if not runs:
        raise FaceganError(f"no run with a checkpoint under {root}/: train one first with 'facegan train', "
                           f"or pass a run folder or checkpoint file")
    return RunFolder(runs[-1])


def _run_by_id(target: str, root: Path) -> RunFolder:
    """A run under root named by its id: the full name (00003-faces32), its number (3 or 00003) or a
    prefix of the name (00003, 00003-fa)."""
    folders = _run_folders(root)
    exact = [p for p in folders if p.name == target]
    if target.isdigit():
        exact += [p for p in folders if int(_RUN_NAME.match(p.name).group(1)) == int(target)]
    matches = sorted(set(exact)) or [p for p in folders if p.name.startswith(target)]
    if len(matches) == 1:
        return RunFolder(matches[0])
    if not matches:
        raise FaceganError(f"{target} is neither a file, a folder, nor a run id under {root}/: pass a run folder, "
                           f"a checkpoint file, 'latest', or a run id from 'facegan runs {root}'")
    names = ", ".join(p.name for p in matches[:5]) + (", ..." if len(matches) > 5 else "")
    raise FaceganError(f"run id {target} is ambiguous under {root}/ ({names}): type more of the name")


def resolve_run(target, root, log=None) -> RunFolder:
    """What a command names as its run -> the run folder: None or 'latest' (the newest run under
    root), a run folder, its checkpoints/ folder, a folder of runs (its newest, said through `log`),
    or a run id / prefix looked up under root."""
    root = Path(root)
    if target in (None, "latest"):
        return latest_run(root)
    path = Path(target)
    if path.is_dir():
        if path.name == "checkpoints" and _is_run(path.parent):
            return RunFolder(path.parent)
        if _is_run(path):
            return RunFolder(path)
        if _run_folders(path):  # a parent folder such as runs/
            run = latest_run(path)
            if log:
                log(f"using {run.path} (the newest run in {path})")
            return run
        raise FaceganError(f"{path} is not a run folder and holds none: pass a run folder, a checkpoint file, "
                           f"or a folder of runs")
    if path.exists():
        raise FaceganError(f"{path} is not a run folder or a checkpoint file")
    return _run_by_id(str(target), root)


def resolve_checkpoint(target, root, prefer: str = "last", log=None) -> Path:
    """A checkpoint file, or anything resolve_run takes -> a checkpoint file.

    prefer="last" picks the full training state; "generator" picks the light snapshot when there is one."""
    if target not in (None, "latest") and Path(target).is_file():
        return Path(target)
    run = resolve_run(target, root, log)
    candidates = ([run.generator_pt] if prefer == "generator" else []) + [run.last_pt]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FaceganError(f"{run.path} has no checkpoint yet (no checkpoints/last.pt): train first, "
                       f"or pass a checkpoint file")


def is_being_written(run: RunFolder) -> bool:
    """True while a live process holds the run's lock (a training writing to it)."""
    holder = _pid_in(run.path / ".lock")
    return holder is not None and holder != os.getpid() and pid_alive(holder)


def _json_object(path: Path) -> dict:
    """A JSON file's object, or {} when it is missing, damaged or not an object (a list, a number)."""
    try:
        value = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _section(config: dict, name: str) -> dict:
    return config[name] if isinstance(config.get(name), dict) else {}


def _printable(text) -> str:
    """A name from disk as one safe line: control characters (ANSI escapes included) shown as '?'."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


def describe_runs(root) -> list[dict]:
    """One row per run folder under root, oldest first: what 'facegan runs' prints."""
    rows = []
    for path in _run_folders(Path(root)):
        run = RunFolder(path)
        config = _json_object(run.config_json)
        config = {**config, "model": _section(config, "model"), "data": _section(config, "data")}
        progress = _json_object(run.progress_json)
        if not progress:  # runs from before progress.json: metrics and epoch checkpoints tell
            epochs = [int(p.stem.split("-")[1]) for p in run.checkpoint_dir.glob("epoch-*.pt")
                      if p.stem.split("-")[1].isdigit()]
            progress = {"step": max((r["step"] for r in run.read_metrics("step")), default=0),
                        "epoch": max(epochs, default=0)}
        evals = [r["eval"] for r in run.read_metrics("eval") if isinstance(r["eval"], dict)]
        last_eval = next(((k, evals[-1][k]) for k in RESULT_TITLES if isinstance(evals[-1].get(k), (int, float))
                          and not isinstance(evals[-1].get(k), bool)), None) if evals else None
        files = [p for p in path.rglob("*") if p.is_file()]
        rows.append({
            "id": _printable(path.name),
            "data": _printable(config["data"].get("source", "?")),
            "size": _number_or_none(config["model"].get("image_size")),
            "step": _number_or_none(progress.get("step")) or 0,
            "epoch": _number_or_none(progress.get("epoch")) or 0,
            "epochs": _number_or_none(config.get("epochs")),
            "metric": f"{last_eval[0]} {last_eval[1]:g}" if last_eval else "",
            "modified": max((p.stat().st_mtime for p in files), default=path.stat().st_mtime),
            "writing": is_being_written(run),
            "checkpoint": run.last_pt.is_file(),
        })
    return rows


def _number_or_none(value):
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def require_training_state(state: dict, checkpoint) -> None:
    """Resume needs the full training state; a generator snapshot has no D and no optimisers."""
    if state.get("format") == checkpoints.GENERATOR_SNAPSHOT:
        raise FaceganError(f"{checkpoint} is a generator snapshot, which cannot resume training (it holds no "
                           f"discriminator or optimiser state): resume from {run_of(checkpoint).last_pt} "
                           f"or the run folder")


def run_of(checkpoint) -> RunFolder:
    """The run folder a checkpoint file belongs to."""
    checkpoint = Path(checkpoint).resolve()
    return RunFolder(checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent)


def run_name_of(source: str) -> str:
    """The data part of a run folder's name: 'faces', or the folder/zip/data set name."""
    return Path(source).stem if source != "faces" else "faces"


def run_for_training(name: str, out, resume_from, world: distributed.World, run_dir=None) -> Path:
    """The folder a training writes to: the resumed run's, the one asked for (a study's trial), or a
    new numbered one that rank 0 creates and tells the other processes about."""
    if resume_from is not None:
        return run_of(resume_from).path
    if run_dir is not None:
        if world.is_main:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
        return Path(run_dir)
    path = str(new_run(out, name).path) if world.is_main else None
    return Path(distributed.from_rank0(path, world))


def resume_point(resume: str, out, options: dict, log=print):
    """(config, checkpoint, state) to continue the run `resume` names (see resolve_checkpoint), with the
    options that may change on resume applied; any other option is a clear error."""
    from .config import resume_config

    if not resume.strip():
        raise FaceganError("--resume '' names no run: pass a run folder, id, .pt file or 'latest'")
    checkpoint = resolve_checkpoint(resume, out, log=log)
    state = checkpoints.load(checkpoint)
    log(f"resuming from {checkpoint}")
    return resume_config(checkpoints.config_of(state), options), checkpoint, state


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def runs_table(rows: list[dict]) -> str:
    """describe_runs' rows as the aligned table `facegan runs` prints."""
    import time

    table = [("ID", "DATA", "SIZE", "STEPS", "EPOCHS", "LAST EVAL", "MODIFIED", "STATE")]
    for r in rows:
        state = "training" if r["writing"] else ("done" if r["epochs"] and r["epoch"] >= r["epochs"] else
                                                 "stopped" if r["checkpoint"] else "no checkpoint")
        table.append((r["id"], r["data"], f"{r['size']}px" if r["size"] else "?", str(r["step"]),
                      f"{r['epoch']:g}/{r['epochs'] or '?'}", r["metric"] or "-", _age(time.time() - r["modified"]),
                      state))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table)
