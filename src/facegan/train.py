"""The one training loop: D step then G step, metrics, progress grids, checkpoints, exact resume.

Speed features are switches on this loop (channels_last, bf16 autocast, torch.compile), never a
second copy of it. Everything random (weights, shuffles, flips, z, dropout) flows from cfg.seed
through generators whose states are checkpointed, so 2 epochs straight and 1 + resume + 1 give
the same weights bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import torch

from . import checkpoints, distributed
from .config import TrainConfig
from .data.batches import BatchSource
from .data.prepare import PreparedData, prepare, summary
from .errors import FaceganError
from .images import plot_eval, plot_losses, save_grid, to_uint8
from .losses import GANLoss, make_loss
from .models import build_models
from .monitor import Monitor

METRIC_NAMES = ("loss_d", "loss_g", "d_real", "d_fake")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda, else mps, else cpu; an explicit device must exist here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FaceganError(f"unknown device '{name}': use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FaceganError(f"device '{name}' asked for, but this PyTorch sees no CUDA GPU: use --device cpu, "
                           f"or install a CUDA build of torch (see README)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise FaceganError(f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise FaceganError("device 'mps' asked for, but Apple's Metal backend is not available: use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise FaceganError(f"unsupported device '{name}': use auto, cpu, cuda, cuda:N or mps")
    return device


def default_amp(device: torch.device) -> str:
    """bf16 where the hardware does it natively (CUDA; CPUs with AVX-512 BF16), else fp32.

    On this project's 2-core AVX-512 BF16 CPU, bf16 autocast trained the default model to the same
    SWD as fp32 in 0.63x the time (README, Speed); on CPUs without native bf16 it would be slower."""
    if device.type == "cuda":
        return "bf16"
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return "bf16" if device.type == "cpu" and native else "off"


def adam_options(device: torch.device) -> dict:
    """Adam's implementation per device: fused kernels on CUDA, foreach (multi-tensor) elsewhere."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def autocast_factory(device: torch.device, bf16: bool):
    """A no-argument context-manager factory: bf16 autocast on `device`, or nothing."""
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext


def train_step(generator, discriminator, opt_g, opt_d, loss: GANLoss, real: torch.Tensor, z: torch.Tensor,
               autocast=contextlib.nullcontext, discriminator_for_g=None) -> torch.Tensor:
    """One DCGAN step: D on real vs detached fake, then G through the updated D.

    `discriminator_for_g` is D as called in the G step; under DDP it is the unwrapped module, since
    D's gradients are not wanted there and DDP would wait for them. Returns (loss_d, loss_g,
    mean D(x), mean D(G(z))) as one detached tensor: no host sync here."""
    frozen_d = discriminator_for_g if discriminator_for_g is not None else discriminator
    with autocast():
        fake = generator(z)
        real_logits = discriminator(real)
        fake_logits = discriminator(fake.detach())
        loss_d = loss.d_loss(real_logits.float(), fake_logits.float())
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    # G step. D's weights are frozen so backward computes only the input gradients G needs,
    # not D's weight gradients, which the textbook step computes and then throws away.
    frozen_d.requires_grad_(False)
    with autocast():
        loss_g = loss.g_loss(frozen_d(fake).float())
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    frozen_d.requires_grad_(True)
    return torch.stack([loss_d.detach(), loss_g.detach(),
                        loss.score(real_logits.detach().float()).mean(),
                        loss.score(fake_logits.detach().float()).mean()])


