"""Several trainer processes learning one model: `spec.training.workers > 1`.

The ranks form one torch.distributed group (gloo; env:// rendezvous at rank 0).
Rank r reads the labeled partitions p with p % workers == r, assigned by hand
(no group rebalancing), so each partition has one reader and its position is
known. Every iteration each rank consumes and decodes its share, and the ranks
gather the decoded rows: every rank then holds the same global batch and runs the
same learner code on it. What is shared, and how:

- Gradient steps: each rank computes the loss of its slice (rows r, r + N, ...)
  of every step batch, and the gradients are all-reduced (summed) before Adam
  steps, so the weights and optimizer moments stay identical on every rank.
- Everything else the learner decides (held-out split, replay draws, the concept
  check, concept epochs, boosts, EWC): every rank computes it from the same rows
  with the same seeded generator, so the decisions agree without a message.
- Drift events: rank 0 alone reads the control topic; the events travel with its
  rows and every rank applies them after that iteration's rows.
- Publishing and checkpoints: rank 0 alone gates, publishes and writes the
  checkpoint; since its state is every rank's state, the checkpoint holds every
  rank's positions and the lineage covers every rank's partitions. A publish
  refreshes the EWC anchor; the other ranks do the same at the next iteration.
- Offsets: a rank commits its own partitions' offsets up to the positions of
  rank 0's last checkpoint (which rank 0 announces), never further.

A dead rank breaks the group: the others' next collective fails and they exit
without writing a checkpoint. All ranks then start again (the launcher below
locally, the pods' restarts on Kubernetes) and load rank 0's last checkpoint, so
the rows learned since are read again from Kafka, and none is learned twice.
"""

from __future__ import annotations

import base64
import datetime
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from driftline.common.kafka import DeadLetters, ensure_topics, make_consumer, make_producer
from driftline.trainer import metrics
from driftline.trainer.checkpoint import from_bytes, learner_state, restore_learner, to_bytes
from driftline.trainer.decode import LabeledDecoder
from driftline.trainer.examples import Examples
from driftline.trainer.progress import Progress
from driftline.trainer.settings import TrainerSettings
from driftline.trainer.signals import read_control
from driftline.trainer.worker import TrainerWorker, tune_gc

log = logging.getLogger(__name__)

RESTART_SECONDS = 1.0
ROW_ARRAYS = ("numeric", "codes", "labels", "key", "served", "ts", "weight")


class GroupBrokenError(RuntimeError):
    """A collective failed: another rank is gone. Exit, the whole group restarts."""


class Ranks:
    """This process's place in the group, and the collectives the trainer uses."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank = rank
        self.world = world

    @classmethod
    def join(cls, settings: TrainerSettings, world: int) -> Ranks:
        rank = settings.rank if settings.rank is not None else 0
        os.environ["MASTER_ADDR"] = settings.master_addr
        os.environ["MASTER_PORT"] = str(settings.master_port)
        dist.init_process_group(
            "gloo",
            init_method="env://",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=settings.group_timeout),
        )
        log.info("rank %d of %d joined the group at %s", rank, world, settings.master_addr)
        return cls(rank, world)

    def reduce(self, net: torch.nn.Module) -> None:
        """Sum every parameter's gradient over the ranks, in one flat all-reduce."""
        params = [p for p in net.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self._collective(dist.all_reduce, flat)
        start = 0
        for p in params:
            n = p.numel()
            p.grad = flat[start : start + n].view_as(p).clone()
            start += n

    def gather(self, data: bytes) -> list[bytes]:
        """Every rank's `data`, in rank order, on every rank."""
        size = torch.tensor([len(data)], dtype=torch.int64)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world)]
        self._collective(dist.all_gather, sizes, size)
        longest = max(int(s.item()) for s in sizes)
        mine = torch.zeros(longest, dtype=torch.uint8)
        if data:
            mine[: len(data)] = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy())
        out = [torch.zeros(longest, dtype=torch.uint8) for _ in range(self.world)]
        self._collective(dist.all_gather, out, mine)
        return [o[: int(s.item())].numpy().tobytes() for o, s in zip(out, sizes, strict=True)]

    def broadcast(self, data: bytes | None) -> bytes:
        """Rank 0's `data` on every rank (the others pass None)."""
        return self.gather((data or b"") if self.rank == 0 else b"")[0]

    def _collective(self, op: Any, *args: Any) -> None:
        try:
            op(*args)
        except RuntimeError as exc:
            raise GroupBrokenError(f"rank {self.rank}: the group broke ({exc})") from exc

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


