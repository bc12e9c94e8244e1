"""XGBoost and LightGBM boosters, converted to ONNX with onnxmltools.

Each is read with its own loader of a data-only format, never a pickle: XGBoost's
JSON or UBJSON model file (`Booster.load_model`), LightGBM's text model file
(`Booster(model_file=...)`). The converted graph takes one float [N, k] input; the
booster's feature names (set when it was trained on a DataFrame) say which spec
feature each column is, else its columns are the spec's numeric features in order.

Parity is checked against the booster's own `predict` on the same float32 values the
graph is fed. XGBoost computes in float32 like the graph; LightGBM compares float32
inputs with double thresholds, which the graph holds as float32: a value lying
between a threshold and its float32 rounding could take the other branch. LightGBM
picks thresholds between the values it saw, so on data like the training data the
two agree within the same tolerance as every format (docs/import.md, Checks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.common.features import FeatureLayout
from driftline.trainer.import_sources import (
    ModelImportError,
    Source,
    as_probabilities,
    named_columns,
)

NEEDS_ONNXMLTOOLS = "pip install 'driftline[import]' (onnxmltools, {lib})"

XGB_CLASSIFIERS = ("binary:logistic", "multi:softprob")
XGB_REGRESSORS = ("reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror")
LGB_CLASSIFIERS = ("binary", "multiclass")
LGB_REGRESSORS = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")


def _columns(source: Source, layout: FeatureLayout, numeric: NDArray[np.float32]) -> Any:
    """The booster's input: the spec's numeric columns in the booster's order."""
    if source.columns is None:
        return numeric
    return numeric[:, [layout.numeric_names.index(n) for n in source.columns]]


def _check_objective(
    objective: str,
    objectives: tuple[tuple[str, ...], tuple[str, ...]],
    task: str,
    classes: int,
    booster_classes: int,
    what: str,
) -> None:
    """The booster answers what the spec's task serves: probabilities, or a value."""
    wanted = objectives[0] if task == "classification" else objectives[1]
    if objective not in wanted:
        raise ModelImportError(
            f"the {what}'s objective is {objective!r}; a {task} spec takes one of: "
            f"{', '.join(wanted)}"
        )
    if task == "classification" and booster_classes != classes:
        raise ModelImportError(f"the {what} has {booster_classes} classes; the spec has {classes}")


def xgboost_source(path: Path, layout: FeatureLayout, task: str, classes: int) -> Source:
    """An XGBoost booster from its JSON or UBJSON model file."""
    try:
        import xgboost as xgb
        from onnxmltools.convert import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType
    except ImportError as exc:
        raise ModelImportError(
            "importing an XGBoost model needs " + NEEDS_ONNXMLTOOLS.format(lib="xgboost")
        ) from exc
    booster = xgb.Booster()
    try:
        booster.load_model(str(path))
    except xgb.core.XGBoostError as exc:
        raise ModelImportError(
            f"{path.name}: not an XGBoost model file (save it with "
            f"`booster.save_model('model.json')` or '.ubj'): {exc}"
        ) from exc
    config = json.loads(booster.save_config())
    objective = str(config["learner"]["objective"]["name"])
    booster_classes = max(int(config["learner"]["learner_model_param"]["num_class"]), 2)
    _check_objective(
        objective,
        (XGB_CLASSIFIERS, XGB_REGRESSORS),
        task,
        classes,
        booster_classes,
        "XGBoost booster",
    )
    width = booster.num_features()
    names = booster.feature_names
    columns = named_columns(
        list(names) if names is not None else None, width, layout, "XGBoost booster"
    )
    # onnxmltools reads split features as 'f<index>': convert a copy without the names.
    plain = booster.copy()
    plain.feature_names = None
    plain.feature_types = None
    try:
        graph = convert_xgboost(plain, initial_types=[("input", FloatTensorType([None, width]))])
    except Exception as exc:  # onnxmltools raises many types for what it cannot convert
        raise ModelImportError(f"onnxmltools cannot convert the XGBoost booster: {exc}") from exc

    def answers(numeric: NDArray[np.float32], _categorical: NDArray[Any]) -> NDArray[Any]:
        x = np.ascontiguousarray(_columns(source, layout, numeric), np.float32)
        return _as_answers(plain.predict(xgb.DMatrix(x)), task, classes)

    source = Source("xgboost", graph, answers, columns)
    return source


def lightgbm_source(path: Path, layout: FeatureLayout, task: str, classes: int) -> Source:
    """A LightGBM booster from its text model file."""
    try:
        import lightgbm as lgb
        from onnxmltools.convert import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType
    except ImportError as exc:
        raise ModelImportError(
            "importing a LightGBM model needs " + NEEDS_ONNXMLTOOLS.format(lib="lightgbm")
        ) from exc
    try:
        booster = lgb.Booster(model_file=str(path))
    except lgb.basic.LightGBMError as exc:
        raise ModelImportError(
            f"{path.name}: not a LightGBM model file (save it with "
            f"`booster.save_model('model.txt')`): {exc}"
        ) from exc
    objective = str(booster.params.get("objective", "")).split(" ")[0]
    booster_classes = max(int(booster.params.get("num_class", 1)), 2)
    _check_objective(
        objective,
        (LGB_CLASSIFIERS, LGB_REGRESSORS),
        task,
        classes,
        booster_classes,
        "LightGBM booster",
    )
    width = booster.num_feature()
    columns = named_columns(list(booster.feature_name()), width, layout, "LightGBM booster")
    if booster.pandas_categorical:
        raise ModelImportError(
            "the LightGBM booster has categorical splits on pandas categories; onnxmltools "
            "cannot convert those: encode the categories as numbers before training"
        )
    try:
        graph = convert_lightgbm(
            booster, initial_types=[("input", FloatTensorType([None, width]))], zipmap=False
        )
    except Exception as exc:  # onnxmltools raises many types for what it cannot convert
        raise ModelImportError(f"onnxmltools cannot convert the LightGBM booster: {exc}") from exc

    def answers(numeric: NDArray[np.float32], _categorical: NDArray[Any]) -> NDArray[Any]:
        # The same float32 values the graph is fed, widened: LightGBM predicts in double.
        x = np.asarray(_columns(source, layout, numeric), np.float64)
        return _as_answers(booster.predict(x), task, classes)

    source = Source("lightgbm", graph, answers, columns)
    return source


def _as_answers(predicted: Any, task: str, classes: int) -> NDArray[Any]:
    """A booster's own predictions as the artifact contract answers them."""
    if task == "classification":
        return as_probabilities(np.asarray(predicted), classes)
    return np.asarray(predicted, np.float64).ravel()
