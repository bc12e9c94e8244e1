"""The `DynamicModel` spec: what a user writes, read the same way by every part.

These pydantic models are the single source of the contract. The CRD's
openAPIV3Schema is generated from them (`make manifests`), so a rule written here
once is enforced by the Kubernetes API server (schema and CEL, see `cel`), by the
operator, and by `driftline up` on a laptop.

Field names are camelCase in YAML (Kubernetes convention) and snake_case in Python.
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from driftline.api.cron import CronError, from_seconds, parse

# Kubernetes object names and Kafka topic names, kept to the safe intersection.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
FEATURE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
TOPIC_NAME = r"^[a-zA-Z0-9._-]+$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"


def invalid(field: str, message: str) -> ValueError:
    """A cross-field error that points at `field` (relative to the model raising it).

    pydantic reports model-level errors at the model's own location; the `@field: `
    prefix lets `driftline.api.resource` name the exact field in the message.
    """
    return ValueError(f"@{field}: {message}")


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """A CEL validation rule for the generated CRD (`x-kubernetes-validations`).

    The same rule is also checked in Python by a model validator next to it, so
    every face of Driftline refuses the same specs with the same message.

    Guard every field a rule reads with `has()`, even fields that have defaults:
    when the CRD is created, the API server checks each rule against the
    object's own `default: {}` as written, before nested defaults are applied,
    and a rule that reads a missing field fails there ("no such key").
    """
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class SpecModel(BaseModel):
    """Base of every spec model: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


# --- model -----------------------------------------------------------------------------


class RegistrySpec(SpecModel):
    tracking_uri: str = Field(
        description="MLflow tracking URI, e.g. http://mlflow.ml:5000 (or sqlite:///... locally).",
        min_length=1,
    )
    name: str = Field(
        description="Registered model name in MLflow.",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
    )


class LearnerSpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.type) || self.type != 'plugin' || has(self.entrypoint)",
                    "learner.type 'plugin' needs learner.entrypoint ('package.module:function')",
                ),
                cel(
                    "(has(self.type) && self.type == 'plugin') || !has(self.entrypoint)",
                    "learner.entrypoint is only used with learner.type 'plugin'",
                ),
            ]
        }
    )

    type: Literal["logistic", "mlp", "plugin"] = Field(
        default="mlp", description="Built-in learner, or 'plugin' for a user entry point."
    )
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [64, 32],
        max_length=8,
        description="Hidden layer widths of the MLP.",
    )
    entrypoint: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$",
        description="'package.module:function' returning a torch module (plugin learners).",
    )
    learning_rate: float = Field(default=1e-2, gt=0, le=10, description="Optimizer step size.")

    @model_validator(mode="after")
    def _entrypoint_matches_type(self) -> LearnerSpec:
        if self.type == "plugin" and self.entrypoint is None:
            raise invalid(
                "entrypoint",
                "learner.type 'plugin' needs learner.entrypoint ('package.module:function')",
            )
        if self.type != "plugin" and self.entrypoint is not None:
            raise invalid(
                "entrypoint", "learner.entrypoint is only used with learner.type 'plugin'"
            )
        return self


ImportFormat = Literal["onnx", "skops", "xgboost", "lightgbm", "torchscript"]
"""The formats `python -m driftline.trainer import` reads (docs/import.md)."""


class InitialModelSpec(SpecModel):
    """A model made elsewhere, imported as version 1 (champion and baseline) while the
    registry has no version of this model: `python -m driftline.trainer import`."""

    uri: str = Field(
        description=(
            "The model file: a path the import reads (in the image, or on a volume), "
            "file://, or a scheme MLflow's artifact stores read (s3://, gs://, runs:/, "
            "mlflow-artifacts:/)."
        ),
        min_length=1,
        max_length=2048,
    )
    format: ImportFormat | None = Field(
        default=None, description="The model's format; without it, from the file's suffix."
    )
    sample: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description=(
            "Rows (.csv with a header, .parquet or .jsonl), a path or URI like `uri`: the "
            "drift reference, the parity check and, with labels, the challenger's first data. "
            "Without it the drift monitor takes the first live traffic as the reference."
        ),
    )
    label_column: str = Field(
        default="label", min_length=1, max_length=200, description="The sample's label column."
    )
    output: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The model's output to serve, when it has several.",
    )
    trust: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list,
        max_length=32,
        description="Types skops may load beyond its defaults (scikit-learn models).",
    )
    signature: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="The model's signature (OpenSSF model signing), a path or URI like "
        "`uri`; checked when spec.model.signing names a key. Default: `<uri>.sig`.",
    )


class AdapterSpec(SpecModel):
    """The small layer `strategy: adapter` learns on the frozen imported model's outputs."""

    features: bool = Field(
        default=True,
        description="Whether the adapter also sees the standardised raw features (needed to "
        "follow a changed labelling rule; without them it only recalibrates the import).",
    )
    hidden: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [32],
        max_length=4,
        description="Hidden layer widths of the correction; [] makes it one linear layer.",
    )


class SecretKeyRef(SpecModel):
    name: str = Field(pattern=DNS_LABEL, max_length=253, description="The Secret's name.")
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="The key in the Secret that holds the PEM.",
    )


