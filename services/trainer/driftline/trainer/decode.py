"""Kafka records of the labeled topic -> `Examples`, bad records to the dead letters.

The fast path decodes a whole batch in one msgspec call (the record values joined
into one JSON array) and builds the feature arrays column-wise. Only when that
fails does it fall back to one record at a time, to find and dead-letter exactly
the records that are bad; the good ones in the same batch are still learned.

A record is bad when it is not a `LabeledExample` of this schema version, names
another model, carries a label that is not a class index of this model, or has
features that do not fit the contract (`driftline.common.feature_values`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from driftline.api.events import SCHEMA_VERSION, EventError, LabeledExample, decode
from driftline.common.feature_values import FeatureValueError
from driftline.common.features import FeatureLayout
from driftline.trainer.encoding import CategoricalEncoder
from driftline.trainer.examples import Examples, ips_weights

_batch_decoder = msgspec.json.Decoder(list[LabeledExample])

PARTITION_SHIFT = 40  # row key = partition << 40 | offset


@dataclass
class Decoded:
    examples: Examples
    partitions: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    """Partition of each row in `examples` (all rows come from the labeled topic)."""
    offsets: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    """Offset of each row in `examples`."""
    dead: int = 0
    stable_version: str | None = None
    """The stable model version of the newest stable prediction in the batch."""


class LabeledDecoder:
    def __init__(
        self,
        layout: FeatureLayout,
        encoder: CategoricalEncoder,
        model_name: str,
        task: str,
        classes: int,
        dead_letters: Any,
        max_weight: float | None = None,
    ) -> None:
        self.layout = layout
        self.encoder = encoder
        self.model_name = model_name
        self.classification = task == "classification"
        self.classes = classes
        self.dead_letters = dead_letters
        self.max_weight = max_weight
        """Exploration on (`spec.training.exploration.maxWeight`): rows weigh their
        clipped inverse propensity. None: every row weighs 1."""

    def decode(self, msgs: list[Any]) -> Decoded:
        """Decode records of the labeled topic (none with an error set)."""
        events = self._events(msgs)
        good_msgs: list[Any] = []
        good: list[LabeledExample] = []
        dead = 0
        for msg, event in zip(msgs, events, strict=True):
            if isinstance(event, str):
                self.dead_letters.send(msg, event)
                dead += 1
            else:
                good_msgs.append(msg)
                good.append(event)
        # Checks over the whole batch first; the per-record reasons only for failures.
        name = self.model_name
        labels = np.fromiter((e.label for e in good), np.float64, len(good))
        ok = np.isfinite(labels)
        if self.classification:
            ok &= (labels >= 0) & (labels < self.classes) & (labels == np.round(labels))
        ok[[i for i, e in enumerate(good) if e.model != name or e.v != SCHEMA_VERSION]] = False
        if not ok.all():
            for i in np.flatnonzero(~ok):
                self.dead_letters.send(good_msgs[i], self._reason(good[i]))
            dead += int((~ok).sum())
            keep = np.flatnonzero(ok)
            good_msgs = [good_msgs[i] for i in keep]
            good = [good[i] for i in keep]
            labels = labels[keep]
        features = [e.features for e in good]
        try:
            numeric, categorical = self.layout.arrays(features)
        except FeatureValueError:
            keep_rows = []
            for i, row in enumerate(features):
                try:
                    self.layout.check_row(row)
                    keep_rows.append(i)
                except FeatureValueError as exc:
                    self.dead_letters.send(good_msgs[i], f"features: {exc}")
                    dead += 1
            good_msgs = [good_msgs[i] for i in keep_rows]
            good = [good[i] for i in keep_rows]
            labels = labels[keep_rows]
            numeric, categorical = self.layout.arrays([e.features for e in good])
        n = len(good)
        partitions = np.fromiter((m.partition() for m in good_msgs), np.int64, n)
        offsets = np.fromiter((m.offset() for m in good_msgs), np.int64, n)
        nan = float("nan")
        served = np.fromiter(
            (e.output if e.variant == "stable" else nan for e in good), np.float32, n
        )
        stable = [e.model_version for e in good if e.variant == "stable"]
        examples = Examples(
            numeric=numeric,
            categorical=categorical,
            codes=self.encoder(categorical),
            labels=labels.astype(np.float32),
            key=(partitions << PARTITION_SHIFT) | offsets,
            served=served,
            ts=np.fromiter((e.ts_label for e in good), np.float64, n),
            weight=self._weights(good),
        )
        return Decoded(
            examples=examples,
            partitions=partitions,
            offsets=offsets,
            dead=dead,
            stable_version=stable[-1] if stable else None,
        )

    def _weights(self, good: list[LabeledExample]) -> NDArray[np.float32]:
        if self.max_weight is None:
            return np.ones(len(good), np.float32)
        nan = float("nan")
        odds = np.fromiter(
            (nan if e.propensity is None else e.propensity for e in good), np.float64, len(good)
        )
        return ips_weights(odds, self.max_weight)

    def _events(self, msgs: list[Any]) -> list[LabeledExample | str]:
        """Every record decoded, or the reason it does not decode."""
        values = [m.value() for m in msgs]
        if all(v for v in values):
            try:
                return list(_batch_decoder.decode(b"[" + b",".join(values) + b"]"))
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                pass  # at least one bad record (or a hostile, deeply nested one): find it below
        out: list[LabeledExample | str] = []
        for value in values:
            if not value:
                out.append("empty record")
                continue
            try:
                out.append(decode(value, LabeledExample))
            except EventError as exc:
                out.append(exc.reason)
        return out

    def _reason(self, event: LabeledExample) -> str:
        if event.v != SCHEMA_VERSION:
            return (
                f"LabeledExample schema version {event.v} is not supported "
                f"(this consumer reads version {SCHEMA_VERSION})"
            )
        if event.model != self.model_name:
            return f"model {event.model!r} is not this trainer's model {self.model_name!r}"
        if not np.isfinite(event.label):
            return "label is not a finite number"
        if self.classification and (
            not float(event.label).is_integer() or not 0 <= event.label < self.classes
        ):
            return f"label {event.label!r} is not a class index in [0, {self.classes})"
        return "invalid record"
