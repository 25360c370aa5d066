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
from .augment import augment, diff_augment, instance_noise, instance_noise_std
from .config import TrainConfig
from .data.batches import BatchSource
from .data.prepare import PreparedData, prepare, summary
from .device import (autocast_factory, check_fits, default_channels_last, resolve_amp,
                     resolve_device)
from .ema import GeneratorEMA, ema_beta
from .errors import FaceganError
from .images import make_grid, plot_eval, plot_losses, save_grid, to_uint8
from .interrupt import StopRequest
from .losses import GANLoss, make_loss, r1_penalty
from .models import build_models, training_bytes
from .monitor import Monitor
from .optim import lr_factor, make_optimizer, set_learning_rates
from .runs import RunFolder, require_training_state, run_for_training, run_name_of

METRIC_NAMES = ("loss_d", "loss_g", "d_real", "d_fake")


def train_step(generator, discriminator, opt_g, opt_d, loss: GANLoss, real: torch.Tensor, z: torch.Tensor,
               autocast=contextlib.nullcontext, discriminator_in_g_step=None,
               input_noise: tuple[torch.Tensor, torch.Tensor] | None = None, r1_weight: float = 0.0,
               d_view=None) -> torch.Tensor:
    """One DCGAN step: D on real vs detached fake, then G through the updated D.

    `discriminator_in_g_step` is D as called in the G step; under DDP it is the unwrapped module,
    since D's gradients are not wanted there and DDP would wait for them. `input_noise` is
    (noise for the reals, noise for the fakes), added to what D sees in both phases (instance
    noise). `r1_weight` > 0 adds that times the R1 penalty to D's loss on this step (lazy R1: the
    caller passes gamma/2 x interval on every interval-th step). Returns (loss_d, loss_g, mean D(x),
    mean D(G(z))) as one detached tensor: no host sync here. `d_view`, when given, transforms every
    batch D sees, real and fake, in both phases (DiffAugment), before any instance noise."""
    frozen_d = discriminator_in_g_step if discriminator_in_g_step is not None else discriminator
    view = d_view or (lambda images: images)
    if input_noise is None:  # no extra pass over the batch when the noise has faded out
        seen_real, noisy_fake = view(real), view
    else:
        seen_real, noisy_fake = view(real) + input_noise[0], (lambda images: view(images) + input_noise[1])
    penalty = None
    with autocast():
        fake = generator(z)
        if r1_weight:
            real_logits, penalty = r1_penalty(discriminator, seen_real)
        else:
            real_logits = discriminator(seen_real)
        fake_logits = discriminator(noisy_fake(fake.detach()))
        loss_d = loss.d_loss(real_logits.float(), fake_logits.float())
    if penalty is not None:
        loss_d = loss_d + r1_weight * penalty
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    # G step. D's weights are frozen so backward computes only the input gradients G needs,
    # not D's weight gradients, which the textbook step computes and then throws away.
    frozen_d.requires_grad_(False)
    with autocast():
        loss_g = loss.g_loss(frozen_d(noisy_fake(fake)).float())
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    frozen_d.requires_grad_(True)
    return torch.stack([loss_d.detach(), loss_g.detach(),
                        loss.score(real_logits.detach().float()).mean(),
                        loss.score(fake_logits.detach().float()).mean()])


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
        self.cfg = cfg = distributed.fit_batch_to_data(cfg, len(prepared.images), world, resuming=state is not None, log=log)

        channels_last = cfg.channels_last if cfg.channels_last is not None else default_channels_last(self.device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.precision = resolve_amp(cfg.amp, self.device)
        self.autocast = autocast_factory(self.device, self.precision == "bf16")

        torch.manual_seed(cfg.seed)
        self.generator, self.discriminator = build_models(cfg.model)
        if cfg.sync_bn:
            if not (world.distributed and self.device.type == "cuda"):
                raise FaceganError("--sync-bn needs several CUDA processes (torchrun on GPUs): drop --sync-bn")
            self.generator = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.generator)
            self.discriminator = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.discriminator)
        for net in (self.generator, self.discriminator):
            net.to(self.device, memory_format=self.memory_format)
        self.opt_g = make_optimizer(cfg.opt_g, self.generator.parameters(), cfg.lr_g, cfg, self.device)
        self.opt_d = make_optimizer(cfg.opt_d, self.discriminator.parameters(), cfg.lr_d, cfg, self.device)
        self.loss = make_loss(cfg.loss, cfg.real_label)
        # The moving average of G (made after G is on its device); samples and evaluations use it.
        self.ema = GeneratorEMA(self.generator) if cfg.ema_kimg > 0 else None
        # What the step calls: DDP and torch.compile wrappers; the plain modules are what gets saved.
        self.step_generator, self.step_discriminator, self.step_discriminator_in_g_step = distributed.wrap_for_step(
            self.generator, self.discriminator, world, self.device, cfg.compile)

        self.noise = torch.Generator(self.device).manual_seed(cfg.seed + 1)  # z and flips, in step order
        self.fixed_z = torch.randn(cfg.num_samples, cfg.model.noise_size,
                                   generator=torch.Generator().manual_seed(cfg.seed + 2)).to(self.device)
        self.batches = BatchSource(prepared.images, cfg.batch_size, self.device, cfg.seed, cfg.data.flip,
                                   self.memory_format, rank=world.rank, world_size=world.size)
        if self.batches.steps_per_epoch < 1:
            raise FaceganError("the data set is too small for one batch: add images or lower --batch-size")
        self.prepared = prepared
        self.monitor = Monitor(cfg.loss, cfg.real_label)
        self.best: dict | None = None  # {"metric", "value", "step"} of checkpoints/best.pt
        self._reals_diversity: float | None = None  # MS-SSIM among real faces, the collapse check's yardstick
        self.step = self.epoch = self.step_in_epoch = 0
        # The learning-rate schedule's length (optim.py): a killed run resumes on the same plan, exactly;
        # resuming with other --epochs/--max-steps re-plans the rest of the schedule (and says so).
        self.planned_steps = cfg.epochs * self.batches.steps_per_epoch
        if cfg.max_steps:
            self.planned_steps = min(self.planned_steps, cfg.max_steps)
        if state is not None:
            self._restore(state)
        self.tensorboard = None
        if cfg.tensorboard and world.is_main:
            from .tblog import TensorBoardLog
            self.tensorboard = TensorBoardLog(self.run_folder.tensorboard_dir, purge_step=self.step or None)
        if world.distributed:  # dropout masks differ per rank, reproducibly from (seed, rank, step)
            torch.manual_seed(cfg.seed * 100_003 + world.rank * 1_009 + self.step)

    @property
    def run_dir(self) -> Path:
        return self.run_folder.path

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "noise": self.noise.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
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
        torch.set_rng_state(state["rng"]["torch"])
        self.noise.set_state(state["rng"]["noise"].to(self.noise.get_state().device))
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
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
        # Diversity needs two samples and two real faces to compare (a one-image data set has one).
        if check_diversity and len(samples) >= 2 and len(self.batches.shard(0)) >= 2:
            from .metrics.msssim import diversity

            if self._reals_diversity is None:
                self._reals_diversity = diversity(self._first_reals(len(samples)), pairs=256)
            value = diversity(samples, pairs=256)
            self._record({"step": self.step, "samples_msssim": round(value, 4),
                                            "reals_msssim": round(self._reals_diversity, 4)})
            self._alert(self.monitor.check_diversity(value, self._reals_diversity, self.step))
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
        cfg = self.cfg
        per_epoch = self.batches.steps_per_epoch
        if self.epoch >= cfg.epochs or (cfg.max_steps and self.step >= cfg.max_steps):
            self.log(f"nothing to do: the run is at epoch {self.epoch}, step {self.step}; "
                     f"raise --epochs or --max-steps to train further")
            return {"step": self.step, "epoch": self.epoch, "stopped": "complete"}
        if self.world.is_main:
            if self.step == 0:
                self.write_reals()
            else:
                if self.run_folder.drop_metrics_after(self.step):
                    self.log("note: dropped a partial last line of metrics.jsonl (a write cut short by a crash)")
        from tqdm import tqdm

        augmentations = [name for name in cfg.augmentations if name != "flip"]  # flips happen in self.batches
        policies = cfg.diffaug_policies
        d_view = (lambda images: diff_augment(images, policies, self.noise, self.world.rank, self.world.size)
                  .contiguous(memory_format=self.memory_format)) if policies else None
        window, window_steps, window_start = torch.zeros(len(METRIC_NAMES), device=self.device), 0, time.perf_counter()
        stopped = "complete"
        diverged = False
        last_saved = time.monotonic()
        save_every, saved_step = epochs_per_save(cfg, per_epoch), self.step
        with StopRequest() as stop:
            while self.epoch < cfg.epochs:
                bar = tqdm(total=per_epoch, initial=self.step_in_epoch, disable=not self.progress,
                           desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="step", leave=False, dynamic_ncols=True)
                for real in self.batches.epoch(self.epoch, self.noise, start_step=self.step_in_epoch):
                    if augmentations:
                        real = augment(real, augmentations, self.noise, self.world.rank, self.world.size
                                       ).contiguous(memory_format=self.memory_format)
                    # z for the whole global batch, this rank's slice: one noise stream for any world size.
                    z = torch.randn(len(real) * self.world.size, cfg.model.noise_size, device=self.device,
                                    generator=self.noise)[self.world.rank::self.world.size]
                    if cfg.lr_decay != "none":
                        set_learning_rates([(self.opt_d, cfg.lr_d), (self.opt_g, cfg.lr_g)],
                                           lr_factor(cfg, self.step, self.planned_steps))
                    noise_std = instance_noise_std(cfg.instance_noise, cfg.instance_noise_steps, self.step)
                    d_input_noise = (instance_noise(real, noise_std, self.noise, self.world.rank, self.world.size)
                                     if noise_std > 0 else None)
                    window += train_step(self.step_generator, self.step_discriminator, self.opt_g, self.opt_d,
                                         self.loss, real, z, self.autocast, self.step_discriminator_in_g_step,
                                         d_input_noise, r1_weight=(cfg.r1_gamma / 2 * cfg.r1_every
                                                                   if cfg.r1_gamma and self.step % cfg.r1_every == 0
                                                                   else 0.0), d_view=d_view)
                    window_steps += 1
                    self.step += 1
                    if self.ema:
                        images_seen = self.step * cfg.batch_size * self.world.size
                        self.ema.update(self.generator, ema_beta(cfg.ema_kimg, images_seen,
                                                                 cfg.batch_size * self.world.size, cfg.ema_rampup))
                    self.step_in_epoch += 1
                    bar.update(1)
                    if cfg.eval_every and self.step % cfg.eval_every == 0 and self.world.is_main:
                        self.evaluate()
                    if cfg.sample_every and self.step % cfg.sample_every == 0 and self.world.is_main \
                            and self.step_in_epoch < per_epoch:  # an epoch's end writes its own grid
                        self.write_samples(f"step-{self.step:07d}")
                    if self.world.is_main and self._checkpoint_due(last_saved) and self.step_in_epoch < per_epoch \
                            and bool(torch.isfinite(window).all()):  # never a NaN state over a good one
                        self.save_checkpoint(end_of_epoch=False)  # bounds what a kill can lose
                        last_saved = time.monotonic()
                    if self.step % cfg.log_every == 0:
                        row = self._log_window(window, window_steps, window_start)
                        bar.set_postfix(d=f"{row['loss_d']:.3f}", g=f"{row['loss_g']:.3f}",
                                        img_s=f"{row['images_per_s']:.0f}")
                        window.zero_()
                        window_steps, window_start = 0, time.perf_counter()
                        # Ranks agree on Ctrl-C only here, so all stop after the same step.
                        stop_now = distributed.any_rank(stop.requested, self.world, self.device)
                        # NaN weights only stay NaN: stop, and keep the last good checkpoint (all
                        # ranks see the same averaged row, so all stop together).
                        diverged = not all(math.isfinite(row[k]) for k in METRIC_NAMES)
                    else:
                        stop_now = stop.requested and not self.world.distributed
                    if stop_now or diverged or (cfg.max_steps and self.step >= cfg.max_steps):
                        break
                bar.close()
                if diverged:
                    stopped = "diverged"
                    break
                if self.step_in_epoch == per_epoch:
                    self.epoch, self.step_in_epoch = self.epoch + 1, 0
                    if self.epoch % save_every == 0 or self.epoch == cfg.epochs:
                        if self.world.is_main:
                            self._save_progress(f"epoch-{self.epoch:04d}", end_of_epoch=True)
                        saved_step = self.step  # on every rank: the early-stop branch below logs collectively
                    self.log(f"epoch {self.epoch}/{cfg.epochs} done at step {self.step}")
                stop_now = distributed.any_rank(stop.requested, self.world, self.device)
                if stop_now or (cfg.max_steps and self.step >= cfg.max_steps):
                    stopped = "interrupted" if stop_now else "max_steps"
                    break
        if stopped not in ("complete", "diverged") and self.step != saved_step:  # an early stop: save where we are
            if window_steps:
                self._log_window(window, window_steps, window_start)
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
            self.log(f"stopped by Ctrl-C at step {self.step}; checkpoint saved, continue with --resume {self.run_dir}")
        return {"step": self.step, "epoch": self.epoch, "stopped": stopped}

    def _checkpoint_due(self, last_saved: float) -> bool:
        """Mid-epoch save of last.pt: every checkpoint_every steps, or every checkpoint_minutes of training."""
        if self.cfg.checkpoint_every:
            return self.step % self.cfg.checkpoint_every == 0
        return time.monotonic() - last_saved >= 60 * self.cfg.checkpoint_minutes

    def _log_window(self, window: torch.Tensor, steps: int, started: float) -> dict:
        values = distributed.mean(window / steps, self.world).tolist()  # the one host sync per log_every steps
        images = steps * self.cfg.batch_size * self.world.size
        row = {"step": self.step, "epoch": round(self.step / self.batches.steps_per_epoch, 3),
               **{name: round(v, 5) for name, v in zip(METRIC_NAMES, values)},
               "images_per_s": round(images / max(time.perf_counter() - started, 1e-9), 1),
               "time": round(time.time(), 3)}
        if self.world.is_main:
            self._record(row)
            self._alert(self.monitor.check_losses(row))
        return row


