"""The prediction log's spool on its own: framing, order, the cap, torn tails, restarts."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from driftline.inference import spool as spool_module
from driftline.inference.spool import CURSOR, Spool, SpoolBusyError, frame, parse

KiB = 1024


def records(first: int, n: int, size: int = 100) -> list[tuple[str, bytes, float]]:
    return [(f"r{i}", b"x" * size, 1000.0 + i) for i in range(first, first + n)]


def open_spool(path: Path, **kw: Any) -> Spool:
    kw.setdefault("max_bytes", 1024 * KiB)
    kw.setdefault("segment_bytes", 4 * KiB)
    kw.setdefault("fsync", "off")
    return Spool(path, **kw)


def read_all(spool: Spool) -> list[str]:
    return [e.key for e in spool.read(10**9)]


def test_a_frame_reads_back_and_a_changed_byte_is_caught() -> None:
    data = frame("req-1", b'{"a":1}', 12.5) + frame("req-2", b"", 13.0)
    parsed, end, bad = parse(data)
    assert [(k, v, ts) for _, k, v, ts in parsed] == [
        ("req-1", b'{"a":1}', 12.5),
        ("req-2", b"", 13.0),
    ]
    assert (end, bad) == (len(data), False)
    flipped = bytearray(data)
    flipped[12] ^= 0xFF
    parsed, end, bad = parse(bytes(flipped))
    assert (parsed, end, bad) == ([], 0, True)
    # A frame cut short is incomplete, not bad: the rest may still be on its way.
    parsed, end, bad = parse(data[:-3])
    assert [k for _, k, _, _ in parsed] == ["req-1"] and not bad


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for first in range(0, 300, 30):
        spool.append(records(first, 30))
    assert len(list(tmp_path.glob("*.seg"))) > 5
    assert spool.pending == 300
    assert read_all(spool) == [f"r{i}" for i in range(300)]
    assert spool.unread == 0 and spool.pending == 300  # read is not delivered


def test_commit_deletes_delivered_segments_and_rewind_reads_again(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(records(0, 200))
    entries = spool.read(150)
    spool.commit(entries[99].after)
    assert spool.pending == 100
    spool.rewind()
    assert read_all(spool) == [f"r{i}" for i in range(100, 200)]
    spool.commit(spool.committed)  # no-op
    segments = len(list(tmp_path.glob("*.seg")))
    spool.reset()
    assert segments and not list(tmp_path.glob("*.seg")) and spool.pending == 0
    spool.append(records(500, 2))
    assert read_all(spool) == ["r500", "r501"]


def test_the_cap_sheds_the_oldest_and_counts_them(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=64 * KiB, segment_bytes=8 * KiB)
    for first in range(0, 2000, 10):
        spool.append(records(first, 10))
    assert spool.bytes <= 64 * KiB
    kept = read_all(spool)
    assert spool.shed + len(kept) == 2000
    assert spool.shed > 0
    # What is left is the newest, in order, with no gap.
    assert kept == [f"r{i}" for i in range(2000 - len(kept), 2000)]


def test_a_full_disk_sheds_the_oldest_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = open_spool(tmp_path)
    for first in range(0, 100, 10):
        spool.append(records(first, 10))
    real_write = os.write
    calls = {"n": 0}

    def full_once(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            real_write(fd, bytes(data[:7]))  # half a record, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(spool_module.os, "write", full_once)
    spool.append(records(100, 10))
    monkeypatch.undo()
    kept = read_all(spool)
    assert spool.shed > 0 and spool.shed + len(kept) == 110
    assert kept[-10:] == [f"r{i}" for i in range(100, 110)]  # whole, no torn bytes between
    assert kept == sorted(kept, key=lambda k: int(k[1:]))


def test_a_torn_tail_is_cut_and_counted_at_open(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(records(0, 20))
    spool.close()
    last = sorted(tmp_path.glob("*.seg"))[-1]
    with last.open("ab") as f:
        f.write(frame("r20", b"y" * 100, 1.0)[:-10])  # killed mid-write
    reopened = open_spool(tmp_path)
    assert reopened.torn == 1
    assert read_all(reopened) == [f"r{i}" for i in range(20)]
    reopened.append(records(20, 1))
    reopened.rewind()
    assert read_all(reopened)[-1] == "r20"


def test_a_restart_replays_from_the_saved_cursor(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(records(0, 100))
    entries = spool.read(60)
    spool.commit(entries[39].after)
    spool.save_cursor()
    spool.close()  # like a kill: nothing else written
    assert (tmp_path / CURSOR).exists()
    again = open_spool(tmp_path)
    assert again.pending == 60
    assert read_all(again) == [f"r{i}" for i in range(40, 100)]


def test_one_process_per_spool(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    with pytest.raises(SpoolBusyError):
        open_spool(tmp_path)
    spool.close()
    open_spool(tmp_path).close()


@pytest.mark.parametrize("policy", ["off", "segment", "interval", "always"])
def test_every_fsync_policy_keeps_the_records(tmp_path: Path, policy: str) -> None:
    now = [0.0]
    spool = open_spool(tmp_path, fsync=policy, fsync_seconds=1.0, clock=lambda: now[0])
    synced: list[int] = []
    real = os.fsync
    spool_module.os.fsync = lambda fd: synced.append(fd) or real(fd)  # type: ignore[assignment,func-returns-value]
    try:
        for first in range(0, 100, 10):
            now[0] += 0.3
            spool.append(records(first, 10))
    finally:
        spool_module.os.fsync = real
    assert read_all(spool) == [f"r{i}" for i in range(100)]
    if policy == "off":
        assert not synced
    elif policy == "always":
        assert len(synced) >= 10
    else:
        assert 0 < len(synced) < 10


def test_the_log_spools_in_order_when_the_broker_never_answers(tmp_path: Path) -> None:
    """No broker at all: after `stall_seconds` the log takes back what the producer
    holds and spools it, then everything after it, in the order it was answered."""
    import asyncio
    import time

    import numpy as np

    from driftline.common.connections import KafkaConnection
    from driftline.inference.predlog import PredictionLog

    spool = open_spool(tmp_path)
    log = PredictionLog(
        KafkaConnection("127.0.0.1:1"), "t.predictions", "m", ["x1"], "classification",
        capacity=1000, flush_seconds=0.01, spool=spool, max_age_seconds=3600,
        stall_seconds=0.2, producer_overrides={"log_level": 0},
    )  # fmt: skip
    outputs = [np.array([1, 0], np.int64), np.array([[0.2, 0.8], [0.9, 0.1]], np.float32)]
    served = []
    for i in range(60):
        ids = [f"r{i}a", f"r{i}b"]
        log.add((ids, [None, None], [(0.5,), (0.6,)], "1", "stable", outputs, time.time(), None))
        served += ids
        log.drain()
        time.sleep(0.01)
    deadline = time.monotonic() + 5
    while not log.spooling and time.monotonic() < deadline:
        log.drain()
        time.sleep(0.05)
    assert log.spooling
    log.add(
        (["last"], [None], [(0.1,)], "1", "stable", [o[:1] for o in outputs], time.time(), None)
    )
    served.append("last")
    asyncio.run(log.close(timeout=0.1))
    again = open_spool(tmp_path)
    assert read_all(again) == served
    assert log.stats()["spooled"] == len(served)
