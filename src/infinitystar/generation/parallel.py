"""One video on several processes: guidance-parallel and sequence-parallel generation over ``torch.distributed``.

Launched by ``torchrun --nproc_per_node N``, N = ``sp_size`` (x 2 with ``cfg_parallel``) processes generate ONE video
together:

- guidance parallel (``cfg_parallel``): ranks ``0 .. sp-1`` compute the conditional row, ranks ``sp .. 2sp-1`` the
  unconditional one, each with a KV cache of its one row;
- sequence parallel (``sp_size`` = K): every step's tokens are split over K consecutive ranks, and attention's heads
  over the same ranks (Ulysses all-to-all, :mod:`infinitystar.parallel`); the KV cache is sharded by key/value head,
  so K must divide the model's key/value heads (8 for the 8B model);
- rank 0 samples: it gathers every rank's logits, applies temperature and guidance and draws the bits with the call's
  generator exactly as one process does, then broadcasts them, so every rank adds the same bits to the same running
  sums. Teacher-forced bits (image, video, the context of a long video's next window) are computed on rank 0 and
  broadcast as well: the generator is used on rank 0 only, in the order one process uses it. Rank 0 decodes and
  returns the frames; the other ranks return the latents;
- optional weight sharding (``fsdp``): each block's weights are sharded over all N ranks with FSDP2 and gathered
  for the block that runs (``models.transformer.block_runner``), so that N cards hold one copy of the weights.

The same seed gives the same bits, hence the same video, as one process, as long as the logits agree to float
rounding: ``tests/generation/test_parallel.py`` bounds the logit difference and compares the bits and the videos.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from infinitystar.devices import resolve_device
from infinitystar.launch import launched_by_torchrun, torchrun_env
from infinitystar.models.config import TransformerConfig
from infinitystar.parallel import SequenceShard, check_heads
from infinitystar.schedule import Schedule

#: bytes of the record each rank publishes about its device when the group starts
_RECORD_BYTES = 512


class ParallelSetupError(ValueError):
    """A bad parallel setup, detected identically on every rank; ``rank`` is this process's rank, so that the command
    line prints the message once (on rank 0)."""

    def __init__(self, message: str, rank: int = 0):
        super().__init__(message)
        self.rank = rank


@dataclass(frozen=True)
class ParallelConfig:
    """How one generation is split over processes: ``sp_size`` ranks share every step's tokens (sequence parallel),
    ``cfg_parallel`` puts the conditional and unconditional rows on two sets of them, ``fsdp`` shards the blocks'
    weights over all of them. The default (1, False, False) is one process."""

    sp_size: int = 1
    cfg_parallel: bool = False
    fsdp: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.sp_size, bool) or not isinstance(self.sp_size, int) or self.sp_size < 1:
            raise ValueError(f"sp_size must be an integer >= 1, got {self.sp_size!r}")
        for name in ("cfg_parallel", "fsdp"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def world_size(self) -> int:
        """Processes one generation needs: ``sp_size``, twice that with ``cfg_parallel``."""
        return self.sp_size * (2 if self.cfg_parallel else 1)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.fsdp

    def flags(self) -> str:
        """The command-line flags of this config."""
        parts = [f"--sp-size {self.sp_size}"] if self.sp_size > 1 else []
        return " ".join(parts + [f for f, on in (("--cfg-parallel", self.cfg_parallel), ("--fsdp", self.fsdp)) if on])


def check_launch(config: ParallelConfig) -> tuple[int, int, int]:
    """``(rank, world, local_rank)`` of this process, checked against ``config`` (no communication: every rank
    reaches the same verdict)."""
    if dist.is_available() and dist.is_initialized():
        rank, world, local = dist.get_rank(), dist.get_world_size(), torchrun_env()[2]
    else:
        rank, world, local = torchrun_env()
        if not launched_by_torchrun():
            world = 0
    need = config.world_size
    if need == 1:
        raise ParallelSetupError(
            "--fsdp shards the weights over the processes of one parallel generation: use it with --sp-size K "
            "(K > 1) and/or --cfg-parallel",
            rank,
        )
    split = f"{config.sp_size} x 2" if config.cfg_parallel and config.sp_size > 1 else str(need)
    if world == 0:
        raise ParallelSetupError(
            f"{config.flags()} splits one generation over {need} processes: launch it with torchrun "
            f"--nproc_per_node {need} -m infinitystar.cli generate ... {config.flags()}",
            rank,
        )
    if world != need:
        raise ParallelSetupError(
            f"{config.flags()} needs exactly {split} = {need} processes, but {world} were started: use torchrun "
            f"--nproc_per_node {need}",
            rank,
        )
    return rank, world, local


def rank_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    """This rank's device: its own GPU ``cuda:LOCAL_RANK`` for ``None`` / 'auto' (when there is a GPU) and for
    'cuda'; otherwise the device named."""
    name = None if device is None else str(device).strip().lower()
    if name == "cuda" or (name in (None, "auto") and torch.cuda.is_available()):
        return resolve_device(f"cuda:{local_rank}")
    return resolve_device(device)


def check_devices(records: list[tuple[str, str, str]]) -> None:
    """Raise ``ValueError`` unless every rank's ``(host, device, problem)`` record fits one generation: no problem,
    one kind of device, and no GPU used by two ranks."""
    for r, (_, _, problem) in enumerate(records):
        if problem:
            raise ValueError(f"rank {r}: {problem}")
    if len({torch.device(d).type for _, d, _ in records}) > 1:
        listing = ", ".join(f"rank {r} on {d}" for r, (_, d, _) in enumerate(records))
        raise ValueError(
            f"the processes of one generation must all run on GPUs or all on the CPU, got mixed devices ({listing}); "
            "pass the same --device (cuda or cpu) to every process"
        )
    seen: dict[tuple[str, str], int] = {}
    for r, (host, d, _) in enumerate(records):
        if d.startswith("cuda") and (host, d) in seen:
            raise ValueError(
                f"ranks {seen[host, d]} and {r} both run on {d} of {host}: every process needs its own GPU; pass "
                "--device cuda (each rank takes cuda:LOCAL_RANK) and start at most one process per GPU"
            )
        seen[host, d] = r


def _device_records(device: torch.device, problem: str, world: int) -> list[tuple[str, str, str]]:
    """Every rank's ``(host, device, problem)``, all-gathered as fixed-size byte records over the CPU (gloo), where
    a rank that could not resolve its device still takes part."""
    text = f"{socket.gethostname()}|{device}|{problem}".encode()[:_RECORD_BYTES]
    mine = torch.zeros(_RECORD_BYTES, dtype=torch.uint8)
    mine[: len(text)] = torch.tensor(list(text), dtype=torch.uint8)
    if dist.get_backend() == "nccl":  # a process group made by the caller, without gloo: the records go by GPU
        mine = mine.to(device)
    got = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(got, mine)
    return [tuple(bytes(t.tolist()).rstrip(b"\0").decode(errors="replace").split("|", 2)) for t in got]


def start_parallel(
    config: ParallelConfig, device: str | torch.device | None, model: TransformerConfig, timeout_s: float = 1800.0
) -> ParallelRun:
    """Join (or start) the process group of one parallel generation, after every check that needs no model weight:
    the launch against ``config``, the model's heads against ``sp_size``, and every rank's device."""
    rank, world, local = check_launch(config)
    try:
        check_heads(model.num_heads, model.num_kv_heads, config.sp_size)
    except ValueError as exc:
        raise ParallelSetupError(f"{config.flags()}: {exc}", rank) from None
    try:
        dev, problem = rank_device(device, local), ""
    except ValueError as exc:
        dev, problem = torch.device("cpu"), str(exc)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # before the group: NCCL binds to the current device
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo"  # gloo also carries the CPU checks
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    try:
        check_devices(_device_records(dev, problem, world))
    except ValueError as exc:
        raise ParallelSetupError(str(exc), rank) from None
    return ParallelRun(config, rank, world, dev)


class ParallelRun:
    """This process's place in a parallel generation, and the collectives the generation loop calls."""

    def __init__(self, config: ParallelConfig, rank: int, world_size: int, device: torch.device):
        self.config, self.rank, self.world_size, self.device = config, rank, world_size, device
        k = config.sp_size
        #: the guidance row this rank computes with cfg_parallel (0: conditional, 1: unconditional)
        self.row = rank // k if config.cfg_parallel else None
        self.sp_group = None
        if k > 1:
            for start in range(0, world_size, k):  # every rank creates every group, in the same order
                group = dist.new_group(list(range(start, start + k)))
                if start <= rank < start + k:
                    self.sp_group = group
        self._shard: SequenceShard | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0 samples, decodes and writes."""
        return self.rank == 0

    def shard_weights(self, transformer) -> None:
        """With ``fsdp``: shard every block's weights over the world (FSDP2); each block gathers them when it runs."""
        if not self.config.fsdp:
            return
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.device.type, (self.world_size,))
        for blk in transformer.blocks:
            fully_shard(blk, mesh=mesh, reshard_after_forward=True)

    # -- what the generation loop calls -------------------------------------------------------------------------
    def local_rows(self, rows: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, list[int]]:
        """The text rows ``[R, L, Ct5]`` this rank computes: its guidance row with ``cfg_parallel``, else all."""
        if not self.config.cfg_parallel:
            return rows, lengths
        if rows.shape[0] != 2:
            raise ParallelSetupError(
                "--cfg-parallel puts the conditional and the unconditional rows on two sets of processes, so it "
                "needs guidance: use guidance apg or cfg with a scale other than 1, or drop --cfg-parallel",
                self.rank,
            )
        return rows[self.row : self.row + 1], lengths[self.row : self.row + 1]

    def new_cache(self, model, schedule: Schedule, rows: int):
        """The KV cache of this rank: sharded by key/value head over its sequence-parallel group."""
        if self.sp_group is not None and self._shard is None:
            self._shard = SequenceShard(self.sp_group, model.cfg.num_heads, model.cfg.num_kv_heads)
        return model.new_cache(schedule, rows, self._shard)

    def gather_logits(self, local: torch.Tensor, n: int) -> torch.Tensor | None:
        """Every rank's logits ``[r, ceil(n / sp), 2d]`` -> ``[R, n, 2d]`` on rank 0 (None elsewhere)."""
        local = local.contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world_size)] if self.is_main else None
        dist.gather(local, parts, dst=0)
        if parts is None:
            return None
        k = self.config.sp_size
        rows = [torch.cat(parts[g * k : (g + 1) * k], dim=1)[:, :n] for g in range(self.world_size // k)]
        return torch.cat(rows, dim=0)

    def broadcast_bits(self, bits: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
        """Rank 0's sampled bits on every rank (int64 ``shape``)."""
        buf = bits.to(torch.uint8) if self.is_main else torch.empty(shape, dtype=torch.uint8, device=self.device)
        dist.broadcast(buf, src=0)
        return bits if self.is_main else buf.long()

    def broadcast_forced(self, bits: list[torch.Tensor] | None, schedule: Schedule) -> list[torch.Tensor] | None:
        """Rank 0's teacher-forced bits of a window (the first steps of ``schedule``) on every rank."""
        shapes = [(1, *schedule.scales[st.scale].shape, schedule.bits(st.scale)) for st in schedule.steps]
        count = len(bits or [])
        if self.is_main and any(tuple(b.shape) != s for b, s in zip(bits or [], shapes)):
            count = -1
        head = torch.tensor([count], dtype=torch.int64, device=self.device)
        dist.broadcast(head, src=0)
        count = int(head.item())
        if count < 0:
            raise ValueError("forced bits do not match the window's schedule (rank 0 encoded another shape)")
        if count == 0:
            return None
        sizes = [math.prod(s) for s in shapes[:count]]
        if self.is_main:
            flat = torch.cat([b.reshape(-1).to(device=self.device, dtype=torch.uint8) for b in bits])
        else:
            flat = torch.empty(sum(sizes), dtype=torch.uint8, device=self.device)
        dist.broadcast(flat, src=0)
        if self.is_main:
            return bits
        return [part.view(s).long() for part, s in zip(flat.split(sizes), shapes)]

    def finish(self) -> None:
        """Wait for every rank (rank 0 writes the output) and close the process group."""
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
