"""Batches that share one schedule, shuffled deterministically and sharded over data-parallel ranks.

A batch must hold samples of one aspect template, one duration and one latent size, so that a single spacetime
schedule (and one packed sequence layout) serves all of them. Items are grouped by such a *bucket key*; every epoch,
each bucket is shuffled and cut into batches, and the list of all batches is shuffled, with a generator seeded by
``(seed, epoch)`` only. Rank ``r`` of ``w`` then takes batches ``r, r + w, r + 2w, ...`` up to the same count on every
rank, so ranks see disjoint items, run the same number of steps (no rank waits forever in a collective), and the
plan is identical on every rank without any communication.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from infinitystar.train.data.captions import item_generator


def check_shard(rank: int, world_size: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer in 0..{world_size - 1}, got {rank!r}")


def group_by_bucket(keys: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Item indices per bucket key, buckets in sorted key order (stable across runs)."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return {k: groups[k] for k in sorted(groups, key=repr)}


def plan_batches(
    keys: Sequence[Hashable],
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
    shuffle: bool = True,
) -> list[list[int]]:
    """This rank's batches for one epoch, as lists of item indices (one bucket key per batch).

    ``drop_last``: a bucket's incomplete last batch is dropped (every batch has ``batch_size`` items); otherwise it
    is kept, smaller. Batches that do not divide evenly over the ranks are dropped, the same ones on every rank.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_shard(rank, world_size)
    g = item_generator(seed, epoch, "", "batches")
    batches: list[list[int]] = []
    for members in group_by_bucket(keys).values():
        if shuffle:
            members = [members[i] for i in torch.randperm(len(members), generator=g).tolist()]
        stop = len(members) - len(members) % batch_size if drop_last else len(members)
        batches.extend(members[i : i + batch_size] for i in range(0, stop, batch_size))
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    per_rank = len(batches) // world_size
    return batches[rank::world_size][:per_rank]


def shard_items(items: Sequence, rank: int, world_size: int) -> list:
    """``items[rank::world_size]``: the static split extraction uses (each item handled by exactly one rank)."""
    check_shard(rank, world_size)
    return list(items[rank::world_size])