# Fewest steps between epoch-end saves in a long run of tiny epochs (see epochs_per_save).
SAVE_MIN_STEPS = 200


def epochs_per_save(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Epochs between epoch-end saves (progress grid, epoch checkpoint, loss plot). Every epoch by
    default; but 500 faces make an epoch of 7 steps, and writing all that 890 times in a 400k-image
    run took ten times longer than the training (150 images/s instead of 1,500 on 2 cores), so a run
    of more than 20 such epochs saves every SAVE_MIN_STEPS steps or so. The last epoch is always saved."""
    if cfg.save_every_epochs:
        return cfg.save_every_epochs
    if steps_per_epoch >= SAVE_MIN_STEPS or cfg.epochs <= 20:
        return 1
    return math.ceil(SAVE_MIN_STEPS / steps_per_epoch)


class TrainingDiverged(FaceganError):
    """The losses became NaN or infinite; the run's checkpoints hold the last good state."""


def train(cfg: TrainConfig, out="runs", resume_from=None, progress: bool = True, log=print,
          cache_dir=None, state: dict | None = None, run_dir=None) -> Path:
    """Train a new run under `out`, or continue the one `resume_from` (a checkpoint file) belongs to.

    For resume, `cfg` must already be the checkpoint's config with any allowed changes applied
    (config.resume_config does that); `state` may pass the checkpoint already loaded. Under
    torchrun every process calls this; rank 0 writes. `run_dir` names the folder of a new run instead
    of numbering one under `out` (a study's trials). Returns the run folder. A Ctrl-C stops after the
    current step, saves, and then raises KeyboardInterrupt."""
    # Everything that can be wrong with the input was checked when cfg was made, before a run folder exists.
    world, device = distributed.init(resolve_device(cfg.device))
    if not world.is_main:
        log = _silent
    try:
        check_fits(*training_bytes(cfg.model), device)  # before any data is prepared or a folder made
        if resume_from is not None and state is None:
            state = checkpoints.load(resume_from)
        if state is not None:
            require_training_state(state, resume_from)
            cfg = distributed.keep_global_batch(cfg, state.get("world_size", 1), world, log)
        if not world.is_main:
            distributed.barrier(world)  # rank 0 builds the data cache; the others then reuse it
        prepared = prepare(cfg.data, cfg.model.image_size, cache_dir=cache_dir, progress=progress and world.is_main)
        if world.is_main:
            log(summary(prepared))
            distributed.barrier(world)
        if cfg.data.max_images and cfg.data.max_images < len(prepared.images):
            log(f"training on the first {cfg.data.max_images} of {len(prepared.images)} images (--max-images)")
            prepared = dataclasses.replace(prepared, images=prepared.images[:cfg.data.max_images])
        run_dir = run_for_training(f"{run_name_of(cfg.data.source)}{cfg.model.image_size}", out, resume_from, world,
                                   run_dir)
        trainer = Trainer(cfg, run_dir, prepared, state=state, progress=progress, log=log, world=world, device=device)
        log(f"run folder: {run_dir}" + (f" ({world.size} processes, global batch {trainer.cfg.batch_size * world.size})"
                                        if world.distributed else ""))
        log(f"device {trainer.device}, precision {'bf16 autocast' if trainer.precision == 'bf16' else 'fp32'}"
            + (" (--amp auto)" if cfg.amp == "auto" else ""))
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


def _silent(*args, **kwargs):
    pass
