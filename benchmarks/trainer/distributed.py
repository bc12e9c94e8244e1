"""Examples per second with `training.workers` 1 and 2, beside raw torch DDP.

    python -m benchmarks.trainer.distributed [--quick]

Each rank is a process pinned to its own CPU (torch 1 thread), in one gloo group
on loopback, as the trainer's ranks run. For each network (the default MLP
[64, 32], and a wider [512, 512] where the gradient step dominates) and each
world size:

- update path: what a rank does with its share of every iteration, Kafka aside:
  pack its rows, gather every rank's rows (`Ranks.gather`), and `learn` the whole
  batch, each gradient step on its slice with the gradients all-reduced;
- raw torch DDP: `DistributedDataParallel` over the same network and Adam, tensors
  already in memory, the same global batch of 256 rows split over the ranks: the
  ceiling of any update path;
- consume+decode+update: the same, reading the rank's own partitions of a topic
  on a local broker and decoding them first (the trainer's loop, less MLflow).

Writes benchmarks/results/trainer-distributed.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.trainer.common import machine, table, write
from benchmarks.trainer.throughput import messages, produce
from driftline.api.spec import ModelSpec, TrainingSpec
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import DeadLetters, ensure_topics, make_consumer
from driftline.common.streams import SEAStream
from driftline.local.servers import TansuBroker
from driftline.trainer.decode import LabeledDecoder
from driftline.trainer.distributed import Ranks, free_port, pack, unpack
from driftline.trainer.examples import Examples
from driftline.trainer.learner import LearnerOptions, OnlineLearner

BATCH = 256
CHUNK = 4096  # rows per iteration over all ranks, as the worker reads them
NETS = {"MLP [64, 32]": [64, 32], "MLP [512, 512]": [512, 512]}


def learner(hidden: list[int]) -> OnlineLearner:
    stream = SEAStream(seed=1)
    spec = ModelSpec.model_validate(
        {
            "registry": {"trackingUri": "http://x", "name": "bench"},
            "task": "classification",
            "learner": {"type": "mlp", "hidden": hidden},
        }
    )
    options = LearnerOptions.from_spec(spec, TrainingSpec(), detect_concept=False)
    options = LearnerOptions(**{**options.__dict__, "replay_fraction": 0.0, "ewc_lambda": 0.0})
    return OnlineLearner(spec, stream.contract(), options)


def rows_of(lrn: OnlineLearner, n: int) -> Examples:
    data = SEAStream(seed=2).take(n)
    numeric = np.stack([data.column(c) for c in lrn.layout.numeric_names], axis=1)
    return lrn.examples(
        numeric, np.zeros((n, 0), object), data.labels, np.arange(n, dtype=np.int64)
    )


def _join(rank: int, world: int, port: int) -> Ranks | None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[rank % len(os.sched_getaffinity(0))]})
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    if world == 1:
        return None
    import torch.distributed as dist

    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    dist.init_process_group("gloo", rank=rank, world_size=world)
    return Ranks(rank, world)


def _barrier(ranks: Ranks | None) -> None:
    if ranks is not None:
        ranks.gather(b"")


def update_path(lrn: OnlineLearner, ranks: Ranks | None, mine: list[Examples]) -> float:
    """Examples/s of this rank's gathering and learning every iteration's rows."""
    lrn.shard = ranks
    m = 0
    lrn.net.preprocess.fit(mine[0].numeric)  # type: ignore[operator]
    start = time.perf_counter()
    timed = 0
    for i, ex in enumerate(mine):
        if i == 1:  # the first iteration warms up, untimed
            _barrier(ranks)
            start = time.perf_counter()
        if ranks is not None:
            zeros = np.zeros(len(ex), np.int64)
            parts = [unpack(d, m)[0] for d in ranks.gather(pack(ex, zeros, zeros, {}))]
            ex = Examples.concat(parts)
        lrn.learn(ex)
        timed += len(ex) if i else 0
    _barrier(ranks)
    return timed / (time.perf_counter() - start)


def raw_ddp(hidden: list[int], ranks: Ranks | None, ex: Examples) -> float:
    """Examples/s of DDP (or the plain loop alone) over this rank's slices of the batches."""
    from torch.nn.parallel import DistributedDataParallel

    same = learner(hidden)
    net = same.net
    net.preprocess.fit(ex.numeric)  # type: ignore[operator]
    model: torch.nn.Module = net if ranks is None else DistributedDataParallel(net)
    lr = same.options.learning_rate  # the same numbers: subnormals slow both alike
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    world, rank = (1, 0) if ranks is None else (ranks.world, ranks.rank)
    x, c = torch.from_numpy(ex.numeric), torch.from_numpy(ex.codes)
    y = torch.from_numpy(ex.labels.astype(np.int64))
    batches = []
    for i in range(0, len(y), BATCH):
        mine = slice(i + rank, i + BATCH, world)
        batches.append((x[mine], c[mine], y[mine]))
    model.train()
    for xb, cb, yb in batches[:1]:  # warm-up, untimed
        torch.autograd.backward(torch.nn.functional.cross_entropy(model(xb, cb), yb))
    _barrier(ranks)
    start = time.perf_counter()
    for xb, cb, yb in batches[1:]:
        loss = torch.nn.functional.cross_entropy(model(xb, cb), yb)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
    _barrier(ranks)
    return (len(y) - BATCH) / (time.perf_counter() - start)


