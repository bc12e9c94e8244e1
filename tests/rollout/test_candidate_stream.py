"""A trainer that publishes every few seconds, against the machine, second by second.

The demo's trainer publishes a version every ~13 s, faster than a shadow and its
canary steps gather evidence. Each candidate must still be judged on its own
evidence, and the first promotion must come no later than with one candidate alone.
"""

from __future__ import annotations

from driftline.api.artifacts import ALIAS_CANDIDATE
from tests.rollout.builders import World, evidence, policy

# The sample model's rollout (manifests/samples/sea-demo.yaml).
SAMPLE = {
    "steps": (20, 50, 100),
    "step_seconds": 10.0,
    "shadow_min_samples": 300,
    "max_disagreement": 0.5,
    "min_labeled": 150,
    "max_quality_drop": 0.02,
    "max_inconclusive_seconds": 120.0,
}
LABELED_PER_SECOND = 40


def run(publish_every: float | None, seconds: int = 120) -> World:
    """Tick once a second with traffic; publish a new version every `publish_every` s."""
    world = World(policy=policy(**SAMPLE))
    world.tick()
    world.propose("2")
    next_version, last_publish = 3, world.now
    for _ in range(seconds):
        world.add(evidence(LABELED_PER_SECOND, agreement=0.95))
        if publish_every is not None and world.now - last_publish >= publish_every:
            world.aliases[ALIAS_CANDIDATE] = str(next_version)
            next_version, last_publish = next_version + 1, world.now
        world.tick(1)
    return world


def first(world: World, stage: str) -> float:
    return next(t.at for t in world.state.history if t.to_stage == stage)


def test_a_stream_of_candidates_does_not_abort_the_one_in_shadow() -> None:
    world = run(publish_every=3)
    aborted = [t for t in world.state.history if t.to_stage == "aborted"]
    assert not aborted, [t.reason for t in aborted]
    stages = [(t.to_stage, t.weight) for t in world.state.history if t.candidate == "2"]
    assert stages == [
        ("shadow", 0),
        ("canary", 20),
        ("canary", 50),
        ("canary", 100),
        ("promoted", 0),
    ]


def test_promotion_comes_no_later_than_with_a_single_candidate() -> None:
    alone, stream = run(publish_every=None), run(publish_every=3)
    assert first(stream, "promoted") <= first(alone, "promoted")
    assert stream.state.history[-1].to_stage in ("shadow", "canary", "promoted")


def test_the_newest_version_is_tested_next() -> None:
    world = run(publish_every=3, seconds=80)
    promoted = [t for t in world.state.history if t.to_stage == "promoted"]
    assert promoted and promoted[0].candidate == "2"
    after = [t for t in world.state.history if t.at > promoted[0].at and t.to_stage == "shadow"]
    assert after, world.state.reason
    # The next rollout takes the version the alias named when "2" was promoted: the
    # newest then, not the one published right after "2".
    published_by_then = 2 + int((promoted[0].at - 1000.0) // 3)
    assert int(after[0].candidate or 0) >= published_by_then
