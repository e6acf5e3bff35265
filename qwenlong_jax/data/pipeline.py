"""grain input pipelines over a list of records: per-process shard, seeded shuffle, epochs,
optional batching, and an iterator whose state is a small dict to checkpoint.

    ds = make_dataset(records, seed=0, num_epochs=None)        # this process's shard, forever
    it = make_iterator(records, seed=0, batch_size=8)
    batch = next(it); state = it.get_state()                    # {"next_index": k}: save it
    it2 = make_iterator(records, seed=0, batch_size=8); it2.set_state(state)   # resumes exactly

Sharding follows grain's ShardOptions semantics (contiguous even split of the source, then
shuffle within the shard); every epoch is a new permutation of the shard (grain reseeds per
epoch), so each example is seen exactly once per epoch. With drop_remainder (the default when
there are several shards) every process gets the same number of examples, so processes step in
lockstep; the at most shard_count-1 dropped examples are fixed (the tail of the source).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grain


def process_shard(drop_remainder: bool = True) -> grain.sharding.ShardOptions:
    """This JAX process's shard (imports jax; single process: shard 0 of 1)."""
    return grain.sharding.ShardByJaxProcess(drop_remainder=drop_remainder)


def shard_bounds(num_items: int, shard: grain.sharding.ShardOptions) -> tuple[int, int]:
    """[start, end) of `shard` in a contiguous even split of `num_items` (grain's even_split)."""
    i, n = shard.shard_index, shard.shard_count
    if not 0 <= i < n:
        raise ValueError(f"shard_index must be in [0, {n}), got {i}")
    per, rem = divmod(num_items, n)
    if shard.drop_remainder:
        return i * per, (i + 1) * per
    return i * per + min(i, rem), (i + 1) * per + min(i + 1, rem)


def make_dataset(
    items: Sequence[Any] | grain.MapDataset,
    *,
    seed: int,
    num_epochs: int | None = 1,
    shuffle: bool = True,
    shard: grain.sharding.ShardOptions | None = None,
    map_fn: Callable[[Any], Any] | None = None,
    batch_size: int | None = None,
) -> grain.MapDataset:
    """A grain MapDataset: shard -> shuffle(seed) -> repeat(num_epochs) -> map -> batch.

    shard: None = no sharding (one shard); pass `process_shard()` in multi-host runs.
    num_epochs: None repeats forever. batch_size: batches are lists (records are not arrays);
    the last partial batch of a finite dataset is dropped so batch shapes stay fixed.
    """
    if len(items) == 0:
        raise ValueError("make_dataset: no items (did every record get filtered out?)")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    ds = items if isinstance(items, grain.MapDataset) else grain.MapDataset.source(items)
    if shard is not None and shard.shard_count > 1:
        start, end = shard_bounds(len(items), shard)
        if end <= start:
            raise ValueError(f"shard {shard.shard_index}/{shard.shard_count} of {len(items)} items is empty")
        ds = ds[start:end]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)  # reseeds the shuffle each epoch: a new permutation per epoch
    if map_fn is not None:
        ds = ds.map(map_fn)
    if batch_size is not None:
        ds = ds.batch(batch_size, drop_remainder=True, batch_fn=list)
    return ds


def make_iterator(
    items: Sequence[Any] | grain.MapDataset,
    *,
    seed: int,
    num_epochs: int | None = 1,
    shuffle: bool = True,
    shard: grain.sharding.ShardOptions | None = None,
    map_fn: Callable[[Any], Any] | None = None,
    batch_size: int | None = None,
) -> grain.DatasetIterator:
    """Iterator over `make_dataset(...)` with get_state()/set_state() for checkpoints."""
    ds = make_dataset(
        items, seed=seed, num_epochs=num_epochs, shuffle=shuffle, shard=shard, map_fn=map_fn, batch_size=batch_size
    )
    return iter(ds.to_iter_dataset())