class _StopRequest:
    """First Ctrl-C: finish the current step, save, stop. Second Ctrl-C: stop at once (files stay intact)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if _in_main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _in_main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


class Trainer:
    """Owns one run: its models, optimisers, random streams, data position and run folder."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, prepared: PreparedData, state: dict | None = None,
                 progress: bool = True, log=print, world: distributed.World = distributed.World(),
                 device: torch.device | None = None):
        cfg.validate()
        self.world = world
        self.cfg, self.run_dir, self.log = cfg, Path(run_dir), log
        self.progress = progress and world.is_main
        self.device = device or resolve_device(cfg.device)
        if len(prepared.images) < cfg.batch_size * world.size:
            if state is not None:
                raise FaceganError(f"the data set has {len(prepared.images)} images, fewer than this run's batch "
                                   f"size {cfg.batch_size}: resume with the data the run was trained on")
            log(f"warning: only {len(prepared.images)} images, fewer than the batch of {cfg.batch_size * world.size}; "
                f"using batch size {len(prepared.images) // world.size} per process")
            cfg.batch_size = len(prepared.images) // world.size

        channels_last = cfg.channels_last if cfg.channels_last is not None else self.device.type in ("cpu", "cuda")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        amp = cfg.amp if cfg.amp != "auto" else default_amp(self.device)
        self.precision = amp
        self.autocast = autocast_factory(self.device, amp == "bf16")

        torch.manual_seed(cfg.seed)
        self.generator, self.discriminator = build_models(cfg.model)
        if cfg.sync_bn:
            if not (world.distributed and self.device.type == "cuda"):
                raise FaceganError("--sync-bn needs several CUDA processes (torchrun on GPUs): drop --sync-bn")
            self.generator = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.generator)
            self.discriminator = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.discriminator)
        for net in (self.generator, self.discriminator):
            net.to(self.device, memory_format=self.memory_format)
        adam = dict(betas=(cfg.beta1, cfg.beta2), **adam_options(self.device))
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_g, **adam)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_d, **adam)
        self.loss = make_loss(cfg.loss, cfg.label_smoothing)
        # Wrappers (DDP, then torch.compile) are only called; the plain modules are what gets saved,
        # so checkpoints never carry module. or _orig_mod. prefixes and load in any world size.
        self.g_call, self.d_call, self.d_call_for_g = self.generator, self.discriminator, self.discriminator
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_call = DistributedDataParallel(self.generator, device_ids=ids)
            self.d_call = DistributedDataParallel(self.discriminator, device_ids=ids)
        if cfg.compile:
            self.g_call, self.d_call = torch.compile(self.g_call), torch.compile(self.d_call)
            self.d_call_for_g = torch.compile(self.discriminator) if world.distributed else self.d_call

        self.noise = torch.Generator(self.device).manual_seed(cfg.seed + 1)  # z and flips, in step order
        self.fixed_z = torch.randn(cfg.num_samples, *cfg.model.z_shape,
                                   generator=torch.Generator().manual_seed(cfg.seed + 2)).to(self.device)
        self.batches = BatchSource(prepared.images, cfg.batch_size, self.device, cfg.seed, cfg.data.flip,
                                   self.memory_format, rank=world.rank, world_size=world.size)
        if self.batches.steps_per_epoch < 1:
            raise FaceganError("the data set is too small for one batch: add images or lower --batch-size")
        self.prepared = prepared
        self.monitor = Monitor(cfg.loss, cfg.label_smoothing)
        self.best: dict | None = None  # {"metric", "value", "step"} of checkpoints/best.pt
        self._reals_diversity: float | None = None  # MS-SSIM among real faces, the collapse check's yardstick
        self.step = self.epoch = self.step_in_epoch = 0
        if state is not None:
            self._restore(state)
        if world.distributed:  # dropout masks differ per rank, reproducibly from (seed, rank, step)
            torch.manual_seed(cfg.seed * 100_003 + world.rank * 1_009 + self.step)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.checkpoint_dir = self.run_dir / "checkpoints"

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "noise": self.noise.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": checkpoints.TRAINING_STATE, "config": self.cfg.to_dict(),
            "generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "rng": rng,
            "world_size": self.world.size, "best": self.best,
        }

    def _restore(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step, self.epoch, self.step_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        self.best = state.get("best")
        torch.set_rng_state(state["rng"]["torch"])
        self.noise.set_state(state["rng"]["noise"].to(self.noise.get_state().device))
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if self.step_in_epoch > self.batches.steps_per_epoch:
            raise FaceganError("the checkpoint's data position is past the end of an epoch of this data: "
                               "resume with the data the run was trained on")

    def save_checkpoint(self, end_of_epoch: bool) -> Path:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        last = checkpoints.atomic_save(self.state_dict(), self.checkpoint_dir / "last.pt")
        if end_of_epoch:
            numbered = self.checkpoint_dir / f"epoch-{self.epoch:04d}.pt"
            tmp = numbered.with_name(f".{numbered.name}.tmp{os.getpid()}")
            tmp.unlink(missing_ok=True)
            os.link(last, tmp)  # a second name for the same bytes: no second write
            os.replace(tmp, numbered)
            checkpoints.prune_epoch_checkpoints(self.checkpoint_dir, self.cfg.keep_checkpoints)
        checkpoints.atomic_save({"format": checkpoints.GENERATOR_SNAPSHOT, "config": self.cfg.to_dict(),
                                 "generator": self.generator.state_dict(), "step": self.step,
                                 "epoch": self.epoch}, self.run_dir / "generator.pt")
        return last

    # --- outputs ----------------------------------------------------------------------------
    def _fixed_samples(self):
        """The progress-grid faces: G in eval mode on the run's fixed z, as uint8 (N, S, S, 3)."""
        self.generator.eval()
        with torch.no_grad(), self.autocast():
            images = to_uint8(self.generator(self.fixed_z))
        self.generator.train()
        return images

    def write_samples(self, name: str) -> Path:
        return save_grid(self._fixed_samples(), self.run_dir / "samples" / f"{name}.png")

    def write_samples_and_check(self, name: str) -> Path:
        """The progress grid, plus the diversity check on the same fixed-z samples."""
        from .metrics.msssim import diversity

        samples = self._fixed_samples()
        path = save_grid(samples, self.run_dir / "samples" / f"{name}.png")
        if len(samples) >= 2:
            if self._reals_diversity is None:
                self._reals_diversity = diversity(self._first_reals(len(samples)), pairs=256)
            value = diversity(samples, pairs=256)
            self._append_metrics({"step": self.step, "samples_msssim": round(value, 4),
                                  "reals_msssim": round(self._reals_diversity, 4)})
            self._alert(self.monitor.check_diversity(value, self._reals_diversity, self.step))
        return path

    def _alert(self, messages) -> None:
        for message in messages:
            self.log(f"warning: {message}")
            self._append_metrics({"step": self.step, "alert": message})

    def evaluate(self) -> dict:
        """Metrics on eval_samples images; keeps checkpoints/best.pt at the best primary metric."""
        from .metrics.evaluate import evaluate, parse_metrics

        metrics = parse_metrics(self.cfg.eval_metrics)
        results = evaluate(self.generator, self.prepared, metrics, self.cfg.eval_samples, self.device,
                           self.cfg.inception_weights or None)
        self._append_metrics({"step": self.step, "eval": results, "time": round(time.time(), 3)})
        primary = metrics[0]
        if self.best is None or results[primary] < self.best["value"]:
            self.best = {"metric": primary, "value": results[primary], "step": self.step}
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            checkpoints.atomic_save(self.state_dict(), self.checkpoint_dir / "best.pt")
        plot_eval(self.metrics_path, self.run_dir / "eval.png")
        self.log(f"step {self.step}: " + ", ".join(f"{k} {results[k]}" for k in metrics if k in results)
                 + f" (best {self.best['metric']} {self.best['value']} at step {self.best['step']})")
        return results

    def _first_reals(self, count: int):
        """The first `count` images of epoch 0's shuffle, uint8 (N, S, S, 3): what reals.png shows."""
        first = self.batches.shard(0)[:count].to(self.batches.images.device)
        return self.batches.images.index_select(0, first).cpu().numpy()

    def write_reals(self) -> Path:
        return save_grid(self._first_reals(self.cfg.num_samples), self.run_dir / "reals.png")

    def _append_metrics(self, row: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def _drop_metrics_after(self, step: int) -> None:
        """On resume, forget lines logged after the checkpoint (a crash can leave some)."""
        if not self.metrics_path.exists():
            return
        lines = self.metrics_path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        if len(kept) != len(lines):
            tmp = self.metrics_path.with_name(".metrics.jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.metrics_path)

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
                self._drop_metrics_after(self.step)
        from tqdm import tqdm

        window, window_steps, window_start = torch.zeros(len(METRIC_NAMES), device=self.device), 0, time.perf_counter()
        stopped = "complete"
        with _StopRequest() as stop:
            while self.epoch < cfg.epochs:
                bar = tqdm(total=per_epoch, initial=self.step_in_epoch, disable=not self.progress,
                           desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="step", leave=False, dynamic_ncols=True)
                for real in self.batches.epoch(self.epoch, self.noise, start_step=self.step_in_epoch):
                    # z for the whole global batch, this rank's slice: one noise stream for any world size.
                    z = torch.randn(len(real) * self.world.size, *cfg.model.z_shape, device=self.device,
                                    generator=self.noise)[self.world.rank::self.world.size]
                    window += train_step(self.g_call, self.d_call, self.opt_g, self.opt_d, self.loss, real, z,
                                         self.autocast, self.d_call_for_g)
                    window_steps += 1
                    self.step += 1
                    self.step_in_epoch += 1
                    bar.update(1)
                    if cfg.eval_every and self.step % cfg.eval_every == 0 and self.world.is_main:
                        self.evaluate()
                    if self.step % cfg.log_every == 0:
                        row = self._log_window(window, window_steps, window_start)
                        bar.set_postfix(d=f"{row['loss_d']:.3f}", g=f"{row['loss_g']:.3f}",
                                        img_s=f"{row['images_per_s']:.0f}")
                        window.zero_()
                        window_steps, window_start = 0, time.perf_counter()
                        # Ranks agree on Ctrl-C only here, so all stop after the same step.
                        stop_now = distributed.any_rank(stop.requested, self.world, self.device)
                    else:
                        stop_now = stop.requested and not self.world.distributed
                    if stop_now or (cfg.max_steps and self.step >= cfg.max_steps):
                        break
                bar.close()
                if self.step_in_epoch == per_epoch:
                    self.epoch, self.step_in_epoch = self.epoch + 1, 0
                    if self.world.is_main:
                        self.write_samples_and_check(f"epoch-{self.epoch:04d}")
                        self.save_checkpoint(end_of_epoch=True)
                        if self.metrics_path.exists():
                            plot_losses(self.metrics_path, self.run_dir / "losses.png")
                    self.log(f"epoch {self.epoch}/{cfg.epochs} done at step {self.step}")
                stop_now = distributed.any_rank(stop.requested, self.world, self.device)
                if stop_now or (cfg.max_steps and self.step >= cfg.max_steps):
                    stopped = "interrupted" if stop_now else "max_steps"
                    break
        if stopped != "complete" and self.step_in_epoch:  # a mid-epoch stop: save where we are
            if window_steps:
                self._log_window(window, window_steps, window_start)
            if self.world.is_main:
                self.write_samples(f"step-{self.step:07d}")
                self.save_checkpoint(end_of_epoch=False)
                if self.metrics_path.exists():
                    plot_losses(self.metrics_path, self.run_dir / "losses.png")
        if self.world.distributed:
            agree = distributed.parameters_agree([self.generator, self.discriminator], self.world, self.device)
            self.log(f"parameters identical across {self.world.size} ranks" if agree else
                     f"warning: parameters differ between the {self.world.size} ranks")
            distributed.barrier(self.world)
        if stopped == "interrupted":
            self.log(f"stopped by Ctrl-C at step {self.step}; checkpoint saved, continue with --resume {self.run_dir}")
        return {"step": self.step, "epoch": self.epoch, "stopped": stopped}

    def _log_window(self, window: torch.Tensor, steps: int, started: float) -> dict:
        values = distributed.mean(window / steps, self.world).tolist()  # the one host sync per log_every steps
        images = steps * self.cfg.batch_size * self.world.size
        row = {"step": self.step, "epoch": round(self.step / self.batches.steps_per_epoch, 3),
               **{name: round(v, 5) for name, v in zip(METRIC_NAMES, values)},
               "images_per_s": round(images / max(time.perf_counter() - started, 1e-9), 1),
               "time": round(time.time(), 3)}
        if self.world.is_main:
            self._append_metrics(row)
            self._alert(self.monitor.check_losses(row))
        return row


def train(cfg: TrainConfig, out="runs", resume_from=None, progress: bool = True, log=print,
          cache_dir=None, state: dict | None = None) -> Path:
    """Train a new run under `out`, or continue the one `resume_from` (a checkpoint file) belongs to.

    For resume, `cfg` must already be the checkpoint's config with any allowed changes applied
    (config.resume_config does that); `state` may pass the checkpoint already loaded. Under
    torchrun every process calls this; rank 0 writes. Returns the run folder."""
    # Everything that can be wrong with the input is checked before a run folder exists.
    cfg.validate()
    world, device = distributed.init(resolve_device(cfg.device))
    if not world.is_main:
        log = _silent
    try:
        if resume_from is not None and state is None:
            state = checkpoints.load(resume_from)
        if state is not None:
            _fit_batch_to_world(cfg, state.get("world_size", 1), world, log)
        if not world.is_main:
            distributed.barrier(world)  # rank 0 builds the data cache; the others then reuse it
        prepared = prepare(cfg.data, cfg.model.image_size, cache_dir=cache_dir, progress=progress and world.is_main)
        if world.is_main:
            log(summary(prepared))
            distributed.barrier(world)
        run_dir = _shared_run_dir(cfg, out, resume_from, world)
        trainer = Trainer(cfg, run_dir, prepared, state=state, progress=progress, log=log, world=world, device=device)
        if world.is_main:
            (run_dir / "config.json").write_text(json.dumps(trainer.cfg.to_dict(), indent=2) + "\n")
        log(f"run folder: {run_dir}" + (f" ({world.size} processes, global batch {cfg.batch_size * world.size})"
                                        if world.distributed else ""))
        log(f"device {trainer.device}, precision {'bf16 autocast' if trainer.precision == 'bf16' else 'fp32'}"
            + (" (--amp auto)" if cfg.amp == "auto" else ""))
        result = trainer.run()
        log(f"finished at epoch {result['epoch']}, step {result['step']} ({result['stopped']}); "
            f"samples in {run_dir / 'samples'}")
        return run_dir
    finally:
        distributed.shutdown(world)


def _silent(*args, **kwargs):
    pass


def _fit_batch_to_world(cfg: TrainConfig, saved_world: int, world: distributed.World, log) -> None:
    """Resuming on a different number of processes keeps the global batch, so it is the same run."""
    if saved_world == world.size:
        return
    global_batch = cfg.batch_size * saved_world
    if global_batch % world.size:
        raise FaceganError(f"the checkpoint's global batch {global_batch} does not split over {world.size} "
                           f"processes: resume with a process count that divides it")
    cfg.batch_size = global_batch // world.size
    log(f"resuming a {saved_world}-process run on {world.size}: batch {cfg.batch_size} per process "
        f"keeps the global batch of {global_batch}")


def _shared_run_dir(cfg: TrainConfig, out, resume_from, world: distributed.World) -> Path:
    """The run folder: rank 0 creates a new one and tells the others its name."""
    if resume_from is not None:
        return checkpoints.run_dir_of(resume_from)
    name = None
    if world.is_main:
        source_name = Path(cfg.data.source).stem if cfg.data.source != "faces" else "faces"
        name = str(checkpoints.new_run_dir(out, f"{source_name}{cfg.model.image_size}"))
    if world.distributed:
        shared = [name]
        torch.distributed.broadcast_object_list(shared, src=0)
        name = shared[0]
    return Path(name)
