"""Bad models, unit level: broken graphs fail their requests, and no model is unpickled.

Builds on `tests/inference/test_batcher.py` (a run that raises fails its batch, the
server lives) and `tests/drift/test_reference.py` (object arrays in the reference
file are refused, not unpickled). The canary that aborts such versions, with real
servers, is `tests/integration/hardening/test_bad_models.py`.

The faults come from `driftline.local.faults`; each rewrites a working graph, so the
broken version passes every load-time check (contract, warm-up run) and shows its
fault only while serving.
"""

from __future__ import annotations

import ast
import asyncio
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.api import parse_dynamic_model
from driftline.inference.batcher import Batcher
from driftline.inference.contract import FeatureContract, Rows
from driftline.inference.errors import ModelFailedError, ModelLoadError
from driftline.inference.onnx_session import CPU, OnnxModel
from driftline.local.faults import fails_at_run_time, nan_answers, slowed
from driftline_testing.models import mlp_model, model_document

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "services", REPO / "operator"]
WARM_ROWS = 32


@pytest.fixture(scope="module")
def contract() -> FeatureContract:
    return FeatureContract(parse_dynamic_model(model_document("m")).spec)


@pytest.fixture(scope="module")
def healthy(contract: FeatureContract) -> bytes:
    return mlp_model(contract)


def load(data: bytes, contract: FeatureContract, tmp_path: Path) -> OnnxModel:
    path = tmp_path / f"model-{len(list(tmp_path.iterdir()))}.onnx"
    path.write_bytes(data)
    return OnnxModel(path, contract, [CPU], threads=1)


def rows(contract: FeatureContract, values: list[tuple[float, float, float]]) -> Rows:
    return contract.arrange(values, "features")


async def serve(model: Any, requests: list[Rows]) -> list[Any]:
    """Queue every request before the first batch runs, so they share one batch."""
    batcher = Batcher(
        model,
        name="m",
        version="2",
        max_batch_rows=64,
        max_queue_rows=256,
        max_delay_seconds=0.0,
        inline=True,
    )
    futures = [batcher.submit(r) for r in requests]
    return await asyncio.gather(*futures, return_exceptions=True)


def test_a_model_answering_nan_fails_its_requests(
    contract: FeatureContract, healthy: bytes, tmp_path: Path
) -> None:
    model = load(nan_answers(healthy), contract, tmp_path)
    model.time_batch(WARM_ROWS)  # loads and warms up like any version
    (result,) = asyncio.run(serve(model, [rows(contract, [(1, 2, 3)])]))
    assert isinstance(result, ModelFailedError) and "NaN or infinity" in str(result)
    assert result.status == 500


class SometimesNan:
    """Answers NaN for rows whose x1 is negative, like a log or sqrt inside a graph."""

    def __init__(self, model: OnnxModel) -> None:
        self.model = model

    def run(self, numeric: Any, categorical: Any) -> list[Any]:
        label, probabilities = self.model.run(numeric, categorical)
        probabilities = probabilities.copy()
        probabilities[numeric[:, 0] < 0] = np.nan
        return [label, probabilities]


def test_only_the_requests_with_a_nan_row_fail_in_a_shared_batch(
    contract: FeatureContract, healthy: bytes, tmp_path: Path
) -> None:
    model = SometimesNan(load(healthy, contract, tmp_path))
    requests = [
        rows(contract, [(1, 2, 3)]),
        rows(contract, [(2, 2, 2), (-1, 0, 0)]),  # one bad row fails the whole request
        rows(contract, [(3, 2, 1), (4, 4, 4)]),
    ]
    first, second, third = asyncio.run(serve(model, requests))
    assert isinstance(second, ModelFailedError)
    assert [len(o) for o in first] == [1, 1] and [len(o) for o in third] == [2, 2]
    assert np.isfinite(third[1]).all()


def test_a_model_that_raises_on_the_served_shape_fails_its_requests(
    contract: FeatureContract, healthy: bytes, tmp_path: Path
) -> None:
    model = load(fails_at_run_time(healthy, WARM_ROWS), contract, tmp_path)
    assert model.time_batch(WARM_ROWS) > 0  # the loader's warm-up passes
    (result,) = asyncio.run(serve(model, [rows(contract, [(1, 2, 3)])]))
    assert isinstance(result, ModelFailedError) and "failed to run" in str(result)


def test_a_slowed_model_answers_the_same_ten_times_slower(
    contract: FeatureContract, healthy: bytes, tmp_path: Path
) -> None:
    fast = load(healthy, contract, tmp_path)
    slow = load(slowed(healthy, matmuls=8, size=128), contract, tmp_path)
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    for got, want in zip(slow.run(x, None), fast.run(x, None), strict=True):
        assert np.array_equal(got, want)
    assert slow.time_batch(1) >= 10 * fast.time_batch(1)


# --- no code path unpickles a model file ---------------------------------------------------

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve"}
MODEL_LOADERS = {
    ("mlflow", "pyfunc"),
    ("mlflow", "sklearn"),
    ("mlflow", "pytorch"),
    ("torch", "load"),
    ("joblib", "load"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
    ("marshal", "loads"),
}


def _calls(tree: ast.AST) -> list[tuple[ast.Call, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            out.append((node, ast.unparse(node.func)))
    return out


def test_no_source_imports_a_pickle_module_or_an_unpickling_loader() -> None:
    """Every model and reference file is ONNX or npz; nothing in the source can unpickle."""
    found: list[str] = []
    files = [p for root in SOURCES for p in root.rglob("*.py")]
    assert len(files) > 100
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names]
                module = node.module if isinstance(node, ast.ImportFrom) else None
                for name in [module, *names] if module else names:
                    if name and name.split(".")[0] in PICKLE_MODULES:
                        found.append(f"{where}:{node.lineno} imports {name}")
        for call, func in _calls(tree):
            parts = tuple(func.split("."))
            if any(parts[: len(pair)] == pair for pair in MODEL_LOADERS) or func.endswith(
                ("pyfunc.load_model", "load_detector")
            ):
                found.append(f"{where}:{call.lineno} calls {func}")
            if func in ("np.load", "numpy.load"):
                kwargs = {k.arg: k.value for k in call.keywords}
                value = kwargs.get("allow_pickle")
                if not (isinstance(value, ast.Constant) and value.value is False):
                    found.append(f"{where}:{call.lineno} np.load without allow_pickle=False")
    assert not found, found


class Payload:
    """What an attacker would put in a model file: code that runs when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_pickle_in_place_of_the_model_is_refused_and_never_runs(
    contract: FeatureContract, tmp_path: Path
) -> None:
    marker = tmp_path / "payload-ran"
    data = pickle.dumps(Payload(marker))
    unpickled: list[str] = []

    def watch(event: str, args: tuple[Any, ...]) -> None:
        if event == "pickle.find_class":
            unpickled.append(repr(args))

    sys.addaudithook(watch)  # cannot be removed; it only records
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load"):
        OnnxModel(path, contract, [CPU], threads=1)
    assert not marker.exists()
    assert not unpickled