class ModelSigningSpec(SpecModel):
    """OpenSSF model signing with keys (no Sigstore, no network): an imported model is
    checked against its signature before conversion, every version is checked at each
    load in inference, and, with a signing key, every version Driftline publishes is
    signed (`model/model.onnx.sig` beside `model/model.onnx`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.publicKey) && has(self.publicKeySecretRef))",
                    "signing: publicKey or publicKeySecretRef, not both",
                ),
                cel(
                    "!has(self.required) || !self.required || has(self.publicKey) || "
                    "has(self.publicKeySecretRef)",
                    "signing.required needs publicKey or publicKeySecretRef",
                ),
            ]
        }
    )

    public_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=65536,
        description="The PEM that signatures are checked against, inline: an EC public key, "
        "or with keyType 'certificate' the certificate chain of the signing certificates.",
    )
    public_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="The same PEM from a Secret."
    )
    key_type: Literal["publicKey", "certificate"] = Field(
        default="publicKey", description="What the PEM is: a public key or a certificate chain."
    )
    required: bool = Field(
        default=False,
        description="Refuse a model without a signature. A signature that is present is "
        "always checked, and a bad one always refused.",
    )
    signing_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="An EC private key (PEM, unencrypted) in a Secret: every version "
        "Driftline publishes (imported or trained) is signed with it.",
    )

    @model_validator(mode="after")
    def _one_key(self) -> ModelSigningSpec:
        if self.public_key is not None and self.public_key_secret_ref is not None:
            raise invalid("publicKey", "signing: publicKey or publicKeySecretRef, not both")
        if self.required and self.public_key is None and self.public_key_secret_ref is None:
            raise invalid("required", "signing.required needs publicKey or publicKeySecretRef")
        return self


class ModelSpec(SpecModel):
    registry: RegistrySpec
    task: Literal["classification", "regression"] = Field(
        default="classification", description="What the model predicts."
    )
    classes: int = Field(
        default=2, ge=2, le=10_000, description="Number of classes (classification only)."
    )
    learner: LearnerSpec = Field(default_factory=LearnerSpec)
    initial: InitialModelSpec | None = Field(
        default=None,
        description=(
            "A model made elsewhere to start from: imported as version 1 while the registry "
            "has none (an import Job on a cluster, `driftline up` locally)."
        ),
    )
    signing: ModelSigningSpec | None = Field(
        default=None, description="Signatures of the model's files (docs/import.md)."
    )
    strategy: Literal["challenger", "adapter"] = Field(
        default="challenger",
        description="How the trainer learns beside an imported model (docs/import.md): "
        "'challenger', its own learner, gated against the import; 'adapter', a layer on the "
        "frozen import's outputs, each version the import and the adapter in one graph.",
    )
    adapter: AdapterSpec = Field(default_factory=AdapterSpec, description="strategy: adapter.")


# --- features --------------------------------------------------------------------------


OUTCOME = "outcome"
"""`aggregate.of` naming the label (joined outcomes) instead of a request feature."""
AGGREGATE_IS_NUMERIC = "a feature with source.aggregate is numeric; remove type: categorical"
FEAST_IS_NUMERIC = "a feature with source.feast is numeric; remove type: categorical"
SOURCE_VARIANTS = ("aggregate", "feast")
"""The ways a feature's value may be found at serving; a source sets exactly one."""
# Request fields that already mean something else, so they cannot be the sticky key.
RESERVED_REQUEST_FIELDS = ("features", "request_id", "binary_data_output")
FEAST_FIELD_TAKEN = (
    "entityKeys.field names a request field that means something else; use entity_id or "
    "a field of your own, e.g. user_id"
)


class AggregateSource(SpecModel):
    """A per-entity aggregate kept in Redis over a sliding window (docs/features.md).

    The value served for a request is the aggregate of the entity's earlier events:
    the request itself (or its outcome) is counted only after it has been read.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.of) || self.function in ['count', 'rate']",
                    "aggregate.function sum, mean and last need aggregate.of "
                    "(a numeric request feature, or 'outcome')",
                )
            ]
        }
    )

    function: Literal["count", "sum", "mean", "last", "rate"] = Field(
        description="count and rate (per second) of events; sum, mean and last of their values."
    )
    of: str | None = Field(
        default=None,
        pattern=FEATURE_NAME,
        max_length=128,
        description="The events: a numeric feature of the request (updated at serving), or "
        "'outcome' (the label, updated when the joiner joins it). Unset: the entity's "
        "requests (count and rate only).",
    )
    window_seconds: int = Field(
        default=3600,
        ge=1,
        le=90 * 86_400,
        description="The sliding window, kept as 60 buckets (resolution windowSeconds/60).",
    )
    default: float = Field(
        default=0.0,
        description="Served when the aggregate has no value (no entity id, no event in the "
        "window for mean and last) or Redis cannot be read under onUnavailable: default.",
    )

    @model_validator(mode="after")
    def _values_need_events(self) -> AggregateSource:
        if self.of is None and self.function not in ("count", "rate"):
            raise invalid(
                "of",
                "aggregate.function sum, mean and last need aggregate.of "
                "(a numeric request feature, or 'outcome')",
            )
        return self


class FeastEntityKey(SpecModel):
    """One join key of a Feast entity and the request field that carries its value."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.field) || !(self.field in "
                    + str(list(RESERVED_REQUEST_FIELDS))
                    + ")",
                    FEAST_FIELD_TAKEN,
                )
            ]
        }
    )

    join_key: str = Field(
        pattern=FEATURE_NAME, max_length=128, description="The join key's name in Feast."
    )
    field: str = Field(
        default="entity_id",
        pattern=FEATURE_NAME,
        max_length=128,
        description="The request field with the key's value, one for all rows or one per "
        "row: entity_id, or a field of your own (a top-level field of the plain JSON route, "
        "a request parameter of the Open Inference Protocol route; docs/features-feast.md).",
    )
    type: Literal["int64", "int32", "string", "bytes"] = Field(
        default="string",
        description="The join key's Feast value type; int64/int32 values are decimal "
        "strings or integers (an entity_id that is none is served as a missing entity; "
        "any other field refuses the request).",
    )

    @model_validator(mode="after")
    def _field_is_free(self) -> FeastEntityKey:
        if self.field in RESERVED_REQUEST_FIELDS:
            raise invalid("field", FEAST_FIELD_TAKEN)
        return self


class FeastSource(SpecModel):
    """A feature of a Feast feature view, read from Feast's Redis online store."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.entityKeys.all(k, self.entityKeys.filter(j, j.joinKey == k.joinKey)"
                    ".size() == 1)",
                    "entityKeys names a join key twice",
                )
            ]
        }
    )

    project: str = Field(
        pattern=r"^[A-Za-z0-9_]+$", max_length=128, description="The Feast project."
    )
    feature_view: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", max_length=255, description="The view's online name."
    )
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", max_length=255, description="The feature in that view."
    )
    entity_keys: list[FeastEntityKey] = Field(
        min_length=1,
        max_length=8,
        description="The view's join keys (all of them: a compound key has several) and "
        "the request field each key's value comes from.",
    )
    max_age_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Rows older than this (their event time) are served the default.",
    )
    default: float = Field(
        default=0.0,
        description="Served when the entity has no (non-null, fresh, numeric) value, or "
        "Feast's Redis cannot be read under onUnavailable: default.",
    )

    @model_validator(mode="after")
    def _distinct_keys(self) -> FeastSource:
        names = [k.join_key for k in self.entity_keys]
        if len(set(names)) != len(names):
            raise invalid("entityKeys", "entityKeys names a join key twice")
        return self


def check_feast_views(features: list[FeatureSpec]) -> None:
    """Every feature of one Feast view names the view's join keys alike (names, types);
    a key's field is no feature name (a request field beside the features)."""
    seen: dict[tuple[str, str], tuple[int, list[str]]] = {}
    names = {f.name for f in features}
    for i, feature in enumerate(features):
        feast = feature.source.feast if feature.source is not None else None
        if feast is None:
            continue
        where = f"features[{i}].source.feast.entityKeys"
        for j, key in enumerate(feast.entity_keys):
            if key.field in names:
                raise invalid(
                    f"{where}[{j}].field",
                    f"{key.field!r} is a feature name; a join key's value comes from a "
                    "request field beside the features (e.g. user_id), not a model input",
                )
        keys = sorted(f"{k.join_key} ({k.type})" for k in feast.entity_keys)
        first, known = seen.setdefault((feast.project, feast.feature_view), (i, keys))
        if known != keys:
            raise invalid(
                where,
                f"feature view {feast.feature_view!r} has join keys {', '.join(keys)} here but "
                f"{', '.join(known)} in features[{first}]; a view has one set of join keys "
                "(names and types as in Feast)",
            )


