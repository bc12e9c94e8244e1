"""A reference taken from the first live traffic, for a version registered without one.

A model imported without a sample has no training data to compare with: its version
says so in the `driftline.reference` tag (`none: ...`). Rather than wait for ever, the
drift monitor then reads the serving version's own first predictions (variant
`stable`, that version) until it has `rows` of them, and takes them as the reference:
drift is then measured against how traffic looked when the model started to serve,
not against how it was trained. The monitor says which in its log and in the note
it keeps in Redis, which status shows (`status.drift.reference`, `driftline status`).

Once complete, the reference is kept in the registry beside the version, as any
reference is (`reference/reference.npz` in the version's run), and the version's tag
then says `live: ...`: a restarted monitor, or a second one, reads it like a
registered reference instead of collecting again. Rows collected before the reference
is complete live in memory only; a restart then starts collecting again from the
traffic that follows. A registry that cannot take the file is logged, and the monitor
watches with the reference in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from driftline.api.artifacts import REFERENCE_OUTPUT_KEY
from driftline.api.events import Prediction
from driftline.api.spec import FeatureSpec
from driftline.drift.reference import Reference, parse_reference


class LiveReference:
    """Collects the serving version's first `rows` predictions into a `Reference`."""

    def __init__(self, version: str, features: list[FeatureSpec], rows: int) -> None:
        self.version = version
        self.features = features
        self.rows = rows
        self._columns: dict[str, list[Any]] = {f.name: [] for f in features}
        self._outputs: list[float] = []

    @property
    def collected(self) -> int:
        return len(self._outputs)

    @property
    def complete(self) -> bool:
        return self.collected >= self.rows

    def add(self, batch: Sequence[Prediction]) -> int:
        """Takes the version's own served predictions (up to `rows`); returns how many."""
        taken = 0
        for p in batch:
            if self.complete:
                break
            if p.variant != "stable" or p.model_version != self.version:
                continue
            for f in self.features:
                value = p.features.get(f.name)
                if f.type == "numeric":
                    self._columns[f.name].append(np.nan if value is None else float(value))
                else:
                    self._columns[f.name].append("" if value is None else str(value))
            self._outputs.append(float(p.output))
            taken += 1
        return taken

    def reference(self) -> Reference:
        """The collected rows as a reference (checked like a registered one)."""
        return parse_reference(self.arrays(), self.features, self.version)

    def arrays(self) -> dict[str, np.ndarray[Any, Any]]:
        """The collected rows, as a reference file holds them."""
        arrays: dict[str, np.ndarray[Any, Any]] = {
            f.name: np.asarray(
                self._columns[f.name], np.float64 if f.type == "numeric" else np.str_
            )
            for f in self.features
        }
        arrays[REFERENCE_OUTPUT_KEY] = np.asarray(self._outputs, np.float64)
        return arrays

    def tag(self) -> str:
        """The version's `driftline.reference` tag once this reference is kept."""
        return f"live: the first {self.rows} predictions of version {self.version}"

    def note(self) -> str:
        """What status says about this reference."""
        if self.complete:
            return live_note(self.rows, self.version)
        return (
            f"collecting from live traffic: {self.collected} of {self.rows} predictions of "
            f"version {self.version} (registered without a reference sample); no drift "
            "is measured until then"
        )


def live_note(rows: int, version: str) -> str:
    return (
        f"live traffic: the first {rows} predictions of version {version} "
        "(registered without a reference sample)"
    )
