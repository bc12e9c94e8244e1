"""The prediction log's spool: predictions kept on local disk while Kafka cannot take them.

A FIFO of records in segment files (`<sequence>.seg`) in one directory, which the
operator mounts as an emptyDir (it survives a container restart, kill -9 and OOM
included) and the local runtime keeps under its data directory. Records are
appended at the tail and read from the head; a record is removed only once the
broker acknowledged it (`commit`), and the head's position is kept in a small
`cursor` file, so a restarted process replays exactly what was not delivered.

Each record is framed as `length, crc32` (little-endian u32 each) followed by its
body, `ts` (f64), the key's length (u16), the key and the value. A process killed
mid-write leaves a torn last record: at open it is detected by the framing (short,
or a checksum that does not match), cut off and counted, never read as data.

Bounded: past `max_bytes` the oldest segment is deleted and its records counted
as shed, and a full disk (ENOSPC) sheds the same way before the write is retried.
A segment is at most an eighth of the cap or so, so shedding loses the oldest
slice, not the spool.

fsync policy (`Fsync`): `always` syncs every append (one append per drain of the
log, every few ms while spooling), `interval` at most every `fsync_seconds`,
`segment` when a segment is closed, `off` never. A killed process loses nothing
that was written whatever the policy (the data is in the page cache); the policy
only bounds what a crash of the machine itself may take.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

Fsync = Literal["off", "segment", "interval", "always"]

_HEAD = struct.Struct("<II")  # body length, crc32 of the body
_BODY = struct.Struct("<dH")  # ts, key length; then the key, then the value
MAX_RECORD_BYTES = 16 * 1024 * 1024
"""A longer length field can only be garbage: the frame is treated as torn."""
_READ_CHUNK = 1024 * 1024
SUFFIX = ".seg"
CURSOR = "cursor"
LOCK = "lock"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class SpoolBusyError(RuntimeError):
    """Another process holds this spool directory."""


class Position(NamedTuple):
    """A place in the spool: segment sequence, byte offset, records before it in the segment."""

    seq: int
    offset: int
    nrecords: int


class Entry(NamedTuple):
    """One record read back, with the position just after it (what to commit once delivered)."""

    after: Position
    key: str
    value: bytes
    ts: float


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int = 0
    records: int = 0


def frame(key: str, value: bytes, ts: float) -> bytes:
    k = key.encode()
    body = _BODY.pack(ts, len(k)) + k + value
    return _HEAD.pack(len(body), zlib.crc32(body)) + body


def parse(data: bytes, offset: int = 0) -> tuple[list[tuple[int, str, bytes, float]], int, bool]:
    """The whole records in `data` from `offset`: ([(end, key, value, ts)], where the
    good data ends, whether what follows is a bad frame rather than an incomplete one).
    An incomplete frame at the end is not bad: the rest may not have been read yet."""
    out: list[tuple[int, str, bytes, float]] = []
    size = len(data)
    head, body_head = _HEAD.size, _BODY.size
    while offset + head <= size:
        length, crc = _HEAD.unpack_from(data, offset)
        if length < body_head or length > MAX_RECORD_BYTES:
            return out, offset, True
        end = offset + head + length
        if end > size:
            return out, offset, False
        body = data[offset + head : end]
        if zlib.crc32(body) != crc:
            return out, offset, True
        ts, key_length = _BODY.unpack_from(body)
        if body_head + key_length > length:
            return out, offset, True
        key = body[body_head : body_head + key_length].decode(errors="replace")
        out.append((end, key, body[body_head + key_length :], ts))
        offset = end
    return out, offset, False


class Spool:
    """An on-disk FIFO of (key, value, ts) records, bounded by `max_bytes`."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int | None = None,
        fsync: Fsync = "interval",
        fsync_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or default_segment_bytes(max_bytes)
        self.fsync = fsync
        self.fsync_seconds = fsync_seconds
        self._clock = clock
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock)
            raise SpoolBusyError(f"another process holds the spool in {self.directory}") from exc
        self.torn = 0
        """Records found torn or corrupt (cut off, never read)."""
        self.shed = 0
        """Records deleted unread to stay under the cap or to make room on a full disk."""
        self.appended = 0
        self._segments: deque[_Segment] = deque()
        self._write_fd: int | None = None
        self._read_fd: tuple[int, int] | None = None  # (seq, fd)
        self._unsynced = False
        self._synced_at = clock()
        self._next_seq = 1
        self.committed = Position(0, 0, 0)
        self._read = self.committed
        self._recover()

    # --- opening -------------------------------------------------------------------------

    def _recover(self) -> None:
        """Take over what a previous process left: cut torn tails, find the cursor."""
        paths = sorted(self.directory.glob(f"*{SUFFIX}"), key=lambda p: int(p.stem))
        for path in paths:
            data = path.read_bytes()
            records, good, _ = parse(data)
            if good < len(data):
                self.torn += 1  # a partial or corrupt record: at most one per segment
                with path.open("r+b") as f:
                    f.truncate(good)
            seq = int(path.stem)
            self._next_seq = max(self._next_seq, seq + 1)
            if records:
                self._segments.append(_Segment(seq, path, good, len(records)))
            else:
                path.unlink()
        cursor = self._read_cursor()
        first = self._segments[0] if self._segments else None
        if first is None:
            self.committed = Position(self._next_seq, 0, 0)
        elif cursor is None or cursor.seq < first.seq:
            self.committed = Position(first.seq, 0, 0)
        else:
            while self._segments and self._segments[0].seq < cursor.seq:
                self._segments.popleft().path.unlink()
            head = self._segments[0] if self._segments else None
            if head is None or head.seq != cursor.seq:
                self.committed = Position(head.seq if head else self._next_seq, 0, 0)
            elif cursor.offset > head.size or cursor.nrecords > head.records:
                self.committed = Position(head.seq, 0, 0)  # a cursor from other data
            else:
                self.committed = cursor
        self._read = self.committed

    def _read_cursor(self) -> Position | None:
        try:
            seq, offset, index = (self.directory / CURSOR).read_text().split()
            return Position(int(seq), int(offset), int(index))
        except (OSError, ValueError):
            return None

    # --- the tail --------------------------------------------------------------------------

    def append(self, records: Sequence[tuple[str, bytes, float]]) -> None:
        """Write `records` (key, value, ts) at the tail, shedding the oldest to make room."""
        if not records:
            return
        data = b"".join([frame(k, v, ts) for k, v, ts in records])
        active = self._active()
        if active.size and active.size + len(data) > self.segment_bytes:
            self._roll()
            active = self._active()
        while self.bytes + len(data) > self.max_bytes and self._shed_oldest():
            active = self._active()
        while True:
            try:
                _write_all(self._write_fd, data)  # type: ignore[arg-type]
                break
            except OSError as exc:
                # Never leave half a batch behind: cut back to the last whole record
                # (O_APPEND: the next write lands at the new end).
                os.ftruncate(self._write_fd, active.size)  # type: ignore[arg-type]
                if exc.errno not in _DISK_FULL or not self._shed_oldest():
                    raise
                active = self._active()
        active.size += len(data)
        active.records += len(records)
        self.appended += len(records)
        self._unsynced = True
        if self.fsync == "always":
            self.sync()
        elif self.fsync == "interval":
            self.tick()

    def tick(self) -> None:
        """`interval`: sync what is written when the interval has passed (called often)."""
        due = self._clock() - self._synced_at >= self.fsync_seconds
        if self._unsynced and self.fsync == "interval" and due:
            self.sync()

    def sync(self) -> None:
        if self._write_fd is not None and self._unsynced:
            os.fsync(self._write_fd)
        self._unsynced = False
        self._synced_at = self._clock()

    def _active(self) -> _Segment:
        if self._write_fd is None:
            seq = self._next_seq
            self._next_seq += 1
            path = self.directory / f"{seq:016d}{SUFFIX}"
            self._write_fd = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600
            )
            self._segments.append(_Segment(seq, path))
            if self.fsync != "off":
                _sync_directory(self.directory)
        return self._segments[-1]

    def _roll(self) -> None:
        """Close the segment being written; the next append starts a new one."""
        if self._write_fd is None:
            return
        if self.fsync != "off" and self._unsynced:
            os.fsync(self._write_fd)
            self._unsynced = False
            self._synced_at = self._clock()
        os.close(self._write_fd)
        self._write_fd = None

    def _shed_oldest(self) -> bool:
        """Delete the oldest segment, counting its records not read yet; False if none."""
        if not self._segments:
            return False
        oldest = self._segments[0]
        if self._write_fd is not None and oldest is self._segments[-1]:
            self._roll()
        self._segments.popleft()
        read_there = self._read.nrecords if self._read.seq == oldest.seq else 0
        if self._read.seq > oldest.seq:
            read_there = oldest.records
        self.shed += oldest.records - read_there
        self._close_reader(oldest.seq)
        oldest.path.unlink(missing_ok=True)
        following = self._segments[0].seq if self._segments else self._next_seq
        if self.committed.seq <= oldest.seq:
            self.committed = Position(following, 0, 0)
        if self._read.seq <= oldest.seq:
            self._read = Position(following, 0, 0)
        return True

    # --- the head --------------------------------------------------------------------------

    def read(self, limit: int) -> list[Entry]:
        """Up to `limit` records after the last one read, oldest first."""
        out: list[Entry] = []
        while len(out) < limit:
            segment = self._segment(self._read.seq)
            if segment is None:
                later = [s for s in self._segments if s.seq > self._read.seq]
                if not later:
                    break
                self._read = Position(later[0].seq, 0, 0)
                continue
            seq, offset, index = self._read
            if offset >= segment.size:
                if segment is self._segments[-1]:
                    break
                following = self._segments[self._segments.index(segment) + 1]
                self._read = Position(following.seq, 0, 0)
                continue
            fd = self._reader(segment)
            want = min(segment.size - offset, max(_READ_CHUNK, _HEAD.size))
            data = os.pread(fd, want, offset)
            records, _, bad = parse(data)
            if not records and not bad and len(data) >= _HEAD.size:
                length = _HEAD.unpack_from(data)[0]  # one record larger than a chunk
                data = os.pread(fd, _HEAD.size + length, offset)
                records, _, bad = parse(data)
            if not records:
                # Corrupt data inside a segment (it was checked at open or written
                # whole by this process): count it and skip the rest of the segment.
                self.torn += 1
                segment.records = index
                segment.size = offset
                if segment is self._segments[-1] and self._write_fd is not None:
                    self._roll()
                continue
            for end, key, value, ts in records[: limit - len(out)]:
                index += 1
                out.append(Entry(Position(seq, offset + end, index), key, value, ts))
            self._read = out[-1].after
        return out

    def rewind(self) -> None:
        """Read again from the first record not committed (a replay that failed)."""
        self._read = self.committed

    def commit(self, position: Position) -> None:
        """Everything before `position` is delivered: forget it (delete whole segments)."""
        self.committed = position
        while self._segments and self._segments[0].seq < position.seq:
            gone = self._segments.popleft()
            self._close_reader(gone.seq)
            gone.path.unlink(missing_ok=True)

    def save_cursor(self) -> None:
        """Write where the head is, for a restarted process (not synced: see the module)."""
        path = self.directory / CURSOR
        tmp = path.with_suffix(".tmp")
        tmp.write_text("{} {} {}\n".format(*self.committed))
        tmp.replace(path)

    def reset(self) -> None:
        """Everything was delivered: delete the files, so the next outage starts afresh."""
        self._roll()
        self._close_reader(None)
        for segment in self._segments:
            segment.path.unlink(missing_ok=True)
        self._segments.clear()
        (self.directory / CURSOR).unlink(missing_ok=True)
        self.committed = self._read = Position(self._next_seq, 0, 0)

    # --- what it holds ---------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def pending(self) -> int:
        """Records not delivered yet (read or not)."""
        done = self.committed.nrecords if self._segment(self.committed.seq) is not None else 0
        return sum(s.records for s in self._segments) - done

    @property
    def unread(self) -> int:
        total = 0
        for s in self._segments:
            if s.seq > self._read.seq:
                total += s.records
            elif s.seq == self._read.seq:
                total += s.records - self._read.nrecords
        return total

    @property
    def first_seq(self) -> int:
        return self._segments[0].seq if self._segments else self._next_seq

    def close(self) -> None:
        self._roll()
        self._close_reader(None)
        os.close(self._lock)

    def _segment(self, seq: int) -> _Segment | None:
        for s in self._segments:
            if s.seq == seq:
                return s
        return None

    def _reader(self, segment: _Segment) -> int:
        if self._read_fd is not None and self._read_fd[0] == segment.seq:
            return self._read_fd[1]
        self._close_reader(None)
        fd = os.open(segment.path, os.O_RDONLY)
        self._read_fd = (segment.seq, fd)
        return fd

    def _close_reader(self, seq: int | None) -> None:
        if self._read_fd is not None and (seq is None or self._read_fd[0] == seq):
            os.close(self._read_fd[1])
            self._read_fd = None


def default_segment_bytes(max_bytes: int) -> int:
    """An eighth of the cap, between 64 KiB and 16 MiB: shedding takes the oldest slice."""
    return max(64 * 1024, min(16 * 1024 * 1024, max_bytes // 8))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync_directory(directory: Path) -> None:
    """A new segment's name is durable only once its directory is synced."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
