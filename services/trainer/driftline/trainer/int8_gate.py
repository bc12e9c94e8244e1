"""The int8 gate: an int8 graph ships beside the fp32 one only when it is as good.

With `spec.inference.quantization` the trainer quantises every exported graph with
ONNX Runtime's own tool, *dynamic* int8 (`export.quantize_int8`): the weights of
MatMul/Gemm are stored as int8, and each activation is quantised at run time with a
scale taken from the batch itself. Static int8 would fix the activation scales from
a calibration set once, at export; the inputs of a Driftline model drift by
design, and scales fitted to last week's rows clip or waste range on this week's.
For an MLP the weights are where the time and the bytes go, so dynamic int8 gives
the speed without a calibration set that goes stale.

Both graphs are scored with ONNX Runtime on the rows the publish gate uses, the
epoch's held-out slice and its anchor set; the int8 graph is kept only when neither
score falls more than `maxAccuracyDrop` below the fp32 graph's. The decision, with
both graphs' scores, is recorded on the version (`TAG_INT8`) and as run metrics,
whether or not the int8 graph was kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from driftline.common.features import FeatureLayout
from driftline.trainer import export
from driftline.trainer.examples import Examples
from driftline.trainer.gate import Task, quality

Outcome = Literal["kept", "refused", "skipped"]

# Float rounding must not refuse an int8 graph exactly at the tolerance.
EPSILON = 1e-9


@dataclass(frozen=True)
class Int8Decision:
    """Whether the int8 graph ships, and every number the decision used."""

    outcome: Outcome
    reason: str
    max_drop: float
    fp32: Mapping[str, float]
    int8: Mapping[str, float]
    rows: Mapping[str, int]

    @property
    def keep(self) -> bool:
        return self.outcome == "kept"

    def tag(self) -> str:
        """The `driftline.int8` tag: the decision as JSON."""
        return json.dumps(
            {
                "decision": self.outcome,
                "reason": self.reason,
                "maxAccuracyDrop": self.max_drop,
                "fp32": {k: round(v, 6) for k, v in self.fp32.items()},
                "int8": {k: round(v, 6) for k, v in self.int8.items()},
                "rows": dict(self.rows),
            },
            sort_keys=True,
        )

    def metrics(self) -> dict[str, float]:
        """Run metrics: `fp32_holdout_score`, `int8_holdout_score`, ... ."""
        out = {f"fp32_{k}_score": v for k, v in self.fp32.items()}
        out |= {f"int8_{k}_score": v for k, v in self.int8.items()}
        return out


def decide(
    fp32: Mapping[str, float],
    int8: Mapping[str, float],
    rows: Mapping[str, int],
    max_drop: float,
) -> Int8Decision:
    """Keep the int8 graph when no row set's score drops by more than `max_drop`."""
    if not fp32:
        return Int8Decision("skipped", "no held-out rows to check it on", max_drop, {}, {}, rows)
    drops = {name: fp32[name] - int8[name] for name in fp32}
    worst = max(drops, key=lambda name: drops[name])
    scores = f"{worst} score {int8[worst]:.4f} (int8) vs {fp32[worst]:.4f} (fp32)"
    if math.isnan(drops[worst]) or drops[worst] > max_drop + EPSILON:
        return Int8Decision(
            "refused",
            f"{scores}: a drop of {drops[worst]:.4f} > maxAccuracyDrop {max_drop}",
            max_drop,
            fp32,
            int8,
            rows,
        )
    return Int8Decision(
        "kept", f"{scores}: within maxAccuracyDrop {max_drop}", max_drop, fp32, int8, rows
    )


def check_int8(
    graph: bytes,
    int8: bytes,
    row_sets: Mapping[str, Examples],
    layout: FeatureLayout,
    task: Task,
    max_drop: float,
) -> Int8Decision:
    """Score `graph` and `int8` on each non-empty row set and decide."""
    sets = {name: rows for name, rows in row_sets.items() if len(rows) > 0}
    fp32_session, int8_session = export.session(graph), export.session(int8)
    fp32, small = {}, {}
    for name, rows in sets.items():
        fp32[name] = quality(task, rows.labels, export.run_onnx(fp32_session, rows, layout, task))
        small[name] = quality(task, rows.labels, export.run_onnx(int8_session, rows, layout, task))
    return decide(fp32, small, {name: len(rows) for name, rows in sets.items()}, max_drop)
