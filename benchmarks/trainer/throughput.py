"""Labeled examples consumed, decoded and learned per second, on one core.

    python -m benchmarks.trainer.throughput [--rows 262144]

Side by side in one run, same network (the default MLP, hidden [64, 32]), same
batches of 256 rows, this process pinned to one CPU (the broker runs beside it):

- raw torch: forward/backward/Adam over tensors already in memory: the ceiling;
- learn: `OnlineLearner.learn` on decoded rows (held-out split, buffers, steps),
  without replay/EWC (same rows per step as raw) and with the spec's defaults
  (replay 0.5 of each batch, EWC lambda 50: half of each step is replayed rows);
- decode: Kafka records -> `Examples` (msgspec batch decode, feature columns);
- end to end: consume from the broker + decode + learn, both settings;
- River's `learn_one` (logistic regression, Hoeffding tree) on the same rows.

Writes benchmarks/results/trainer-throughput.{md,json}.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from benchmarks.trainer.common import machine, pin_to_one_core, table, write
from driftline.api.events import LabeledExample, encode
from driftline.api.spec import ModelSpec, TrainingSpec
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import DeadLetters, ensure_topics, make_consumer, make_producer
from driftline.common.streams import CovariateShiftStream, DriftingStream, SEAStream
from driftline.local.servers import TansuBroker
from driftline.trainer.decode import LabeledDecoder
from driftline.trainer.examples import Examples
from driftline.trainer.learner import LearnerOptions, OnlineLearner
from driftline.trainer.worker import tune_gc

BATCH = 256
CHUNK = 4096  # records per consume() call, as the worker reads them


def model_spec(stream: DriftingStream) -> ModelSpec:
    return ModelSpec.model_validate(
        {"registry": {"trackingUri": "http://x", "name": "bench"}, "task": stream.task}
    )


def learner_for(stream: DriftingStream, replay: float, ewc: float) -> OnlineLearner:
    spec = model_spec(stream)
    options = LearnerOptions.from_spec(spec, TrainingSpec(), detect_concept=False)
    options = LearnerOptions(**{**options.__dict__, "replay_fraction": replay, "ewc_lambda": ewc})
    return OnlineLearner(spec, stream.contract(), options)


def messages(stream: DriftingStream, rows: int) -> list[bytes]:
    data = stream.take(rows)
    now = time.time()
    return [
        encode(
            LabeledExample(
                request_id=f"r{i}",
                model="bench",
                model_version="1",
                variant="stable",
                features=features,  # type: ignore[arg-type]
                label=float(label),
                output=float(label),
                ts_prediction=now,
                ts_label=now,
            )
        )
        for i, (features, label) in enumerate(
            zip(data.features(), data.labels.tolist(), strict=True)
        )
    ]


def raw_torch(learner: OnlineLearner, ex: Examples, fused: bool = True) -> float:
    """The ceiling: the same network and optimizer over tensors already in memory."""
    net = learner.net
    optimizer = torch.optim.Adam(net.parameters(), lr=learner.options.learning_rate, fused=fused)
    learner.net.preprocess.fit(ex.numeric)  # type: ignore[operator]
    x, c = torch.from_numpy(ex.numeric), torch.from_numpy(ex.codes)
    y = torch.from_numpy(ex.labels.astype(np.int64))
    batches = [
        (x[i : i + BATCH], c[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(y), BATCH)
    ]
    net.train()
    start = time.perf_counter()
    for xb, cb, yb in batches:
        loss = torch.nn.functional.cross_entropy(net(xb, cb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return len(y) / (time.perf_counter() - start)


def learn_only(learner: OnlineLearner, chunks: list[Examples]) -> tuple[float, float]:
    """(rows consumed per second, rows in gradient steps per second)."""
    learner.net.preprocess.fit(chunks[0].numeric)  # type: ignore[operator]
    learner.learn(chunks[0])
    learner.refresh_ewc()  # as after a publish: the EWC term is active from here on
    trained = learner.trained
    start = time.perf_counter()
    for chunk in chunks[1:]:
        learner.learn(chunk)
    elapsed = time.perf_counter() - start
    rows = sum(len(c) for c in chunks[1:])
    stepped = (learner.trained - trained) / (1 - learner.options.replay_fraction)
    return rows / elapsed, stepped / elapsed


def produce(conn: KafkaConnection, topic: str, values: list[bytes]) -> None:
    producer = make_producer(conn, **{"linger.ms": 20, "batch.num.messages": 10000})
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value=value, partition=i % 2)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def consume_all(conn: KafkaConnection, topic: str, group: str, rows: int) -> list[list[Any]]:
    consumer = make_consumer(conn, group, [topic])
    chunks: list[list[Any]] = []
    got = 0
    deadline = time.monotonic() + 120
    try:
        while got < rows and time.monotonic() < deadline:
            msgs = [m for m in consumer.consume(CHUNK, 0.5) if m.error() is None]
            if msgs:
                chunks.append(msgs)
                got += len(msgs)
    finally:
        consumer.close()
    return chunks


def end_to_end(
    conn: KafkaConnection,
    topic: str,
    group: str,
    rows: int,
    learner: OnlineLearner,
    decoder: LabeledDecoder,
) -> tuple[float, float]:
    """(examples consumed per second, rows in gradient steps per second)."""
    consumer = make_consumer(conn, group, [topic])
    got = 0
    start = None
    trained = learner.trained
    try:
        deadline = time.monotonic() + 300
        while got < rows and time.monotonic() < deadline:
            msgs = consumer.consume(CHUNK, 0.5)
            if not msgs:
                continue
            if start is None:  # the group join is not part of the stream's cost
                start = time.perf_counter()
            good = [m for m in msgs if m.error() is None]
            learner.learn(decoder.decode(good).examples)
            got += len(good)
    finally:
        consumer.close()
    assert start is not None and got == rows, got
    elapsed = time.perf_counter() - start
    stepped = (learner.trained - trained) / (1 - learner.options.replay_fraction)
    return got / elapsed, stepped / elapsed


def river_rates(stream: DriftingStream, rows: int) -> dict[str, float]:
    from river import linear_model, tree

    data = stream.take(rows)
    xs, ys = data.features(), [int(v) for v in data.labels]
    out = {}
    for name, model in (
        ("River LogisticRegression.learn_one", linear_model.LogisticRegression()),
        ("River HoeffdingTreeClassifier.learn_one", tree.HoeffdingTreeClassifier()),
    ):
        start = time.perf_counter()
        for x, y in zip(xs, ys, strict=True):
            model.learn_one(x, y)
        out[name] = rows / (time.perf_counter() - start)
    return out


def run_contract(
    stream_cls: type[DriftingStream], rows: int, conn: KafkaConnection, tag: str
) -> list[list[Any]]:
    stream = stream_cls(seed=1)  # type: ignore[call-arg]
    values = messages(stream, rows)
    topic = f"bench-{tag}-{int(time.time())}"
    ensure_topics(conn, [topic], partitions=2)
    produce(conn, topic, values)

    probe = learner_for(stream, 0.0, 0.0)
    chunks_msgs = consume_all(conn, topic, f"{topic}-decode", rows)
    dead = DeadLetters(None, None)
    decoder = LabeledDecoder(probe.layout, probe.encoder, "bench", "classification", 2, dead)
    start = time.perf_counter()
    decoded = [decoder.decode(m).examples for m in chunks_msgs]
    decode_rate = rows / (time.perf_counter() - start)
    all_rows = Examples.concat(decoded)

    raw = raw_torch(learner_for(stream, 0.0, 0.0), all_rows)
    raw_default_adam = raw_torch(learner_for(stream, 0.0, 0.0), all_rows, fused=False)
    chunks = [all_rows.take(slice(i, i + CHUNK)) for i in range(0, rows, CHUNK)]
    plain_rows, plain_stepped = learn_only(learner_for(stream, 0.0, 0.0), chunks)
    default_rows, default_stepped = learn_only(learner_for(stream, 0.5, 50.0), chunks)

    e2e = {}
    for label, (replay, ewc) in {"no replay/EWC": (0.0, 0.0), "defaults": (0.5, 50.0)}.items():
        learner = learner_for(stream, replay, ewc)
        learner.net.preprocess.fit(all_rows.numeric[:CHUNK])  # type: ignore[operator]
        learner.learn(chunks[0])
        learner.refresh_ewc()
        dec = LabeledDecoder(learner.layout, learner.encoder, "bench", "classification", 2, dead)
        e2e[label] = end_to_end(conn, topic, f"{topic}-{label}", rows, learner, dec)

    name = stream.name
    plain_e2e, plain_e2e_stepped = e2e["no replay/EWC"]
    default_e2e, default_e2e_stepped = e2e["defaults"]
    nan = float("nan")
    return [
        [name, "raw torch loop, fused Adam (ceiling)", raw, raw, 1.0, 1.0],
        [
            name,
            "raw torch loop, default Adam",
            raw_default_adam,
            raw_default_adam,
            raw_default_adam / raw,
            raw_default_adam / raw,
        ],
        [name, "decode only", decode_rate, nan, decode_rate / raw, nan],
        [
            name,
            "learn, no replay/EWC",
            plain_rows,
            plain_stepped,
            plain_rows / raw,
            plain_stepped / raw,
        ],
        [
            name,
            "learn, defaults (replay 0.5, EWC)",
            default_rows,
            default_stepped,
            default_rows / raw,
            default_stepped / raw,
        ],
        [
            name,
            "consume+decode+learn, no replay/EWC",
            plain_e2e,
            plain_e2e_stepped,
            plain_e2e / raw,
            plain_e2e_stepped / raw,
        ],
        [
            name,
            "consume+decode+learn, defaults",
            default_e2e,
            default_e2e_stepped,
            default_e2e / raw,
            default_e2e_stepped / raw,
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=262_144)
    args = parser.parse_args()
    cpu = pin_to_one_core()
    tune_gc()  # as the worker does once it has started
    rows: list[list[Any]] = []
    with TansuBroker() as broker:
        conn = KafkaConnection(broker.bootstrap_servers)
        for cls, tag in ((SEAStream, "sea"), (CovariateShiftStream, "covariate")):
            rows += run_contract(cls, args.rows, conn, tag)
    river = river_rates(SEAStream(seed=2), 20_000)
    for name, rate in river.items():
        rows.append(["sea", name, rate, float("nan"), float("nan"), float("nan")])
    headers = [
        "contract",
        "path",
        "examples/s",
        "rows in steps/s",
        "examples vs raw",
        "steps vs raw",
    ]
    text = table(headers, rows)
    print(text)
    info = machine()
    notes = (
        f"One core (this process pinned to CPU {cpu}, torch 1 thread); the Tansu broker runs "
        "as its own process. Batch 256, default MLP [64, 32], Adam. `rows in steps/s` counts "
        "every row of every gradient step (fresh and replayed), the unit of the raw loop; "
        "10% of examples are held out for the gate (no step), and with the defaults half "
        "of each step is replayed rows. "
        "`sea`: 3 numeric features; `covariate`: 4 numeric + 1 hashed categorical. "
        "The machine is shared with other work: absolute numbers move with its load, "
        "the ratios measured side by side in one run less so."
    )
    write(
        "trainer-throughput",
        "Online trainer throughput",
        [("Samples per second", text), ("How it was measured", notes)],
        {
            "machine": info,
            "rows": args.rows,
            "results": [dict(zip(headers, r, strict=True)) for r in rows],
        },
    )


if __name__ == "__main__":
    main()
