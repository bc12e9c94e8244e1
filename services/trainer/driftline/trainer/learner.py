"""The online learner: mini-batch updates with replay, EWC and concept epochs.

`OnlineLearner.learn(examples)` is the whole learning step, independent of Kafka
and MLflow (the worker feeds it; the benchmarks call it directly):

1. Each row gets a sequence number; a hash of its key holds out
   `gate.holdoutFraction` of the rows for the gate (held-out slice, anchor set).
2. The stable version's mistakes feed the concept check (`concept.py`); a
   confirmed concept change opens a new epoch before the batch is learned.
3. The training rows are cut into steps of `batchSize * (1 - replay.fraction)`
   fresh rows, topped up to `batchSize` with rows drawn from the replay reservoir
   (current epoch only, unless old epochs are down-weighted rather than retired);
   the loss gradient gets the EWC term; Adam takes the step.

A concept epoch (`open_epoch`) retires the old epoch's replay rows, empties the
anchor set, drops the EWC anchor and moves the rows that arrived since the change
began into the new epoch; then it trains on those rows for as many steps as
`catch_up_passes` batches (they are the new concept's only evidence so far; with a
batch of 256, a single pass over a few hundred rows would be one or two steps)
and, for `boost_rows` rows, raises the learning rate and adds `boost_rehearsals`
steps on the epoch's reservoir after each regular step
(benchmarks/results/trainer-quality.md: on Agrawal's concept switches this is what
brings the accuracy after a switch level with River's ARF).

A young epoch (the first `settle_rows` rows of the stream or of an epoch the
drift boost no longer covers) also gets `settle_rehearsals` extra steps on its
reservoir per batch of rows learned, tapering to none (`_settling_steps`;
benchmarks/results/trainer-generality-seeds.md: with the inputs' cap of nets.py,
TrumpApproval's R2 0.593 -> 0.717 on the benchmark's seed, Bananas and Agrawal
before drift closer to River's trees).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional

from driftline.api.spec import FeatureSpec, ModelSpec
from driftline.common.features import FeatureLayout
from driftline.trainer.buffers import EMPTY, Reservoir, Ring
from driftline.trainer.concept import (
    ErrorRateMonitor,
    in_old_region,
    rose_in_old_region,
    shifted_features,
)
from driftline.trainer.encoding import CategoricalEncoder
from driftline.trainer.ewc import Ewc
from driftline.trainer.examples import Examples, holdout_mask
from driftline.trainer.gate import quality
from driftline.trainer.nets import Preprocess, TabularNet, build_net
from driftline.trainer.options import EpochRecord, LearnerOptions, LearnReport


class Shard(Protocol):
    """This process's place in a group of trainers that share gradient steps."""

    rank: int
    world: int

    def reduce(self, net: torch.nn.Module) -> None:
        """Replace each parameter's gradient by its sum over the group."""


__all__ = [
    "EpochRecord",
    "LearnReport",
    "LearnerOptions",
    "OnlineLearner",
    "Rival",
    "Shard",
    "adam",
]


