"""`spec.model.strategy: adapter`: learn a small layer on top of a frozen imported model.

The imported version (`baseline`) stays as it is. The trainer runs its registered
graph with ONNX Runtime on every row it learns from and appends the answers to the
row's numeric columns (probabilities [C] for classification, the value for
regression), so the replay reservoir, the anchor set, the held-out slice, EWC and
concept epochs of `OnlineLearner` work on the adapter unchanged.

The adapter (`AdapterNet`) corrects the base's answer:

- classification: logits = log(p_base) + body([log(p_base), features]);
- regression: value = base + target_scale * body([base in standard units, features]);

`features` are the standardised raw numerics and one-hot categoricals
(`spec.model.adapter.features`), `body` is a linear layer (or a small MLP,
`adapter.hidden`) whose last layer starts at zero. So before the first step the
adapter is the identity: softmax(log p) = p, and version 1 of the adapter answers
as the import does.

A version is one ONNX graph: the base graph, whose `probabilities` (or `value`)
feed the exported adapter, merged with `onnx.compose.merge_models`; its inputs and
outputs are the contract's, as for any version. The publisher's parity check
compares it with torch on ONNX Runtime's base outputs, within the trainer's 1e-5.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from onnx import compose, version_converter
from torch import nn

from driftline.api import artifacts
from driftline.api.spec import AdapterSpec, DynamicModelSpec, FeatureSpec, ModelSpec
from driftline.common.features import FeatureLayout
from driftline.trainer import export
from driftline.trainer.examples import Examples
from driftline.trainer.learner import LearnerOptions, LearnReport, OnlineLearner
from driftline.trainer.nets import Preprocess, TabularNet, mlp
from driftline.trainer.versions import ModelVersions

EPS: Final = 1e-7
"""Probabilities are clipped here before the log: a base answering exactly 0 stays finite."""
BASE_INPUT: Final = "driftline_base"
BASE_PREFIX: Final = "base/"
TAG_ADAPTER_BASE: Final = "driftline.adapter_base"
"""The registry version whose graph a published adapter version holds as its base."""

__all__ = [
    "TAG_ADAPTER_BASE",
    "AdapterLearner",
    "AdapterNet",
    "FrozenBase",
    "baseline",
    "merge_graphs",
]


class FrozenBase:
    """The imported model's registered graph, run with ONNX Runtime."""

    def __init__(
        self,
        graph: bytes,
        n_numeric: int,
        n_categorical: int,
        task: str,
        classes: int,
        version: str = "",
    ) -> None:
        self.graph = graph
        self.task, self.classes = task, classes
        self.version = version
        self.n_numeric, self.n_categorical = n_numeric, n_categorical
        self.session = export.session(graph)
        classification = task == "classification"
        self.output = artifacts.OUTPUT_PROBABILITIES if classification else artifacts.OUTPUT_VALUE

    @classmethod
    def of_spec(cls, graph: bytes, spec: DynamicModelSpec, version: str = "") -> FrozenBase:
        layout = FeatureLayout.from_features(spec.features)
        return cls(
            graph,
            len(layout.numeric),
            len(layout.categorical),
            spec.model.task,
            spec.model.classes,
            version,
        )

    def outputs(self, numeric: NDArray[np.float32], categorical: NDArray[Any]) -> NDArray[Any]:
        """Probabilities [n, C] or values [n, 1], float32."""
        n = max(numeric.shape[0], categorical.shape[0])
        if n == 0:
            return np.zeros((0, self.width()), np.float32)
        feeds: dict[str, Any] = {}
        if self.n_numeric:
            feeds[artifacts.INPUT_NUMERIC] = np.ascontiguousarray(
                numeric[:, : self.n_numeric], np.float32
            )
        if self.n_categorical:
            feeds[artifacts.INPUT_CATEGORICAL] = np.asarray(categorical, dtype=object)
        (out,) = self.session.run([self.output], feeds)
        out = np.asarray(out, np.float32)
        return out if out.ndim == 2 else out.reshape(-1, 1)

    def width(self) -> int:
        """Columns of `outputs`: the classes, or 1."""
        return self.classes if self.task == "classification" else 1


def baseline(versions: ModelVersions, spec: DynamicModelSpec) -> FrozenBase | None:
    """The `baseline` version's graph (the frozen import), or None while there is none."""
    info = versions.by_alias(artifacts.ALIAS_BASELINE)
    if info is None:
        return None
    return FrozenBase.of_spec(versions.download(info, artifacts.MODEL_ARTIFACT), spec, info.version)


