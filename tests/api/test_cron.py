"""Cron schedules: what the spec accepts, when the local timer fires, scheduleSeconds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from driftline.api.cron import CronError, from_seconds, next_after, parse


@pytest.mark.parametrize(
    ("cron", "after", "fires"),
    [
        ("0 * * * *", datetime(2026, 1, 1, 10, 0), datetime(2026, 1, 1, 11, 0)),
        ("*/15 * * * *", datetime(2026, 1, 1, 10, 7), datetime(2026, 1, 1, 10, 15)),
        ("30 2 * * 1", datetime(2026, 1, 1, 0, 0), datetime(2026, 1, 5, 2, 30)),  # a Monday
        ("0 0 1,15 * *", datetime(2026, 1, 2, 0, 0), datetime(2026, 1, 15, 0, 0)),
    ],
)
def test_next_after(cron: str, after: datetime, fires: datetime) -> None:
    assert next_after(parse(cron), after.replace(tzinfo=UTC)) == fires.replace(tzinfo=UTC)


@pytest.mark.parametrize("cron", ["* * * *", "60 * * * *", "a * * * *", "*/0 * * * *"])
def test_bad_crons_are_refused(cron: str) -> None:
    with pytest.raises(CronError):
        parse(cron)


@pytest.mark.parametrize(
    ("seconds", "cron"),
    [(60, "* * * * *"), (900, "*/15 * * * *"), (3600, "0 * * * *"), (86400, "0 0 * * *")],
)
def test_from_seconds(seconds: float, cron: str) -> None:
    assert from_seconds(seconds) == cron


def test_the_spec_takes_a_cron_or_schedule_seconds() -> None:
    from driftline.api.spec import TrainingSpec

    assert TrainingSpec(mode="scheduled", schedule={"cron": "0 3 * * *"}).retrain_cron() == (
        "0 3 * * *"
    )
    assert TrainingSpec(mode="scheduled", schedule_seconds=1800).retrain_cron() == "*/30 * * * *"
    with pytest.raises(ValueError, match="day of week"):
        TrainingSpec(mode="scheduled", schedule={"cron": "0 3 * * 9"})
    with pytest.raises(ValueError, match=r"schedule\.cron"):
        TrainingSpec(mode="scheduled")
