"""Row buffers: the replay reservoir, the anchor set and the recent windows.

Every stored row remembers the concept epoch it belongs to. That is what lets a
new epoch retire old rows without copying anything: rows of older epochs are no
longer sampled (or only with a small weight) and their slots are the first to be
reused. Rows also keep their sequence number, so the rows that arrived after a
drift began can be moved into the new epoch when the drift is confirmed.

- `Reservoir`: uniform sample of everything seen in the current epoch (Vitter's
  algorithm R, vectorised), for replay and for the gate's anchor set.
- `Ring`: the latest rows, for the gate's held-out slice, the reference sample
  and the drift checks.

Storage is columnar numpy and round-trips through `state()` / `load_state()`
into the checkpoint (no pickle: category texts are stored as unicode arrays).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.trainer.examples import Examples

EMPTY = -1  # epoch of a slot that holds nothing


class RowStore:
    """Fixed-capacity columns of example rows, with sequence number and epoch per row."""

    def __init__(self, capacity: int, k: int, m: int, keep_raw: bool = True) -> None:
        self.capacity = capacity
        self.k, self.m, self.keep_raw = k, m, keep_raw
        self.numeric = np.zeros((capacity, k), np.float32)
        self.codes = np.zeros((capacity, m), np.int64)
        self.labels = np.zeros(capacity, np.float32)
        self.served = np.full(capacity, np.nan, np.float32)
        self.ts = np.zeros(capacity, np.float64)
        self.weight = np.ones(capacity, np.float32)
        self.key = np.zeros(capacity, np.int64)
        self.seq = np.zeros(capacity, np.int64)
        self.epoch = np.full(capacity, EMPTY, np.int32)
        self.categorical = np.full((capacity if keep_raw else 0, m), "", dtype=object)

    def _write(
        self, slots: NDArray[np.int64], ex: Examples, seq: NDArray[np.int64], epoch: int
    ) -> None:
        self.numeric[slots] = ex.numeric
        self.codes[slots] = ex.codes
        self.labels[slots] = ex.labels
        self.served[slots] = ex.served
        self.ts[slots] = ex.ts
        self.weight[slots] = ex.weight
        self.key[slots] = ex.key
        self.seq[slots] = seq
        self.epoch[slots] = epoch
        if self.keep_raw:
            self.categorical[slots] = ex.categorical

    def rows(self, index: NDArray[np.int64]) -> Examples:
        categorical = (
            self.categorical[index]
            if self.keep_raw
            else np.full((len(index), self.m), "", dtype=object)
        )
        return Examples(
            numeric=self.numeric[index],
            categorical=categorical,
            codes=self.codes[index],
            labels=self.labels[index],
            key=self.key[index],
            served=self.served[index],
            ts=self.ts[index],
            weight=self.weight[index],
        )

    def in_epoch(self, epoch: int) -> NDArray[np.int64]:
        """Slots holding rows of `epoch`, oldest first."""
        slots = np.flatnonzero(self.epoch == epoch)
        return slots[np.argsort(self.seq[slots], kind="stable")]

    def count(self, epoch: int) -> int:
        return int(np.count_nonzero(self.epoch == epoch))

    def retag(self, from_seq: int, epoch: int) -> int:
        """Move rows with sequence >= `from_seq` into `epoch`; returns how many moved."""
        moved = (self.seq >= from_seq) & (self.epoch != EMPTY) & (self.epoch != epoch)
        self.epoch[moved] = epoch
        return int(moved.sum())

    def state(self, prefix: str) -> dict[str, NDArray[Any]]:
        out: dict[str, NDArray[Any]] = {
            f"{prefix}.{name}": getattr(self, name)
            for name in ("numeric", "codes", "labels", "served", "ts", "key", "seq", "epoch")
        }
        out[f"{prefix}.weight"] = self.weight
        if self.keep_raw:
            out[f"{prefix}.categorical"] = self.categorical.astype(np.str_)
        return out

    def load_state(self, prefix: str, arrays: dict[str, NDArray[Any]]) -> None:
        """Stored rows: slot for slot when the capacity is unchanged (so a restored
        learner continues exactly), else the newest rows, oldest first from slot 0."""
        epoch, seq = arrays[f"{prefix}.epoch"], arrays[f"{prefix}.seq"]
        names: tuple[str, ...] = ("numeric", "codes", "labels", "served", "ts", "key", "seq")
        names += ("epoch",) if f"{prefix}.weight" not in arrays else ("epoch", "weight")
        if len(epoch) == self.capacity:
            for name in names:
                getattr(self, name)[:] = arrays[f"{prefix}.{name}"]
            if self.keep_raw and f"{prefix}.categorical" in arrays:
                self.categorical[:] = arrays[f"{prefix}.categorical"].astype(object)
            return
        filled = np.flatnonzero(epoch != EMPTY)
        order = filled[np.argsort(seq[filled], kind="stable")]
        order = order[len(order) - min(len(order), self.capacity) :]
        n = len(order)
        for name in names:
            getattr(self, name)[:n] = arrays[f"{prefix}.{name}"][order]
        self.epoch[n:] = EMPTY
        if self.keep_raw and f"{prefix}.categorical" in arrays:
            self.categorical[:n] = arrays[f"{prefix}.categorical"][order].astype(object)


class Reservoir(RowStore):
    """A uniform sample of the current epoch's rows; older epochs' slots are reused first."""

    def __init__(self, capacity: int, k: int, m: int, keep_raw: bool = False) -> None:
        super().__init__(capacity, k, m, keep_raw)
        self.current_epoch = 0
        self.seen = 0  # rows offered in the current epoch
        self._free = np.arange(capacity, dtype=np.int64)  # slots not holding the current epoch
        self._current: NDArray[np.int64] | None = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return self.capacity - len(self._free)

    def add(self, ex: Examples, seq: NDArray[np.int64], rng: np.random.Generator) -> None:
        n = len(ex)
        if n == 0 or self.capacity == 0:
            self.seen += n
            return
        fill = min(n, len(self._free))
        if fill:
            self._write(self._free[:fill], ex.take(slice(0, fill)), seq[:fill], self.current_epoch)
            self._free = self._free[fill:]
            self._current = None
        if fill < n:
            # Algorithm R: the t-th row of the epoch replaces a random slot with p = cap / t.
            t = self.seen + np.arange(fill + 1, n + 1)
            slot = rng.integers(0, t)
            keep = np.flatnonzero(slot < self.capacity)
            if len(keep):
                rest = ex.take(slice(fill, n))
                self._write(slot[keep], rest.take(keep), seq[fill:][keep], self.current_epoch)
        self.seen += n

    def current_slots(self) -> NDArray[np.int64]:
        if len(self._free) == 0:
            return np.arange(self.capacity, dtype=np.int64)
        if self._current is None:
            self._current = np.flatnonzero(self.epoch == self.current_epoch)
        return self._current

    def sample(
        self, n: int, rng: np.random.Generator, old_weight: float = 0.0
    ) -> tuple[NDArray[np.int64], NDArray[np.float32] | None]:
        """`n` slots drawn with replacement, and per-row loss weights (None = all 1).

        With `old_weight` 0 only the current epoch is drawn; otherwise every stored
        row is, and rows of older epochs weigh `old_weight` in the loss.
        """
        if old_weight <= 0.0 or len(self._free) == 0:
            pool = self.current_slots()
            if len(pool) == 0:
                return np.zeros(0, np.int64), None
            if len(pool) == self.capacity:
                return rng.integers(0, self.capacity, n), None
            return pool[rng.integers(0, len(pool), n)], None
        pool = np.flatnonzero(self.epoch != EMPTY)
        if len(pool) == 0:
            return np.zeros(0, np.int64), None
        idx = pool[rng.integers(0, len(pool), n)]
        weights = np.where(self.epoch[idx] == self.current_epoch, 1.0, old_weight)
        return idx, weights.astype(np.float32)

    def open_epoch(self, epoch: int, from_seq: int | None = None, clear: bool = False) -> None:
        """Start `epoch`: rows from `from_seq` on join it; older rows are retired.

        `clear` empties the slots of older epochs now (anchor sets); otherwise they
        stay readable (down-weighted replay) until new rows need their slots.
        """
        self.current_epoch = epoch
        if from_seq is not None:
            self.retag(from_seq, epoch)
        if clear:
            self.epoch[(self.epoch != epoch) & (self.epoch != EMPTY)] = EMPTY
        self._recount()

    def _recount(self) -> None:
        not_current = np.flatnonzero(self.epoch != self.current_epoch)
        # Empty slots first, then the oldest epochs.
        self._free = not_current[np.argsort(self.epoch[not_current], kind="stable")]
        self._current = None
        self.seen = self.count(self.current_epoch)

    def state(self, prefix: str) -> dict[str, NDArray[Any]]:
        out = super().state(prefix)
        out[f"{prefix}.meta"] = np.array([self.current_epoch, self.seen], np.int64)
        return out

    def load_state(self, prefix: str, arrays: dict[str, NDArray[Any]]) -> None:
        super().load_state(prefix, arrays)
        self.current_epoch, seen = (int(v) for v in arrays[f"{prefix}.meta"])
        self._recount()
        self.seen = max(seen, self.seen)


class Ring(RowStore):
    """The latest `capacity` rows, oldest overwritten first."""

    def __init__(self, capacity: int, k: int, m: int, keep_raw: bool = True) -> None:
        super().__init__(capacity, k, m, keep_raw)
        self.head = 0  # rows ever appended

    def append(self, ex: Examples, seq: NDArray[np.int64], epoch: int) -> None:
        n = len(ex)
        if n == 0 or self.capacity == 0:
            return
        if n > self.capacity:
            ex, seq = ex.take(slice(n - self.capacity, n)), seq[n - self.capacity :]
            self.head += n - self.capacity
            n = self.capacity
        slots = (self.head + np.arange(n)) % self.capacity
        self._write(slots, ex, seq, epoch)
        self.head += n

    def latest(self, epoch: int, limit: int | None = None) -> NDArray[np.int64]:
        """Slots of `epoch`'s rows, oldest first, at most the newest `limit`."""
        slots = self.in_epoch(epoch)
        return slots if limit is None else slots[-limit:]

    def state(self, prefix: str) -> dict[str, NDArray[Any]]:
        out = super().state(prefix)
        out[f"{prefix}.meta"] = np.array([self.head], np.int64)
        return out

    def load_state(self, prefix: str, arrays: dict[str, NDArray[Any]]) -> None:
        same_capacity = len(arrays[f"{prefix}.epoch"]) == self.capacity
        super().load_state(prefix, arrays)
        if same_capacity:
            self.head = int(arrays[f"{prefix}.meta"][0])
        else:  # compacted oldest-first: the next write goes after them, or over the oldest
            stored = int(np.count_nonzero(self.epoch != EMPTY))
            self.head = stored % self.capacity if self.capacity else 0
