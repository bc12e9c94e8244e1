"""Fuzzing the decoders that read untrusted bytes: only the declared errors, no hangs.

Builds on `tests/api/test_events.py` (round trips; random bytes give `EventError`),
`tests/api/test_spec.py` (each bad field refused with a fix) and
`tests/inference/test_protocols.py` (the request decoders on hand-written cases).
Those feed flat random input; hostile input is *structured*: valid JSON in the
right places with the wrong things inside, thousands of levels deep, or YAML whose
aliases expand to billions of nodes. Each target is run with hypothesis under a
deadline per example (a hang fails) and a bounded number of examples.

What may come out of each decoder, and nothing else:

- the inference request decoders (`plain`, `oip`): a request, or an `InferenceError`
  with a 4xx status (anything else is a 500 for the client);
- `driftline.api.events.decode` (every consumer of a Kafka topic): the event, or
  `EventError` (which sends the record to the dead-letter topic; anything else
  would stop the consumer on the same record forever);
- `parse_dynamic_model` / `load_dynamic_model` (every part, the operator): the model,
  or `SpecError` naming the fields.
"""

from __future__ import annotations

import json
import string
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.api import SpecError, load_dynamic_model, parse_dynamic_model
from driftline.api.events import (
    DriftEvent,
    EventError,
    LabeledExample,
    Outcome,
    Prediction,
    RolloutEvent,
    decode,
)
from driftline.inference.contract import FeatureContract
from driftline.inference.errors import InferenceError
from driftline.inference.oip import OipProtocol
from driftline.inference.plain import PlainProtocol
from driftline_testing.models import model_document

pytestmark = pytest.mark.timeout(120)

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
EVENTS = (Prediction, Outcome, LabeledExample, DriftEvent, RolloutEvent)
FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=2),  # one decode taking seconds is a hang in the making
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

# --- strategies: JSON that looks almost right --------------------------------------------

NAMES = ["x1", "x2", "x3", "channel", "features", "entity_id", "request_id", "inputs", "v"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and Infinity included: json.dumps writes them
    st.text(max_size=20),
)
keys = st.one_of(st.sampled_from(NAMES), st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=30,
)


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    """A valid JSON document with one value nested thousands of levels deep."""
    depth = draw(st.integers(min_value=500, max_value=20_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    nested = opener * depth + "1" + closer * depth
    key = draw(st.sampled_from([*NAMES, "unknown"]))
    return ('{"' + key + '": ' + nested + "}").encode()


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(dumps),
    st.dictionaries(keys, json_values, max_size=6).map(dumps),
    deep(),
)

# --- the inference request decoders ------------------------------------------------------

CONTRACT = FeatureContract(
    parse_dynamic_model(model_document("fuzz", categorical=("channel",))).spec
)
PLAIN = PlainProtocol(CONTRACT, "fuzz", max_rows=64)
OIP = OipProtocol(CONTRACT, "fuzz", max_rows=64)

rows = st.fixed_dictionaries(
    {},
    optional={"x1": json_values, "x2": json_values, "x3": json_values, "channel": json_values},
)
plain_bodies = st.one_of(
    bodies,
    st.fixed_dictionaries(
        {"features": rows | st.lists(rows, max_size=4)},
        optional={"entity_id": json_values, "request_id": json_values, "extra": json_values},
    ).map(dumps),
)
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x1", "x2", "x3", "channel", "numeric", "categorical", "?"]),
        "shape": st.lists(st.integers(min_value=-2, max_value=2**40), max_size=3),
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "BOOL", "FP16", "?"]),
    },
    optional={"data": json_values, "parameters": json_values},
)
oip_heads = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=4)},
    optional={"id": json_values, "parameters": json_values, "outputs": json_values},
).map(dumps)


def refused_as_client_error(call: Any) -> None:
    status, message = 200, ""
    try:
        call()
    except InferenceError as exc:
        status, message = exc.status, f"{type(exc).__name__}: {exc.message}"
    assert 200 <= status < 500, message


@FUZZ
@given(body=plain_bodies)
def test_the_plain_decoder_answers_a_request_or_a_4xx(body: bytes) -> None:
    refused_as_client_error(lambda: PLAIN.decode(body))


@FUZZ
@given(
    head=st.one_of(oip_heads, bodies),
    binary=st.binary(max_size=64),
    split=st.booleans(),
)
def test_the_oip_decoder_answers_a_request_or_a_4xx(
    head: bytes, binary: bytes, split: bool
) -> None:
    # With Triton's binary extension the JSON head is followed by raw tensor bytes.
    body, length = (head + binary, len(head)) if split else (head, None)
    refused_as_client_error(lambda: OIP.decode(body, length))