class AdapterPreprocess(Preprocess):
    """The built-in preprocessing of the contract's columns only (the base's come after)."""

    def fit(self, numeric: NDArray[np.float32]) -> None:
        super().fit(numeric[:, : self.n_numeric])

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return super().forward(numeric[:, : self.n_numeric], codes)


class AdapterNet(TabularNet):
    """(numeric with the base's outputs appended, codes) -> corrected logits or values."""

    def __init__(
        self,
        n_numeric: int,
        widths: Sequence[int],
        task: str,
        outputs: int,
        spec: AdapterSpec,
        seed: int,
    ) -> None:
        torch.manual_seed(seed)
        preprocess = AdapterPreprocess(n_numeric, widths)
        base_width = outputs if task == "classification" else 1
        width = base_width + (preprocess.width if spec.features else 0)
        body = mlp(width, spec.hidden, outputs)
        last = list(body.modules())[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():  # the identity at start: the correction is zero
            last.weight.zero_()
            last.bias.zero_()
        super().__init__(preprocess, body, task)
        self.n_numeric = n_numeric
        self.features = spec.features

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        base = numeric[:, self.n_numeric :]
        if self.regression:
            value = base[:, 0]
            anchor = ((value - self.target_mean) / self.target_scale).unsqueeze(1)
        else:
            anchor = torch.log(torch.clamp(base, min=EPS))
        parts = [anchor, self.preprocess(numeric, codes)] if self.features else [anchor]
        correction: torch.Tensor = self.body(torch.cat(parts, dim=1))
        if self.regression:
            return value + correction[:, 0] * self.target_scale
        return anchor + correction


class AdapterLearner(OnlineLearner):
    """`OnlineLearner` of an `AdapterNet`; rows get the base's outputs before it sees them."""

    def __init__(
        self,
        model: ModelSpec,
        features: Sequence[FeatureSpec],
        options: LearnerOptions,
        base: FrozenBase,
    ) -> None:
        self.base = base
        self.base_width = base.width()
        super().__init__(model, features, options)

    def numeric_width(self) -> int:
        return len(self.layout.numeric) + self.base_width

    def new_net(self, seed: int) -> TabularNet:
        widths = tuple(f.width for f in self.layout.categorical)
        outputs = self.model.classes if self.task == "classification" else 1
        return AdapterNet(
            len(self.layout.numeric), widths, self.task, outputs, self.model.adapter, seed
        )

    def with_base(self, ex: Examples) -> Examples:
        """`ex` with the base's outputs after its numeric columns (once)."""
        if ex.numeric.shape[1] == self.numeric_width():
            return ex
        base = self.base.outputs(ex.numeric, ex.categorical)
        numeric = np.concatenate([ex.numeric, base], axis=1).astype(np.float32)
        return dataclasses.replace(ex, numeric=numeric)

    def examples(
        self,
        numeric: NDArray[np.float32],
        categorical: NDArray[np.object_],
        labels: NDArray[Any],
        key: NDArray[np.int64],
        served: NDArray[np.float32] | None = None,
    ) -> Examples:
        return self.with_base(super().examples(numeric, categorical, labels, key, served))

    def learn(self, ex: Examples) -> LearnReport:
        return super().learn(self.with_base(ex))

    def observe(self, ex: Examples) -> LearnReport:
        return super().observe(self.with_base(ex))

    def fit_offline(self, ex: Examples, passes: int, refit_statistics: bool = True) -> None:
        super().fit_offline(self.with_base(ex), passes, refit_statistics)

    def retrain_on(self, ex: Examples, passes: int) -> None:
        super().retrain_on(self.with_base(ex), passes)

    def prime(self, ex: Examples) -> None:
        """Preprocessing and target statistics from `ex`, without a gradient step: the
        adapter stays the identity (an import's sample)."""
        ex = self.with_base(ex)
        assert isinstance(self.net.preprocess, Preprocess)
        self.net.preprocess.fit(ex.numeric)
        self.net.fit_target(ex.labels)

    def export(self, classes: int) -> bytes:
        return merge_graphs(self.base.graph, self.net, self.layout, self.task, classes)


class _Exported(nn.Module):
    """The adapter as a graph: contract inputs and the base's output in, contract out."""

    def __init__(self, net: AdapterNet, numeric: bool, categorical: bool) -> None:
        super().__init__()
        self.net, self.numeric, self.categorical = net, numeric, categorical

    def forward(self, *inputs: torch.Tensor) -> Any:
        base = inputs[-1]
        rest = inputs[:-1]
        n = base.shape[0]
        x = rest[0] if self.numeric else torch.zeros(n, 0)
        codes = rest[-1] if self.categorical else torch.zeros(n, 0, dtype=torch.int64)
        if self.net.regression:
            return self.net(torch.cat([x, base.unsqueeze(1)], dim=1), codes)
        probabilities = torch.softmax(self.net(torch.cat([x, base], dim=1), codes), 1)
        return torch.argmax(probabilities, dim=1), probabilities


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _adapter_graph(
    net: TabularNet, layout: FeatureLayout, task: str, classes: int, opset: int
) -> onnx.ModelProto:
    assert isinstance(net, AdapterNet)
    has_numeric, has_categorical = bool(layout.numeric), bool(layout.categorical)
    names, example = [], []
    if has_numeric:
        names.append(artifacts.INPUT_NUMERIC)
        example.append(torch.zeros(2, len(layout.numeric)))
    if has_categorical:
        names.append(export.CODES)
        example.append(torch.zeros(2, len(layout.categorical), dtype=torch.int64))
    names.append(BASE_INPUT)
    example.append(
        torch.full((2, classes), 1.0 / classes) if task == "classification" else torch.zeros(2)
    )
    outputs = (
        [artifacts.OUTPUT_LABEL, artifacts.OUTPUT_PROBABILITIES]
        if task == "classification"
        else [artifacts.OUTPUT_VALUE]
    )
    net.eval()
    model = export.torch_to_onnx(
        _Exported(net, has_numeric, has_categorical), example, names, outputs, opset
    )
    if has_categorical:
        export.splice_categorical_front(model, layout)
    return model


def merge_graphs(
    base_graph: bytes, net: TabularNet, layout: FeatureLayout, task: str, classes: int
) -> bytes:
    """The base graph and the adapter as one graph with the contract's inputs and outputs."""
    base = onnx.load_model_from_string(base_graph)
    opset = max(_opset(base), export.OPSET)
    adapter = _adapter_graph(net, layout, task, classes, min(opset, export.OPSET))
    if _opset(adapter) < opset:
        adapter = version_converter.convert_version(adapter, opset)
    if _opset(base) < opset:
        base = version_converter.convert_version(base, opset)
    base = compose.add_prefix(base, BASE_PREFIX)
    served = artifacts.OUTPUT_PROBABILITIES if task == "classification" else artifacts.OUTPUT_VALUE
    # The two graphs' opset imports and IR versions must agree for compose: the union.
    domains: dict[str, int] = {}
    for m in (base, adapter):
        for o in m.opset_import:
            domain = "" if o.domain == "ai.onnx" else o.domain
            domains[domain] = max(domains.get(domain, 0), o.version)
    ir = max(base.ir_version, adapter.ir_version)
    for m in (base, adapter):
        del m.opset_import[:]
        m.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in domains.items())
        m.ir_version = ir
        del m.metadata_props[:]
    merged = compose.merge_models(
        base,
        adapter,
        io_map=[(BASE_PREFIX + served, BASE_INPUT)],
        outputs=[o.name for o in adapter.graph.output],
    )
    del merged.opset_import[:]  # merge_models lists each domain once per graph
    merged.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in domains.items())
    # One set of contract inputs feeds both: the base's prefixed inputs are renamed.
    graph = merged.graph
    contract = [i for i in base.graph.input if i.name.startswith(BASE_PREFIX)]
    shared = {i.name: i.name[len(BASE_PREFIX) :] for i in contract}
    for node in graph.node:
        for j, name in enumerate(node.input):
            if name in shared:
                node.input[j] = shared[name]
    inputs = {i.name: i for i in graph.input if i.name not in shared}
    for i in contract:
        if shared[i.name] not in inputs:
            copy = onnx.ValueInfoProto()
            copy.CopyFrom(i)
            copy.name = shared[i.name]
            inputs[copy.name] = copy
    order = [artifacts.INPUT_NUMERIC, artifacts.INPUT_CATEGORICAL]
    del graph.input[:]
    graph.input.extend(sorted(inputs.values(), key=lambda i: order.index(i.name)))
    export.describe_graph(merged, layout, task, classes, producer="driftline-trainer-adapter")
    try:
        onnx.checker.check_model(merged, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise export.ExportError(f"the merged base and adapter graph is not valid: {exc}") from exc
    return bytes(merged.SerializeToString())
