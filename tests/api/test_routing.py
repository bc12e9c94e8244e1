"""Routing table: consistent, monotone canary assignment."""

from __future__ import annotations

import pytest

from driftline.api.routing import RoutingTable, decode_table, encode_table, serves_candidate

ENTITIES = [f"entity-{i}" for i in range(20_000)]


def canary(weight: int) -> RoutingTable:
    return RoutingTable(stable="1", candidate="2", mode="canary", weight=weight)


@pytest.mark.parametrize("weight", [5, 20, 50])
def test_share_of_entities_matches_weight(weight: int) -> None:
    share = sum(serves_candidate(canary(weight), e) for e in ENTITIES) / len(ENTITIES)
    assert abs(share - weight / 100) < 0.015


def test_an_entity_on_the_candidate_stays_there_as_weight_grows() -> None:
    at5 = {e for e in ENTITIES if serves_candidate(canary(5), e)}
    at20 = {e for e in ENTITIES if serves_candidate(canary(20), e)}
    assert at5 <= at20


def test_one_entity_always_sees_one_version() -> None:
    table = canary(30)
    assert all(
        serves_candidate(table, "same") == serves_candidate(table, "same") for _ in range(50)
    )


def test_modes_other_than_canary_never_serve_the_candidate() -> None:
    shadow = RoutingTable(stable="1", candidate="2", mode="shadow", weight=0)
    assert not any(serves_candidate(shadow, e) for e in ENTITIES[:100])
    assert all(serves_candidate(canary(100), e) for e in ENTITIES[:100])


def test_table_round_trip_and_validation() -> None:
    table = RoutingTable(
        stable="3", candidate="4", baseline="1", mode="canary", weight=20, revision=7
    )
    assert decode_table(encode_table(table)) == table
    assert table.versions() == {"1", "3", "4"}
    with pytest.raises(ValueError, match="needs a candidate"):
        RoutingTable(stable="1", mode="canary", weight=5)
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        RoutingTable(stable="1", candidate="2", mode="canary", weight=101)
