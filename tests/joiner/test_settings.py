"""Joiner settings: environment prefix and the grace period after the join window."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.joiner.settings import JoinerSettings


def test_reads_its_own_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRIFTLINE_JOINER_MODEL_FILE", str(tmp_path / "m.yaml"))
    monkeypatch.setenv("DRIFTLINE_JOINER_BATCH_SIZE", "123")
    monkeypatch.setenv("DRIFTLINE_TRAINER_BATCH_SIZE", "999")
    settings = JoinerSettings()
    assert settings.batch_size == 123
    assert settings.model_file == tmp_path / "m.yaml"


@pytest.mark.parametrize(
    ("window", "grace"),
    [(120, 30.0), (3600, 360.0), (86_400, 3600.0), (30 * 86_400, 3600.0)],
)
def test_grace_is_a_little_over_the_window(window: float, grace: float, tmp_path: Path) -> None:
    assert JoinerSettings(model_file=tmp_path / "m.yaml").grace(window) == grace


def test_an_explicit_grace_wins(tmp_path: Path) -> None:
    settings = JoinerSettings(model_file=tmp_path / "m.yaml", grace_seconds=5)
    assert settings.grace(86_400) == 5


def test_refuses_a_batch_size_of_zero(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        JoinerSettings(model_file=tmp_path / "m.yaml", batch_size=0)