class FeatureSource(SpecModel):
    """Where a feature's value is found at serving; exactly one variant is set."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[" + ", ".join(f"has(self.{v})" for v in SOURCE_VARIANTS) + "]"
                    ".filter(x, x).size() == 1",
                    f"a feature source sets exactly one of {', '.join(SOURCE_VARIANTS)}",
                )
            ]
        }
    )

    aggregate: AggregateSource | None = Field(
        default=None, description="A per-entity aggregate in Redis (key: the entity_id)."
    )
    feast: FeastSource | None = Field(
        default=None,
        description="A feature from Feast's Redis online store (docs/features-feast.md).",
    )
    on_unavailable: Literal["default", "refuse"] = Field(
        default="default",
        description="When the source cannot be read: serve the default value (counted in "
        "driftline_inference_feature_source_errors_total) or refuse the request (503).",
    )

    @model_validator(mode="after")
    def _one_variant(self) -> FeatureSource:
        if sum(getattr(self, v) is not None for v in SOURCE_VARIANTS) != 1:
            raise ValueError(f"a feature source sets exactly one of {', '.join(SOURCE_VARIANTS)}")
        return self


OutOfRangeAction = Literal["refuse", "clip", "impute", "flag"]
MissingAction = Literal["refuse", "impute", "flag"]


class ValuePolicySpec(SpecModel):
    """`onInvalid` of a feature: one action for values outside the declared range, one for
    missing values (`driftline.common.feature_values.apply_policy` applies them)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(!has(self.outOfRange) || self.outOfRange != 'impute') && "
                    "(!has(self.missing) || self.missing != 'impute') || "
                    "has(self.imputeValue) || has(self.imputeCategory)",
                    "impute needs imputeValue (numeric) or imputeCategory (categorical)",
                ),
            ]
        }
    )

    out_of_range: OutOfRangeAction | None = Field(
        default=None,
        description="A value outside min/max (numeric) or the vocabulary (categorical): "
        "refuse (422 naming the field), clip (numeric: to min/max), impute, or flag (pass "
        "it on, mark the row). Absent: accepted as before.",
    )
    missing: MissingAction | None = Field(
        default=None,
        description="An absent or null value: refuse, impute, or flag (pass it on as "
        "missing, mark the row). Absent: serving refuses it, training and drift read it "
        "as missing (as before).",
    )
    impute_value: float | None = Field(default=None, description="Numeric: what impute puts in.")
    impute_category: str | None = Field(
        default=None, max_length=256, description="Categorical: what impute puts in."
    )


VALUE_POLICY_RULES: list[dict[str, Any]] = [
    cel(
        "!has(self.onInvalid) || !has(self.onInvalid.outOfRange) || "
        "(self.type == 'numeric' && (has(self.min) || has(self.max))) || "
        "(self.type == 'categorical' && has(self.vocabulary) && "
        "self.onInvalid.outOfRange != 'clip')",
        "onInvalid.outOfRange needs min/max (numeric) or a vocabulary (categorical); "
        "clip is for numeric features",
    ),
    cel(
        "!has(self.onInvalid) || (self.type == 'numeric' ? !has(self.onInvalid.imputeCategory) "
        ": !has(self.onInvalid.imputeValue))",
        "imputeValue is for numeric features, imputeCategory for categorical ones",
    ),
    cel(
        "!has(self.onInvalid) || !has(self.onInvalid.imputeValue) || "
        "((!has(self.min) || self.onInvalid.imputeValue >= self.min) && "
        "(!has(self.max) || self.onInvalid.imputeValue <= self.max))",
        "onInvalid.imputeValue must lie within min and max",
    ),
]
"""The CEL twins of `check_value_policy` (on FeatureSpec: they read its type and range).
That imputeCategory is in the vocabulary is checked in Python only: a list search over
10,000 entries in each of 512 features is beyond the API server's CEL cost budget."""


def check_value_policy(feature: FeatureSpec) -> None:
    """The Python twin of `VALUE_POLICY_RULES`."""
    policy = feature.on_invalid
    assert policy is not None
    numeric = feature.type == "numeric"
    if policy.out_of_range is not None:
        if numeric and feature.min is None and feature.max is None:
            raise invalid("onInvalid.outOfRange", "needs min or max on a numeric feature")
        if not numeric and feature.vocabulary is None:
            raise invalid(
                "onInvalid.outOfRange",
                "needs a vocabulary (a hashed categorical feature has no range)",
            )
        if not numeric and policy.out_of_range == "clip":
            raise invalid("onInvalid.outOfRange", "clip is for numeric features; use "
                          "refuse, impute or flag")  # fmt: skip
    if numeric and policy.impute_category is not None:
        raise invalid("onInvalid.imputeCategory", "is for categorical features; use imputeValue")
    if not numeric and policy.impute_value is not None:
        raise invalid("onInvalid.imputeValue", "is for numeric features; use imputeCategory")
    impute = "impute" in (policy.out_of_range, policy.missing)
    if impute and policy.impute_value is None and policy.impute_category is None:
        raise invalid(
            "onInvalid", "impute needs imputeValue (numeric) or imputeCategory (categorical)"
        )
    value = policy.impute_value
    if value is not None and not (
        (feature.min is None or value >= feature.min)
        and (feature.max is None or value <= feature.max)
    ):
        raise invalid("onInvalid.imputeValue", f"{value} must lie within min and max")
    text = policy.impute_category
    if text is not None and feature.vocabulary is not None and text not in feature.vocabulary:
        raise invalid("onInvalid.imputeCategory", f"{text!r} must be in the vocabulary")


class FeatureSpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.type == 'categorical' || (!has(self.hashBuckets) && "
                    "!has(self.vocabulary))",
                    "hashBuckets and vocabulary apply to categorical features only",
                ),
                cel(
                    "!has(self.hashBuckets) || !has(self.vocabulary)",
                    "give a categorical feature either hashBuckets or vocabulary, not both",
                ),
                cel(
                    "!has(self.min) || !has(self.max) || self.min < self.max",
                    "min must be below max",
                ),
                cel(
                    "!has(self.source) || !has(self.source.aggregate) || !has(self.type) || "
                    "self.type == 'numeric'",
                    AGGREGATE_IS_NUMERIC,
                ),
                cel(
                    "!has(self.source) || !has(self.source.feast) || !has(self.type) || "
                    "self.type == 'numeric'",
                    FEAST_IS_NUMERIC,
                ),
                *VALUE_POLICY_RULES,
            ]
        }
    )

    name: str = Field(
        pattern=FEATURE_NAME, max_length=128, description="Feature name, as sent by clients."
    )
    type: Literal["numeric", "categorical"] = Field(default="numeric")
    hash_buckets: int | None = Field(
        default=None,
        ge=2,
        le=1_000_000,
        description="Categorical: hash values into this many buckets (unseen values welcome).",
    )
    vocabulary: list[Annotated[str, Field(max_length=256)]] | None = Field(
        default=None,
        min_length=1,
        max_length=10_000,
        description="Categorical: known values; others map to one out-of-vocabulary slot.",
    )
    min: float | None = Field(default=None, description="Numeric: lowest expected value.")
    max: float | None = Field(default=None, description="Numeric: highest expected value.")
    source: FeatureSource | None = Field(
        default=None,
        description="Where the value comes from when not from the client's request "
        "(docs/features.md). Unset: the client sends it.",
    )
    on_invalid: ValuePolicySpec | None = Field(
        default=None,
        description="What serving, training and drift do with values outside "
        "min/max or the vocabulary, and with missing values. Absent: as before (accepted; a "
        "request must carry every feature).",
    )

    @model_validator(mode="after")
    def _categorical_options(self) -> FeatureSpec:
        if self.type == "numeric" and (self.hash_buckets is not None or self.vocabulary):
            raise invalid(
                "hashBuckets" if self.hash_buckets is not None else "vocabulary",
                "hashBuckets and vocabulary apply to categorical features only; "
                "set type: categorical or remove them",
            )
        if self.hash_buckets is not None and self.vocabulary is not None:
            raise invalid(
                "vocabulary",
                "give a categorical feature either hashBuckets or vocabulary, not both",
            )
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise invalid("min", f"min ({self.min}) must be below max ({self.max})")
        if self.source is not None and self.source.aggregate and self.type != "numeric":
            raise invalid("source", AGGREGATE_IS_NUMERIC)
        if self.source is not None and self.source.feast and self.type != "numeric":
            raise invalid("source", FEAST_IS_NUMERIC)
        if self.on_invalid is not None:
            check_value_policy(self)
        return self

    @property
    def width(self) -> int:
        """Columns this feature takes in the model's input after encoding."""
        if self.type == "numeric":
            return 1
        if self.vocabulary is not None:
            return len(self.vocabulary) + 1  # one slot for values outside the vocabulary
        return self.hash_buckets or DEFAULT_HASH_BUCKETS


DEFAULT_HASH_BUCKETS = 32


# --- connections -----------------------------------------------------------------------


class TopicsSpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[self.predictions, self.outcomes, self.labeled, self.control]"
                    ".all(t, [self.predictions, self.outcomes, self.labeled, self.control]"
                    ".filter(u, u == t).size() == 1)",
                    "kafka.topics must name four different topics",
                )
            ]
        }
    )

    predictions: str = Field(pattern=TOPIC_NAME, max_length=249)
    outcomes: str = Field(pattern=TOPIC_NAME, max_length=249)
    labeled: str = Field(pattern=TOPIC_NAME, max_length=249)
    control: str = Field(
        pattern=TOPIC_NAME, max_length=249, description="Drift and rollout events."
    )
    dead_letter: str | None = Field(
        default=None,
        pattern=TOPIC_NAME,
        max_length=249,
        description="Where bad messages go, with the reason in a header.",
    )

    @model_validator(mode="after")
    def _distinct(self) -> TopicsSpec:
        names = [self.predictions, self.outcomes, self.labeled, self.control]
        if len(set(names)) != len(names):
            raise ValueError("kafka.topics must name four different topics")
        return self

    @classmethod
    def for_model(cls, name: str) -> TopicsSpec:
        """The default topic set of a model: `<name>.predictions` and so on."""
        return cls(
            predictions=f"{name}.predictions",
            outcomes=f"{name}.outcomes",
            labeled=f"{name}.labeled",
            control=f"{name}.control",
            dead_letter=f"{name}.dead-letter",
        )


class KafkaSpec(SpecModel):
    bootstrap_servers: str = Field(min_length=1, description="host:port[,host:port...]")
    credentials_secret: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        description="Secret with SASL/TLS settings (keys: username, password, mechanism, ca.crt).",
    )
    topics: TopicsSpec | None = Field(
        default=None, description="Topic names; default `<model name>.<kind>`."
    )
    partitions: int = Field(default=3, ge=1, le=1000, description="Partitions per created topic.")


class RedisSpec(SpecModel):
    url: str = Field(pattern=r"^rediss?://", description="redis://host:port/db")
    credentials_secret: str | None = Field(
        default=None, pattern=DNS_LABEL, description="Secret with key 'password' (and 'username')."
    )


class FeastStoreSpec(SpecModel):
    """Where Feast's online store is, for the features with `source.feast`."""

    redis: RedisSpec = Field(
        description="Feast's Redis online store: its feature_store.yaml connection_string "
        "(host:port,db=N) as redis://host:port/N; credentialsSecret as for spec.redis "
        "(keys 'password', 'username'). Only inference reads it."
    )


# --- inference -------------------------------------------------------------------------


class ReplicasSpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "replicas.min must not exceed replicas.max",
                )
            ]
        }
    )

    min: int = Field(default=1, ge=0, le=1000)
    max: int = Field(default=4, ge=1, le=1000)

    @model_validator(mode="after")
    def _ordered(self) -> ReplicasSpec:
        if self.min > self.max:
            raise invalid(
                "min", f"replicas.min ({self.min}) must not exceed replicas.max ({self.max})"
            )
        return self


class ResourcesSpec(SpecModel):
    cpu: str = Field(default="1", pattern=QUANTITY, description="CPU request and limit.")
    memory: str = Field(default="1Gi", pattern=QUANTITY, description="Memory request and limit.")
    gpu: int = Field(default=0, ge=0, le=16, description="nvidia.com/gpu per pod.")


