"""Provider choice (without GPUs), the graph check against the contract, and running a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from driftline.api import parse_dynamic_model
from driftline.inference.contract import FeatureContract
from driftline.inference.errors import ModelLoadError
from driftline.inference.onnx_session import (
    CPU,
    CUDA,
    TENSORRT,
    GpuProbe,
    OnnxModel,
    available_cpus,
    choose_providers,
    provider_names,
)
from driftline_testing.models import mlp_model, model_document

GPU_WHEEL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
NO_GPU = GpuProbe(cuda_devices=0, tensorrt=False)
ONE_GPU = GpuProbe(cuda_devices=1, tensorrt=False)
GPU_AND_TRT = GpuProbe(cuda_devices=2, tensorrt=True)


def contract_of(**kwargs: object) -> FeatureContract:
    return FeatureContract(parse_dynamic_model(model_document("m", **kwargs)).spec)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("available", "probe", "expected"),
    [
        (["CPUExecutionProvider"], ONE_GPU, [CPU]),
        # The GPU wheel on a machine without a GPU: never ask for CUDA (no loud fallback).
        (GPU_WHEEL, NO_GPU, [CPU]),
        (GPU_WHEEL, ONE_GPU, [CUDA, CPU]),
        (GPU_WHEEL, GPU_AND_TRT, [TENSORRT, CUDA, CPU]),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], GPU_AND_TRT, [CUDA, CPU]),
    ],
)
def test_auto_takes_the_best_provider_the_machine_can_run(
    available: list[str], probe: GpuProbe, expected: list[str]
) -> None:
    assert provider_names(choose_providers(available, "auto", probe)) == expected


def test_an_explicit_gpu_choice_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ModelLoadError, match="0 device"):
        choose_providers(GPU_WHEEL, "cuda", NO_GPU)
    with pytest.raises(ModelLoadError, match="TensorRT"):
        choose_providers(GPU_WHEEL, "tensorrt", ONE_GPU)
    assert provider_names(choose_providers(GPU_WHEEL, "cpu", GPU_AND_TRT)) == [CPU]


def test_tensorrt_caches_its_engines(tmp_path: Path) -> None:
    providers = choose_providers(GPU_WHEEL, "tensorrt", GPU_AND_TRT, str(tmp_path))
    name, options = providers[0]
    assert name == TENSORRT and options["trt_engine_cache_path"] == str(tmp_path)


def test_this_machine_probe_and_cpus() -> None:
    probe = GpuProbe.detect()
    chosen = provider_names(choose_providers(ort.get_available_providers(), "auto", probe))
    assert chosen[-1] == CPU
    assert available_cpus() >= 1


def save(tmp_path: Path, model: bytes) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    return path


def test_model_runs_with_contract_ordered_inputs(tmp_path: Path) -> None:
    contract = contract_of(numeric=("a", "b"), categorical=("c",))
    model = OnnxModel(save(tmp_path, mlp_model(contract)), contract, [CPU], threads=1)
    numeric = np.array([[0.5, 1.0], [2.0, -1.0]], np.float32)
    categorical = np.array([["web"], ["unseen"]], dtype=object)
    label, probabilities = model.run(numeric, categorical)
    assert label.dtype == np.int64 and label.shape == (2,)
    assert probabilities.shape == (2, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert model.time_batch(8) > 0


def test_regression_model_outputs_a_value(tmp_path: Path) -> None:
    contract = contract_of(task="regression")
    model = OnnxModel(save(tmp_path, mlp_model(contract)), contract, [CPU], threads=1)
    (value,) = model.run(np.ones((3, 3), np.float32), None)
    assert value.shape == (3,) and value.dtype == np.float32


@pytest.mark.parametrize(
    ("built_for", "served_as", "message"),
    [
        ({"numeric": ("a", "b")}, {"numeric": ("a", "b", "c")}, "shape"),
        ({"numeric": ("a",), "categorical": ("c",)}, {"numeric": ("a",)}, "does not give"),
        ({"numeric": ("a",)}, {"numeric": ("a",), "categorical": ("c",)}, "no input 'categorical'"),
        ({"task": "regression"}, {}, "must output"),
        ({"classes": 3}, {"classes": 2}, "3 classes"),
    ],
)
def test_a_graph_that_does_not_fit_the_contract_is_refused(
    tmp_path: Path, built_for: dict[str, object], served_as: dict[str, object], message: str
) -> None:
    model = mlp_model(contract_of(**built_for))
    with pytest.raises(ModelLoadError, match=message):
        OnnxModel(save(tmp_path, model), contract_of(**served_as), [CPU], threads=1)


def test_bytes_that_are_not_onnx_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot load"):
        OnnxModel(save(tmp_path, b"not a model"), contract_of(), [CPU], threads=1)
