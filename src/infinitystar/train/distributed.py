"""Process groups, FSDP2 sharding and activation checkpointing for the trainer.

One process without ``torch.distributed`` when not launched by ``torchrun``; under ``torchrun``
(``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) a process group over gloo (CPU) or NCCL (GPU).
Ranks are laid out as ``dp x sp``: consecutive ranks form a sequence-parallel group (they share
one batch and split its sequence), the groups are the data-parallel replicas (disjoint data).

The model is sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``) per block and at the
root, over the whole world, with activation checkpointing applied from outside the model (each
block wrapped in a non-reentrant checkpoint wrapper before sharding). The original keeps fp32
parameters, all-gathers and gradient reductions with a bf16 autocast around the forward; that
is the default here too (``fsdp_param_dtype='bfloat16'`` halves the all-gather traffic).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

from infinitystar.devices import parse_dtype, resolve_device
from infinitystar.launch import launched_by_torchrun, torchrun_env


@dataclass
class DistEnv:
    """Where this process sits: world, data-parallel and sequence-parallel coordinates."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    sp_size: int = 1
    sp_group: object | None = None  #: process group of this rank's sequence-parallel ranks

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or (dist.is_available() and dist.is_initialized())

    @property
    def dp_size(self) -> int:
        return self.world_size // self.sp_size

    @property
    def dp_rank(self) -> int:
        return self.rank // self.sp_size

    @property
    def sp_rank(self) -> int:
        return self.rank % self.sp_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto", sp_size: int = 1, timeout_s: float = 1800.0) -> DistEnv:
    """Set up this process: a process group under ``torchrun``, none otherwise.

    On CUDA each process takes GPU ``LOCAL_RANK`` and the NCCL backend; on CPU gloo. The
    sequence-parallel groups are built here (every rank must create every group).
    """
    dev = resolve_device(device)
    if not launched_by_torchrun():
        if sp_size != 1:
            raise ValueError(f"sp_size {sp_size} needs {sp_size} processes: launch with torchrun --nproc_per_node")
        return DistEnv(device=dev)
    rank, world, local = torchrun_env()
    if world % sp_size:
        raise ValueError(f"sp_size {sp_size} does not divide the number of processes {world}")
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kw = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **kw)
    env = DistEnv(rank=rank, world_size=world, local_rank=local, device=dev, sp_size=sp_size)
    if sp_size > 1:
        for start in range(0, world, sp_size):
            group = dist.new_group(list(range(start, start + sp_size)))
            if start <= rank < start + sp_size:
                env.sp_group = group
    return env


def shutdown(env: DistEnv) -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.world_size > 1:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum of ``t`` over all ranks (a copy; float64 on the CPU for gloo, the device for NCCL)."""
    if env.world_size == 1:
        return t.clone()
    dev = env.device if env.device.type == "cuda" else torch.device("cpu")
    out = t.detach().to(dev).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(t.device)


# --------------------------------------------------------------------------------------
# Activation checkpointing and FSDP2
# --------------------------------------------------------------------------------------

#: what :func:`apply_activation_checkpointing`'s wrapper inserts into parameter names
AC_PREFIX = "_checkpoint_wrapped_module."


def unwrapped_name(name: str) -> str:
    """A parameter name without the activation-checkpointing wrapper's prefix (the model's own name)."""
    return name.replace(AC_PREFIX, "")


def apply_activation_checkpointing(blocks: nn.ModuleList) -> None:
    """Wrap every block of ``blocks`` in place with non-reentrant activation checkpointing.

    From outside the model (the original does it inside ``MultipleLayers.forward``): each
    block's activations are recomputed in the backward pass. The wrapper's prefix
    (``_checkpoint_wrapped_module``) is stripped by the distributed state-dict helpers, so
    checkpoints stay interchangeable with and without it.
    """
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    for i, blk in enumerate(blocks):
        blocks[i] = checkpoint_wrapper(blk, checkpoint_impl=CheckpointImpl.NO_REENTRANT)


def fully_shard_model(root: nn.Module, blocks: nn.ModuleList, param_dtype: str = "float32") -> None:
    """FSDP2: shard every block and the root (the remaining outer parameters) over the world.

    Gradients are reduced in fp32; parameters are all-gathered in ``param_dtype``.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dtype = parse_dtype(param_dtype)
    # inputs are not cast: RoPE tables and code sums stay fp32 (autocast does the bf16 matmuls)
    mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)
    n = len(blocks)
    for i, blk in enumerate(blocks):
        # the last block's parameters are needed again right away by the backward: keep them
        fully_shard(blk, mp_policy=mp, reshard_after_forward=i < n - 1)
    fully_shard(root, mp_policy=mp)
