"""The model artifact contract: what the trainer registers and what serving loads.

A model version in MLflow (registered model name = `spec.model.registry.name`):

- artifact `MODEL_ARTIFACT`: an ONNX graph with the feature preprocessing inside it
  (standardisation, categorical hashing/vocabulary), so serving applies exactly the
  transform training used. Its inputs and outputs are named below.
- artifact `REFERENCE_ARTIFACT`: a sample of the training inputs and outputs, the
  drift monitor's reference distribution (an `.npz` with one array per feature,
  plus `__output__`).
- artifact `SIGNATURE_ARTIFACT`, when a signing key is configured: the model's
  OpenSSF model signing signature (a Sigstore bundle signed with a key).
- artifact `INT8_ARTIFACT`, with `spec.inference.quantization`: the same graph with
  int8 weights, kept only within the accuracy tolerance (`TAG_INT8` says why or why
  not); its sha256 is `TAG_INT8_SHA256`, its signature `INT8_SIGNATURE_ARTIFACT`.
- tags `TAG_*`: the artifact's sha256 (checked before loading), lineage, metrics.
- aliases: `champion` (stable, serving), `candidate` (under rollout),
  `baseline` (the frozen bootstrap version, scored beside the learner).

A version imported from elsewhere (`driftline.origin: imported`) follows the same
graph contract; it has no reference when no sample was given, and no training state
when the sample had no labels (`TAG_REFERENCE`, `TAG_TRAINING_STATE` say so).

No pickle anywhere: ONNX and npz (loaded with `allow_pickle=False`) only.
"""

from __future__ import annotations

from typing import Final

ALIAS_CHAMPION: Final = "champion"
ALIAS_CANDIDATE: Final = "candidate"
ALIAS_BASELINE: Final = "baseline"

MODEL_ARTIFACT: Final = "model/model.onnx"
SIGNATURE_ARTIFACT: Final = "model/model.onnx.sig"  # OpenSSF model signing, when signed
# `spec.inference.quantization`: the int8 graph, same inputs and outputs, its own sha256 tag
INT8_ARTIFACT: Final = "model/model.int8.onnx"
INT8_SIGNATURE_ARTIFACT: Final = "model/model.int8.onnx.sig"
REFERENCE_ARTIFACT: Final = "reference/reference.npz"
REFERENCE_OUTPUT_KEY: Final = "__output__"

# ONNX graph inputs: numeric features in contract order as one float32 [N, k] tensor,
# categorical features in contract order as one string [N, m] tensor. An input is
# absent when the contract has no feature of that type.
INPUT_NUMERIC: Final = "numeric"
INPUT_CATEGORICAL: Final = "categorical"

# ONNX graph outputs.
OUTPUT_LABEL: Final = "label"  # classification: int64 [N], argmax of probabilities
OUTPUT_PROBABILITIES: Final = "probabilities"  # classification: float32 [N, classes]
OUTPUT_VALUE: Final = "value"  # regression: float32 [N]

TAG_SHA256: Final = "driftline.sha256"
TAG_PARENT_VERSION: Final = "driftline.parent_version"
TAG_OFFSETS: Final = "driftline.offsets"  # JSON {"topic:partition": [first, last]}
TAG_EXAMPLES_SEEN: Final = "driftline.examples_seen"
TAG_CONCEPT_EPOCH: Final = "driftline.concept_epoch"
TAG_GATE: Final = "driftline.gate"  # JSON: why the version was published
TAG_SPEC_HASH: Final = "driftline.feature_contract"  # hash of the feature contract
TAG_INT8_SHA256: Final = "driftline.int8_sha256"  # present iff the version has an int8 graph
TAG_INT8: Final = "driftline.int8"  # JSON: the int8 decision, with both graphs' scores

# An imported version (`python -m driftline.trainer import`): a model made elsewhere.
TAG_ORIGIN: Final = "driftline.origin"  # "trained" when absent, or "imported"
TAG_IMPORT_SOURCE: Final = "driftline.import_source"  # JSON: format, file name, sha256
TAG_REFERENCE: Final = "driftline.reference"  # where the drift reference came from
TAG_TRAINING_STATE: Final = "driftline.training_state"  # "none": no training/state.npz
ORIGIN_IMPORTED: Final = "imported"
