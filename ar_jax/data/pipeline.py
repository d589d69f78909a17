"""Training batches through Grain: one global order per (seed, epoch), each process reading its rows of every batch.

`batches(source, global_batch, seed)` is a Grain `MapDataset` of this process's `[global_batch / P, ...]` batches:
a seeded global shuffle per epoch of any random-access source (in-memory arrays, ArrayRecord token shards),
a seeded `random_map` (e.g. the augmentation view of a token shard record) keyed by the example's position in the
global stream, then this process's contiguous block of rows of each global batch. The examples of global batch
`s` and their rows are the same for any number of processes, so a run on N hosts trains on exactly the batches
of a run on one. `iterator(...)` is its checkpointable iterator (Grain state: the position in the stream).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import grain
import jax


class ArraySource(grain.sources.RandomAccessDataSource):
    """Rows of a pytree of in-memory arrays (leading dimension N) as a random-access source: `source[i]` is the
    pytree of row i (e.g. `{"tokens": [T], "cond": [], "text": [L]}`)."""

    def __init__(self, tree: Any):
        sizes = {len(x) for x in jax.tree.leaves(tree)}
        if len(sizes) != 1:
            raise ValueError(f"every array of an ArraySource needs the same number of rows; got sizes {sorted(sizes)}.")
        self.tree, self.n = tree, sizes.pop()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        return jax.tree.map(lambda x: x[index], self.tree)

    def __repr__(self) -> str:
        return f"ArraySource({self.n} rows)"


class HostRows(grain.MapDataset):
    """This process's `[p * b, (p + 1) * b)` rows of each global batch of `b * P` consecutive elements."""

    def __init__(self, parent: grain.MapDataset, per_process: int, process_index: int, process_count: int):
        super().__init__(parent)
        self.b, self.p, self.global_batch = per_process, process_index, per_process * process_count

    def __len__(self) -> int:
        return len(self._parent) // self.global_batch * self.b

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[(index // self.b) * self.global_batch + self.p * self.b + index % self.b]

    def __str__(self) -> str:
        return f"HostRows(process {self.p}, {self.b} of every {self.global_batch})"


def process_share(global_batch: int) -> tuple[int, int, int]:
    """`(rows per process, process index, process count)` from Grain's `ShardByJaxProcess`; ValueError if the
    global batch does not split evenly."""
    shard = grain.sharding.ShardByJaxProcess(drop_remainder=True)
    if global_batch % shard.shard_count:
        raise ValueError(f"batch_size={global_batch} does not split over {shard.shard_count} processes; use a "
                         f"multiple of {shard.shard_count}.")
    return global_batch // shard.shard_count, shard.shard_index, shard.shard_count


def batches(source: Sequence[Any], global_batch: int, seed: int, random_map: Callable | None = None,
            share: tuple[int, int, int] | None = None) -> grain.MapDataset:
    """This process's batches (a pytree of `[global_batch / P, ...]` arrays per step, endless epochs).

    `random_map(element, rng) -> element` runs with a generator seeded by `seed` and the element's position in the
    global stream (so any process count gives the same result); `share` overrides `process_share` (tests).
    """
    if len(source) == 0:
        raise ValueError(f"the training source {source!r} has no examples.")
    b, p, count = share or process_share(global_batch)
    ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)  # shuffled again every epoch
    if random_map is not None:
        ds = ds.random_map(random_map, seed=seed)
    return HostRows(ds, b, p, count).batch(b, drop_remainder=True)


def iterator(ds: grain.MapDataset, read_threads: int = 0, prefetch: int = 0, workers: int = 0
             ) -> grain.DatasetIterator:
    """A checkpointable iterator over `batches(...)`: `read_threads` threads fill a buffer of `prefetch` batches;
    `workers` > 0 reads in that many processes (`mp_prefetch`)."""
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch))
    if workers:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags; scripts here parse their own (argparse)
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iter(it_ds)


def skip(it: grain.DatasetIterator, num_batches: int) -> None:
    """Move a fresh iterator `num_batches` batches on (a checkpoint saved without the loader's state): the position
    is set directly where Grain's state is a plain index, else the batches are read and dropped."""
    state = it.get_state()
    if set(state) == {"next_index"}:
        it.set_state({"next_index": state["next_index"] + num_batches})
        return
    for _ in range(num_batches):
        next(it)


class DataState:
    """A snapshot of an iterator's position for orbax: Grain's checkpoint handler saves `get_state()` (JSON bytes)
    at save time, whatever the iterator did since."""

    def __init__(self, it: grain.DatasetIterator):
        self.state = it.get_state()

    def get_state(self) -> bytes:
        return json.dumps(self.state).encode()
