"""The floor: raw ONNX Runtime in-process, no HTTP, no Python service code.

    python -m benchmarks.inference.floor MODEL.onnx WIDTH ROWS SECONDS

Runs `session.run` on ROWS random rows back to back for SECONDS with one intra-op
thread (as the service does on one core) and prints one JSON line: runs per
second, rows per second and the latency percentiles of a run. The benchmark
starts it under `taskset` on the server's core.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def measure(path: str, width: int, rows: int, seconds: float) -> dict[str, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds = {"numeric": np.random.default_rng(0).random((rows, width), dtype=np.float32)}
    for _ in range(50):
        session.run(None, feeds)
    latencies = []
    end = time.perf_counter() + seconds
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        session.run(None, feeds)
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        if t1 >= end:
            break
    elapsed = time.perf_counter() - started
    ordered = np.sort(np.asarray(latencies))
    return {
        "runs_per_s": len(latencies) / elapsed,
        "rows_per_s": len(latencies) * rows / elapsed,
        "p50_ms": float(ordered[len(ordered) // 2]) * 1000,
        "p99_ms": float(ordered[int(len(ordered) * 0.99)]) * 1000,
    }


if __name__ == "__main__":
    model, width, rows, seconds = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        float(sys.argv[4]),
    )
    print(json.dumps(measure(model, width, rows, seconds)))
