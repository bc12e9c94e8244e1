"""The networks the trainer learns, with the feature preprocessing inside them.

A `TabularNet` takes the raw contract arrays (numeric values, categorical codes)
and does its own preprocessing: standardisation with statistics fitted on the
training data (missing values become the mean, values beyond `INPUT_CLIP` standard
units saturate there) and one-hot categorical codes.
Because the preprocessing is part of the module, it is part of the exported ONNX
graph too, and serving cannot transform inputs differently from training.

Learners: `logistic` (softmax/linear regression on the encoded inputs), `mlp`
(hidden layers from the spec), or `plugin`: `package.module:function`, called with
a `LearnerContext`, returning a torch module that maps the encoded inputs
[N, input_width] to [N, outputs] (or a `(module, preprocess)` pair whose
`preprocess(numeric, codes)` replaces the built-in preprocessing).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from driftline.api.spec import FeatureSpec, ModelSpec

INPUT_CLIP = 4.0
"""Standard units (of the fitted statistics) at which a built-in net's numeric input
saturates. A feature that keeps moving away from where it was fitted (a date, a
counter) would otherwise reach tens of standard units, where a network extrapolates
what it learned near 0 without bound (TrumpApproval's date: 33 units after 900 days;
R2 over six learner seeds -0.17 -> 0.59, benchmarks/results/trainer-generality-seeds.md)."""


class LearnerError(ValueError):
    """A learner that cannot be built from the spec; the message says what to fix."""


@dataclass(frozen=True)
class LearnerContext:
    """What a learner needs to know to build itself (plugins receive this)."""

    task: Literal["classification", "regression"]
    outputs: int
    """Classes (classification) or 1 (regression)."""
    input_width: int
    """Columns of the encoded input: standardised numerics, then one-hot categoricals."""
    numeric_names: tuple[str, ...]
    categorical_widths: tuple[int, ...]
    features: tuple[FeatureSpec, ...]
    hidden: tuple[int, ...]
    seed: int


class Preprocess(nn.Module):
    """(numeric float32 [N, k], codes int64 [N, m]) -> encoded float32 [N, width]."""

    mean: torch.Tensor
    inv_scale: torch.Tensor
    levels: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, n_numeric: int, widths: Sequence[int], clip: float = 0.0) -> None:
        super().__init__()
        self.n_numeric = n_numeric
        self.widths = tuple(widths)
        self.clip = clip  # standardised values saturate at +-clip (0: never)
        self.register_buffer("mean", torch.zeros(n_numeric))
        self.register_buffer("inv_scale", torch.ones(n_numeric))
        self.register_buffer("levels", torch.arange(max(self.widths, default=1)).unsqueeze(0))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def width(self) -> int:
        return self.n_numeric + sum(self.widths)

    def fit(self, numeric: NDArray[np.float32]) -> None:
        """Standardisation statistics from training data (NaN = missing, ignored)."""
        self.fitted.fill_(True)
        if self.n_numeric == 0:
            return
        with np.errstate(all="ignore"):
            mean = np.nan_to_num(np.nanmean(numeric, axis=0), nan=0.0)
            std = np.nan_to_num(np.nanstd(numeric, axis=0), nan=1.0)
        std = np.where(std > 1e-8, std, 1.0)
        self.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        self.inv_scale.copy_(torch.from_numpy((1.0 / std).astype(np.float32)))

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.n_numeric:
            z = (numeric - self.mean) * self.inv_scale
            z = torch.where(torch.isnan(z), torch.zeros_like(z), z)
            if self.clip:  # after the NaN fill: ONNX Clip need not pass NaN through
                z = torch.clamp(z, -self.clip, self.clip)
            parts.append(z)
        for j, w in enumerate(self.widths):
            levels = self.levels[:, :w]
            parts.append((codes[:, j : j + 1] == levels).to(torch.float32))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class TabularNet(nn.Module):
    """Preprocessing + body: raw contract arrays in, logits [N, C] or values [N] out.

    A regression body predicts the target in standard units; the net scales it back
    (`target_mean + target_scale * body`), inside the exported graph too. Without
    this a target of 10,000 +- 1,000 is out of reach of a network whose weights
    start near 0 and move by the learning rate per step, and the loss (and the EWC
    Fisher computed from it) would change meaning with the target's units.
    """

    target_mean: torch.Tensor
    target_scale: torch.Tensor
    target_fitted: torch.Tensor

    def __init__(self, preprocess: nn.Module, body: nn.Module, task: str) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.body = body
        self.regression = task == "regression"
        if self.regression:
            self.register_buffer("target_mean", torch.zeros(()))
            self.register_buffer("target_scale", torch.ones(()))
            self.register_buffer("target_fitted", torch.zeros((), dtype=torch.bool))

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(self.preprocess(numeric, codes))
        if self.regression:
            if out.dim() == 2:
                out = out[:, 0]
            return out * self.target_scale + self.target_mean
        return out

    def needs_target_fit(self) -> bool:
        return self.regression and not bool(self.target_fitted)

    def fit_target(self, labels: NDArray[np.float32]) -> None:
        """Target statistics from training labels (regression; NaN ignored)."""
        if not self.regression:
            return
        with np.errstate(all="ignore"):
            mean = float(np.nan_to_num(np.nanmean(labels), nan=0.0))
            std = float(np.nan_to_num(np.nanstd(labels), nan=1.0))
        self.target_mean.fill_(mean)
        self.target_scale.fill_(std if std > 1e-8 else 1.0)
        self.target_fitted.fill_(True)

    def standard_units(self, values: torch.Tensor) -> torch.Tensor:
        """Regression values in the units the body learns (classification: unchanged)."""
        if not self.regression:
            return values
        return (values - self.target_mean) / self.target_scale


def context_for(model: ModelSpec, features: Sequence[FeatureSpec], seed: int = 0) -> LearnerContext:
    numeric = tuple(f for f in features if f.type == "numeric")
    categorical = tuple(f for f in features if f.type == "categorical")
    widths = tuple(f.width for f in categorical)
    return LearnerContext(
        task=model.task,
        outputs=model.classes if model.task == "classification" else 1,
        input_width=len(numeric) + sum(widths),
        numeric_names=tuple(f.name for f in numeric),
        categorical_widths=widths,
        features=(*numeric, *categorical),
        hidden=tuple(model.learner.hidden),
        seed=seed,
    )


def mlp(width: int, hidden: Sequence[int], outputs: int) -> nn.Module:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


def build_net(model: ModelSpec, features: Sequence[FeatureSpec], seed: int = 0) -> TabularNet:
    """The spec's learner, freshly initialised from `seed`."""
    ctx = context_for(model, features, seed)
    torch.manual_seed(seed)
    preprocess: nn.Module = Preprocess(
        len(ctx.numeric_names), ctx.categorical_widths, clip=INPUT_CLIP
    )
    learner = model.learner
    if learner.type == "logistic":
        body: nn.Module = nn.Linear(ctx.input_width, ctx.outputs)
    elif learner.type == "mlp":
        body = mlp(ctx.input_width, ctx.hidden, ctx.outputs)
    else:
        body, custom = _load_plugin(learner.entrypoint or "", ctx)
        if custom is not None:
            preprocess = custom
    net = TabularNet(preprocess, body, ctx.task)
    _check_shapes(net, ctx, learner.entrypoint)
    return net


