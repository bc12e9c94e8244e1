"""The whole `DynamicModel` object, and reading it from YAML.

`driftline up -f model.yaml`, the operator and every part's pod read a DynamicModel
through `load_dynamic_model` / `parse_dynamic_model`, so a spec means the same thing
everywhere. Errors are turned into `SpecError`, whose message names each bad field
in YAML terms (`spec.inference.replicas.min`) and says what to do.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from driftline.api.spec import (
    API_VERSION,
    KIND,
    DynamicModelSpec,
    ObjectMeta,
    TopicsSpec,
)
from driftline.api.status import DynamicModelStatus


class SpecError(ValueError):
    """A DynamicModel that cannot be used, with one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid DynamicModel:\n" + "\n".join(f"  - {p}" for p in problems))


class DynamicModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    api_version: Literal["driftline.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["DynamicModel"]
    metadata: ObjectMeta
    spec: DynamicModelSpec
    status: DynamicModelStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def topics(self) -> TopicsSpec:
        """Configured topics, or the default set named after the model."""
        return self.spec.kafka.topics or TopicsSpec.for_model(self.metadata.name)

    def to_manifest(self) -> dict[str, Any]:
        """The object as Kubernetes stores it (camelCase, defaults filled in)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# A person's rollout decision on a cluster (the operator reads and removes them):
# `approve`, `abort`, or either with `:<version>`, and an optional reason.
ROLLOUT_ANNOTATION = "driftline.io/rollout"
ROLLOUT_REASON_ANNOTATION = "driftline.io/rollout-reason"


def rollout_annotations(action: str, version: str | None, reason: str = "") -> dict[str, str]:
    """The annotations that ask the operator for `action` on `version` (or on the
    candidate rolling out when it reads them)."""
    out = {ROLLOUT_ANNOTATION: f"{action}:{version}" if version else action}
    if reason:
        out[ROLLOUT_REASON_ANNOTATION] = reason
    return out


def _short_repr() -> reprlib.Repr:
    # A wrong value is quoted in the error, but never whole: YAML aliases can make a
    # few hundred bytes name billions of nodes, and a full repr would expand them all.
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict = 2, 4, 4
    short.maxstring = short.maxother = 80
    return short


_quote = _short_repr().repr


def _location(loc: tuple[int | str, ...]) -> str:
    """pydantic's loc tuple -> 'spec.features[2].name', dropping union/validator tags."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"function-after", "function-before", "union"} or "[" in str(part):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _explain(error: dict[str, Any]) -> str:
    where = _location(tuple(error["loc"]))
    msg = str(error["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if msg.startswith("@"):  # a cross-field error naming its field (spec.invalid)
        field, msg = msg[1:].split(": ", 1)
        where = f"{where}.{field}" if where else field
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        msg = "unknown field; check its spelling against the DynamicModel reference"
    elif kind == "missing":
        msg = "required field is missing"
    elif kind == "literal_error":
        msg = f"{msg} (got {_quote(error.get('input'))})"
    return f"{where}: {msg}" if where else msg


def parse_dynamic_model(obj: dict[str, Any]) -> DynamicModel:
    """Validate a DynamicModel given as a dict (from YAML or the Kubernetes API)."""
    if not isinstance(obj, dict):
        raise SpecError([f"expected a mapping with apiVersion {API_VERSION}, kind {KIND}"])
    try:
        return DynamicModel.model_validate(obj)
    except ValidationError as exc:
        raise SpecError([_explain(dict(e)) for e in exc.errors()]) from exc


def load_dynamic_model(path: str | Path) -> DynamicModel:
    """Read the one DynamicModel in a YAML file (other documents are ignored)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise SpecError([f"{path}: not valid YAML: {exc}"]) from exc
    models = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(models) != 1:
        raise SpecError([f"{path}: expected exactly one {KIND} document, found {len(models)}"])
    return parse_dynamic_model(models[0])