# --- the event decoders ------------------------------------------------------------------

events_json = st.one_of(
    bodies,
    st.fixed_dictionaries(
        {},
        optional={
            "v": json_values,
            "request_id": json_values,
            "model": json_values,
            "model_version": json_values,
            "variant": json_values,
            "features": json_values,
            "output": json_values,
            "label": json_values,
            "scores": json_values,
            "ts": json_values,
        },
    ).map(dumps),
)


@FUZZ
@given(data=events_json, kind=st.sampled_from(EVENTS))
def test_event_decoders_raise_only_event_error(data: bytes, kind: type[Any]) -> None:
    try:
        decode(data, kind)
    except EventError as exc:
        reason = exc.reason
        assert reason


@pytest.mark.parametrize("kind", EVENTS, ids=lambda k: k.__name__)
def test_a_deeply_nested_event_goes_to_the_dead_letters_not_up_the_stack(kind: type[Any]) -> None:
    for field in ("v", "features", "unknown"):
        hostile = ('{"' + field + '": ' + "[" * 50_000 + "]" * 50_000 + "}").encode()
        with pytest.raises(EventError, match=r"nested too deeply|Expected"):
            decode(hostile, kind)


# --- the DynamicModel ----------------------------------------------------------------------


def sample() -> dict[str, Any]:
    return dict(yaml.safe_load((SAMPLES / "fraud-detector.yaml").read_text()))


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += paths(value, (*prefix, i))
    return out


SAMPLE_PATHS = [p for p in paths(sample()) if p]


@st.composite
def mutated_models(draw: st.DrawFn) -> dict[str, Any]:
    """The fraud-detector sample with 1-4 of its values replaced, dropped or added to."""
    doc = sample()
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(SAMPLE_PATHS))
        parent: Any = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            leaf = path[-1]
            action = draw(st.sampled_from(["replace", "drop", "add"]))
            if action == "replace":
                parent[leaf] = draw(json_values)
            elif action == "drop" and isinstance(parent, dict):
                del parent[leaf]
            elif isinstance(parent[leaf], dict):
                parent[leaf][draw(st.text(string.ascii_letters, max_size=8))] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed the path
    return doc


@FUZZ
@given(doc=mutated_models())
def test_spec_validation_raises_only_spec_error(doc: dict[str, Any]) -> None:
    try:
        model = parse_dynamic_model(doc)
    except SpecError as exc:
        problems = exc.problems
        assert problems and all(isinstance(p, str) and p for p in problems)
        return
    assert model.name


@FUZZ
@given(value=json_values)
def test_any_document_is_a_model_or_a_spec_error(value: Any) -> None:
    with pytest.raises(SpecError):
        parse_dynamic_model(value)


def alias_bomb(levels: int = 9) -> list[Any]:
    """Nine lists of nine of the level below: 9**9 (387 million) leaves when expanded,
    a few hundred bytes of YAML, as PyYAML writes shared objects as aliases."""
    node: list[Any] = ["lol"] * 9
    for _ in range(levels - 1):
        node = [node] * 9
    return node


@pytest.mark.parametrize(
    "where",
    [("spec", "features"), ("metadata", "labels"), ("spec", "model", "task"), ("spec", "bomb")],
    ids=".".join,
)
def test_a_yaml_alias_bomb_is_refused_without_expanding_it(
    tmp_path: Path, where: tuple[str, ...]
) -> None:
    doc = sample()
    parent = doc
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = alias_bomb()
    path = tmp_path / "bomb.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert path.stat().st_size < 10_000
    with pytest.raises(SpecError) as refused:
        load_dynamic_model(path)
    assert len(str(refused.value)) < 10_000


@pytest.mark.parametrize("field", ["entity_id", "request_id"])
def test_ids_in_a_list_keep_the_length_limit_of_one_id(field: str) -> None:
    """Found by schemathesis: one id was limited to 256 characters, a list of them not."""
    row = {"x1": 1, "x2": 2, "x3": 3, "channel": "web"}
    body = dumps({"features": [row, row], field: ["ok", "x" * 257]})
    with pytest.raises(InferenceError) as refused:
        PLAIN.decode(body)
    assert (refused.value.status, refused.value.field) == (422, f"{field}[1]")
