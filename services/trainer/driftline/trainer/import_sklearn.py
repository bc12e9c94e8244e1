"""scikit-learn estimators saved with skops, converted to ONNX with skl2onnx.

skops loads only the types it trusts by default, and those the user names with
`--trust`; a pickle is never read (`import_sources.refuse_pickle`). An estimator fit
on a pandas DataFrame gets one input per column (each must be a feature of the
spec); one fit on an array takes the spec's numeric features in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.api import artifacts
from driftline.common.features import FeatureLayout
from driftline.trainer import export
from driftline.trainer.import_sources import ModelImportError, Source


def load_skops(path: Path, trusted: list[str]) -> Any:
    import skops.io as sio

    untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in trusted]
    if untrusted:
        raise ModelImportError(
            f"{path.name} holds types skops does not trust by default: {untrusted}; check "
            "them, and pass --trust TYPE for each one you trust"
        )
    return sio.load(path, trusted=trusted or None)


def sklearn_source(estimator: Any, layout: FeatureLayout, task: str, fmt: str) -> Source:
    """Convert a fitted scikit-learn estimator with skl2onnx; answers with the estimator."""
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError as exc:
        raise ModelImportError(
            "importing a scikit-learn model needs skl2onnx: pip install 'driftline[import]'"
        ) from exc
    names = getattr(estimator, "feature_names_in_", None)
    types: list[tuple[str, Any]]
    if names is not None:
        known = {*layout.numeric_names, *layout.categorical_names}
        unknown = [str(n) for n in names if n not in known]
        if unknown:
            raise ModelImportError(
                f"the estimator was fit on columns {unknown}, which are not features of the "
                f"spec (numeric: {', '.join(layout.numeric_names) or '-'}; categorical: "
                f"{', '.join(layout.categorical_names) or '-'})"
            )
        types = [
            (str(n), FloatTensorType([None, 1]))
            if n in layout.numeric_names
            else (str(n), StringTensorType([None, 1]))
            for n in names
        ]
    else:
        width = int(getattr(estimator, "n_features_in_", len(layout.numeric)))
        if layout.categorical:
            raise ModelImportError(
                "the estimator was fit on an array, without column names, but the spec has "
                f"categorical features ({', '.join(layout.categorical_names)}): fit it on a "
                "pandas DataFrame whose columns are named after the features"
            )
        if width != len(layout.numeric):
            raise ModelImportError(
                f"the estimator's input has {width} columns; the spec has "
                f"{len(layout.numeric)} numeric features: {', '.join(layout.numeric_names)}"
            )
        types = [(artifacts.INPUT_NUMERIC, FloatTensorType([None, width]))]
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if task == "classification":
        classes = list(getattr(final, "classes_", []))
        if classes != list(range(len(classes))):
            raise ModelImportError(
                f"the estimator's classes are {classes}; Driftline's labels are class indices "
                "0..C-1 in the order of the probabilities: refit it with labels 0..C-1"
            )
    options = {id(final): {"zipmap": False}} if task == "classification" else None
    try:
        graph = convert_sklearn(
            estimator,
            initial_types=types,
            options=options,
            target_opset={"": export.OPSET, "ai.onnx.ml": 3},
        )
    except Exception as exc:  # skl2onnx raises many types for what it cannot convert
        raise ModelImportError(
            f"skl2onnx cannot convert {type(estimator).__name__}: {exc}"
        ) from exc

    def answers(numeric: NDArray[np.float32], categorical: NDArray[Any]) -> NDArray[Any]:
        if names is not None:
            import pandas as pd

            columns = {}
            for n in names:
                if n in layout.numeric_names:
                    columns[n] = numeric[:, layout.numeric_names.index(n)].astype(np.float64)
                else:
                    columns[n] = categorical[:, layout.categorical_names.index(n)]
            x: Any = pd.DataFrame(columns)
        else:
            x = numeric.astype(np.float64)
        if task == "classification":
            return np.asarray(estimator.predict_proba(x), np.float64)
        return np.asarray(estimator.predict(x), np.float64).ravel()

    return Source(f"sklearn:{fmt}", graph, answers)