def end_to_end(
    hidden: list[int], ranks: Ranks | None, bootstrap: str, topic: str, rows: int
) -> float:
    """Examples/s to consume, decode, gather and learn this rank's partitions of `topic`."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    lrn = learner(hidden)
    lrn.shard = ranks
    world, rank = (1, 0) if ranks is None else (ranks.world, ranks.rank)
    consumer = make_consumer(KafkaConnection(bootstrap), f"{topic}-{world}")
    consumer.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(2) if p % world == rank]
    )
    decoder = LabeledDecoder(
        lrn.layout, lrn.encoder, "bench", "classification", 2, DeadLetters(None, None)
    )
    seen = 0
    start: float | None = None
    fitted = False
    _barrier(ranks)
    while True:
        msgs = [m for m in consumer.consume(CHUNK // world, 0.2) if m.error() is None]
        if msgs and start is None:
            start = time.perf_counter()
        ex = decoder.decode(msgs).examples if msgs else Examples.empty(3, 0)
        if ranks is not None:
            zeros = np.zeros(len(ex), np.int64)
            meta = {"n": len(ex)}
            ex = Examples.concat(
                [unpack(d, 0)[0] for d in ranks.gather(pack(ex, zeros, zeros, meta))]
            )
        if len(ex) and not fitted:
            lrn.net.preprocess.fit(ex.numeric)  # type: ignore[operator]
            fitted = True
        if len(ex):
            lrn.learn(ex)
        seen += len(ex)
        if seen >= rows:
            break
    consumer.close()
    return seen / (time.perf_counter() - (start or time.perf_counter()))


def _rank_main(rank: int, world: int, port: int, job: dict[str, Any], out: str) -> None:
    ranks = _join(rank, world, port)
    rows, hidden = job["rows"], job["hidden"]
    result: dict[str, list[float]] = {"update path": [], "raw torch DDP": []}
    lrn = learner(hidden)
    ex = rows_of(lrn, rows)
    # This rank's share of each iteration: every world-th row of the chunk.
    r, w = (0, 1) if ranks is None else (ranks.rank, ranks.world)
    mine = [ex.take(slice(i + r, i + CHUNK, w)) for i in range(0, rows, CHUNK)]
    for _ in range(job["repeats"]):  # alternated, so a burst of load hits both alike
        result["update path"].append(update_path(lrn, ranks, mine))
        result["raw torch DDP"].append(raw_ddp(hidden, ranks, ex))
    if job.get("topic"):
        result["consume+decode+update"] = [
            end_to_end(hidden, ranks, job["bootstrap"], job["topic"], rows)
        ]
    Path(out).write_text(json.dumps(result))
    if ranks is not None:
        ranks.close()


def run_world(world: int, job: dict[str, Any], folder: Path) -> dict[str, float]:
    """Examples/s of each path: the slowest rank's in each repeat, the best repeat."""
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    outs = [folder / f"w{world}-r{r}.txt" for r in range(world)]
    procs = [
        ctx.Process(target=_rank_main, args=(r, world, port, job, str(outs[r])))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(900)
        assert p.exitcode == 0, p.exitcode
    results = [json.loads(o.read_text()) for o in outs]
    return {
        k: max(min(r[k][i] for r in results) for i in range(len(results[0][k]))) for k in results[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows (about a minute)")
    parser.add_argument("--rows", type=int, default=0)
    parser.add_argument("--no-kafka", action="store_true")
    parser.add_argument("--repeats", type=int, default=0, help="best of (default 3, quick 2)")
    args = parser.parse_args()
    rows = args.rows or (32_768 if args.quick else 131_072)
    repeats = args.repeats or (2 if args.quick else 3)
    import tempfile

    table_rows: list[list[Any]] = []
    data: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = None if args.no_kafka else TansuBroker().__enter__()
        try:
            topic = None
            if broker is not None:
                conn = KafkaConnection(broker.bootstrap_servers)
                topic = f"bench-dist-{int(time.time())}"
                ensure_topics(conn, [topic], partitions=2)
                produce(conn, topic, messages(SEAStream(seed=2), rows))
            for net, hidden in NETS.items():
                rates = {}
                for world in (1, 2):
                    job = {
                        "rows": rows,
                        "repeats": repeats,
                        "hidden": hidden,
                        "topic": f"{topic}" if topic else None,
                        "bootstrap": broker.bootstrap_servers if broker else None,
                    }
                    rates[world] = run_world(world, job, Path(tmp))
                for path in rates[1]:
                    one, two = rates[1][path], rates[2][path]
                    ddp1, ddp2 = rates[1]["raw torch DDP"], rates[2]["raw torch DDP"]
                    table_rows.append([net, path, one, two, two / one, one / ddp1, two / ddp2])
                    data.append({"net": net, "path": path, "workers_1": one, "workers_2": two})
        finally:
            if broker is not None:
                broker.__exit__(None, None, None)
    headers = [
        "network",
        "path",
        "examples/s, 1 worker",
        "examples/s, 2 workers",
        "2 vs 1",
        "vs DDP, 1",
        "vs DDP, 2",
    ]
    text = table(headers, table_rows)
    print(text)
    info = machine()
    notes = (
        f"{rows} SEA rows (3 numeric features), best of {repeats} runs (Kafka path: one), "
        f"batch {BATCH} over all ranks, Adam, "
        f"iterations of {CHUNK} rows over all ranks; no replay, no EWC, 10% held out (no "
        "step). Each rank is a process pinned to its own CPU, torch 1 thread, gloo on "
        "loopback. `vs DDP` is the path's examples/s over raw torch DDP's at the same world "
        "size (DDP at 1 worker is the plain loop). `consume+decode+update` reads from a Tansu "
        "broker running beside the ranks on the same two CPUs. "
        f"This machine has {os.cpu_count()} CPUs shared with other work (load average "
        f"{info['load_average']}): 2 workers here means both cores, the broker and everyone "
        "else's processes on them, so the 2-vs-1 column is a lower bound on what 2 dedicated "
        "cores give; the ratios measured side by side in one run move less than the absolute "
        "numbers."
    )
    write(
        "trainer-distributed",
        "Trainer with 1 and 2 workers",
        [("Examples per second", text), ("How it was measured", notes)],
        {"machine": info, "rows": rows, "repeats": repeats, "results": data},
    )


if __name__ == "__main__":
    main()
