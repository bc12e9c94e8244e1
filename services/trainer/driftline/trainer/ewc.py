"""Elastic weight consolidation: keep the weights that mattered for old data.

After each publish the trainer stores the published weights (the anchor) and a
diagonal Fisher information estimate of how much each weight mattered for the
current epoch's data (the empirical Fisher: mean squared per-example gradient of
the loss). Later steps pay `lambda/2 * sum F (w - w_anchor)^2`, so learning a
new input region does not overwrite what the old region needed (Kirkpatrick et
al., 2017). A new concept epoch resets the anchor: the old concept's weights are
exactly what must change then.

The Fisher is not rescaled: `training.ewc.lambda` means what it means in the
literature. On data the model fits perfectly (noiseless synthetic rules) the
Fisher nearly vanishes and the replay reservoir does the protecting. Scaling the
Fisher to mean 1 was measured too: lambda 50 then cost 15-20 points of accuracy
on a newly learned input region, for no gain on the old one over replay alone.

The penalty's gradient `lambda * F * (w - w_anchor)` is added to the gradients
directly: the same update as differentiating the penalty, without building it
into the autograd graph at every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Ewc:
    def __init__(self) -> None:
        self.fisher: list[torch.Tensor] | None = None
        self.anchor: list[torch.Tensor] | None = None

    @property
    def active(self) -> bool:
        return self.fisher is not None

    def reset(self) -> None:
        self.fisher = None
        self.anchor = None

    def refresh(
        self,
        net: nn.Module,
        numeric: torch.Tensor,
        codes: torch.Tensor,
        targets: torch.Tensor,
        loss_fn: LossFn,
    ) -> None:
        """Anchor the current weights; Fisher = mean squared per-example gradient."""
        params = [p for p in net.parameters() if p.requires_grad]
        if len(targets) == 0:
            self.reset()
            return
        try:
            squares = _per_example_squares(net, numeric, codes, targets, loss_fn)
        except Exception:  # a plugin module that torch.func cannot vmap: one row at a time
            squares = _looped_squares(net, params, numeric, codes, targets, loss_fn)
        self.fisher = squares
        self.anchor = [p.detach().clone() for p in params]

    def weaken(self, factor: float) -> None:
        """Scale the Fisher by `factor` (0 to 1): the anchor pulls that much less."""
        if self.fisher is not None:
            torch._foreach_mul_(self.fisher, factor)

    def add_gradient(self, net: nn.Module, strength: float) -> None:
        """grad += strength * F * (w - w_anchor), for every trainable weight."""
        if self.fisher is None or self.anchor is None or strength <= 0:
            return
        trainable = [p for p in net.parameters() if p.requires_grad]
        pairs = [
            (p, f, a)
            for p, f, a in zip(trainable, self.fisher, self.anchor, strict=True)
            if p.grad is not None
        ]
        if not pairs:
            return
        params, fisher, anchor = zip(*pairs, strict=True)
        # The multi-tensor kernels torch.optim uses: three calls instead of two per weight.
        moved = torch._foreach_sub([p.detach() for p in params], list(anchor))
        torch._foreach_mul_(moved, list(fisher))
        torch._foreach_add_([p.grad for p in params], moved, alpha=strength)

    def penalty(self, net: nn.Module) -> float:
        if self.fisher is None or self.anchor is None:
            return 0.0
        params = [p for p in net.parameters() if p.requires_grad]
        with torch.no_grad():
            total = sum(
                float((f * (p - a) ** 2).sum())
                for p, f, a in zip(params, self.fisher, self.anchor, strict=True)
            )
        return 0.5 * total

    def state(self) -> dict[str, NDArray[Any]]:
        if self.fisher is None or self.anchor is None:
            return {}
        out = {f"ewc.fisher.{i}": f.numpy() for i, f in enumerate(self.fisher)}
        out.update({f"ewc.anchor.{i}": a.numpy() for i, a in enumerate(self.anchor)})
        return out

    def load_state(self, arrays: dict[str, NDArray[Any]]) -> None:
        count = sum(1 for name in arrays if name.startswith("ewc.fisher."))
        if count == 0:
            self.reset()
            return
        self.fisher = [torch.from_numpy(np.array(arrays[f"ewc.fisher.{i}"])) for i in range(count)]
        self.anchor = [torch.from_numpy(np.array(arrays[f"ewc.anchor.{i}"])) for i in range(count)]


def _per_example_squares(
    net: nn.Module,
    numeric: torch.Tensor,
    codes: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
) -> list[torch.Tensor]:
    from torch.func import functional_call, grad, vmap

    names = [n for n, p in net.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in net.named_parameters() if p.requires_grad}
    buffers = dict(net.named_buffers())

    def loss_one(
        weights: dict[str, torch.Tensor], x: torch.Tensor, c: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        out = functional_call(net, (weights, buffers), (x.unsqueeze(0), c.unsqueeze(0)))
        return loss_fn(out, y.unsqueeze(0))

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0, 0))(params, numeric, codes, targets)
    return [(grads[n] ** 2).mean(dim=0) for n in names]


def _looped_squares(
    net: nn.Module,
    params: list[nn.Parameter],
    numeric: torch.Tensor,
    codes: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
) -> list[torch.Tensor]:
    sums = [torch.zeros_like(p) for p in params]
    rows = min(len(targets), 256)  # the slow path: fewer rows are enough for an estimate
    for i in range(rows):
        grads = torch.autograd.grad(
            loss_fn(net(numeric[i : i + 1], codes[i : i + 1]), targets[i : i + 1]), params
        )
        for s, g in zip(sums, grads, strict=True):
            s += g.detach() ** 2
    return [s / rows for s in sums]
