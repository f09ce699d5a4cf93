"""Transformer block offload (``--offload blocks``): the blocks live in (pinned) CPU memory and each is copied to the
GPU just before it runs, the next one prefetched on a side CUDA stream so that the copy overlaps the compute.

It works where inference runs blocks (:meth:`~infinitystar.models.transformer.block_runner.BlockRunner.run_blocks`),
not through module hooks: the runner calls a block's pieces (``qkv``, ``attn_residual``, ``mlp_residual``) over token
chunks and through ``torch.compile``, where forward hooks would not fire. Everything else (embeddings, heads, norms,
the null text, the KV cache, activations) stays on the device. At most two blocks are on the device at a time: the
one running and the one being prefetched; after a pass over the blocks none is left there.

A block's parameters are swapped in place: while block ``i`` runs, ``model.blocks[i]``'s parameters are the device
copies; afterwards they are its host tensors again. Quantized weights (torchao tensor subclasses) are copied through
their inner tensors, so int8 blocks stream half the bytes of bf16 ones. With the CPU as the "device" the same
bookkeeping runs with CPU-to-CPU copies and no streams (that is what the CPU tests exercise).
"""

from __future__ import annotations

from collections import deque

import torch
import torch.nn as nn

from infinitystar.models.transformer.tensors import leaves, map_tensor, tensor_bytes


def _params(block: nn.Module) -> list[tuple[nn.Module, str]]:
    """(owning module, name) of every parameter and buffer of ``block``, in a fixed order."""
    found = []
    for m in block.modules():
        found += [(m, n) for n, p in m._parameters.items() if p is not None]
        found += [(m, n) for n, b in m._buffers.items() if b is not None]
    return found


def _set(module: nn.Module, name: str, value: torch.Tensor) -> None:
    if name in module._parameters:
        module._parameters[name] = nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[name] = value


class BlockOffload:
    """Keeps ``model.blocks`` on the host and brings each to ``device`` for its turn (see the module docstring).

    ``resident``: the blocks whose device copy exists now (at most two); ``loads``: the order blocks were copied
    in, most recent last (bounded), so tests and benchmarks can check the prefetch order.
    """

    def __init__(self, model: nn.Module, device: torch.device | str):
        self.device = torch.device(device)
        self.blocks = model.blocks
        self.pinned = self.device.type == "cuda"
        self._side = torch.cuda.Stream(self.device) if self.pinned else None
        self._ready: dict[int, tuple[list[torch.Tensor], torch.cuda.Event | None]] = {}
        self._host: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(self.blocks))}
        self.loads: deque[int] = deque(maxlen=4096)
        self.refresh()  # every block tensor to the host

    def _to_host(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to("cpu")
        return t.pin_memory() if self.pinned else t

    def refresh(self) -> None:
        """Move the blocks' tensors not on the host yet there and record each block's list (the same objects are
        put back after each run). Called when offload starts and after the set changes (LoRA adapters attached or
        removed: the ones removed are forgotten), with no block on the device."""
        self.finish()
        for i, blk in enumerate(self.blocks):
            known = {id(t) for t in self._host[i]}
            host = []
            for module, name in _params(blk):
                if id(getattr(module, name)) not in known:
                    _set(module, name, map_tensor(getattr(module, name).detach(), self._to_host))
                host.append(getattr(module, name))
            self._host[i] = host

    @property
    def resident(self) -> list[int]:
        """Blocks with a copy on the device now (running or prefetched)."""
        return sorted(self._ready)

    def host_bytes(self) -> int:
        """Bytes of the blocks kept on the host."""
        return sum(tensor_bytes(t) for ts in self._host.values() for t in ts)

    def _load(self, i: int) -> None:
        """Start copying block ``i`` to the device (on the side stream on CUDA)."""
        if i in self._ready or i >= len(self.blocks):
            return
        # Allocated on the compute stream, written on the side stream once the compute stream has reached this
        # point (memory the allocator reuses may still be read by earlier kernels).
        copies = [map_tensor(t, lambda x: torch.empty_like(x, device=self.device)) for t in self._host[i]]
        event = None
        if self._side is not None:
            self._side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._side):
                self._copy(i, copies)
                event = torch.cuda.Event()
                event.record(self._side)
        else:
            self._copy(i, copies)
        self._ready[i] = (copies, event)
        self.loads.append(i)

    def _copy(self, i: int, copies: list[torch.Tensor]) -> None:
        for src, dst in zip(self._host[i], copies):
            for s, d in zip(leaves(src), leaves(dst)):
                d.copy_(s, non_blocking=self.pinned)

    def enter(self, i: int) -> nn.Module:
        """Block ``i`` with its parameters on the device (waits for its copy), the copy of block ``i + 1`` started."""
        self._load(i)
        copies, event = self._ready[i]
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
        blk = self.blocks[i]
        for (module, name), t in zip(_params(blk), copies):
            _set(module, name, t)
        self._load(i + 1)  # overlaps block i's compute
        return blk

    def leave(self, i: int) -> None:
        """Block ``i`` has been run: its parameters are the host tensors again and its device copy is freed (the
        allocator reuses it once the compute stream is past the kernels that read it)."""
        for (module, name), t in zip(_params(self.blocks[i]), self._host[i]):
            if name in module._parameters:
                module._parameters[name] = t
            else:
                module._buffers[name] = t
        self._ready.pop(i, None)

    def finish(self) -> None:
        """End of a pass (or a failed one): every block on the host again, no copy left on the device; a prefetch
        still in flight is waited for before its memory is freed."""
        for i, (_, event) in list(self._ready.items()):
            if event is not None:
                torch.cuda.current_stream(self.device).wait_event(event)
            self.leave(i)


def enable_block_offload(model: nn.Module, device: torch.device | str) -> BlockOffload:
    """Move everything but the blocks to ``device``, keep the blocks on the host (pinned for CUDA) and have
    inference bring each to ``device`` in turn; returns the :class:`BlockOffload` (also ``model.offload``)."""
    if getattr(model, "offload", None) is not None:
        return model.offload
    blocks = model.blocks
    model.blocks = nn.ModuleList()  # move the rest without touching the blocks
    try:
        model.to(device)
    finally:
        model.blocks = blocks
    model.offload = BlockOffload(model, device)
    return model.offload


def offload_of(model: nn.Module) -> BlockOffload | None:
    """The model's :class:`BlockOffload`, or None when its blocks live on the device."""
    return getattr(model, "offload", None)
