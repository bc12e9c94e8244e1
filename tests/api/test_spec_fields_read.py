"""Every field of the `DynamicModel` spec is read by the code that ships.

A field that nothing reads is a promise the platform does not keep: a user sets it,
the API server accepts it, and nothing changes. This test walks the spec models
(by YAML path, as users write them) and looks for a read of each field's Python name
in the shipped source (`services/` and `operator/`, the spec module itself left out):
an attribute access `x.sticky_key` (or `getattr(x, "sticky_key")`), found in the
syntax tree, so comments, docstrings and strings do not count.

A nested field must be read in a module that also names its parent, by the parent
field's name (`replicas`, `tolerations`) or by the parent model's class
(`ReplicasSpec`): `replicas.min` is not read because some array's `.min()` is.
Short names can still meet an unrelated attribute of the same name in such a
module; the check is sharp for the names only the spec uses (`sticky_key`,
`on_drift`, `expected_run_time`, ...), a guard against a field left behind, not a
proof of use.
"""

from __future__ import annotations

import ast
import functools
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from driftline.api.spec import DynamicModelSpec

REPO = Path(__file__).resolve().parents[2]
SPEC_MODULE = REPO / "services" / "api" / "driftline" / "api" / "spec.py"

# Fields that no Python code needs to read, by YAML path, each with the reason.
# Only two kinds belong here: a field Kubernetes itself acts on (copied verbatim into
# a child object the operator does not look into), or one that only the schema and
# its validators use. None does today: every field is read by some part.
ALLOWED_UNREAD: dict[str, str] = {}


@dataclass(frozen=True)
class SpecField:
    path: str
    """As in YAML: `rollout.stickyKey`, `features.hashBuckets`."""
    attribute: str
    """The Python name a reader uses: `sticky_key`, `lambda_`."""
    parent_names: frozenset[str]
    """The parent field's Python name and its model's class name; empty at the top."""


def _models_in(annotation: typing.Any) -> Iterator[type[BaseModel]]:
    """The pydantic models in an annotation (`X`, `list[X]`, `X | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from _models_in(argument)


def spec_fields(
    model: type[BaseModel] = DynamicModelSpec,
    prefix: str = "",
    parent_names: frozenset[str] = frozenset(),
) -> Iterator[SpecField]:
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        yield SpecField(path, name, parent_names)
        for child in _models_in(info.annotation):
            yield from spec_fields(child, f"{path}.", frozenset({name, child.__name__}))


@dataclass(frozen=True)
class Module:
    path: str
    attributes: frozenset[str]
    """Names read as attributes (`x.name`, `getattr(x, "name")`)."""
    identifiers: frozenset[str]
    """Every name the module mentions: attributes, variables, parameters, classes."""


@functools.cache
def shipped_modules() -> tuple[Module, ...]:
    sources = [*REPO.glob("services/*/driftline/**/*.py"), *REPO.glob("operator/driftline/**/*.py")]
    modules = []
    for source in sorted(sources):
        if source == SPEC_MODULE:
            continue
        attributes: set[str] = set()
        identifiers: set[str] = set()
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                attributes.add(node.attr)
            elif isinstance(node, ast.Name):
                identifiers.add(node.id)
            elif isinstance(node, ast.arg):
                identifiers.add(node.arg)
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                attributes.add(node.args[1].value)
        path = source.relative_to(REPO).as_posix()
        modules.append(Module(path, frozenset(attributes), frozenset(attributes | identifiers)))
    return tuple(modules)


def readers(field: SpecField) -> list[str]:
    """The shipped modules that read `field` (see the module docstring)."""
    return [
        module.path
        for module in shipped_modules()
        if field.attribute in module.attributes
        and (not field.parent_names or field.parent_names & module.identifiers)
    ]


def test_the_walk_sees_the_whole_spec() -> None:
    paths = {f.path for f in spec_fields()}
    assert {"rollout.stickyKey", "drift.onDrift", "training.ewc.lambda"} <= paths
    assert {"features.hashBuckets", "inference.nodePool.tolerations.effect"} <= paths
    assert len(shipped_modules()) > 50  # the source was found


def test_every_spec_field_is_read_by_shipped_code() -> None:
    unread = [
        f"{field.path} (nothing reads .{field.attribute}"
        + (f" in a module naming {sorted(field.parent_names)}" if field.parent_names else "")
        + ")"
        for field in spec_fields()
        if field.path not in ALLOWED_UNREAD and not readers(field)
    ]
    assert not unread, (
        "spec fields that no shipped code reads: make them do something, remove them, or "
        "add them to ALLOWED_UNREAD with the reason:\n  " + "\n  ".join(unread)
    )


def test_allowed_entries_are_fields_nobody_reads() -> None:
    fields = {f.path: f for f in spec_fields()}
    for path in ALLOWED_UNREAD:
        assert path in fields, f"{path} is no spec field"
        assert not readers(fields[path]), f"{path} is read now: take it off ALLOWED_UNREAD"
