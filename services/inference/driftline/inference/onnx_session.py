"""ONNX Runtime sessions: which execution providers, how many threads, and the graph check.

Providers are chosen from what ONNX Runtime offers *and* what the machine can run.
`onnxruntime-gpu` lists the CUDA and TensorRT providers even on a machine without a
GPU or without the CUDA libraries, and a session that asks for them then logs a
loud error before falling back to the CPU. So a GPU provider is only asked for when
the NVIDIA driver answers with at least one device (and, for TensorRT, when its
library loads); when a session still drops one, we say so once, in one line.

A model is checked against the feature contract before it may serve: input names,
widths and types, and the outputs of its task (`driftline.api.artifacts`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftline.api.artifacts import (
    INPUT_CATEGORICAL,
    INPUT_NUMERIC,
    OUTPUT_LABEL,
    OUTPUT_PROBABILITIES,
    OUTPUT_VALUE,
)
from driftline.inference.contract import Array, FeatureContract
from driftline.inference.errors import ModelLoadError
from driftline.inference.settings import ProviderChoice

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

Provider = str | tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class GpuProbe:
    """What the machine can run, independent of what ONNX Runtime was built with."""

    cuda_devices: int
    tensorrt: bool

    @classmethod
    def detect(cls) -> GpuProbe:
        return cls(cuda_devices=_cuda_device_count(), tensorrt=_library_loads("libnvinfer.so"))


def _library_loads(name: str) -> bool:
    for candidate in (name, f"{name}.10", f"{name}.8"):
        with contextlib.suppress(OSError):
            ctypes.CDLL(candidate)
            return True
    return False


def _cuda_device_count() -> int:
    """Devices the NVIDIA driver reports (0 without a driver); never raises."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    try:
        if libcuda.cuInit(0) != 0 or libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
    except AttributeError:
        return 0
    return count.value


def choose_providers(
    available: Sequence[str],
    choice: ProviderChoice,
    probe: GpuProbe,
    cache_dir: str | None = None,
) -> list[Provider]:
    """Providers to ask for, best first; CPU is always last as the fallback.

    `auto` takes TensorRT, then CUDA, when both ONNX Runtime and the machine have them.
    Asking for `cuda` or `tensorrt` explicitly where they cannot run is a configuration
    error, raised here, instead of a silent fall back to the CPU.
    """
    has_cuda = CUDA in available and probe.cuda_devices > 0
    has_trt = TENSORRT in available and has_cuda and probe.tensorrt
    if choice == "cuda" and not has_cuda:
        raise ModelLoadError(_missing("CUDA", available, probe))
    if choice == "tensorrt" and not has_trt:
        raise ModelLoadError(_missing("TensorRT", available, probe))
    chosen: list[Provider] = []
    if choice in ("auto", "tensorrt") and has_trt:
        trt_options: dict[str, Any] = {"device_id": 0}
        if cache_dir:
            trt_options |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache_dir}
        chosen.append((TENSORRT, trt_options))
    if choice in ("auto", "cuda", "tensorrt") and has_cuda:
        chosen.append((CUDA, {"device_id": 0}))
    chosen.append(CPU)
    return chosen


def _missing(what: str, available: Sequence[str], probe: GpuProbe) -> str:
    return (
        f"providers={what.lower()} was asked for, but it cannot run here: ONNX Runtime offers "
        f"{list(available)}, the NVIDIA driver reports {probe.cuda_devices} device(s)"
        f"{'' if what == 'CUDA' else f', TensorRT library found: {probe.tensorrt}'}; "
        "install onnxruntime-gpu and the CUDA libraries, or use providers=auto"
    )


def provider_names(providers: Sequence[Provider]) -> list[str]:
    return [p if isinstance(p, str) else p[0] for p in providers]


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    return cpus


