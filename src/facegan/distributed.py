"""torchrun + DistributedDataParallel support: process-group set-up and the few collectives the
loop needs. A plain `facegan train` is a world of one and touches none of torch.distributed."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import FaceganError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, samples, plots and metrics."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes in the environment; NCCL on CUDA, gloo on CPU.

    On CUDA each process takes the GPU of its LOCAL_RANK."""
    if not launched_by_torchrun():
        return World(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", device_id=device
                                if device.type == "cuda" else None)
    return World(dist.get_rank(), dist.get_world_size(), local_rank), device


def mean(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of `tensor` over ranks (for logging: each rank sees a different shard)."""
    if world.distributed:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        tensor /= world.size
    return tensor


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank if it is true on any: all ranks must stop at the same step."""
    if not world.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def parameters_agree(modules, world: World, device: torch.device) -> bool:
    """Whether every rank holds bit-identical parameters (DDP's promise; checked once per run)."""
    if not world.distributed:
        return True
    local = torch.cat([p.detach().flatten().double() for m in modules for p in m.parameters()]).to(device)
    highest, lowest = local.clone(), local.clone()
    dist.all_reduce(highest, op=dist.ReduceOp.MAX)
    dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
    return bool(torch.equal(highest, lowest))


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def from_rank0(obj, world: World):
    """Rank 0's `obj` on every rank (a small picklable value, such as the new run folder's name)."""
    if not world.distributed:
        return obj
    shared = [obj]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def keep_global_batch(cfg, saved_world: int, world: World, log):
    """The config with the per-process batch that keeps a resumed run's global batch on this world size.

    Resuming on a different number of processes keeps the global batch, so it is the same run."""
    if saved_world == world.size:
        return cfg
    global_batch = cfg.batch_size * saved_world
    if global_batch % world.size:
        raise FaceganError(f"the checkpoint's global batch {global_batch} does not split over {world.size} "
                           f"processes: resume with a process count that divides it")
    log(f"resuming a {saved_world}-process run on {world.size}: batch {global_batch // world.size} per process "
        f"keeps the global batch of {global_batch}")
    return dataclasses.replace(cfg, batch_size=global_batch // world.size)


def fit_batch_to_data(cfg, num_images: int, world: World, resuming: bool, log):
    """The config with a per-process batch the data can fill: a data set smaller than one global
    batch trains with the largest batch it fills (new runs only; a resumed run keeps its batch)."""
    if num_images >= cfg.batch_size * world.size:
        return cfg
    if resuming:
        raise FaceganError(f"the data set has {num_images} images, fewer than this run's batch "
                           f"size {cfg.batch_size}: resume with the data the run was trained on")
    log(f"warning: only {num_images} images, fewer than the batch of {cfg.batch_size * world.size}; "
        f"using batch size {num_images // world.size} per process")
    return dataclasses.replace(cfg, batch_size=max(1, num_images // world.size))


def wrap_for_step(generator, discriminator, world: World, device: torch.device, compile: bool):
    """(G, D, D as called in the G step) for the training step: DDP wrappers, then torch.compile.

    Only the plain modules are saved, so checkpoints never carry module. or _orig_mod. prefixes
    and load in any world size. In the G step D's gradients are not wanted, so under DDP the plain
    module is called there and DDP never waits for a gradient sync that will not come."""
    step_g, step_d = generator, discriminator
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        step_g = DistributedDataParallel(generator, device_ids=ids)
        step_d = DistributedDataParallel(discriminator, device_ids=ids)
    d_in_g_step = discriminator if world.distributed else step_d
    if compile:
        step_g, step_d = torch.compile(step_g), torch.compile(step_d)
        d_in_g_step = torch.compile(discriminator) if world.distributed else step_d
    return step_g, step_d, d_in_g_step