class AutoscalingSpec(SpecModel):
    metric: Literal["cpu", "gpu", "inflight", "rps"] = Field(default="cpu")
    target: float = Field(
        default=70,
        gt=0,
        description="Target per pod: percent for cpu/gpu, requests for inflight/rps.",
    )
    scale_down_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="How long the load must stay low before pods are given back (the "
        "HPA's scale-down stabilization window); a model's load is costly.",
    )


class BatchingSpec(SpecModel):
    enabled: bool = True
    max_batch_size: int = Field(default=64, ge=1, le=8192)
    max_delay_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="Longest a request waits for companions once the model is free.",
    )
    max_queue: int = Field(
        default=2048, ge=1, description="Queued rows beyond which requests are shed (429)."
    )


class CacheSpec(SpecModel):
    enabled: bool = False
    ttl_seconds: int = Field(default=300, ge=1, le=7 * 86400)


class GrpcSpec(SpecModel):
    """The Open Inference Protocol's gRPC service (inference.GRPCInferenceService) beside
    REST: the same routes, batching, cache and prediction log, on a port of its own."""

    enabled: bool = False
    port: int = Field(
        default=8081, ge=1, le=65535, description="gRPC port of the pods and the Service."
    )


class TolerationSpec(SpecModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class NodePoolSpec(SpecModel):
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[TolerationSpec] = Field(default_factory=list)
    karpenter: bool = Field(
        default=False, description="Create a Karpenter NodePool for these pods (GPU pools)."
    )


class QuantizationSpec(SpecModel):
    """Serve an int8 graph beside the fp32 one (docs/inference.md, "int8 serving").

    The trainer exports `model/model.int8.onnx` (ONNX Runtime's dynamic int8 of the
    weights) and keeps it only when its score on the held-out and anchor rows is
    within `maxAccuracyDrop` of the fp32 graph's; inference serves it when present,
    the stable and candidate versions always at one precision."""

    mode: Literal["int8"] = Field(default="int8", description="The precision to serve.")
    max_accuracy_drop: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Largest drop of the int8 graph's score (accuracy, or R^2) below the "
        "fp32 graph's on the held-out and anchor rows; beyond it no int8 graph is kept.",
    )


class InferenceSpec(SpecModel):
    replicas: ReplicasSpec = Field(default_factory=ReplicasSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    grpc: GrpcSpec = Field(default_factory=GrpcSpec)
    node_pool: NodePoolSpec = Field(default_factory=NodePoolSpec)
    baseline: bool = Field(
        default=True,
        description="Also score the frozen bootstrap version off the critical path, "
        "so live quality can be compared with a model that never learns.",
    )
    quantization: QuantizationSpec | None = Field(
        default=None, description="Unset: fp32 only. Set: serve an int8 graph where accurate."
    )


# --- training --------------------------------------------------------------------------


class ReplaySpec(SpecModel):
    capacity: int = Field(default=50_000, ge=0, le=10_000_000)
    fraction: float = Field(
        default=0.5, ge=0, lt=1, description="Share of each batch drawn from the buffer."
    )


class EwcSpec(SpecModel):
    lambda_: float = Field(
        default=50.0, ge=0, alias="lambda", description="EWC penalty strength; 0 turns it off."
    )


class PublishSpec(SpecModel):
    every_samples: int = Field(default=5000, ge=1)
    every_seconds: float = Field(default=300, gt=0)


class GateSpec(SpecModel):
    holdout_fraction: float = Field(default=0.1, gt=0, le=0.5)
    max_regression: float = Field(
        default=0.01, ge=0, le=1, description="Allowed drop on the concept epoch's anchor set."
    )


CRON = r"^\S+( \S+){4}$"


class ScheduleSpec(SpecModel):
    """Scheduled mode: when a retrain runs and which history it reads."""

    cron: str | None = Field(
        default=None,
        pattern=CRON,
        description="Five-field cron (minute hour day month weekday), UTC; "
        "else derived from scheduleSeconds.",
    )
    history_seconds: float = Field(
        default=7 * 86_400,
        gt=0,
        description="A retrain reads the labeled topic from now minus this to its end.",
    )
    max_rows: int = Field(
        default=200_000, ge=100, le=10_000_000, description="Rows kept (the newest)."
    )

    @model_validator(mode="after")
    def _cron(self) -> ScheduleSpec:
        if self.cron is not None:
            try:
                parse(self.cron)
            except CronError as exc:
                raise invalid("cron", str(exc)) from None
        return self


class ExplorationSpec(SpecModel):
    """A feedback-loop guard: an `epsilon` share of entities answered by an exploration
    policy, flagged in the log; the trainer weighs examples by inverse propensity
    (`driftline.api.exploration`). For classification, where the outcome you observe
    depends on the decision you served (recommendations, credit)."""

    epsilon: float = Field(
        default=0.05, gt=0, le=0.5, description="Share of entities the policy answers."
    )
    policy: Literal["uniform", "baseline"] = Field(
        default="uniform",
        description="uniform: a random class, fixed per entity; baseline: the frozen "
        "baseline version's answer (no exploration where it agrees with the model).",
    )
    sticky_by: Literal["entity", "request"] = Field(
        default="entity",
        description="The unit of exploration: entity (one decision per entity id, a "
        "request without one by its request id), or request (each request drawn apart).",
    )
    max_weight: float = Field(
        default=20.0, ge=1, le=1000, description="Inverse-propensity weights are clipped here."
    )
    salt: str = Field(
        default="", max_length=64, description="Change it to draw other entities to explore."
    )


WORKERS_MAX = 16
WORKERS_DOC = (
    "Online mode: trainer processes in one torch.distributed group; rank r reads the "
    "labeled partitions p with p % workers == r, gradients are all-reduced, rank 0 publishes."
)


class TrainingSpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.mode) || self.mode != 'scheduled' || has(self.scheduleSeconds) "
                    "|| (has(self.schedule) && has(self.schedule.cron))",
                    "training.mode 'scheduled' needs training.scheduleSeconds "
                    "or training.schedule.cron",
                )
            ]
        }
    )

    mode: Literal["online", "scheduled", "off"] = "online"
    batch_size: int = Field(default=256, ge=1, le=65_536)
    replay: ReplaySpec = Field(default_factory=ReplaySpec)
    ewc: EwcSpec = Field(default_factory=EwcSpec)
    publish: PublishSpec = Field(default_factory=PublishSpec)
    gate: GateSpec = Field(default_factory=GateSpec)
    schedule_seconds: float | None = Field(
        default=None, gt=0, description="Scheduled mode: full retrain period."
    )
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    exploration: ExplorationSpec | None = Field(default=None, description="Unset: off.")
    workers: int = Field(default=1, ge=1, le=WORKERS_MAX, description=WORKERS_DOC)

    @model_validator(mode="after")
    def _schedule(self) -> TrainingSpec:
        if self.mode == "scheduled" and self.schedule_seconds is None and not self.schedule.cron:
            raise invalid(
                "scheduleSeconds",
                "training.mode 'scheduled' needs training.scheduleSeconds "
                "or training.schedule.cron",
            )
        return self

    def retrain_cron(self) -> str:
        """Scheduled mode's cron: `schedule.cron`, else `scheduleSeconds` as the nearest cron."""
        return self.schedule.cron or from_seconds(self.schedule_seconds or 86_400)


