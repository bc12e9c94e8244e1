"""Dynamic batching: merged runs, exact splits, no wait for a lone request, load shedding."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from driftline.api import parse_dynamic_model
from driftline.inference.batcher import Batcher
from driftline.inference.contract import FeatureContract, Rows
from driftline.inference.errors import ModelFailedError, OverloadedError
from driftline.inference.onnx_session import CPU, OnnxModel
from driftline_testing.models import mlp_model, model_document


class Counting:
    """Runs the real model and records the rows of every run."""

    def __init__(self, model: OnnxModel, gate: threading.Event | None = None) -> None:
        self.model = model
        self.runs: list[int] = []
        self.gate = gate

    def run(self, numeric: np.ndarray | None, categorical: np.ndarray | None) -> list[np.ndarray]:
        if self.gate is not None:
            self.gate.wait(10)
        assert numeric is not None
        self.runs.append(len(numeric))
        return self.model.run(numeric, categorical)


class Failing:
    def run(self, numeric: Any, categorical: Any) -> list[np.ndarray]:
        raise RuntimeError("boom")


@pytest.fixture(scope="module")
def contract() -> FeatureContract:
    return FeatureContract(parse_dynamic_model(model_document("m", categorical=("c",))).spec)


@pytest.fixture(scope="module")
def model(contract: FeatureContract, tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    path = tmp_path_factory.mktemp("model") / "model.onnx"
    path.write_bytes(mlp_model(contract))
    return OnnxModel(path, contract, [CPU], threads=1)


def rows(contract: FeatureContract, n: int, seed: int) -> Rows:
    rng = np.random.default_rng(seed)
    values = [(*rng.normal(size=3).tolist(), str(rng.choice(["a", "web", "zz"]))) for _ in range(n)]
    return contract.arrange(values, "features")


def batcher(model: Any, **kwargs: Any) -> Batcher:
    options: dict[str, Any] = {
        "name": "m",
        "version": "1",
        "max_batch_rows": 64,
        "max_queue_rows": 256,
        "max_delay_seconds": 0.0,
        "inline": True,
    }
    return Batcher(model, **{**options, **kwargs})


@pytest.mark.parametrize("inline", [True, False])
async def test_concurrent_requests_share_a_run_and_get_exactly_their_rows(
    contract: FeatureContract, model: OnnxModel, inline: bool
) -> None:
    counting = Counting(model)
    queue = batcher(counting, inline=inline)
    requests = [rows(contract, n, seed) for seed, n in enumerate([1, 3, 1, 5, 2])]
    results = await asyncio.gather(*(queue.submit(r) for r in requests))
    assert counting.runs == [12]  # one run for all five requests
    for request, (label, probabilities) in zip(requests, results, strict=True):
        alone_label, alone_probabilities = model.run(request.numeric, request.categorical)
        assert label.tolist() == alone_label.tolist()
        assert np.allclose(probabilities, alone_probabilities, atol=1e-6)
    queue.close()


async def test_a_lone_request_does_not_wait_for_companions(
    contract: FeatureContract, model: OnnxModel
) -> None:
    queue = batcher(Counting(model), max_delay_seconds=60.0)
    # With nobody else inside the server, max_delay must not hold it: 60 s would time out.
    label, _ = await asyncio.wait_for(queue.submit(rows(contract, 1, 0)), 5)
    assert label.shape == (1,)


async def test_the_batch_waits_for_requests_already_inside_the_server(
    contract: FeatureContract, model: OnnxModel
) -> None:
    counting = Counting(model)
    arriving = [1]
    queue = batcher(counting, max_delay_seconds=60.0, arrivals=lambda: arriving[0])
    first = queue.submit(rows(contract, 1, 0))
    await asyncio.sleep(0.01)  # turns of the loop: the batch waits for the one arriving
    assert not first.done()
    arriving[0] = 0
    second = queue.submit(rows(contract, 2, 1))
    await asyncio.gather(first, second)
    assert counting.runs == [3]


async def test_requests_queue_while_the_model_is_busy(
    contract: FeatureContract, model: OnnxModel
) -> None:
    gate = threading.Event()
    counting = Counting(model, gate)
    queue = batcher(counting, inline=False, max_batch_rows=4)
    first = queue.submit(rows(contract, 1, 0))
    await asyncio.sleep(0.05)  # the first run is now in progress, held by the gate
    later = [queue.submit(rows(contract, 1, seed)) for seed in range(1, 7)]
    gate.set()
    await asyncio.gather(first, *later)
    assert counting.runs == [1, 4, 2]  # what queued meanwhile, in runs of at most 4 rows
    queue.close()


async def test_a_full_queue_sheds_at_once_with_retry_after(
    contract: FeatureContract, model: OnnxModel
) -> None:
    gate = threading.Event()
    queue = batcher(Counting(model, gate), inline=False, max_queue_rows=4)
    running = queue.submit(rows(contract, 1, 0))
    await asyncio.sleep(0.05)
    queued = [queue.submit(rows(contract, 2, 1)), queue.submit(rows(contract, 2, 2))]
    with pytest.raises(OverloadedError) as caught:
        queue.submit(rows(contract, 1, 3))
    assert caught.value.status == 429 and caught.value.headers["retry-after"] == "1"
    assert not queue.submit_side(rows(contract, 1, 4), lambda r, o: None)
    gate.set()
    await asyncio.gather(running, *queued)
    queue.close()


async def test_a_failing_run_fails_its_requests_and_the_queue_goes_on(
    contract: FeatureContract, model: OnnxModel
) -> None:
    queue = batcher(Failing())
    results = await asyncio.gather(
        queue.submit(rows(contract, 1, 0)),
        queue.submit(rows(contract, 1, 1)),
        return_exceptions=True,
    )
    assert all(isinstance(r, ModelFailedError) and r.status == 500 for r in results)
    queue.model = model  # type: ignore[assignment]
    label, _ = await queue.submit(rows(contract, 1, 2))
    assert label.shape == (1,)


async def test_side_scoring_reports_to_its_callback(
    contract: FeatureContract, model: OnnxModel
) -> None:
    queue = batcher(Counting(model))
    seen: list[tuple[int, int]] = []
    done = asyncio.Event()

    def scored(scored_rows: Rows, outputs: list[np.ndarray] | None) -> None:
        assert outputs is not None
        seen.append((scored_rows.n, len(outputs[0])))
        done.set()

    assert queue.submit_side(rows(contract, 3, 0), scored)
    await asyncio.wait_for(done.wait(), 5)
    assert seen == [(3, 3)]


def test_the_shed_counter_is_exported_before_the_first_shed(model: OnnxModel) -> None:
    """A dashboard shows "nothing shed" as 0, not as an empty panel."""
    from prometheus_client import REGISTRY

    queue = batcher(model)
    assert (
        REGISTRY.get_sample_value("driftline_inference_shed_total", {"reason": "queue_full"})
        is not None
    )
    queue.close()
