"""KServe ModelServer (v1 protocol): the benchmark's ONNX MLP with ONNX Runtime.

Runs inside KServe's own venv: `python kserve_model.py --http_port PORT` with the
model file in `BENCH_MODEL`; one worker, gRPC off.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import kserve
import numpy as np
import onnxruntime as ort


class Mlp(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.ready = True

    def predict(self, payload: dict[str, Any], headers: Any = None) -> dict[str, Any]:
        numeric = np.asarray(payload["instances"], dtype=np.float32)
        _label, probabilities = self.session.run(None, {"numeric": numeric})
        return {"predictions": probabilities.tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    args, _ = parser.parse_known_args()
    kserve.ModelServer(
        http_port=args.http_port, workers=1, enable_grpc=False, enable_latency_logging=False
    ).start([Mlp("mlp", os.environ["BENCH_MODEL"])])
