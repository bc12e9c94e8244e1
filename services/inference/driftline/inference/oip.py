"""Open Inference Protocol v2 (KServe / Triton REST): request decoding, response encoding.

Inputs are either one tensor per feature (named as the feature, shape [N] or [N, 1],
numbers for numeric features and BYTES for categorical ones: what the metadata
advertises) or the model's own two tensors, `numeric` [N, k] and `categorical` [N, m].

Triton's binary tensor extension is supported both ways, because `tritonclient`
uses it by default: a JSON header of `Inference-Header-Content-Length` bytes, then
the raw tensors in input order, each `parameters.binary_data_size` long (BYTES
elements as a 4-byte little-endian length and the bytes).

Request parameters: `entity_id` (string, or one per row) names the entity in the
prediction log and is the sticky key of the canary, unless `rollout.stickyKey` names
another parameter (e.g. `parameters.user_id` with `stickyKey: user_id`), whose value
then is; the parameters Feast join keys take their values from (`entityKeys[].field`)
are read the same way; `request_id` (one per row) replaces the generated prediction ids. The
response names every row's `request_ids`, `model_versions` and `variants` in its
parameters, and also returns the ids as a BYTES output `request_id`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import orjson

from driftline.api.artifacts import INPUT_CATEGORICAL, INPUT_NUMERIC
from driftline.inference.contract import (
    Array,
    FeatureContract,
    Rows,
    Served,
    decode_body,
)
from driftline.inference.errors import InvalidInputError
from driftline.inference.plain import per_row
from driftline.inference.tensors import TensorInput, bytes_tensor, tensor_array

OUTPUT_TYPES = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32"}
REQUEST_ID_OUTPUT = "request_id"


def raw_tensor(values: Array | list[str]) -> bytes:
    """An output's bytes in Triton's binary layout (BYTES: length-prefixed elements)."""
    if isinstance(values, list):
        return bytes_tensor(values)
    return np.ascontiguousarray(values).tobytes()


class RequestedOutput(msgspec.Struct):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(msgspec.Struct):
    inputs: list[TensorInput]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[RequestedOutput] | None = None


@dataclass(slots=True)
class OipRequest:
    rows: Rows
    id: str | None
    entity_ids: list[str | None]
    request_ids: list[str] | None
    outputs: list[tuple[str, bool]] | None
    """Requested (name, binary) pairs; None: all outputs."""
    binary_output: bool
    sticky_keys: list[str | None]
    """Per row, the value of the `rollout.stickyKey` parameter (`entity_ids` by default)."""
    fields: dict[str, list[str | None]]
    """Per request field the path reads (`entity_id` and `contract.request_fields`), per row."""


_decoder = msgspec.json.Decoder(InferRequest)


class OipProtocol:
    def __init__(self, contract: FeatureContract, model_name: str, max_rows: int) -> None:
        self.contract = contract
        self.model_name = model_name
        self.max_rows = max_rows
        self.output_names = [name for name, _, _ in contract.outputs]

    # --- request ---------------------------------------------------------------------------

    def decode(self, body: bytes, header_length: int | None) -> OipRequest:
        """A JSON request, its binary tensors (if any) after `header_length` bytes."""
        head = body if header_length is None else body[:header_length]
        request: InferRequest = decode_body(_decoder, head, "the inference request")
        binary = memoryview(body)[header_length or len(body) :]
        chunks: list[memoryview | None] = []
        offset = 0
        for i, tensor in enumerate(request.inputs):
            size = (tensor.parameters or {}).get("binary_data_size")
            if size is None:
                chunks.append(None)
                continue
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInputError("binary_data_size overruns the body", field=f"inputs[{i}]")
            chunks.append(binary[offset : offset + size])
            offset += size
        return self.request(request, chunks)

    def request(self, request: InferRequest, chunks: list[memoryview | None]) -> OipRequest:
        """The request of either face (REST's JSON, gRPC's messages): `chunks` holds, per
        input, its raw bytes, or None when its values are in `data`."""
        rows = self._rows(request.inputs, chunks)
        params = request.parameters or {}
        entity_ids = self._keys(params, "entity_id", rows.n)
        fields = {"entity_id": entity_ids}
        for name in self.contract.request_fields:
            fields[name] = self._keys(params, name, rows.n)
        ids = params.get("request_id")
        request_ids = None
        if ids is not None:
            listed = [ids] if isinstance(ids, str) else ids
            if (
                not isinstance(listed, list)
                or len(listed) != rows.n
                or not all(isinstance(i, str) and i for i in listed)
            ):
                raise InvalidInputError(
                    "request_id must hold one non-empty string per row",
                    field="parameters.request_id",
                )
            request_ids = listed
        outputs = None
        if request.outputs is not None:
            outputs = []
            known = [*self.output_names, REQUEST_ID_OUTPUT]
            for i, out in enumerate(request.outputs):
                if out.name not in known:
                    raise InvalidInputError(
                        f"unknown output {out.name!r}; outputs are {known}",
                        field=f"outputs[{i}].name",
                    )
                outputs.append((out.name, bool((out.parameters or {}).get("binary_data"))))
        return OipRequest(
            rows=rows,
            id=request.id,
            entity_ids=entity_ids,
            request_ids=request_ids,
            outputs=outputs,
            binary_output=bool(params.get("binary_data_output")),
            sticky_keys=fields[self.contract.sticky_field],
            fields=fields,
        )

    @staticmethod
    def _keys(params: dict[str, Any], name: str, n: int) -> list[str | None]:
        """Per row, the key in parameter `name`: one for all rows, one per row, or None."""
        value = params.get(name)
        field = f"parameters.{name}"
        if value is not None and not isinstance(value, str | int | list):
            raise InvalidInputError(f"{name} must be a string or a list", field=field)
        return per_row(value, n, field)

    def _rows(self, inputs: list[TensorInput], chunks: list[memoryview | None]) -> Rows:
        contract = self.contract
        columns: dict[str, Any] = {}
        packed: dict[str, Array] = {}
        n: int | None = None
        for i, (tensor, chunk) in enumerate(zip(inputs, chunks, strict=True)):
            where = f"inputs[{i}]"
            if tensor.name in (INPUT_NUMERIC, INPUT_CATEGORICAL):
                width = contract.k if tensor.name == INPUT_NUMERIC else len(contract.categorical)
                expect = [tensor.shape[0] if tensor.shape else -1, width]
                if len(tensor.shape) != 2 or tensor.shape[1] != width:
                    raise InvalidInputError(
                        f"{tensor.name} must have shape [N, {width}], got {tensor.shape}",
                        field=f"{where}.shape",
                    )
                array = tensor_array(tensor, chunk, where, tensor.name == INPUT_NUMERIC)
                packed[tensor.name] = array.reshape(expect)
                rows = expect[0]
            elif tensor.name in contract.sourced:
                raise InvalidInputError(
                    f"{tensor.name} is found at serving (its source in the spec); do not send it",
                    field=f"{where}.name",
                )
            elif tensor.name in contract.column:
                kind, _ = contract.column[tensor.name]
                if not (
                    len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1)
                ):
                    raise InvalidInputError(
                        f"{tensor.name} must have shape [N] or [N, 1], got {tensor.shape}",
                        field=f"{where}.shape",
                    )
                columns[tensor.name] = tensor_array(
                    tensor, chunk, where, kind == "numeric"
                ).reshape(-1)
                rows = tensor.shape[0]
            else:
                raise InvalidInputError(
                    f"unknown input {tensor.name!r}; send the features {list(contract.names)} "
                    f"(or the tensors {INPUT_NUMERIC!r}/{INPUT_CATEGORICAL!r})",
                    field=f"{where}.name",
                )
            if n is not None and rows != n:
                raise InvalidInputError(
                    f"{rows} rows here, {n} in the inputs before", field=f"{where}.shape"
                )
            n = rows
        if packed and columns:
            raise InvalidInputError(
                "send either one tensor per feature or the packed tensors, not both"
            )
        if n is None or n < 1:
            raise InvalidInputError("no rows in the request", field="inputs")
        if n > self.max_rows:
            raise InvalidInputError(
                f"{n} rows in one request; at most {self.max_rows}", field="inputs"
            )
        if packed:
            return self._from_packed(packed, n)
        return self._from_columns(columns, n)

    def _from_columns(self, columns: dict[str, Any], n: int) -> Rows:
        contract = self.contract
        missing = [n for n in contract.names if n not in columns and n not in contract.sourced]
        if missing:
            raise InvalidInputError(f"missing input(s) {missing}", field=f"inputs.{missing[0]}")
        for name in contract.sourced:  # placeholders, filled at serving
            columns[name] = np.zeros(n, dtype=np.float32)
        numeric = None
        if contract.k:
            numeric = np.empty((n, contract.k), dtype=np.float32)
            for j, name in enumerate(contract.numeric):
                numeric[:, j] = columns[name]  # beyond float32 becomes inf: refused below
            contract.check_finite(numeric, "inputs", multi=True)
        categorical = None
        if contract.categorical:
            categorical = np.empty((n, len(contract.categorical)), dtype=object)
            for j, name in enumerate(contract.categorical):
                categorical[:, j] = columns[name]
        values = list(zip(*(columns[name].tolist() for name in contract.names), strict=True))
        if contract.policies:  # the values after the policies, in the model's layout
            return contract.arrange(values, "inputs")
        return Rows(n, numeric, categorical, values)

    def _from_packed(self, packed: dict[str, Array], n: int) -> Rows:
        contract = self.contract
        numeric = packed.get(INPUT_NUMERIC)
        categorical = packed.get(INPUT_CATEGORICAL)
        if contract.k and numeric is None:
            raise InvalidInputError(
                f"missing input {INPUT_NUMERIC!r}", field=f"inputs.{INPUT_NUMERIC}"
            )
        if contract.categorical and categorical is None:
            raise InvalidInputError(
                f"missing input {INPUT_CATEGORICAL!r}", field=f"inputs.{INPUT_CATEGORICAL}"
            )
        if numeric is not None and contract.sourced:
            raise InvalidInputError(
                f"the packed {INPUT_NUMERIC!r} tensor would carry {sorted(contract.sourced)}, "
                "which are found at serving; send one tensor per feature without them",
                field=f"inputs.{INPUT_NUMERIC}",
            )
        parts = []
        if numeric is not None:
            parts.append(numeric.tolist())
            numeric = np.ascontiguousarray(numeric, dtype=np.float32)
            contract.check_finite(numeric, "inputs", multi=True)
        if categorical is not None:
            parts.append(categorical.tolist())
        if len(parts) == 1:  # one tensor: its rows are the values (no per-value joining)
            values: list[tuple[Any, ...]] = list(map(tuple, parts[0]))
        else:
            values = [tuple(x for part in row for x in part) for row in zip(*parts, strict=True)]
        if contract.policies:
            return contract.arrange(values, "inputs")
        return Rows(n, numeric, categorical, values)

    # --- response --------------------------------------------------------------------------

    def outputs(
        self, request: OipRequest, served: Served
    ) -> Iterator[tuple[str, str, list[int], Array | list[str], bool]]:
        """(name, datatype, shape, values, binary) of each output the request asked for."""
        wanted = request.outputs
        if wanted is None:
            wanted = [(name, request.binary_output) for name in self.output_names]
            wanted.append((REQUEST_ID_OUTPUT, request.binary_output))
        arrays = dict(zip(self.output_names, served.outputs, strict=True))
        for name, binary in wanted:
            if name == REQUEST_ID_OUTPUT:
                yield name, "BYTES", [len(served.request_ids)], served.request_ids, binary
            else:
                array = arrays[name]
                yield name, OUTPUT_TYPES[array.dtype], list(array.shape), array, binary

    @staticmethod
    def version(served: Served) -> str:
        """The response's `model_version`: the one version, or all that served, in order."""
        uniform = served.uniform()
        return uniform[0] if uniform else ",".join(dict.fromkeys(served.versions))

    def encode(self, request: OipRequest, served: Served) -> tuple[bytes, int | None]:
        """The response body, and the JSON header's length when binary outputs follow."""
        blobs: list[bytes] = []
        if request.outputs is None and not request.binary_output:
            outputs = self._all_as_json(served)
        else:
            outputs = self._entries(request, served, blobs)
        answer = {
            "model_name": self.model_name,
            "model_version": self.version(served),
            "id": request.id if request.id is not None else served.request_ids[0],
            "parameters": {
                "request_ids": served.request_ids,
                "model_versions": served.versions,
                "variants": served.variants,
            },
            "outputs": outputs,
        }
        head = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
        if not blobs:
            return head, None
        return head + b"".join(blobs), len(head)

    def _all_as_json(self, served: Served) -> list[dict[str, Any]]:
        """The usual request's outputs (all of them, as JSON): what `_entries` gives for
        it, without its per-output choices."""
        outputs: list[dict[str, Any]] = [
            {
                "name": name,
                "datatype": OUTPUT_TYPES[array.dtype],
                "shape": list(array.shape),
                "data": array.reshape(-1),
            }
            for name, array in zip(self.output_names, served.outputs, strict=True)
        ]
        ids = served.request_ids
        outputs.append(
            {"name": REQUEST_ID_OUTPUT, "datatype": "BYTES", "shape": [len(ids)], "data": ids}
        )
        return outputs

    def _entries(
        self, request: OipRequest, served: Served, blobs: list[bytes]
    ) -> list[dict[str, Any]]:
        """The outputs the request asked for; binary ones have their bytes in `blobs`."""
        outputs: list[dict[str, Any]] = []
        for name, datatype, shape, values, binary in self.outputs(request, served):
            entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
            if binary:
                blob = raw_tensor(values)
            elif isinstance(values, list):
                entry["data"] = values
            else:
                entry["data"] = values.reshape(-1)
            if binary:
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            outputs.append(entry)
        return outputs

    # --- metadata --------------------------------------------------------------------------

    def metadata(
        self, versions: list[str], platform: str, precisions: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """The model's metadata; `precisions` (version -> fp32 or int8) goes under
        `parameters`, as the protocol allows for what it does not name."""
        contract = self.contract
        inputs = [
            {
                "name": name,
                "datatype": "FP32" if contract.column[name][0] == "numeric" else "BYTES",
                "shape": [-1],
            }
            for name in contract.names
            if name not in contract.sourced
        ]
        outputs = [
            {
                "name": name,
                "datatype": OUTPUT_TYPES[np.dtype(dtype)],
                "shape": [-1, width] if width else [-1],
            }
            for name, dtype, width in contract.outputs
        ]
        outputs.append({"name": REQUEST_ID_OUTPUT, "datatype": "BYTES", "shape": [-1]})
        return {
            "name": self.model_name,
            "versions": versions,
            "platform": platform,
            "inputs": inputs,
            "outputs": outputs,
            **({"parameters": {"precisions": dict(precisions)}} if precisions else {}),
        }
