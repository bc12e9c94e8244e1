"""The reference distribution: a sample of the serving model version's training data.

Every model version in MLflow carries `reference/reference.npz` (see
`driftline.api.artifacts`): one array per feature name plus `__output__` (the
version's outputs on that sample) and, when the trainer has them, `__label__`.
The monitor compares live traffic with the reference of the version that serves it:
the routing table's `stable` version, or without a table the version under the
`champion` alias. When that version changes, the reference follows.

The file is read with `allow_pickle=False`: strings must be stored as fixed-width
unicode arrays, never as Python objects.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from driftline.api.artifacts import (
    ALIAS_CHAMPION,
    REFERENCE_ARTIFACT,
    REFERENCE_OUTPUT_KEY,
    TAG_REFERENCE,
)
from driftline.api.spec import FeatureSpec
from driftline.common.feature_values import FeatureValueError, category_value, model_text
from driftline.common.redis_state import RoutingStore
from driftline.common.registry import RegisteredModel, RegistryError
from driftline.drift.detectors.base import FloatArray

log = logging.getLogger(__name__)

REFERENCE_LABEL_KEY = "__label__"
"""Optional: the labels of the reference sample (label drift); without it the first
window of live labels becomes the label reference."""


class ReferenceUnavailableError(RuntimeError):
    """The reference cannot be had now (no serving version, registry down, bad file)."""


class NoReferenceError(ReferenceUnavailableError):
    """The version was registered without a reference (an import without a sample): its
    `driftline.reference` tag says `none: ...`. The monitor takes one from live traffic."""

    def __init__(self, version: str, tag: str) -> None:
        super().__init__(f"version {version} has no reference ({tag})")
        self.version = version


@dataclass(frozen=True)
class Reference:
    """The reference sample of one model version, column by column."""

    version: str
    numeric: dict[str, FloatArray]
    """Values of each numeric feature, NaN where missing (rows stay aligned)."""
    categorical: dict[str, np.ndarray[Any, np.dtype[np.str_]]]
    """Values of each categorical feature, as strings."""
    output: FloatArray
    label: FloatArray | None = None
    origin: str = ""
    """The version's `driftline.reference` tag: where the sample came from."""

    @property
    def rows(self) -> int:
        return int(self.output.size)


def parse_reference(
    arrays: Mapping[str, np.ndarray[Any, Any]],
    features: list[FeatureSpec],
    version: str,
    max_rows: int | None = None,
    seed: int = 0,
) -> Reference:
    """Check the arrays against the feature contract; subsample to `max_rows` rows."""
    problems: list[str] = []
    missing = [f.name for f in features if f.name not in arrays]
    if missing:
        problems.append(f"features missing from the reference: {', '.join(missing)}")
    if REFERENCE_OUTPUT_KEY not in arrays:
        problems.append(f"{REFERENCE_OUTPUT_KEY} (the version's outputs) is missing")
    if problems:
        raise ReferenceUnavailableError(f"reference of version {version}: " + "; ".join(problems))
    output = np.asarray(arrays[REFERENCE_OUTPUT_KEY], dtype=np.float64).ravel()
    n = output.size
    keep = np.arange(n)
    if max_rows is not None and n > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
    numeric: dict[str, FloatArray] = {}
    categorical: dict[str, np.ndarray[Any, np.dtype[np.str_]]] = {}
    for f in features:
        column = np.asarray(arrays[f.name]).ravel()
        if column.size != n:
            raise ReferenceUnavailableError(
                f"reference of version {version}: {f.name} has {column.size} rows, "
                f"{REFERENCE_OUTPUT_KEY} has {n}"
            )
        column = column[keep]
        if f.type == "numeric":
            try:
                values = column.astype(np.float64)
            except ValueError as exc:
                raise ReferenceUnavailableError(
                    f"reference of version {version}: numeric feature {f.name} holds "
                    f"non-numbers ({exc})"
                ) from exc
            values[~np.isfinite(values)] = np.nan
            numeric[f.name] = values
        else:
            try:
                texts = [model_text(category_value(f.name, v)) for v in column.tolist()]
            except FeatureValueError as exc:
                raise ReferenceUnavailableError(f"reference of version {version}: {exc}") from exc
            categorical[f.name] = np.array(texts, dtype=np.str_)
    label = None
    if REFERENCE_LABEL_KEY in arrays:
        raw = np.asarray(arrays[REFERENCE_LABEL_KEY], dtype=np.float64).ravel()
        label = raw[keep] if raw.size == n else raw
    return Reference(version, numeric, categorical, output[keep], label)


def read_reference_file(
    path: Path, features: list[FeatureSpec], version: str, max_rows: int | None = None
) -> Reference:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:  # not an npz, or object arrays (pickle refused)
        raise ReferenceUnavailableError(
            f"cannot read the reference of version {version}: {exc}"
        ) from exc
    return parse_reference(arrays, features, version, max_rows)


class ReferenceSource:
    """Finds the serving version and fetches its reference from MLflow."""

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        features: list[FeatureSpec],
        routing: RoutingStore,
        redis: Any,
        max_rows: int | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.features = features
        self.routing = routing
        self.redis = redis
        self.max_rows = max_rows
        self.registry = RegisteredModel(tracking_uri, model_name)

    def serving_version(self) -> str | None:
        """The routing table's stable version; else the `champion` alias; else None."""
        try:
            table = self.routing.read(self.redis)
        except Exception as exc:  # Redis down: fall back to the registry
            log.warning("cannot read the routing table: %s", exc)
            table = None
        if table is not None and table.stable is not None:
            return table.stable
        try:
            champion = self.registry.version_for_alias(ALIAS_CHAMPION)
        except RegistryError as exc:
            raise ReferenceUnavailableError(f"cannot ask MLflow for the champion: {exc}") from exc
        return None if champion is None else champion.version

    def load(self, version: str) -> Reference:
        try:
            mv = self.registry.get_version(version)
        except RegistryError as exc:
            raise ReferenceUnavailableError(f"cannot read model version {version}: {exc}") from exc
        tag = mv.tags.get(TAG_REFERENCE, "")
        if tag.startswith("none"):
            raise NoReferenceError(version, tag)
        with tempfile.TemporaryDirectory(prefix="driftline-reference-") as tmp:
            try:
                local = self.registry.download(mv, REFERENCE_ARTIFACT, Path(tmp))
            except RegistryError as exc:
                raise ReferenceUnavailableError(str(exc)) from exc
            reference = read_reference_file(local, self.features, version, self.max_rows)
        log.info("reference of %s version %s: %d rows", self.model_name, version, reference.rows)
        return replace(reference, origin=tag)

    def keep(self, version: str, arrays: Mapping[str, np.ndarray[Any, Any]], tag: str) -> None:
        """Stores a reference taken elsewhere (from live traffic) with `version`, and tags
        the version with where it came from; `load` reads it from then on."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        try:
            mv = self.registry.get_version(version)
            self.registry.add_artifact(mv, REFERENCE_ARTIFACT, buffer.getvalue())
            self.registry.set_version_tag(version, TAG_REFERENCE, tag)
        except RegistryError as exc:
            raise ReferenceUnavailableError(f"cannot keep the reference: {exc}") from exc
