"""Exploration on the request path: the policy answers explored entities, the log says so."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.api.events import Prediction, decode
from driftline.api.exploration import explores, uniform_label
from driftline.local.servers.kafka import KafkaBroker
from tests.integration.inference.harness import Running

from .conftest import SAYS_1, read_predictions

pytestmark = pytest.mark.integration

ROW = {"x1": 1.5, "x2": -2.0, "x3": 0.25}
EPSILON = 0.5


def test_explored_entities_get_the_policy_s_label_and_the_log_flags_them(
    serve: Callable[..., Running],
    publish: Callable[..., str],
    model_doc: dict[str, Any],
    kafka: KafkaBroker,
) -> None:
    publish(SAYS_1, aliases=[ALIAS_CHAMPION])
    doc = copy.deepcopy(model_doc)
    doc["spec"]["training"] = {"exploration": {"epsilon": EPSILON, "policy": "uniform"}}
    server = serve(doc)
    name = server.service.name
    entities = [f"e-{i}" for i in range(40)]
    answers = server.predict([ROW] * 40, entity_id=entities).json()["predictions"]
    again = server.predict([ROW] * 40, entity_id=entities).json()["predictions"]

    explored = {e for e in entities if explores(name, e, EPSILON)}
    assert 0 < len(explored) < 40
    expected = {e: uniform_label(name, e, 2) if e in explored else 1 for e in entities}
    assert [a["label"] for a in answers] == [expected[e] for e in entities]
    assert [a["label"] for a in again] == [a["label"] for a in answers]  # entity-sticky
    for entity, answer in zip(entities, answers, strict=True):
        if entity in explored:  # the policy's answer, scores included
            assert answer["probabilities"][expected[entity]] == 1.0

    records = read_predictions(kafka, server.service.model.topics.predictions, 80)
    assert len(records) == 80
    for record in records:
        event = decode(record.value(), Prediction)
        entity = event.entity_id
        assert entity is not None
        assert event.output == 1.0  # the model's own answer stays in `output`
        if entity in explored:
            assert event.explored and event.served == float(expected[entity])
            own = 1.0 - EPSILON if expected[entity] == 1 else 0.0
            assert event.propensity == pytest.approx(own + EPSILON / 2)
        else:
            assert not event.explored and event.served is None
            assert event.propensity == pytest.approx(1 - EPSILON + EPSILON / 2)
