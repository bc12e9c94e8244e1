"""Exploration: which rows an exploration policy answers, what it answers, with what odds.

A model trained on outcomes that depend on its own decisions (recommendations, credit)
only ever sees the outcomes of what it chose: it confirms itself. With
`spec.training.exploration`, an `epsilon` share of entities is answered by an
exploration policy instead (a uniform random class, or the baseline version's answer);
the prediction log marks those rows `explored` and every served row carries the
propensity of the label it was served, so the trainer can weigh examples by its inverse.

Both decisions are hashes, the same in every process: an entity is explored or not
for as long as the salt stays (entity-sticky, so a client cannot re-roll a decision
by asking again), and an explored entity is always given the same uniform class.
The explore hash is salted apart from the canary's (`routing.sticky_bucket`), so
which entities explore does not depend on which version serves them.

The propensity is the probability, over the hash (that is, over entities), that the
logging policy serves label `a` for these features, with `m` the model's label:

- uniform: `(1 - epsilon) * [a == m] + epsilon / K`
- baseline (its label `b`): `(1 - epsilon) * [a == m] + epsilon * [a == b]`

An explored row whose label happens to equal the model's has the same propensity as
an exploited one: under the logging policy the two cannot be told apart.
"""

from __future__ import annotations

import hashlib

EXPLORE_SPACE = 1 << 32


def _hash(*parts: str) -> int:
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def explores(model: str, key: str, epsilon: float, salt: str = "") -> bool:
    """Whether the entity (or request, without one) `key` is answered by the policy."""
    if epsilon <= 0:
        return False
    bucket = _hash("explore", model, salt, key) % EXPLORE_SPACE
    return bucket < int(epsilon * EXPLORE_SPACE)


def uniform_label(model: str, key: str, classes: int, salt: str = "") -> int:
    """The class the uniform policy serves `key`: uniform over classes, fixed per key."""
    return _hash("uniform", model, salt, key) % classes


def propensity(
    served: int,
    model_label: int,
    epsilon: float,
    classes: int,
    policy: str = "uniform",
    baseline_label: int | None = None,
) -> float:
    """Probability the logging policy serves `served` to rows like this one."""
    own = (1.0 - epsilon) if served == model_label else 0.0
    if policy == "uniform":
        return own + epsilon / classes
    return own + (epsilon if served == baseline_label else 0.0)
