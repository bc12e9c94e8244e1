"""The plain JSON route: `POST /v1/models/{name}/predict`.

    {"entity_id": "u-17", "features": {"amount": 12.5, "channel": "web"}}
    {"entity_id": ["u-17", "u-18"], "features": [{...}, {...}]}

The canary's sticky key is the field `rollout.stickyKey` names, next to `features`:
`entity_id` unless the spec says otherwise (e.g. `{"user_id": "u-17", ...}` with
`stickyKey: user_id`); one value for all rows or one per row, like `entity_id`. The
fields Feast join keys take their values from (`entityKeys[].field`) are read the same way.

One row in, one object out; a list in, `{"model", "predictions": [...]}` out. Each
row's answer carries its `request_id` (generated, or the client's own `request_id`
when given): the application sends it back with the outcome, which is how the
feedback loop joins a label to the prediction it judges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from driftline.inference.contract import (
    FeatureContract,
    Rows,
    Served,
    decode_body,
)
from driftline.inference.errors import InvalidInputError

_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
MAX_ID_LENGTH = 256


@dataclass(slots=True)
class PlainRequest:
    rows: Rows
    many: bool
    entity_ids: list[str | None]
    request_ids: list[str] | None
    sticky_keys: list[str | None]
    """Per row, the value of the `rollout.stickyKey` field (`entity_ids` by default)."""
    fields: dict[str, list[str | None]]
    """Per request field the path reads (`entity_id` and `contract.request_fields`), per row."""


class PlainProtocol:
    """Decodes requests of the plain route and encodes its answers."""

    def __init__(self, contract: FeatureContract, model_name: str, max_rows: int) -> None:
        self.contract = contract
        self.model_name = model_name
        self.max_rows = max_rows
        row = contract.row_type
        key = str | int | list[str | int] | None
        fields: list[tuple[str, Any, Any]] = [
            ("features", row | list[row], msgspec.NODEFAULT),  # type: ignore[valid-type]
            ("entity_id", key, None),
            ("request_id", str | list[str] | None, None),
        ]
        # Renamed, so that any name the spec allows decodes (a Python keyword too).
        rename = {f"r{i}": name for i, name in enumerate(contract.request_fields)}
        fields += [(field, key, None) for field in rename]
        request_type = msgspec.defstruct("PredictRequest", fields, kw_only=True, rename=rename)
        self._fields = tuple(rename.items())
        self._decoder = msgspec.json.Decoder(request_type)
        self._output_names = [name for name, _, _ in contract.outputs]

    def decode(self, body: bytes) -> PlainRequest:
        try:
            request: Any = decode_body(self._decoder, body, "the body")
        except InvalidInputError as exc:
            raise self.contract.explain(exc, body) from exc
        features = request.features
        many = isinstance(features, list)
        rows = features if many else [features]
        if not rows:
            raise InvalidInputError("features is an empty list", field="features")
        if len(rows) > self.max_rows:
            raise InvalidInputError(
                f"{len(rows)} rows in one request; at most {self.max_rows}", field="features"
            )
        astuple = msgspec.structs.astuple
        arranged = self.contract.arrange([astuple(r) for r in rows], "features")
        entity_ids = per_row(request.entity_id, len(rows), "entity_id")
        values = {"entity_id": entity_ids}
        for field, name in self._fields:
            values[name] = per_row(getattr(request, field), len(rows), name)
        return PlainRequest(
            rows=arranged,
            many=many,
            entity_ids=entity_ids,
            request_ids=_request_ids(request.request_id, len(rows)),
            sticky_keys=values[self.contract.sticky_field],
            fields=values,
        )

    def encode(self, request: PlainRequest, served: Served) -> bytes:
        names = self._output_names
        outputs = served.outputs
        if not request.many:
            answer: dict[str, Any] = {
                "request_id": served.request_ids[0],
                "model": self.model_name,
                "model_version": served.versions[0],
                "variant": served.variants[0],
            }
            for name, values in zip(names, outputs, strict=True):
                answer[name] = values[0]
            return orjson.dumps(answer, option=_DUMPS_OPTIONS)
        columns = list(outputs)
        predictions = []
        for i, request_id in enumerate(served.request_ids):
            row: dict[str, Any] = {
                "request_id": request_id,
                "model_version": served.versions[i],
                "variant": served.variants[i],
            }
            for name, column in zip(names, columns, strict=True):
                row[name] = column[i]
            predictions.append(row)
        return orjson.dumps(
            {"model": self.model_name, "predictions": predictions}, option=_DUMPS_OPTIONS
        )


def per_row(value: str | int | list[str | int] | None, n: int, field: str) -> list[str | None]:
    if value is None or isinstance(value, str | int):
        key = None if value is None else str(value)
        if key is not None and len(key) > MAX_ID_LENGTH:
            raise InvalidInputError(
                f"{field} is longer than {MAX_ID_LENGTH} characters", field=field
            )
        return [key] * n
    if len(value) != n:
        raise InvalidInputError(f"{field} has {len(value)} entries for {n} rows", field=field)
    keys: list[str | None] = []
    for i, v in enumerate(value):
        key = str(v)
        if len(key) > MAX_ID_LENGTH:  # the same limit as for one id for all rows
            raise InvalidInputError(
                f"{field}[{i}] is longer than {MAX_ID_LENGTH} characters", field=f"{field}[{i}]"
            )
        keys.append(key)
    return keys


def _request_ids(value: str | list[str] | None, n: int) -> list[str] | None:
    """Ids the client chose for its rows (to join outcomes on its own keys), if any."""
    if value is None:
        return None
    if isinstance(value, str) and n > 1:
        raise InvalidInputError("give one request_id per row", field="request_id")
    listed: str | list[str | int] = value if isinstance(value, str) else list(value)
    ids = [i or "" for i in per_row(listed, n, "request_id")]
    if not all(ids):
        raise InvalidInputError("request_id must not be empty", field="request_id")
    return ids