# -- the rows of one iteration, as bytes (npz and JSON: no pickle) ----------------------


def pack(
    ex: Examples,
    partitions: Any,
    offsets: Any,
    meta: dict[str, Any],
) -> bytes:
    arrays = {name: getattr(ex, name) for name in ROW_ARRAYS}
    arrays |= {"partitions": partitions, "offsets": offsets}
    meta = {**meta, "categorical": ex.categorical.tolist()}
    return to_bytes(arrays, meta)


def unpack(data: bytes, m: int) -> tuple[Examples, Any, Any, dict[str, Any]]:
    arrays, meta = from_bytes(data)
    n = len(arrays["labels"])
    categorical = np.empty((n, m), dtype=object)
    if n:
        categorical[:] = meta.pop("categorical")
    ex = Examples(categorical=categorical, **{name: arrays[name] for name in ROW_ARRAYS})
    return ex, arrays["partitions"], arrays["offsets"], meta


class GroupWorker(TrainerWorker):
    """One rank of `training.workers` trainers (see the module's docstring)."""

    def __init__(self, settings: TrainerSettings, ranks: Ranks, model: Any = None) -> None:
        super().__init__(settings, model)
        self.ranks = ranks
        self.broken = False
        self._refresh_ewc = False  # rank 0 published: the others refresh the EWC anchor too
        self._checkpointed: dict[str, int] | None = None  # positions rank 0 last wrote

    @property
    def leader(self) -> bool:
        return self.ranks.rank == 0

    # -- start ----------------------------------------------------------------------

    def _start(self) -> bool:
        """Rank 0 resumes (checkpoint or champion) and sends its state to the others."""
        state: bytes | None = None
        if self.leader:
            self._check_volume()
            self.learner = self.resume()
            refresh = self.learner.refresh_ewc

            def refreshed() -> None:  # a publish moved the EWC anchor: the others follow
                refresh()
                self._refresh_ewc = True

            setattr(self.learner, "refresh_ewc", refreshed)  # noqa: B010
            if not self.stop.is_set():
                arrays, meta = learner_state(self.learner)
                meta["worker"] = self.progress.to_meta()
                state = to_bytes(arrays, meta)
        data = self.ranks.broadcast(state)
        if not data:
            return False
        if not self.leader:
            self.learner = self._new_learner()
            arrays, meta = from_bytes(data)
            restore_learner(self.learner, arrays, meta)
            self.progress = Progress.from_meta(meta["worker"])
        assert self.learner is not None
        self.learner.shard = self.ranks
        return True

    def connect(self) -> None:
        from confluent_kafka import OFFSET_STORED, TopicPartition

        conn = self.settings.connections.kafka
        dead_letter = [self.topics.dead_letter] if self.topics.dead_letter else []
        ensure_topics(
            conn,
            [self.topics.labeled, self.topics.control, *dead_letter],
            partitions=self.model.spec.kafka.partitions,
        )
        self._producer = make_producer(conn)
        self._consumer = make_consumer(conn, self.group)
        mine: list[Any] = []
        topics = [self.topics.labeled] + ([self.topics.control] if self.leader else [])
        for topic in topics:
            meta = self._consumer.list_topics(topic, timeout=15).topics[topic]
            for p in sorted(meta.partitions):
                if topic == self.topics.labeled and p % self.ranks.world != self.ranks.rank:
                    continue
                position = self.progress.positions.get(f"{topic}:{p}")
                mine.append(
                    TopicPartition(topic, p, OFFSET_STORED if position is None else position)
                )
        self._consumer.assign(mine)
        log.info("rank %d reads %s", self.ranks.rank, [(t.topic, t.partition) for t in mine])

    # -- the loop -------------------------------------------------------------------

    def run(self) -> None:
        try:
            if not self._start():
                return
            assert self.learner is not None
            self.connect()
            if self.leader:
                self._finish_staged()
            dead = DeadLetters(self._producer, self.topics.dead_letter)
            spec = self.model.spec
            decoder = LabeledDecoder(
                self.learner.layout,
                self.learner.encoder,
                self.model.name,
                spec.model.task,
                spec.model.classes,
                dead,
            )
            self.heartbeat.ready = True
            tune_gc()
            while True:
                self.heartbeat.beat()
                msgs = self._consumer.consume(
                    self.settings.consume_max, self.settings.consume_timeout
                )
                stop = self._iteration(msgs, decoder, dead)
                self._producer.poll(0)
                if stop:
                    break
                if self.leader:
                    self._maybe_publish()
                    if time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_seconds:
                        self.checkpoint()
            if self.leader:
                self.checkpoint()
            # The final checkpoint's positions reach every rank, which commits its own.
            final = self.ranks.broadcast(self._positions_bytes() if self.leader else None)
            self._checkpointed = dict(from_bytes(final)[1]["positions"])
            self._commit()
        except GroupBrokenError as exc:
            self.broken = True
            log.error("%s; exiting without a checkpoint: the group restarts from the last", exc)
        finally:
            self.heartbeat.ready = False
            self._close()

    def _positions_bytes(self) -> bytes:
        return to_bytes({}, {"positions": self.progress.positions})

    def _iteration(self, msgs: list[Any], decoder: LabeledDecoder, dead: DeadLetters) -> bool:
        """Gather every rank's rows, learn them all, apply rank 0's events. True: stop."""
        assert self.learner is not None
        labeled: list[Any] = []
        events: list[str] = []
        positions: dict[str, int] = {}
        for msg in msgs:
            if msg.error() is not None:
                continue
            key = f"{msg.topic()}:{msg.partition()}"
            positions[key] = max(positions.get(key, 0), msg.offset() + 1)
            if msg.topic() == self.topics.labeled:
                labeled.append(msg)
                continue
            control = read_control(msg.value())
            if control.error is not None:
                dead.send(msg, control.error)
                metrics.examples.labels("dead_letter").inc()
            else:
                events.append(base64.b64encode(msg.value() or b"").decode())
        if labeled:
            decoded = decoder.decode(labeled)
            ex, partitions, offsets = decoded.examples, decoded.partitions, decoded.offsets
            stable, n_dead = decoded.stable_version, decoded.dead
        else:
            ex = Examples.empty(
                len(self.learner.layout.numeric), len(self.learner.layout.categorical)
            )
            partitions = offsets = np.zeros(0, np.int64)
            stable, n_dead = None, 0
        if n_dead or events:
            self._producer.flush(10)  # dead letters are durable before their positions travel
        meta: dict[str, Any] = {
            "positions": positions,
            "stable": stable,
            "dead": n_dead,
            "stop": self.stop.is_set(),
        }
        if self.leader:
            meta |= {"events": events, "refresh_ewc": self._refresh_ewc}
            if self._checkpointed is not None:
                meta["checkpointed"] = self._checkpointed
            self._refresh_ewc = False
        parts = [
            unpack(d, len(self.learner.layout.categorical))
            for d in self.ranks.gather(pack(ex, partitions, offsets, meta))
        ]
        lead = parts[0][3]
        if lead.get("refresh_ewc") and not self.leader:
            self.learner.refresh_ewc()
        if "checkpointed" in lead and not self.leader:
            self._checkpointed = {k: int(v) for k, v in lead["checkpointed"].items()}
            self._commit()
        self._learn_all(parts)
        for raw in lead.get("events", []):
            self._control_value(base64.b64decode(raw))
        return any(p[3]["stop"] for p in parts)

    def _learn_all(self, parts: list[tuple[Examples, Any, Any, dict[str, Any]]]) -> None:
        assert self.learner is not None
        progress = self.progress
        rows = [p for p in parts if len(p[0])]
        for _, _, _, meta in parts:
            for key, position in meta["positions"].items():
                progress.positions[key] = max(progress.positions.get(key, 0), int(position))
        stable = [p[3]["stable"] for p in parts if p[3]["stable"]]
        if stable and stable[-1] != progress.stable_version:
            self.learner.monitor.reset()
            progress.stable_version = stable[-1]
        if self.leader:  # counted once for the group
            metrics.examples.labels("dead_letter").inc(sum(int(p[3]["dead"]) for p in parts))
        if not rows:
            return
        ex = Examples.concat([p[0] for p in rows])
        report = self.learner.learn(ex)
        progress.learned(
            self.topics.labeled,
            np.concatenate([p[1] for p in rows]),
            np.concatenate([p[2] for p in rows]),
        )
        progress.rows_since_attempt += len(ex)
        if self.leader:
            metrics.examples.labels("held_out").inc(report.held_out)
            metrics.examples.labels("learned").inc(report.rows - report.held_out)
        if report.concept is not None:
            log.info("concept epoch %d opened: %s", report.concept.epoch, report.concept.reason)
            metrics.concept_epoch.set(self.learner.epoch)
            self.publish_soon = True

    def _control_value(self, value: bytes) -> None:
        event = read_control(value).event
        if event is None or event.model != self.model.name:
            return
        if event.event_id in self.progress.seen_events:
            return
        self.progress.seen_events.append(event.event_id)
        self.on_drift(event)

    # -- rank 0's publishing and checkpoints ------------------------------------------

    def checkpoint(self) -> None:
        if not self.leader:
            return
        self._checkpointed = dict(self.progress.positions)
        super().checkpoint()

    def _commit(self) -> None:
        """Commit this rank's partitions, up to the positions of rank 0's last checkpoint."""
        if self._consumer is None or self._checkpointed is None:
            return
        from confluent_kafka import KafkaException, TopicPartition

        if self._producer is not None:
            self._producer.flush(10)
        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        written = Progress(positions=self._checkpointed)
        offsets = [TopicPartition(*o) for o in written.commit_offsets(assigned)]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("offset commit failed: %s", exc)

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
        self.ranks.close()


