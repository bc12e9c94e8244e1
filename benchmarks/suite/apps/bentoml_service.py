"""BentoML service: the benchmark's ONNX MLP with ONNX Runtime, one worker.

Runs inside BentoML's own venv: `bentoml serve bentoml_service:Mlp`. With
`BENCH_BATCHABLE=1` the API is batchable (BentoML's adaptive batching merges rows
along the first axis before calling it).
"""

from __future__ import annotations

import os

import bentoml
import numpy as np
import onnxruntime as ort

BATCHABLE = os.environ.get("BENCH_BATCHABLE") == "1"


@bentoml.service(workers=1)
class Mlp:
    def __init__(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.environ["BENCH_MODEL"], options, providers=["CPUExecutionProvider"]
        )

    @bentoml.api(batchable=BATCHABLE, max_batch_size=64, max_latency_ms=1000)
    def predict(self, numeric: np.ndarray) -> np.ndarray:
        _label, probabilities = self.session.run(
            None, {"numeric": numeric.astype(np.float32, copy=False)}
        )
        return probabilities
