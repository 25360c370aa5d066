"""The one training loop: D step then G step, metrics, progress grids, checkpoints, exact resume.

Speed features are switches on this loop (channels_last, bf16 autocast, torch.compile), never a
second copy of it. Everything random (weights, shuffles, flips, z, dropout) flows from cfg.seed
through generators whose states are checkpointed, so 2 epochs straight and 1 + resume + 1 give
the same weights bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path

import torch

from . import checkpoints, distributed
from .augment import augment
from .config import TrainConfig
from .data.balance import training_weights
from .data.batches import BatchSource
from .data.prepare import PreparedData, prepare_for_training
from .device import autocast_factory, check_fits, configure_threads, default_channels_last, resolve_amp, resolve_device
from .ema import ema_beta
from .errors import FaceganError, TrainingDiverged
from .estimate import RunClock
from .images import make_grid, plot_eval, plot_losses, save_grid, to_uint8
from .interrupt import StopRequest
from .losses import make_loss
from .metrics.msssim import diversity
from .models import activation_bytes, training_bytes
from .monitor import Monitor
from .optim import lr_factor, set_learning_rates
from .runs import RunFolder, require_training_state, run_for_training, run_name_of
from .schedule import epochs_per_save, planned_steps
from .step import METRIC_NAMES, DInputPolicy, LossWindow, build_networks, train_step


class Trainer:
    """Owns one run: its models, optimisers, random streams, data position and run folder."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, prepared: PreparedData, state: dict | None = None,
                 progress: bool = True, log=print, world: distributed.World = distributed.World(),
                 device: torch.device | None = None):
        self.world = world
        self.log = log
        self.run_folder = RunFolder(run_dir)
        self.progress = progress and world.is_main
        self.device = device or resolve_device(cfg.device)
        self.cfg = cfg = distributed.fit_batch_to_data(cfg, len(prepared.images), world, resuming=state is not None,
                                                       log=log)

        channels_last = cfg.channels_last if cfg.channels_last is not None else default_channels_last(self.device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.precision = resolve_amp(cfg.amp, self.device)
        self.autocast = autocast_factory(self.device, self.precision == "bf16")

        self.loss = make_loss(cfg.loss, cfg.real_label)
        self.generator, self.discriminator, self.ema, self.step_modules = build_networks(
            cfg, self.device, world, self.memory_format)
        self.opt_g, self.opt_d = self.step_modules.opt_g, self.step_modules.opt_d

        self.noise = torch.Generator(self.device).manual_seed(cfg.seed + 1)  # z and flips, in step order
        self.fixed_z = torch.randn(cfg.num_samples, cfg.model.noise_size,
                                   generator=torch.Generator().manual_seed(cfg.seed + 2)).to(self.device)
        self.batches = BatchSource(prepared.images, cfg.batch_size, self.device, cfg.seed, cfg.data.flip,
                                   self.memory_format, rank=world.rank, world_size=world.size,
                                   weights=prepared.weights if prepared.weights is not None
                                   else training_weights(cfg.data, prepared, log))
        if self.batches.steps_per_epoch < 1:
            raise FaceganError("the data set is too small for one batch: add images or lower --batch-size")
        self.prepared = prepared
        self.d_inputs = DInputPolicy(cfg, self.noise, world.rank, world.size, self.memory_format)
        self.augmentations = [name for name in cfg.augmentations if name != "flip"]  # flips: in self.batches
        self.save_every = epochs_per_save(cfg, self.batches.steps_per_epoch)
        self.monitor = Monitor(self.loss, diversity=diversity)
        self.best: dict | None = None  # {"metric", "value", "step"} of checkpoints/best.pt
        self.step = self.epoch = self.step_in_epoch = 0
        self.planned_steps = planned_steps(cfg, self.batches.steps_per_epoch)
        if state is not None:
            self._restore(state)
        self.tensorboard = self.clock = None  # the clock: the run's ETA (estimate.RunClock), set by train()
        if cfg.tensorboard and world.is_main:
            from .tblog import TensorBoardLog
            self.tensorboard = TensorBoardLog(self.run_folder.tensorboard_dir, purge_step=self.step or None)
        if world.distributed:  # dropout masks differ per rank, reproducibly from (seed, rank, step)
            torch.manual_seed(cfg.seed * 100_003 + world.rank * 1_009 + self.step)

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = {**checkpoints.global_rng_state(), "noise": self.noise.get_state()}
        return {
            "format": checkpoints.TRAINING_STATE, "config": self.cfg.to_dict(),
            "generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
            **({"generator_ema": self.ema.module.state_dict()} if self.ema else {}),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "rng": rng,
            "world_size": self.world.size, "best": self.best, "planned_steps": self.planned_steps,
        }

    def _restore(self, state: dict) -> None:
        try:
            self.generator.load_state_dict(state["generator"])
            if self.ema:
                self.ema.module.load_state_dict(state.get("generator_ema", state["generator"]))
            self.discriminator.load_state_dict(state["discriminator"])
            self.opt_g.load_state_dict(state["opt_g"])
            self.opt_d.load_state_dict(state["opt_d"])
        except (RuntimeError, ValueError, KeyError):
            raise FaceganError("the checkpoint's weights or optimiser states do not match the model its config "
                               "describes: the file is damaged or was edited; resume from another checkpoint "
                               "of the run (checkpoints/epoch-NNNN.pt)") from None
        self.step, self.epoch, self.step_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        self.best = state.get("best")
        if self.cfg.lr_decay != "none" and state.get("planned_steps", self.planned_steps) != self.planned_steps:
            self.log(f"note: the learning-rate schedule now spans {self.planned_steps} steps "
                     f"(was {state['planned_steps']}): --epochs or --max-steps changed")
        checkpoints.set_global_rng_state(state["rng"])
        self.noise.set_state(state["rng"]["noise"].to(self.noise.get_state().device))
        if self.step_in_epoch > self.batches.steps_per_epoch:
            raise FaceganError("the checkpoint's data position is past the end of an epoch of this data: "
                               "resume with the data the run was trained on")

    def save_checkpoint(self, end_of_epoch: bool) -> Path:
        """last.pt (and epoch-NNNN.pt at an epoch's end), then the generator snapshot."""
        last = self.run_folder.save_training_state(self.state_dict(), self.epoch if end_of_epoch else None,
                                                   keep=self.cfg.keep_checkpoints)
        self.run_folder.save_snapshot(checkpoints.generator_snapshot(self.generator, self.cfg, self.step, self.epoch,
                                                                     self.ema.module if self.ema else None))
        return last

    def finite(self) -> bool:
        """No NaN or inf in the weights (and their average): the check before every save."""
        return checkpoints.all_finite([self.generator, self.discriminator, self.ema.module if self.ema else None])

    # --- outputs ----------------------------------------------------------------------------
    @property
    def sampling_generator(self) -> torch.nn.Module:
        """What samples, evaluations and the snapshot use: the EMA generator when there is one."""
        return self.ema.module if self.ema else self.generator

    def _fixed_samples(self):
        """The progress-grid faces: G in eval mode on the run's fixed z, as uint8 (N, S, S, 3)."""
        generator = self.sampling_generator
        was_training = generator.training
        generator.eval()
        with torch.no_grad(), self.autocast():
            images = to_uint8(generator(self.fixed_z))
        generator.train(was_training)
        return images

    def write_samples(self, name: str, check_diversity: bool = False) -> Path:
        """The progress grid; with `check_diversity`, also the collapse check on the same samples."""
        samples = self._fixed_samples()
        path = save_grid(samples, self.run_folder.samples_png(name))
        if self.tensorboard:
            self.tensorboard.add_grid("samples (fixed z)", make_grid(samples), self.step)
        if check_diversity:  # the collapse check, on the same samples
            row, alerts = self.monitor.check_samples(samples, lambda: self._first_reals(len(samples)), self.step)
            if row:
                self._record(row)
            self._alert(alerts)
        return path

    def _save_progress(self, sample_name: str, end_of_epoch: bool) -> None:
        """What a person looks at and what resume needs, at an epoch's end or a mid-epoch stop."""
        self.write_samples(sample_name, check_diversity=end_of_epoch)
        self.save_checkpoint(end_of_epoch)
        plot_losses(self.run_folder.read_metrics("loss_d"), self.run_folder.losses_png)

    def _record(self, row: dict) -> None:
        """A metrics.jsonl row, mirrored to TensorBoard when it is on."""
        self.run_folder.append_metrics(row)
        if self.tensorboard:
            self.tensorboard.add_row(row)

    def _alert(self, messages) -> None:
        for message in messages:
            self.log(f"warning: {message}")
            self._record({"step": self.step, "alert": message})

    def evaluate(self) -> dict:
        """Metrics on eval_samples images; keeps checkpoints/best.pt at the best primary metric."""
        from .metrics.evaluate import evaluate, parse_metrics

        metrics = parse_metrics(self.cfg.eval_metrics)
        results = evaluate(self.sampling_generator, self.prepared, metrics, self.cfg.eval_samples, self.device,
                           self.cfg.inception_weights or None)
        self._record({"step": self.step, "eval": results, "time": round(time.time(), 3)})
        primary = metrics[0]
        if self.best is None or results[primary] < self.best["value"]:
            self.best = {"metric": primary, "value": results[primary], "step": self.step}
            self.run_folder.save_best(self.state_dict())
        plot_eval(self.run_folder.read_metrics("eval"), self.run_folder.eval_png)
        self.log(f"step {self.step}: " + ", ".join(f"{k} {results[k]}" for k in metrics if k in results)
                 + f" (best {self.best['metric']} {self.best['value']} at step {self.best['step']})")
        return results

    def _first_reals(self, count: int):
        """The first `count` images of epoch 0's shuffle, uint8 (N, S, S, 3): what reals.png shows."""
        first = self.batches.shard(0)[:count].to(self.batches.images.device)
        return self.batches.images.index_select(0, first).cpu().numpy()

    def write_reals(self) -> Path:
        return save_grid(self._first_reals(self.cfg.num_samples), self.run_folder.reals_png)

    # --- the loop ---------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to cfg.epochs / cfg.max_steps, or until a Ctrl-C or NaN losses; returns where it stopped."""
        cfg = self.cfg
        if self.epoch >= cfg.epochs or (cfg.max_steps and self.step >= cfg.max_steps):
            self.log(f"nothing to do: the run is at epoch {self.epoch}, step {self.step}; "
                     f"raise --epochs or --max-steps to train further")
            return {"step": self.step, "epoch": self.epoch, "stopped": "complete"}
        if self.world.is_main:
            if self.step == 0:
                self.write_reals()
            elif self.run_folder.drop_metrics_after(self.step):
                self.log("note: dropped a partial last line of metrics.jsonl (a write cut short by a crash)")
        self.window = LossWindow(self.device)
        self._last_saved, self._saved_step = time.monotonic(), self.step
        stopped = "complete"
        with StopRequest() as stop:
            while self.epoch < cfg.epochs and stopped == "complete":
                stopped = self._run_epoch(stop)
        if stopped not in ("complete", "diverged") and not self.finite():
            stopped = "diverged"
        if stopped not in ("complete", "diverged") and self.step != self._saved_step:  # an early stop: save it
            if self.window.steps:
                self._log_window()
            if self.world.is_main:
                at_epoch_end = self.step_in_epoch == 0  # an epoch end that epochs_per_save skipped
                self._save_progress(f"epoch-{self.epoch:04d}" if at_epoch_end else f"step-{self.step:07d}",
                                    end_of_epoch=at_epoch_end)
        if self.world.distributed:
            agree = distributed.parameters_agree([self.generator, self.discriminator], self.world, self.device)
            self.log(f"parameters identical across {self.world.size} ranks" if agree else
                     f"warning: parameters differ between the {self.world.size} ranks")
            distributed.barrier(self.world)
        if stopped == "interrupted":
            self.log(f"stopped by Ctrl-C at step {self.step}; checkpoint saved, continue with "
                     f"--resume {self.run_folder.path}")
        return {"step": self.step, "epoch": self.epoch, "stopped": stopped}

    def _run_epoch(self, stop) -> str:
        """The rest of the current epoch; "complete" to go on, else why the run stops."""
        from tqdm import tqdm

        cfg, per_epoch = self.cfg, self.batches.steps_per_epoch
        bar = tqdm(total=per_epoch, initial=self.step_in_epoch, disable=not self.progress,
                   desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="step", leave=False, dynamic_ncols=True)
        for real in self.batches.epoch(self.epoch, self.noise, start_step=self.step_in_epoch):
            self.window.add(self._train_on(real))
            bar.update(1)
            reason = self._should_stop(stop, self._maintain(bar))
            if reason:
                break
        bar.close()
        if reason == "diverged":
            return reason
        if self.step_in_epoch == per_epoch:
            if not self.finite():  # NaN weights between log windows: never saved, never "complete"
                return "diverged"
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
            if self.epoch % self.save_every == 0 or self.epoch == cfg.epochs:
                if self.world.is_main:
                    self._save_progress(f"epoch-{self.epoch:04d}", end_of_epoch=True)
                self._saved_step = self.step  # on every rank: the early-stop save logs collectively
            self.log(f"epoch {self.epoch}/{cfg.epochs} done at step {self.step}")
        stop_now = distributed.any_rank(stop.requested, self.world, self.device)
        if stop_now or (cfg.max_steps and self.step >= cfg.max_steps):
            return "interrupted" if stop_now else "max_steps"
        return "complete"

    def _train_on(self, real: torch.Tensor) -> torch.Tensor:
        """One step on a batch of reals, with this step's augmentations, z, learning rates and D inputs."""
        cfg, world = self.cfg, self.world
        if self.augmentations:
            real = augment(real, self.augmentations, self.noise, world.rank, world.size
                           ).contiguous(memory_format=self.memory_format)
        # z for the whole global batch, this rank's slice: one noise stream for any world size.
        z = torch.randn(len(real) * world.size, cfg.model.noise_size, device=self.device,
                        generator=self.noise)[world.rank::world.size]
        if cfg.lr_decay != "none":
            set_learning_rates([(self.opt_d, cfg.lr_d), (self.opt_g, cfg.lr_g)],
                               lr_factor(cfg, self.step, self.planned_steps))
        stats = train_step(self.step_modules, self.loss, real, z, self.d_inputs.for_step(self.step, real),
                           self.autocast)
        self.step += 1
        self.step_in_epoch += 1
        if self.ema:
            global_batch = cfg.batch_size * world.size
            self.ema.update(self.generator, ema_beta(cfg.ema_kimg, self.step * global_batch, global_batch,
                                                     cfg.ema_rampup))
        return stats

    def _maintain(self, bar) -> dict | None:
        """Upkeep after a step, each on its own schedule: evaluation, a mid-epoch grid, a mid-epoch save
        of last.pt, and the log window (whose row it returns, or None between windows)."""
        cfg, main, mid_epoch = self.cfg, self.world.is_main, self.step_in_epoch < self.batches.steps_per_epoch
        if main and cfg.eval_every and self.step % cfg.eval_every == 0:
            self.evaluate()
        if main and cfg.sample_every and self.step % cfg.sample_every == 0 and mid_epoch:
            self.write_samples(f"step-{self.step:07d}")  # an epoch's end writes its own grid
        # Never a NaN state over a good one: neither NaN losses since the last row nor NaN weights.
        if main and mid_epoch and self._checkpoint_due() and self.window.finite() and self.finite():
            self.save_checkpoint(end_of_epoch=False)  # bounds what a kill can lose
            self._last_saved = time.monotonic()
        if self.step % cfg.log_every:
            return None
        row = self._log_window()
        bar.set_postfix(d=f"{row['loss_d']:.3f}", g=f"{row['loss_g']:.3f}", img_s=f"{row['images_per_s']:.0f}")
        return row

    def _should_stop(self, stop, row: dict | None) -> str | None:
        """Why the run stops after this step, if it does. Ranks agree on Ctrl-C only at a log window, so
        all stop after the same step; NaN weights only stay NaN, so NaN losses stop the run (every rank
        sees the same averaged row) and the last good checkpoint is kept."""
        if row is not None:
            requested = distributed.any_rank(stop.requested, self.world, self.device)  # collective: every window
            if not all(math.isfinite(row[k]) for k in METRIC_NAMES):
                return "diverged"
        else:
            requested = stop.requested and not self.world.distributed
        if requested:
            return "interrupted"
        return "max_steps" if self.cfg.max_steps and self.step >= self.cfg.max_steps else None

    def _checkpoint_due(self) -> bool:
        """Mid-epoch save of last.pt: every checkpoint_every steps, or every checkpoint_minutes of training."""
        if self.cfg.checkpoint_every:
            return self.step % self.cfg.checkpoint_every == 0
        return time.monotonic() - self._last_saved >= 60 * self.cfg.checkpoint_minutes

    def _log_window(self) -> dict:
        """The metrics row of the steps since the last one (the one host sync per log_every steps)."""
        window = self.window
        values = distributed.mean(window.total / window.steps, self.world).tolist()
        images = window.steps * self.cfg.batch_size * self.world.size
        row = {"step": self.step, "epoch": round(self.step / self.batches.steps_per_epoch, 3),
               **{name: round(v, 5) for name, v in zip(METRIC_NAMES, values)},
               "images_per_s": round(images / max(time.perf_counter() - window.started, 1e-9), 1),
               "time": round(time.time(), 3)}
        window.reset()
        if self.world.is_main:
            self._record(row)
            self._alert(self.monitor.check_losses(row))
        if self.clock:
            self.clock.after_window(row)
        return row


def train(cfg: TrainConfig, out="runs", resume_from=None, progress: bool = True, log=print,
          cache_dir=None, state: dict | None = None, run_dir=None, eta: bool = True) -> Path:
    """Train a new run under `out`, or continue the one `resume_from` (a checkpoint file) belongs to.

    For resume, `cfg` must already be the checkpoint's config with any allowed changes applied
    (config.resume_config does that); `state` may pass the checkpoint already loaded. Under
    torchrun every process calls this; rank 0 writes. `run_dir` names the folder of a new run instead
    of numbering one under `out` (a study's trials); `eta` prints the whole run's ETA first, from a
    short timing. Returns the run folder. A Ctrl-C stops after the current step, saves, and then
    raises KeyboardInterrupt."""
    # Everything that can be wrong with the input was checked when cfg was made, before a run folder exists.
    world, device = distributed.init(resolve_device(cfg.device))
    if not world.is_main:
        log = lambda *args, **kwargs: None  # noqa: E731  (rank 0 speaks for all)
    if device.type == "cpu":
        configure_threads(cfg, log)
    try:
        # Before any data is prepared or a folder made: the training state and one step's activations.
        check_fits(*training_bytes(cfg.model), device, activations=activation_bytes(cfg.model, cfg.batch_size))
        if resume_from is not None and state is None:
            state = checkpoints.load(resume_from)
        if state is not None:
            require_training_state(state, resume_from)
            cfg = distributed.keep_global_batch(cfg, state.get("world_size", 1), world, log)
        prepared = prepare_for_training(cfg, world, cache_dir=cache_dir, progress=progress, log=log)
        # --balance's labels are checked (and said) before a run folder exists.
        prepared = dataclasses.replace(prepared, weights=training_weights(cfg.data, prepared, log))
        run_dir = run_for_training(f"{run_name_of(cfg.data.source)}{cfg.model.image_size}", out, resume_from, world,
                                   run_dir)
        trainer = Trainer(cfg, run_dir, prepared, state=state, progress=progress, log=log, world=world, device=device)
        log(f"run folder: {run_dir}" + (f" ({world.size} processes, global batch {trainer.cfg.batch_size * world.size})"
                                        if world.distributed else ""))
        log(f"device {trainer.device}, precision {'bf16 autocast' if trainer.precision == 'bf16' else 'fp32'}"
            + (" (--amp auto)" if cfg.amp == "auto" else ""))
        trainer.clock = RunClock.begin(trainer, log) if world.is_main and eta else None
        with trainer.run_folder.lock() if world.is_main else contextlib.nullcontext():
            if world.is_main:
                trainer.run_folder.write_config(trainer.cfg.to_dict())
            try:
                result = trainer.run()
            finally:
                if trainer.tensorboard:
                    trainer.tensorboard.close()
        if result["stopped"] == "diverged":
            raise TrainingDiverged(f"training diverged at step {result['step']}: the losses became NaN or infinite "
                                   f"(metrics.jsonl); lower --lr-d/--lr-g or try --loss lsgan, and resume from the "
                                   f"last good checkpoint in {run_dir / 'checkpoints'} or start again")
        if result["stopped"] == "interrupted":
            raise KeyboardInterrupt  # saved already; the caller (a shell: exit status 130) learns it was a Ctrl-C
        log(f"finished at epoch {result['epoch']}, step {result['step']} ({result['stopped']}); "
            f"samples in {trainer.run_folder.samples_dir}")
        return run_dir
    finally:
        distributed.shutdown(world)