def adam(net: torch.nn.Module, learning_rate: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel: three times the steps per second of the default on CPU."""
    return torch.optim.Adam(net.parameters(), lr=learning_rate, fused=True)


@dataclass
class Rival:
    """The network racing the serving one after a concept change."""

    net: TabularNet
    optimizer: torch.optim.Optimizer
    left: int
    """Rows the race still runs."""
    lead: float = 0.0
    """Serving network's loss minus the rival's, summed over the rows scored so far."""
    swaps: int = 0


class OnlineLearner:
    def __init__(
        self,
        model: ModelSpec,
        features: Sequence[FeatureSpec],
        options: LearnerOptions,
        net: TabularNet | None = None,
    ) -> None:
        self.model = model
        self.task = model.task
        self.options = options
        self.features = tuple(features)
        self.layout = FeatureLayout.from_features(features)
        self.encoder = CategoricalEncoder(self.layout.categorical)
        k, m = self.numeric_width(), len(self.layout.categorical)
        self.net = net or self.new_net(options.seed)
        self.fresh = net is None
        """The network still has its initial weights (no gradient step since it was built)."""
        self.optimizer = adam(self.net, options.learning_rate)
        self.replay = Reservoir(options.replay_capacity, k, m, keep_raw=False)
        self.anchors = Reservoir(options.anchor_capacity, k, m, keep_raw=True)
        self.holdout = Ring(options.holdout_capacity, k, m)
        self.recent = Ring(options.recent_capacity, k, m)
        self.ewc = Ewc()
        self.monitor = ErrorRateMonitor(window=options.concept_window)
        self.rng = np.random.default_rng(options.seed)
        self.epoch = 0
        self.seq = 0  # rows seen (learned or held out), in this lineage
        self.trained = 0
        self.boost_left = 0
        self.rival: Rival | None = None
        self.epochs: list[EpochRecord] = [EpochRecord(0, 0, "start", time.time())]
        self.shard: Shard | None = None  # several ranks share each gradient step

    def numeric_width(self) -> int:
        """Columns of `Examples.numeric` the buffers hold (the adapter adds its base's)."""
        return len(self.layout.numeric)

    def new_net(self, seed: int) -> TabularNet:
        """A freshly initialised network (at start and for scheduled retraining)."""
        return build_net(self.model, self.features, seed)

    def examples(
        self,
        numeric: NDArray[np.float32],
        categorical: NDArray[np.object_],
        labels: NDArray[Any],
        key: NDArray[np.int64],
        served: NDArray[np.float32] | None = None,
    ) -> Examples:
        """Rows given as contract arrays (raw numerics, category texts) -> `Examples`."""
        n, m = len(labels), len(self.layout.categorical)
        texts = np.asarray(categorical, dtype=object).reshape(n, m)
        return Examples(
            numeric=np.ascontiguousarray(numeric, dtype=np.float32).reshape(n, -1),
            categorical=texts,
            codes=self.encoder(texts),
            labels=np.asarray(labels, dtype=np.float32),
            key=np.asarray(key, dtype=np.int64),
            served=np.full(n, np.nan, np.float32) if served is None else served,
            ts=np.full(n, time.time()),
            weight=np.ones(n, np.float32),
        )

    # -- learning -------------------------------------------------------------------

    def learn(self, ex: Examples) -> LearnReport:
        report, seq, held = self._observe(ex)
        keep = ~held
        if report.concept is not None:
            # The batch's rows from before the change are the old concept's: learning
            # them now would put them in the new epoch's replay rows.
            keep &= seq >= report.concept.start_seq
        train = ex.take(keep)
        if self.rival is not None:
            self._race(train)
        self._fit(train, seq[keep])
        report.trained = report.rows - report.held_out
        return report

    def observe(self, ex: Examples) -> LearnReport:
        """Everything but the gradient steps: buffers, held-out split, concept check."""
        report, seq, held = self._observe(ex)
        train = ~held
        self.replay.add(ex.take(train), seq[train], self.rng)
        return report

    def _observe(self, ex: Examples) -> tuple[LearnReport, NDArray[np.int64], NDArray[np.bool_]]:
        n = len(ex)
        seq = np.arange(self.seq, self.seq + n, dtype=np.int64)
        self.seq += n
        held = holdout_mask(ex.key, self.options.holdout_fraction)
        self.recent.append(ex, seq, self.epoch)
        if held.any():
            kept = ex.take(held)
            self.holdout.append(kept, seq[held], self.epoch)
            self.anchors.add(kept, seq[held], self.rng)
        report = LearnReport(rows=n, held_out=int(held.sum()))
        if self.options.detect_concept:
            self._watch(ex, seq, report)
        return report, seq, held

    def _fit(self, train: Examples, seq: NDArray[np.int64]) -> None:
        n = len(train)
        if n == 0:
            return
        preprocess = self.net.preprocess
        if isinstance(preprocess, Preprocess) and not bool(preprocess.fitted):
            preprocess.fit(train.numeric)  # no bootstrap: statistics from the first batch
        if self.net.needs_target_fit():
            self.net.fit_target(train.labels)
        fraction = self.options.replay_fraction if len(self.replay) else 0.0
        fresh = max(1, round(self.options.batch_size * (1 - fraction)))
        numeric, codes, labels, weight = train.numeric, train.codes, train.labels, train.weight
        self.net.train()
        # Right after a drift signal the newest rows join the reservoir step by step, so
        # the next steps replay them; otherwise the chunk joins it in one write at the end.
        stepwise = self.boost_left > 0
        for start in range(0, n, fresh):
            stop = min(start + fresh, n)
            replay_rows = round((stop - start) * fraction / (1 - fraction))
            for _ in self._contenders():
                self._step(
                    numeric[start:stop],
                    codes[start:stop],
                    labels[start:stop],
                    replay_rows,
                    weight[start:stop],
                )
            if stepwise:
                self.replay.add(train.take(slice(start, stop)), seq[start:stop], self.rng)
            if self.boost_left > 0:
                for _ in self._contenders():
                    self._rehearse(self.options.boost_rehearsals)
                self.boost_left = max(0, self.boost_left - (stop - start))
        if not stepwise:
            self.replay.add(train, seq, self.rng)
        settling = self._settling_steps(n)
        if settling:
            for _ in self._contenders():
                self._rehearse(settling)
        self.trained += n

    def _settling_steps(self, rows: int) -> int:
        """Extra steps on the epoch's replay rows for `rows` just learned while the
        epoch is young: `settle_rehearsals` per batch of rows at its start, tapering
        linearly to none after `settle_rows` rows (held-out ones included).

        Two steps per 256 new rows leave a network far from what the rows it has
        seen can teach it: a rule of thresholds takes thousands of rows to be learned
        that way, a small stream never is. Once the epoch has settled the extra steps
        stop (a stationary stream costs nothing more after its first rows). While the
        drift boost runs (after a concept change) its own rehearsals stand instead:
        the rows of a new epoch are few, and more passes over them learn their noise.
        """
        options = self.options
        if options.settle_rehearsals <= 0 or options.settle_rows <= 0 or self.boost_left > 0:
            return 0
        age = self.epoch_age()
        taper = max(0.0, 1.0 - age / options.settle_rows)
        return round(options.settle_rehearsals * taper * max(1.0, rows / options.batch_size))

    def epoch_age(self) -> int:
        """Rows (held-out ones included) since the current epoch began."""
        return self.seq - self.epochs[-1].start_seq

    def _rehearse(self, steps: int) -> None:
        """Extra steps on the current epoch's reservoir alone: after a drift signal the
        new rows are few, and going over them again is the fastest way to learn them."""
        for _ in range(steps):
            idx, _ = self.replay.sample(self.options.batch_size, self.rng)
            if len(idx) == 0:
                return
            self._gradient_step(
                self.replay.numeric[idx],
                self.replay.codes[idx],
                self.replay.labels[idx],
                self.replay.weight[idx],
            )

    def _step(
        self,
        numeric: NDArray[np.float32],
        codes: NDArray[np.int64],
        labels: NDArray[np.float32],
        replay_rows: int,
        weights: NDArray[np.float32],
    ) -> None:
        if replay_rows:
            idx, weights_old = self.replay.sample(
                replay_rows, self.rng, self.options.old_epoch_weight
            )
            if len(idx):
                numeric = np.concatenate([numeric, self.replay.numeric[idx]])
                codes = np.concatenate([codes, self.replay.codes[idx]])
                labels = np.concatenate([labels, self.replay.labels[idx]])
                replayed = self.replay.weight[idx]
                if weights_old is not None:
                    replayed = replayed * weights_old
                weights = np.concatenate([weights, replayed])
        self._gradient_step(numeric, codes, labels, weights)

    def _gradient_step(
        self,
        numeric: NDArray[np.float32],
        codes: NDArray[np.int64],
        labels: NDArray[np.float32],
        weights: NDArray[np.float32] | None,
    ) -> None:
        if weights is not None and bool((weights == 1.0).all()):
            weights = None  # the plain mean: the same loss, and the step of old
        self.fresh = False
        if self.shard is not None:
            self._shard_gradient(self.shard, numeric, codes, labels, weights)
        else:
            out = self.net(torch.from_numpy(numeric), torch.from_numpy(codes))
            loss = self._loss(out, self._targets(labels), weights)
            self.optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
        self.ewc.add_gradient(self.net, self.options.ewc_lambda)
        boost = self.options.boost_factor if self.boost_left > 0 else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.options.learning_rate * boost
        self.optimizer.step()

    def _shard_gradient(
        self,
        shard: Shard,
        numeric: NDArray[np.float32],
        codes: NDArray[np.int64],
        labels: NDArray[np.float32],
        weights: NDArray[np.float32] | None,
    ) -> None:
        """This rank's share of the step's gradient, summed with the others' (`Shard`).

        Every rank holds the whole step batch; rank r computes the loss of rows
        r, r + world, ... divided by the whole batch's weight, so the sum over the
        ranks is the loss of the whole batch and the reduced gradient is its gradient.
        """
        mine = slice(shard.rank, None, shard.world)
        total = float(len(labels)) if weights is None else float(weights.sum())
        out = self.net(torch.from_numpy(numeric[mine]), torch.from_numpy(codes[mine]))
        targets = self._targets(labels[mine])
        if self.task == "regression":
            out, targets = self.net.standard_units(out), self.net.standard_units(targets)
            per_row = (out - targets) ** 2
        else:
            per_row = functional.cross_entropy(out, targets, reduction="none")
        if weights is not None:
            per_row = per_row * torch.from_numpy(weights[mine])
        loss = per_row.sum() / max(total, 1e-12)
        self.optimizer.zero_grad(set_to_none=False)
        torch.autograd.backward(loss)
        shard.reduce(self.net)

    def _targets(self, labels: NDArray[np.float32]) -> torch.Tensor:
        if self.task == "classification":
            return torch.from_numpy(labels.astype(np.int64))
        return torch.from_numpy(labels)

    def _loss(
        self, out: torch.Tensor, targets: torch.Tensor, weights: NDArray[np.float32] | None = None
    ) -> torch.Tensor:
        if self.task == "regression":  # in the body's standard units (nets.TabularNet)
            out, targets = self.net.standard_units(out), self.net.standard_units(targets)
        if weights is None:
            if self.task == "classification":
                return functional.cross_entropy(out, targets)
            return functional.mse_loss(out, targets)
        if self.task == "classification":
            per_row = functional.cross_entropy(out, targets, reduction="none")
        else:
            per_row = (out - targets) ** 2
        w = torch.from_numpy(weights)
        return (per_row * w).sum() / w.sum()

    def fit_offline(self, ex: Examples, passes: int, refit_statistics: bool = True) -> None:
        """Several shuffled passes over `ex` (bootstrap and scheduled retrains)."""
        if refit_statistics and isinstance(self.net.preprocess, Preprocess):
            self.net.preprocess.fit(ex.numeric)
        if refit_statistics or self.net.needs_target_fit():
            self.net.fit_target(ex.labels)
        batch = self.options.batch_size
        # A small data set gets up to `min_offline_steps` steps, in at most twice the
        # passes asked: five passes over 1,000 rows in batches of 256 are 20 steps and
        # leave the network short of what the rows can teach it; many more passes over a
        # few hundred rows would learn their noise. A fresh network (bootstrap, scheduled
        # retrain) gets up to 1 / learning_rate steps: Adam moves each weight by about
        # the learning rate per step, so fewer cannot take a weight as far as its own
        # initial scale (benchmarks/results/trainer-generality-lagged.md: Agrawal's
        # first concept, 28 bootstrap steps -> 40, before drift 0.934 -> 0.960 on seed 1).
        floor = self.options.min_offline_steps
        if self.fresh:
            floor = max(floor, math.ceil(1.0 / self.options.learning_rate))
        per_pass = math.ceil(len(ex) / batch) if len(ex) else 1
        passes = max(passes, min(2 * passes, math.ceil(floor / per_pass)))
        for _ in self._contenders():
            self.net.train()
            for _ in range(passes):
                order = self.rng.permutation(len(ex))
                for start in range(0, len(ex), batch):
                    rows = ex.take(order[start : start + batch])
                    self._gradient_step(rows.numeric, rows.codes, rows.labels, rows.weight)
        self.trained += len(ex) * passes

    def retrain_on(self, ex: Examples, passes: int) -> None:
        """A fresh network trained on the rows of `ex` that are not held out (scheduled
        retraining, `retrain.py`)."""
        data = ex.take(~holdout_mask(ex.key, self.options.holdout_fraction))
        self.net = self.new_net(self.options.seed + self.seq)
        self.fresh = True
        self.optimizer = adam(self.net, self.options.learning_rate)
        self.ewc.reset()
        self.rival = None  # a race is between versions of this lineage
        if len(data):
            self.fit_offline(data, passes, refit_statistics=True)

    # -- predicting and scoring -----------------------------------------------------

    def predict(
        self, numeric: NDArray[np.float32], codes: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        """Probabilities [n, C] (classification) or values [n] (regression)."""
        self.net.eval()
        with torch.no_grad():
            out = self.net(torch.from_numpy(numeric), torch.from_numpy(codes))
            if self.task == "classification":
                out = torch.softmax(out, dim=1)
        return np.asarray(out.numpy(), dtype=np.float32)

    def score(self, ex: Examples) -> float:
        if len(ex) == 0:
            return math.nan
        return quality(self.task, ex.labels, self.predict(ex.numeric, ex.codes))

    def gate_rows(self) -> tuple[Examples, Examples]:
        """The current epoch's held-out slice and anchor set."""
        holdout = self.holdout.rows(self.holdout.latest(self.epoch))
        anchors = self.anchors.rows(self.anchors.current_slots())
        return holdout, anchors

    def forget_recent(self) -> None:
        """Empty the held-out and recent windows (they hold recent data only).

        A trainer starting from a bootstrap state calls this: the bootstrap rows stay
        in the anchor set and the replay reservoir, but are not "recent".
        """
        for ring in (self.holdout, self.recent):
            ring.epoch[:] = EMPTY
            ring.head = 0

    # -- protection against forgetting ----------------------------------------------

    def refresh_ewc(self) -> None:
        """Anchor the current weights; Fisher from the current epoch's replay rows.

        In a young epoch (younger than `settle_rows` rows) the anchor pulls in proportion
        to the epoch's age: its network is still learning the rows its replay reservoir
        holds, and a full-strength anchor would hold it near where it stood after its
        first rows instead of protecting what it knew well
        (benchmarks/results/trainer-generality-lagged.md: an anchor taken after the
        1,000 bootstrap rows cost RandomTree 3 points and Agrawal 1 before drift).
        """
        if self.options.ewc_lambda <= 0:
            return
        pool = self.replay.current_slots()
        if len(pool) == 0:
            self.ewc.reset()
            return
        idx = pool[self.rng.integers(0, len(pool), min(self.options.fisher_rows, len(pool)))]
        self.net.eval()
        self.ewc.refresh(
            self.net,
            torch.from_numpy(self.replay.numeric[idx]),
            torch.from_numpy(self.replay.codes[idx]),
            self._targets(self.replay.labels[idx]),
            lambda out, y: self._loss(out, y),
        )
        age, settle = self.epoch_age(), self.options.settle_rows
        if 0 <= age < settle:
            self.ewc.weaken(age / settle)

    # -- concept epochs -------------------------------------------------------------

    def _watch(self, ex: Examples, seq: NDArray[np.int64], report: LearnReport) -> None:
        served = ~np.isnan(ex.served)
        if not served.any():
            return
        if self.task == "classification":
            rose = self.monitor.update(ex.served[served] != ex.labels[served], seq[served])
        else:
            residuals = ex.served[served] - ex.labels[served]
            rose = self.monitor.update_residuals(residuals, seq[served])
        if not rose:
            return
        start = self.monitor.change_start if self.monitor.change_start is not None else int(seq[0])
        since = self.recent.rows(self.recent.latest(self.epoch))
        recent_seq = self.recent.seq[self.recent.latest(self.epoch)]
        since = since.take(recent_seq >= start)
        # The anchor set already holds some rows since the change: compare with the rest.
        slots = self.anchors.current_slots()
        anchors = self.anchors.rows(slots[self.anchors.seq[slots] < start])
        shifted = shifted_features(
            since.numeric,
            anchors.numeric,
            self.layout.numeric_names,
            since.codes,
            anchors.codes,
            self.layout.categorical_names,
        )
        before, now = self.monitor.last_rates
        tolerance = self.monitor.tolerance
        self.monitor.reset()
        reason = f"serving error rate rose from {before:.3f} to {now:.3f}"
        if shifted:
            # Inputs moved. Where they did not, is the serving model as right as before?
            # If not, the rule changed too: replay and EWC would hold the old one.
            region = in_old_region(since.numeric, since.codes, anchors.numeric, anchors.codes)
            stayed = since.take(region & ~np.isnan(since.served))
            if self.task == "classification":
                errors = stayed.served != stayed.labels
            else:
                errors = np.abs(stayed.served - stayed.labels) > (tolerance or math.inf)
            if not rose_in_old_region(errors, before, self.monitor.min_increase, self.monitor.z):
                report.covariate = shifted
                return
            reason += (
                f" with shifted inputs ({', '.join(shifted)}), and to {errors.mean():.3f} "
                f"on {len(errors)} rows where the inputs did not move"
            )
        else:
            reason += " while the inputs stayed alike"
        report.concept = self.open_epoch(reason, start)

    def open_epoch(self, reason: str, from_seq: int | None = None) -> EpochRecord:
        """Start a new concept epoch; rows from `from_seq` on belong to it."""
        self.epoch += 1
        start = self.seq if from_seq is None else from_seq
        self.replay.open_epoch(self.epoch, start)
        self.anchors.open_epoch(self.epoch, start, clear=True)
        self.holdout.retag(start, self.epoch)
        self.recent.retag(start, self.epoch)
        self.ewc.reset()
        self.monitor.reset()
        self.boost_left = self.options.boost_rows
        if self.options.race_rows > 0:
            self._start_race()
        record = EpochRecord(self.epoch, start, reason, time.time())
        self.epochs.append(record)
        # The rows since the change are all the new concept has shown so far: learn them now.
        slots = self.recent.latest(self.epoch)
        rows = self.recent.rows(slots)
        rows = rows.take(~holdout_mask(rows.key, self.options.holdout_fraction))
        if self.task == "classification" and len(rows):
            self._remap_outputs(rows)
        if len(rows):
            # As many steps as `catch_up_passes` batches: many passes over a few rows,
            # fewer over many (which may reach back before a slow change began).
            batches = self.options.catch_up_passes * self.options.batch_size / len(rows)
            passes = max(1, min(self.options.catch_up_passes, round(batches)))
            self.fit_offline(rows, passes, refit_statistics=False)
        return record

    def _remap_outputs(self, rows: Examples) -> None:
        """Relabel the network's outputs when the new concept renamed the classes.

        A rule that swaps labels (an inversion, in two classes) leaves the network right
        about where the boundary is and wrong about which side is which; gradient steps
        would need hundreds of steps to turn every weight around. If a permutation of
        the outputs fits the rows since the change far better than the outputs as they
        are, the last layer's rows are permuted at once (no new parameters: the
        exported graph keeps its shape).
        """
        from scipy.optimize import linear_sum_assignment

        classes = int(self.model.classes)
        if len(rows) < self.options.remap_min_rows:
            return
        predicted = self.predict(rows.numeric, rows.codes).argmax(axis=1)
        labels = rows.labels.astype(np.int64)
        counts = np.zeros((classes, classes), np.int64)  # [predicted, true]
        np.add.at(counts, (predicted, labels), 1)
        _, mapping = linear_sum_assignment(-counts)  # predicted class i -> label mapping[i]
        gain = (counts[np.arange(classes), mapping].sum() - np.trace(counts)) / len(rows)
        if gain < self.options.remap_min_gain:
            return
        last = _output_layer(self.net, classes)
        if last is None:
            return
        # Output j must now say what output i said, where mapping[i] = j.
        order = np.argsort(mapping)
        with torch.no_grad():
            index = torch.from_numpy(order)
            last.weight.copy_(last.weight[index])
            if last.bias is not None:
                last.bias.copy_(last.bias[index])
        self.optimizer = adam(self.net, self.options.learning_rate)

    # -- a fresh network racing the adapted one ------------------------------------

    def _start_race(self) -> None:
        """A freshly initialised network, with the same input and target statistics,
        learns the new epoch beside the current one; the next rows decide which serves.

        Unlearning a concept takes an adapted network longer than learning the new
        one takes a fresh network: Adam moves each weight by about the learning rate
        per step, and a network that is confidently wrong (a rule that inverted its
        labels) has far to go. Where the old knowledge still helps, the adapted
        network keeps its lead and the fresh one is dropped when the race ends.
        """
        fresh = build_net(self.model, self.features, self.options.seed + self.seq + 1)
        fresh.preprocess.load_state_dict(self.net.preprocess.state_dict())
        if self.net.regression:
            for name in ("target_mean", "target_scale", "target_fitted"):
                getattr(fresh, name).copy_(getattr(self.net, name))
        self.rival = Rival(fresh, adam(fresh, self.options.learning_rate), self.options.race_rows)

    def _contenders(self) -> Iterator[TabularNet]:
        """Yields the serving network, then the rival (if any) as `self.net` in turn:
        every training step of the body runs once per contender."""
        yield self.net
        rival = self.rival
        if rival is None:
            return
        net, optimizer = self.net, self.optimizer
        self.net, self.optimizer = rival.net, rival.optimizer
        try:
            yield self.net
        finally:
            self.net, self.optimizer = net, optimizer

    def _race(self, ex: Examples) -> None:
        """Score both networks on rows neither has learned yet; the lower total loss
        since the race began serves. The race ends after `race_rows` rows."""
        rival = self.rival
        assert rival is not None
        if len(ex):
            mine = self._row_loss(self.net, ex)
            theirs = self._row_loss(rival.net, ex)
            rival.lead += mine - theirs
            rival.left -= len(ex)
            if rival.lead > 0:  # the rival did better so far: it serves now
                rival.net, self.net = self.net, rival.net
                rival.optimizer, self.optimizer = self.optimizer, rival.optimizer
                rival.lead = -rival.lead
                rival.swaps += 1
                self.ewc.reset()
        if rival.left <= 0:
            self.rival = None

    def _row_loss(self, net: TabularNet, ex: Examples) -> float:
        net.eval()
        with torch.no_grad():
            out = net(torch.from_numpy(ex.numeric), torch.from_numpy(ex.codes))
            targets = self._targets(ex.labels)
            if self.task == "regression":
                out, targets = net.standard_units(out), net.standard_units(targets)
                return float(((out - targets) ** 2).sum())
            return float(functional.cross_entropy(out, targets, reduction="sum"))

    def boost(self, rows: int | None = None) -> None:
        """Raise the learning rate for the next `rows` rows (a drift signal)."""
        self.boost_left = max(self.boost_left, rows or self.options.boost_rows)

    def seq_since(self, ts: float) -> int | None:
        """The first sequence number whose label arrived at or after `ts`, if still held."""
        slots = self.recent.latest(self.epoch)
        later = slots[self.recent.ts[slots] >= ts]
        return int(self.recent.seq[later].min()) if len(later) else None


def _output_layer(net: TabularNet, classes: int) -> torch.nn.Linear | None:
    """The body's last linear layer, if it produces the class logits."""
    layers = [m for m in net.body.modules() if isinstance(m, torch.nn.Linear)]
    if not layers or layers[-1].out_features != classes:
        return None
    return layers[-1]
