"""The process's place in the job (from torchrun's environment) and the few
collectives the driver uses. Without torchrun's variables the process runs
alone: no process group, no DDP."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int
    world_size: int
    local_rank: int
    node_rank: int
    distributed: bool  # a process group is (to be) initialised

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env() -> World:
    env = os.environ
    distributed = "WORLD_SIZE" in env and "MASTER_ADDR" in env
    return World(
        rank=int(env.get("RANK", "0")),
        world_size=int(env.get("WORLD_SIZE", "1")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        node_rank=int(env.get("GROUP_RANK", env.get("NODE_RANK", "0"))),
        distributed=distributed,
    )


def init(world: World, backend: str, timeout_s: float = 1800.0) -> None:
    if world.distributed and not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=world.rank, world_size=world.world_size,
                                timeout=timedelta(seconds=timeout_s))


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def all_reduce_sum(world: World, tensor: torch.Tensor) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