def _load_plugin(entrypoint: str, ctx: LearnerContext) -> tuple[nn.Module, nn.Module | None]:
    module_name, _, attr = entrypoint.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise LearnerError(
            f"learner.entrypoint {entrypoint!r} cannot be loaded ({exc}); install the package "
            "that provides it in the trainer's image"
        ) from exc
    built = factory(ctx)
    if isinstance(built, tuple) and len(built) == 2:
        body, preprocess = built
    else:
        body, preprocess = built, None
    if not isinstance(body, nn.Module) or not (
        preprocess is None or isinstance(preprocess, nn.Module)
    ):
        raise LearnerError(
            f"learner.entrypoint {entrypoint!r} must return a torch.nn.Module "
            f"or a (module, preprocess) pair of modules, got {type(built).__name__}"
        )
    return body, preprocess


def _check_shapes(net: TabularNet, ctx: LearnerContext, entrypoint: str | None) -> None:
    """A dry run on two rows, so a wrong plugin fails at start with a clear message."""
    numeric = torch.zeros(2, len(ctx.numeric_names))
    codes = torch.zeros(2, len(ctx.categorical_widths), dtype=torch.int64)
    with torch.no_grad():
        try:
            out = net(numeric, codes)
        except Exception as exc:
            raise LearnerError(
                f"the learner fails on an input of shape [2, {ctx.input_width}]: {exc}"
            ) from exc
    want = (2,) if ctx.task == "regression" else (2, ctx.outputs)
    if tuple(out.shape) != want:
        who = f"learner.entrypoint {entrypoint!r}" if entrypoint else "the learner"
        raise LearnerError(
            f"{who} returns shape {list(out.shape)} for 2 rows; "
            f"a {ctx.task} model with {ctx.outputs} output(s) must return "
            f"[2, {ctx.outputs}]" + (" (or [2])" if ctx.task == "regression" else "")
        )