# --- drift -----------------------------------------------------------------------------


DriftAction = Literal["alert", "retrain", "rollback"]


def _default_on_drift() -> list[DriftAction]:
    return ["alert", "retrain"]


class DataQualitySpec(SpecModel):
    """`drift.dataQuality`: the alarm on a numeric feature's live mean."""

    window: int = Field(
        default=500, ge=10, le=1_000_000, description="Live values per feature in one mean."
    )
    sigmas: float = Field(
        default=2.0,
        gt=0,
        le=10,
        description="A `data-quality` event when the window's mean is further than this many "
        "standard errors (baseline std / sqrt(window)) from the training baseline's mean.",
    )


class ConceptSpec(SpecModel):
    """`drift.concept`: the detector of a rise in the serving model's error rate."""

    detector: Literal["fet", "cusum"] = Field(
        default="fet",
        description="Classification errors: Fisher's exact test over sliding windows, or "
        "Bernoulli CUSUMs (sequential: evidence adds up sample by sample; scipy backend only). "
        "Regression losses keep the windowed Cramer-von Mises test.",
    )


CUSUM_NEEDS_SCIPY = "drift.concept.detector 'cusum' needs drift.backend 'scipy'"
CUSUM_RULE = cel(
    "!has(self.concept) || !has(self.concept.detector) || self.concept.detector != 'cusum' "
    "|| !has(self.backend) || self.backend != 'alibi'",
    CUSUM_NEEDS_SCIPY,
)


class DriftSpec(SpecModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [CUSUM_RULE]})

    detector: Literal["ks", "mmd-online", "cvm-online"] = Field(
        default="ks",
        description="Input detector: windowed KS (numeric) with Chi-squared for categorical "
        "features, or an online detector.",
    )
    backend: Literal["alibi", "scipy"] = Field(
        default="scipy",
        description="The scipy backend (numpy and scipy only), or alibi-detect (BSL 1.1 "
        "from 0.12, torch; the services image).",
    )
    window: int = Field(default=1000, ge=10, le=1_000_000)
    p_value: float = Field(default=0.01, gt=0, lt=0.5)
    expected_run_time: int = Field(
        default=2000, ge=10, description="Online detectors: mean samples between false alarms."
    )
    cooldown_seconds: float = Field(
        default=300, ge=0, description="One shift makes one event: repeats wait this long."
    )
    on_drift: list[DriftAction] = Field(
        default_factory=_default_on_drift,
        max_length=3,
        description="What a drift event leads to. `alert`: a Warning Event `DriftDetected` "
        "on the DynamicModel and its `DriftDetected` condition (a `drift alert` line in "
        "`driftline status` locally), the event marked `alerting` and counted in "
        "driftline_drift_alerts_total (the chart's alert rule); `status.drift` mirrors "
        "the monitor either way. "
        "`retrain`: the trainer acts: a concept drift opens a new concept epoch, other "
        "drift raises the learning rate for a while and publishes sooner; without it the "
        "trainer never opens a concept epoch, neither on an event nor from its own error "
        "rate, and learns on as before. `rollback`: drift during a canary aborts the rollout.",
    )
    data_quality: DataQualitySpec | None = Field(
        default=None, description="Alarm on numeric features' live means (off when absent)."
    )
    concept: ConceptSpec = Field(default_factory=ConceptSpec)

    @model_validator(mode="after")
    def _cusum_on_scipy(self) -> DriftSpec:
        if self.concept.detector == "cusum" and self.backend == "alibi":
            raise invalid("concept", CUSUM_NEEDS_SCIPY)
        return self


class FeedbackSpec(SpecModel):
    join_window_seconds: float = Field(default=86_400, gt=0, le=30 * 86_400)


# --- rollout ---------------------------------------------------------------------------


class ShadowSpec(SpecModel):
    min_samples: int = Field(default=2000, ge=1)
    max_disagreement: float = Field(default=0.05, ge=0, le=1)


class CanarySpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.steps) || "
                    "(self.steps.isSorted() && self.steps[size(self.steps) - 1] == 100)",
                    "rollout.canary.steps must rise and end at 100, e.g. [5, 20, 50, 100]",
                )
            ]
        }
    )

    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [5, 20, 50, 100],
        min_length=1,
        max_length=20,
        description="Percent of traffic on the candidate at each step.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    step_seconds: float = Field(default=300, gt=0, description="How long each step is held.")

    @model_validator(mode="after")
    def _rising_to_100(self) -> CanarySpec:
        rising = all(a < b for a, b in zip(self.steps, self.steps[1:], strict=False))
        if not rising or self.steps[-1] != 100:
            raise invalid(
                "steps",
                f"rollout.canary.steps {self.steps} must rise and end at 100, "
                "e.g. [5, 20, 50, 100]",
            )
        return self


class EstimateGateSpec(SpecModel):
    """Early evidence before labels: the accuracy estimated from confidence (drift monitor)."""

    max_drop: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="While the candidate has fewer than minLabeled labels, the most its "
        "estimated accuracy may trail the stable version's; more aborts the rollout. "
        "The estimate only ever aborts or holds, never passes a stage.",
    )
    min_predictions: int = Field(
        default=200, ge=1, description="Predictions each version's estimate must be made of."
    )
    max_age_seconds: float = Field(
        default=300, gt=0, description="An older estimate (or none) is no evidence: no action."
    )


