"""The front door's body reader: one message (the usual request) or several, the size
limit before and while reading, and a client that leaves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from driftline.inference.app import ClientGoneError, read_body
from driftline.inference.errors import BadRequestError, InferenceError, PayloadTooLargeError


def read(messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return asyncio.run(read_body({"headers": headers or []}, receive, limit=10))


def body(data: bytes | bytearray, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": data, "more_body": more}


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([body(b"abc")], b"abc"),
        ([{"type": "http.request"}], b""),
        ([body(bytearray(b"abc"))], b"abc"),
        ([body(b"ab", more=True), body(b"c")], b"abc"),
        ([body(b"ab", more=True), body(b"", more=True), body(b"cd")], b"abcd"),
        ([body(b"0123456789")], b"0123456789"),
    ],
)
def test_the_body_is_read_whole(messages: list[dict[str, Any]], expected: bytes) -> None:
    got = read(messages)
    assert got == expected and type(got) is bytes


@pytest.mark.parametrize(
    ("messages", "headers", "error"),
    [
        ([body(b"01234567890")], [], PayloadTooLargeError),
        ([body(b"012345", more=True), body(b"67890")], [], PayloadTooLargeError),
        ([body(b"")], [(b"content-length", b"11")], PayloadTooLargeError),
        ([body(b"")], [(b"content-length", b"ten")], BadRequestError),
        ([body(b"ab", more=True), {"type": "http.disconnect"}], [], ClientGoneError),
        ([{"type": "http.disconnect"}], [], ClientGoneError),
    ],
)
def test_refusals(
    messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]], error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        read(messages, headers)
    if isinstance(caught.value, InferenceError):
        assert caught.value.status in (400, 413)
