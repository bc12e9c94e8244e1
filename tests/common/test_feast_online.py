"""The Feast layout pieces without Redis: murmur3, Value and Timestamp decoding, keys.

What real Feast writes is read back in tests/integration/common/test_feast_online.py;
the expected bytes here are Feast's encodings worked out by hand from its spec.
"""

from __future__ import annotations

import struct

import pytest

from driftline.common.feast_online import (
    FeastOnlineError,
    FeastOnlineReader,
    decode_timestamp,
    decode_value,
    feature_field,
    murmur3_32,
)


def test_murmur3_known_vectors() -> None:
    assert murmur3_32(b"") == 0
    assert murmur3_32(b"hello") == 0x248BFA47
    assert murmur3_32(b"The quick brown fox jumps over the lazy dog") == 0x2E4FF723
    assert murmur3_32(b"user_stats:txn_count") == 337331439
    assert feature_field("user_stats", "txn_count") == struct.pack("<I", 337331439)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"", None),
        (b"\x98\x01\x00", None),  # null_val
        (b"\x20\x00", 0),  # int64 0 is present, not null
        (b"\x20\x96\x01", 150),
        (b"\x20" + b"\xff" * 9 + b"\x01", -1),
        (b"\x18" + b"\xfe" + b"\xff" * 8 + b"\x01", -2),  # int32, sign-extended
        (b"\x29" + struct.pack("<d", -0.1), -0.1),
        (b"\x35" + struct.pack("<f", 0.25), 0.25),
        (b"\x38\x01", True),
        (b"\x38\x00", False),
        (b"\x12\x04gold", "gold"),
        (b"\x12\x00", ""),
        (b"\x0a\x02\x00\xff", b"\x00\xff"),
    ],
)
def test_decode_value(raw: bytes, value: object) -> None:
    got = decode_value(raw)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("raw", [b"\x62\x00", b"\x20", b"\x12\x05gold", b"\x38\x01\x38\x01"])
def test_unsupported_or_broken_values_raise(raw: bytes) -> None:
    with pytest.raises(FeastOnlineError):
        decode_value(raw)


def test_timestamp() -> None:
    assert decode_timestamp(b"\x08\xc0\x9a\x96\xbe\x06\x10\xc0\x84\x3d") == 1_741_000_000.001


def test_entity_key_v3_layout() -> None:
    reader = FeastOnlineReader(
        None, "proj", {"user_id": "int64", "merchant": "string"}, ["v:f"], mode="pipeline"
    )
    key = reader.redis_key({"user_id": 7, "merchant": "m1"})
    # sorted by name: merchant, user_id
    assert key == (
        struct.pack("<I", 2)
        + struct.pack("<II", 2, 8) + b"merchant"
        + struct.pack("<II", 2, 7) + b"user_id"
        + struct.pack("<II", 2, 2) + b"m1"
        + struct.pack("<II", 4, 8) + struct.pack("<q", 7)
        + b"proj"
    )  # fmt: skip
    assert reader.redis_key({"user_id": 7, "merchant": None}) is None
    with pytest.raises(FeastOnlineError, match="needs an integer"):
        reader.redis_key({"user_id": "7", "merchant": "m1"})
    with pytest.raises(FeastOnlineError, match="needs an integer"):
        reader.redis_key({"user_id": True, "merchant": "m1"})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"entity_key_serialization_version": 2}, "version 2 is not supported"),
        ({"mode": "cluster"}, "mode"),
        ({"max_age_seconds": 0}, "positive"),
    ],
)
def test_refused_configurations(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(FeastOnlineError, match=match):
        FeastOnlineReader(None, "p", {"id": "int64"}, ["v:f"], **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("features", [["nocolon"], [":f"], ["v:f", "v:f"], []])
def test_refused_feature_refs(features: list[str]) -> None:
    with pytest.raises(FeastOnlineError):
        FeastOnlineReader(None, "p", {"id": "int64"}, features, mode="pipeline")


def test_script_answer_split() -> None:
    reader = FeastOnlineReader(None, "p", {"id": "int64"}, ["v:a", "v:b"], mode="pipeline")
    long = b"\x12" + b"x" * 300
    blob = b"\x02ab" + b"\xff" + b"\xff" + b"\x00" + b"\xfe" + struct.pack("<I", 301) + long
    blob += b"\xff"
    assert reader._split(blob, 2) == [[b"ab", None, None], [b"", long, None]]
    with pytest.raises(FeastOnlineError):
        reader._split(blob + b"\x00", 2)
    with pytest.raises(FeastOnlineError):
        reader._split(blob[:-1], 2)