# -- the local launcher: N ranks on this machine, restarted together --------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_group(settings: TrainerSettings, stop: threading.Event) -> int:
    """Run `training.workers` ranks here (loopback rendezvous) until `stop` is set.

    When a rank exits before `stop` (killed, crashed, or its group broke), the
    others are stopped too and all of them start again, torchrun-style: rank 0
    loads the last checkpoint and the group goes on from there.
    """
    world = settings.model.spec.training.workers
    while not stop.is_set():
        port = free_port()
        children = []
        for rank in range(world):
            env = dict(os.environ)
            env |= {
                "DRIFTLINE_TRAINER_MODEL_FILE": str(settings.model_file),
                "DRIFTLINE_TRAINER_RANK": str(rank),
                "DRIFTLINE_TRAINER_MASTER_ADDR": "127.0.0.1",
                "DRIFTLINE_TRAINER_MASTER_PORT": str(port),
                # Rank 0 serves the part's metrics port; the others none (they would clash).
                "DRIFTLINE_TRAINER_METRICS_PORT": str(settings.metrics_port if rank == 0 else 0),
            }
            children.append(subprocess.Popen([sys.executable, "-m", "driftline.trainer"], env=env))
        log.info("started %d trainer ranks (pids %s)", world, [c.pid for c in children])
        failed = _watch(children, stop)
        if not failed:
            return 0
        log.warning("a trainer rank exited; restarting all %d from the last checkpoint", world)
        stop.wait(RESTART_SECONDS)
    return 0


def _watch(children: list[subprocess.Popen[bytes]], stop: threading.Event) -> bool:
    """Wait for the ranks; True when one ended before `stop` (the group restarts)."""
    failed = False
    while True:
        codes = [c.poll() for c in children]
        if all(code is not None for code in codes):
            return failed or any(code != 0 for code in codes)
        if stop.is_set() or any(code is not None for code in codes):
            failed = failed or not stop.is_set()
            for c in children:
                if c.poll() is None:
                    c.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            for c in children:
                try:
                    c.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    c.kill()
                    c.wait()
            return failed
        time.sleep(0.2)