class AnalysisSpec(SpecModel):
    min_labeled: int = Field(default=500, ge=1, description="Fewer is inconclusive, never success.")
    max_accuracy_drop: float = Field(default=0.01, ge=0, le=1)
    max_p99_ms: float = Field(default=50, gt=0)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_inconclusive_seconds: float = Field(
        default=1800, gt=0, description="Inconclusive this long aborts the rollout."
    )
    max_segment_drop: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Worst-segment gate (needs monitoring.segments): the most the "
        "candidate may lose against the stable version on any one segment value, as "
        "maxAccuracyDrop measures it (accuracy points, or MAE relative to the stable's). "
        "A candidate better overall but worse than this on one segment is not promoted. "
        "Unset: segments are not judged.",
    )
    min_segment_labeled: int = Field(
        default=200,
        ge=1,
        description="Labeled samples a segment value needs (candidate and stable) before "
        "the worst-segment gate judges it; fewer is inconclusive, never success.",
    )
    estimate: EstimateGateSpec | None = Field(
        default=None, description="Classification only. Unset: the estimate is not used."
    )


class GuardSpec(SpecModel):
    """After a promotion, the previous champion is kept and compared with the new one."""

    window_seconds: float = Field(
        gt=0,
        le=7 * 86400,
        description="How long after a promotion the previous champion stays loaded and "
        "is scored in shadow beside the new champion. A newer candidate waits until the "
        "window ends.",
    )
    max_drop_vs_previous: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="The most the new champion may trail the previous one on live labels, "
        "as maxAccuracyDrop measures it (accuracy points, or MAE relative to the "
        "previous one's); more rolls back to the previous champion.",
    )
    max_drop_vs_baseline: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="The same limit against the frozen baseline version (needs "
        "inference.baseline); unset: the baseline is not judged.",
    )
    min_labeled: int = Field(
        default=500,
        ge=1,
        description="Labeled samples each compared version needs in the window; fewer: "
        "no action, never a rollback.",
    )


class RolloutSpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.stickyKey) || !(self.stickyKey in "
                    + str(list(RESERVED_REQUEST_FIELDS))
                    + ")",
                    "rollout.stickyKey names a request field that means something else; "
                    "use entity_id or a field of your own, e.g. user_id",
                )
            ]
        }
    )

    strategy: Literal["shadow-then-canary", "canary", "shadow", "manual"] = "shadow-then-canary"
    sticky_key: str = Field(
        default="entity_id",
        pattern=FEATURE_NAME,
        description="The request field whose value is the canary's consistent-hash key: "
        "one value always sees one version. A top-level field of the plain JSON route "
        '(`{"user_id": "u-17", "features": {...}}`), a request parameter of the Open '
        "Inference Protocol route (`parameters.user_id`); one value for all rows or one "
        "per row. A request without it is served by the stable version. Not a feature "
        "name: the key chooses a version, it is no model input.",
    )
    shadow: ShadowSpec = Field(default_factory=ShadowSpec)
    canary: CanarySpec = Field(default_factory=CanarySpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    guard: GuardSpec | None = Field(default=None, description="Unset: no guard after promotion.")

    @model_validator(mode="after")
    def _sticky_key_is_free(self) -> RolloutSpec:
        if self.sticky_key in RESERVED_REQUEST_FIELDS:
            raise invalid(
                "stickyKey",
                "rollout.stickyKey names a request field that means something else; "
                "use entity_id or a field of your own, e.g. user_id",
            )
        return self


# --- monitoring ------------------------------------------------------------------------


class SegmentSpec(SpecModel):
    """One way to cut the traffic into groups whose quality is kept apart."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.bins) || !has(self.values)",
                    "a segment has bins (numeric feature) or values (categorical), not both",
                ),
                cel(
                    "!has(self.bins) || (self.bins.isSorted() && "
                    "self.bins.all(b, self.bins.filter(c, c == b).size() == 1))",
                    "segment bins must rise, e.g. [18, 30, 50]",
                ),
            ]
        }
    )

    name: str = Field(
        pattern=FEATURE_NAME,
        max_length=128,
        description="The feature (as logged with each prediction) whose value defines "
        "the groups; also the segment's name in metrics and verdicts.",
    )
    bins: list[float] | None = Field(
        default=None,
        min_length=1,
        max_length=31,
        description="Numeric features: rising edges; a value v falls in [a, b) between two "
        "edges, below the first ('<a') or from the last on ('>=b').",
    )
    values: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Categorical features: the values kept apart; any other value counts "
        "as 'other'. Without it, the first maxValues values seen are kept apart.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    max_values: int = Field(
        default=20,
        ge=1,
        le=100,
        description="Categorical features without values: the most distinct values kept "
        "apart (first seen, across all joiner replicas); later ones count as 'other'.",
    )
    protected: bool = Field(
        default=False,
        description="A protected attribute: fairness figures (positive-rate and "
        "true-positive-rate gaps between its values) are exported and alerted on.",
    )

    @model_validator(mode="after")
    def _bins_or_values(self) -> SegmentSpec:
        if self.bins is not None and self.values is not None:
            raise invalid(
                "values",
                "a segment has bins (numeric feature) or values (categorical), not both",
            )
        if self.bins is not None and any(a >= b for a, b in pairwise(self.bins)):
            raise invalid("bins", f"segment bins {self.bins} must rise, e.g. [18, 30, 50]")
        return self


class FairnessSpec(SpecModel):
    max_parity_gap: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Alert when the positive-prediction rates of two values of a protected "
        "segment differ by more than this (demographic parity difference).",
    )
    max_opportunity_gap: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Alert when the true-positive rates of two values of a protected "
        "segment differ by more than this (equal-opportunity difference).",
    )
    min_samples: int = Field(
        default=100,
        ge=1,
        description="A value counts in a gap once it has this many labeled predictions "
        "(positive rate) or positive labels (true-positive rate) in the window.",
    )
    window_seconds: float = Field(
        default=900, ge=60, le=6 * 3600, description="The gaps are measured over this window."
    )


class CalibrationSpec(SpecModel):
    max_error: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Alert when the expected calibration error (10 confidence bins) of "
        "the labeled predictions is above this: the model's confidence no longer says "
        "how often it is right.",
    )
    min_samples: int = Field(
        default=500,
        ge=10,
        description="The error is measured once the window holds this many labeled "
        "predictions with class scores.",
    )
    window_seconds: float = Field(
        default=3600, ge=60, le=7 * 86_400, description="The error is measured over this window."
    )


class MonitoringSpec(SpecModel):
    segments: list[SegmentSpec] = Field(
        default_factory=list,
        max_length=16,
        description="Groups whose live quality is kept apart (joiner) and may gate a "
        "rollout (rollout.analysis.maxSegmentDrop).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    fairness: FairnessSpec = Field(
        default_factory=FairnessSpec,
        description="Binary classification: gaps between the values of protected segments.",
    )
    calibration: CalibrationSpec = Field(
        default_factory=CalibrationSpec,
        description="Classification: how well the model's confidence matches its accuracy.",
    )


# --- scaling and cost ------------------------------------------------------------------


class IdleSpec(SpecModel):
    after_seconds: int = Field(
        default=600,
        ge=30,
        le=7 * 86_400,
        description="A part whose input topics have had no lag for this long scales to "
        "zero (KEDA's cooldownPeriod); the first record back scales it to one.",
    )


class ScalingSpec(SpecModel):
    idle: IdleSpec | None = Field(
        default=None,
        description="Scale idle parts to zero. Joiner, drift monitor and trainer: through "
        "KEDA ScaledObjects on their consumer groups' lag (needs KEDA). Inference: only "
        "with KEDA's HTTP add-on, whose interceptor holds requests while a pod starts; "
        "without it inference keeps replicas.min and the Ready condition says so. "
        "Unset: every part keeps at least one replica.",
    )


class CostSpec(SpecModel):
    team: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        max_length=63,
        description="Who pays: the `driftline.io/team` label on every pod (Kubecost and "
        "OpenCost allocate by it). Unset: no team label.",
    )
    max_gpus: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="The most GPUs this model's inference may hold at once: caps the "
        "autoscaler's maxReplicas (maxGpus / gpu per pod) and the Karpenter NodePool's "
        "limits. Must allow replicas.min pods.",
    )
    spot_trainer: bool = Field(
        default=False,
        description="Run the trainer on spot capacity (Karpenter's capacity-type spot, "
        "tolerating the spot taint). A reclaim loses nothing: the trainer resumes from "
        "its checkpoint and committed offsets.",
    )
    monthly_budget: float | None = Field(
        default=None,
        gt=0,
        description="Estimated spend per 30 days (the chart's price table x requests) "
        "above which the DriftlineModelOverBudget alert fires.",
    )


# --- the whole spec --------------------------------------------------------------------


class DynamicModelSpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.cost) || !has(self.cost.maxGpus) || !has(self.inference) || "
                    "!has(self.inference.resources) || !has(self.inference.resources.gpu) || "
                    "(has(self.inference.replicas) && has(self.inference.replicas.min) ? "
                    "self.inference.replicas.min : 1) * self.inference.resources.gpu "
                    "<= self.cost.maxGpus",
                    "cost.maxGpus is below inference.replicas.min x resources.gpu; "
                    "raise the cap or lower the minimum",
                )
            ]
        }
    )

    model: ModelSpec
    features: list[FeatureSpec] = Field(
        min_length=1,
        max_length=512,
        description="The feature contract, shared by serving and training.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    kafka: KafkaSpec
    redis: RedisSpec
    feast: FeastStoreSpec | None = Field(
        default=None,
        description="Feast's online store, when it is not the model's Redis (spec.redis): "
        "where features with source.feast are read (docs/features-feast.md).",
    )
    inference: InferenceSpec = Field(default_factory=InferenceSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    feedback: FeedbackSpec = Field(default_factory=FeedbackSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    cost: CostSpec = Field(default_factory=CostSpec)

    @model_validator(mode="after")
    def _unique_features(self) -> DynamicModelSpec:
        seen: set[str] = set()
        for feature in self.features:
            if feature.name in seen:
                raise invalid("features", f"{feature.name!r} is listed twice; names must be unique")
            seen.add(feature.name)
        if self.rollout.sticky_key in seen:
            # The sticky key is a request attribute (entity id), not a model input.
            raise invalid(
                "rollout.stickyKey",
                f"{self.rollout.sticky_key!r} is also a feature name; use the request's entity key",
            )
        self._segments_match_features()
        check_feast_views(self.features)
        self._gpu_cap_allows_minimum()
        self._aggregates_of_request_features()
        if self.training.exploration is not None and self.model.task != "classification":
            raise invalid("training.exploration", "exploration serves classes: classification only")
        return self

    def _aggregates_of_request_features(self) -> None:
        sourced = {f.name for f in self.features if f.source is not None}
        numeric = {f.name for f in self.features if f.type == "numeric"} - sourced
        for i, feature in enumerate(self.features):
            of = (
                feature.source.aggregate.of if feature.source and feature.source.aggregate else None
            )
            if of is not None and of != OUTCOME and of not in numeric:
                raise invalid(
                    f"features[{i}].source.aggregate.of",
                    f"{of!r} is no numeric feature the client sends; aggregate one of "
                    f"{sorted(numeric)} or 'outcome'",
                )

    def _gpu_cap_allows_minimum(self) -> None:
        cap, gpu = self.cost.max_gpus, self.inference.resources.gpu
        if cap is not None and gpu and self.inference.replicas.min * gpu > cap:
            raise invalid(
                "cost.maxGpus",
                f"cost.maxGpus ({cap}) is below inference.replicas.min x resources.gpu "
                f"({self.inference.replicas.min} x {gpu}); raise the cap or lower the minimum",
            )

    def _segments_match_features(self) -> None:
        types = {f.name: f.type for f in self.features}
        names: set[str] = set()
        for segment in self.monitoring.segments:
            where = "monitoring.segments"
            if segment.name in names:
                raise invalid(where, f"segment {segment.name!r} is listed twice")
            names.add(segment.name)
            kind = types.get(segment.name)
            if kind is None:
                raise invalid(
                    where,
                    f"segment {segment.name!r} names no feature; segments group by a "
                    f"feature logged with each prediction ({sorted(types)})",
                )
            if kind == "numeric" and segment.bins is None:
                raise invalid(
                    where, f"segment {segment.name!r} is numeric: give its bins, e.g. [18, 30, 50]"
                )
            if kind == "categorical" and segment.bins is not None:
                raise invalid(
                    where, f"segment {segment.name!r} is categorical: bins apply to numeric ones"
                )

    @property
    def input_width(self) -> int:
        return sum(f.width for f in self.features)


class ObjectMeta(BaseModel):
    """The part of Kubernetes metadata Driftline reads."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(pattern=DNS_LABEL, max_length=63)
    namespace: str = "default"
    generation: int | None = None
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


GROUP = "driftline.io"
VERSION = "v1alpha1"
KIND = "DynamicModel"
PLURAL = "dynamicmodels"
API_VERSION = f"{GROUP}/{VERSION}"


def split_servers(servers: str) -> list[str]:
    """`a:1, b:2` -> ['a:1', 'b:2']."""
    return [s for s in re.split(r"\s*,\s*", servers.strip()) if s]