def session_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning worker threads would take CPU time from the event loop that parses requests.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class OnnxModel:
    """One ONNX Runtime session of one model version, checked against the contract.

    `run` takes the contract-ordered inputs and returns the output arrays in the
    order of `output_names`: (label, probabilities) or (value,).
    """

    def __init__(
        self,
        path: str | Path,
        contract: FeatureContract,
        providers: Sequence[Provider],
        threads: int,
    ) -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(
                str(path), session_options(threads), providers=list(providers)
            )
        except Exception as exc:  # ORT raises its own exception types, all translated here
            raise ModelLoadError(f"ONNX Runtime cannot load the model: {exc}") from exc
        self.providers: list[str] = list(self.session.get_providers())
        dropped = [p for p in provider_names(providers) if p not in self.providers]
        if dropped:
            log.warning("providers %s were not usable; running on %s", dropped, self.providers)
        self.contract = contract
        self.output_names = check_graph(self.session, contract)
        self._has_numeric = bool(contract.numeric)
        self._has_categorical = bool(contract.categorical)

    def run(self, numeric: Array | None, categorical: Array | None) -> list[Array]:
        feeds: dict[str, Array] = {}
        if self._has_numeric:
            feeds[INPUT_NUMERIC] = numeric  # type: ignore[assignment]
        if self._has_categorical:
            feeds[INPUT_CATEGORICAL] = categorical  # type: ignore[assignment]
        outputs = self.session.run(self.output_names, feeds)
        # ONNX Runtime returns int64 as numpy's `longlong`, which orjson does not take.
        return [o.view(np.int64) if o.dtype.char == "q" else o for o in outputs]

    def time_batch(self, rows: int, repeat: int = 3) -> float:
        """Seconds of one run of `rows` zero rows (the best of `repeat`), after a warm-up."""
        numeric, categorical = self.contract.blank(rows)
        self.run(numeric, categorical)
        best = math.inf
        for _ in range(repeat):
            start = time.perf_counter()
            self.run(numeric, categorical)
            best = min(best, time.perf_counter() - start)
        return best


def check_graph(session: Any, contract: FeatureContract) -> list[str]:
    """Refuse a graph that does not match the contract; returns the output names to fetch."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    expected = {}
    if contract.numeric:
        expected[INPUT_NUMERIC] = ("tensor(float)", len(contract.numeric))
    if contract.categorical:
        expected[INPUT_CATEGORICAL] = ("tensor(string)", len(contract.categorical))
    for name, (kind, width) in expected.items():
        node = inputs.get(name)
        if node is None:
            raise ModelLoadError(
                f"the model has no input {name!r} (inputs: {sorted(inputs)}); the feature "
                f"contract has {width} {name} feature(s)"
            )
        if node.type != kind:
            raise ModelLoadError(f"input {name!r} is {node.type}, expected {kind}")
        shape = node.shape
        # A symbolic width (a string) is accepted; a fixed one must match the contract.
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != width):
            raise ModelLoadError(
                f"input {name!r} has shape {node.shape}, expected [N, {width}] "
                "(features in contract order)"
            )
    extra = sorted(set(inputs) - set(expected))
    if extra:
        raise ModelLoadError(f"the model needs inputs the contract does not give: {extra}")
    if contract.task == "classification":
        wanted = [OUTPUT_LABEL, OUTPUT_PROBABILITIES]
    else:
        wanted = [OUTPUT_VALUE]
    missing = [name for name in wanted if name not in outputs]
    if missing:
        raise ModelLoadError(
            f"a {contract.task} model must output {wanted}; missing {missing} "
            f"(outputs: {sorted(outputs)})"
        )
    if contract.task == "classification":
        probs = outputs[OUTPUT_PROBABILITIES].shape
        if len(probs) == 2 and isinstance(probs[1], int) and probs[1] != contract.classes:
            raise ModelLoadError(
                f"output 'probabilities' has {probs[1]} classes, the spec says {contract.classes}"
            )
    return wanted
