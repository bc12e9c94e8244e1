"""The original model of an import: its ONNX graph, and a function with its own answers.

Every format (`model_import.FORMATS`) is loaded with its own safe loader and converted
with the converter its project maintains; what comes out is a `Source`, which
`model_import` wraps to the artifact contract and checks for parity against
`Source.answers` (the native model on the same rows), or against the original graph
when the model came as ONNX.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray

from driftline.common.features import FeatureLayout

Answers = Callable[[NDArray[np.float32], NDArray[Any]], NDArray[Any]]
"""(numeric [n, k] float32, categorical [n, m] text) -> probabilities [n, C] or values [n]."""


class ModelImportError(ValueError):
    """A model that cannot be imported as it is; the message says why and what to do."""


@dataclass(frozen=True)
class Source:
    """The original model: its ONNX graph and a function giving its own answers."""

    fmt: str
    graph: onnx.ModelProto
    answers: Answers | None  # None: the original graph itself answers
    columns: tuple[str, ...] | None = None
    """The features of a single [N, k] input, in the model's column order, when the model
    names them (a booster trained on a DataFrame); None: the spec's numeric features."""


def refuse_pickle(path: Path) -> ModelImportError:
    return ModelImportError(
        f"{path.name} is a pickle, and loading a pickle runs any code it holds; it is not "
        "loaded. Save the estimator with skops (`skops.io.dump(model, 'model.skops')`) and "
        "import that, or convert it to ONNX (skl2onnx) and import the .onnx file"
    )


def onnx_source(path: Path) -> Source:
    try:
        graph = onnx.load_model(str(path))
    except Exception as exc:  # protobuf's decode errors
        raise ModelImportError(f"{path}: not an ONNX model ({exc})") from exc
    return Source("onnx", graph, None)


def named_columns(
    names: list[str] | None, width: int, layout: FeatureLayout, what: str
) -> tuple[str, ...] | None:
    """The spec features a model's columns are, by the names it was trained with.

    Without names (or with a library's default ones: `f0..`, `Column_0..`) the columns
    are the spec's numeric features in order, and their count must match.
    """
    defaults = (
        [f"f{i}" for i in range(width)],
        [f"Column_{i}" for i in range(width)],
    )
    if names is None or list(names) in defaults:
        if width != len(layout.numeric):
            raise ModelImportError(
                f"the {what}'s input has {width} columns; the spec has {len(layout.numeric)} "
                f"numeric features: {', '.join(layout.numeric_names) or '-'} (train it on a "
                "DataFrame whose columns are named after the features to map them by name)"
            )
        return None
    text = [n for n in names if n in layout.categorical_names]
    if text:
        raise ModelImportError(
            f"the {what} takes the column(s) {text} as numbers, but the spec has them as "
            "categorical features (text); encode them inside an ONNX graph, or make them "
            "numeric features of the spec"
        )
    unknown = [n for n in names if n not in layout.numeric_names]
    if unknown:
        raise ModelImportError(
            f"the {what}'s input columns {unknown} are not features of the spec (numeric: "
            f"{', '.join(layout.numeric_names) or '-'})"
        )
    return tuple(names)


def as_probabilities(scores: NDArray[Any], classes: int) -> NDArray[np.float64]:
    """[n] probabilities of class 1 (a binary booster's answer) as [n, 2]; else as is."""
    p = np.asarray(scores, np.float64)
    if classes == 2 and p.ndim == 1:
        return np.stack([1.0 - p, p], axis=1)
    return p


def local_file(uri: str, directory: Path, tracking_uri: str) -> Path:
    """The model or sample at `uri` as a local file: a path or `file://` as it is; any
    other scheme MLflow's artifact stores read (`s3://`, `gs://`, `runs:/`,
    `mlflow-artifacts:/`...) downloaded into `directory` with `download_artifacts`."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and uri[1:3] == ":\\"):
        return Path(unquote(parsed.path) if parsed.scheme == "file" else uri)
    try:
        import mlflow.artifacts

        where = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(directory), tracking_uri=tracking_uri
        )
    except Exception as exc:  # MLflow's and the store client's errors (boto3 missing...)
        raise ModelImportError(f"cannot fetch {uri}: {exc}") from exc
    return Path(where)
