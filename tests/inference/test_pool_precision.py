"""Which precision each version serves at: stable and candidate always alike."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from driftline.api import parse_dynamic_model
from driftline.api.routing import RoutingTable
from driftline.api.spec import BatchingSpec, QuantizationSpec
from driftline.inference.contract import FeatureContract
from driftline.inference.loader import ModelArtifact, Precision
from driftline.inference.pool import ModelPool
from driftline.inference.settings import InferenceSettings
from driftline_testing.models import mlp_model, model_document


class Graphs:
    """A registry stand-in: versions 1 and 3 have an int8 graph, version 2 has none."""

    def __init__(self, folder: Path, contract: FeatureContract) -> None:
        from onnxruntime.quantization import quantize_dynamic

        self.model_dir = folder
        self.files: dict[str, dict[Precision, Path]] = {}
        for version in ("1", "2", "3"):
            fp32 = folder / f"{version}.onnx"
            fp32.write_bytes(mlp_model(contract, seed=int(version)))
            self.files[version] = {"fp32": fp32}
            if version != "2":
                int8 = folder / f"{version}.int8.onnx"
                quantize_dynamic(fp32, int8)
                self.files[version]["int8"] = int8

    def has_int8(self, version: str) -> bool:
        return "int8" in self.files[version]

    def fetch(self, version: str, precision: Precision = "fp32") -> ModelArtifact:
        path = self.files[version][precision]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return ModelArtifact(version, digest, path, precision)


def served(pool: ModelPool) -> dict[str, str]:
    assert pool.state is not None
    return {v: m.precision for v, m in pool.state.models().items()}


@pytest.mark.parametrize("quantized", [True, False], ids=["int8 asked", "int8 not asked"])
def test_stable_and_candidate_serve_at_one_precision(tmp_path: Path, quantized: bool) -> None:
    doc = model_document("m")
    model_file = tmp_path / "model.yaml"
    model_file.write_text("{}")
    contract = FeatureContract(parse_dynamic_model(doc).spec)
    settings = InferenceSettings(model_file=model_file, metrics_port=0, unload_grace_seconds=0)
    pool = ModelPool(
        settings,
        contract,
        Graphs(tmp_path, contract),  # type: ignore[arg-type]
        BatchingSpec(),
        "m",
        quantization=QuantizationSpec() if quantized else None,
    )
    want = "int8" if quantized else "fp32"

    async def steps() -> None:
        await pool.apply(RoutingTable(stable="1"))
        assert served(pool) == {"1": want}
        # A candidate without an int8 graph: both fp32 for the trial.
        await pool.apply(
            RoutingTable(stable="1", candidate="2", mode="canary", weight=50, revision=1)
        )
        assert served(pool) == {"1": "fp32", "2": "fp32"}
        # A candidate with one: both int8 again; the fp32 graphs are unloaded once idle.
        await pool.apply(RoutingTable(stable="1", candidate="3", mode="shadow", revision=2))
        assert served(pool) == {"1": want, "3": want}
        await pool.tidy()
        assert sorted(pool.loaded) == (["1/int8", "3/int8"] if quantized else ["1", "3"])

    try:
        asyncio.run(steps())
    finally:
        pool.close()
