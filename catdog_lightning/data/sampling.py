"""Which images a process sees, in which order, each epoch."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShardSampler(Sampler[int]):
    """An order that depends only on ``(seed, epoch)``, split into one shard per process.

    - Resuming at epoch ``e`` replays exactly the order the uninterrupted run would have used.
    - Under DDP each of ``world`` processes takes every ``world``-th index from ``rank``.
      Training (``even=True``) drops the last ``len % world`` indices of the shuffled order so every
      process runs the same number of steps; evaluation keeps every image exactly once, so shards
      may differ by one image. Lightning's DistributedSampler would instead pad with repeats, which
      counts some images twice and changes the metrics.
    """

    def __init__(
        self,
        n: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        even: bool = False,
        batch_size: int = 1,
    ):
        super().__init__()
        self.n, self.shuffle, self.seed, self.rank, self.world, self.even = n, shuffle, seed, rank, world, even
        self.epoch, self.batch_size = 0, batch_size
        self._skip: tuple[int | None, int] = (None, 0)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def skip_batches(self, epoch: int, batches: int) -> None:
        """Leave out the first ``batches`` batches of ``epoch`` (a run resumed mid-epoch trained on them)."""
        self._skip = (epoch, batches * self.batch_size)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        if self.even:
            order = order[: len(order) - len(order) % self.world]
        mine = order[self.rank :: self.world]
        skip_epoch, skip = self._skip
        if skip_epoch == self.epoch:  # once: the next epochs run whole
            self._skip = (None, 0)
            mine = mine[skip:]
        return iter(mine)

    def __len__(self) -> int:
        usable = self.n - self.n % self.world if self.even else self.n
        return len(range(self.rank, usable, self.world))
