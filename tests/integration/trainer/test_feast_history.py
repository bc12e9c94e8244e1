"""A bootstrap from Feast's offline store: real Feast (tests/rig/feast) joins each
labeled row with the feature values as of the row's time, never later ones.

Feast writes `user_stats` history (three values per user over two hours) to its
Parquet offline store; an entity file of labeled rows at random times is joined
through `bootstrap --from-feast`. Checked: every row's Feast features equal the
newest value at or before its timestamp (a plain-Python as-of join over the same
history), a row before a user's first value, an unknown user, an entity id that is
no integer and a string feature get the spec's defaults as serving gives them, the
request features and labels pass through in order, and the CLI registers version 1
in a real MLflow from those rows. A scheduled retrain from Feast (`retrain
--from-feast`) reads a Parquet folder of entity rows the same way: it trains on the
window's rows with their point-in-time values, registers a candidate through the
gate, registers nothing for the same rows again, and names a missing label column,
a missing feature repository and a missing `--feast-repo`.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from driftline.api import load_dynamic_model
from driftline.api.artifacts import ALIAS_CANDIDATE, ALIAS_CHAMPION, TAG_OFFSETS
from driftline.local.servers import MlflowServer, RedisServer
from driftline.trainer.__main__ import main as trainer_main
from driftline.trainer.bootstrap import DataError
from driftline.trainer.examples import Examples
from driftline.trainer.feast_history import rows_from_feast
from driftline.trainer.learner import OnlineLearner
from driftline.trainer.retrain import (
    TAG_HISTORY_SOURCE,
    TAG_ROWS,
    TAG_TRAINING,
    FeastHistory,
    retrain,
)
from driftline.trainer.settings import TrainerSettings
from driftline.trainer.versions import ModelVersions
from driftline_testing.feast import FeastRepo, feast_built, feast_venv
from driftline_testing.models import model_document, write_model_file

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PROJECT = "driftline_history"
NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(hours=3)
KEY = [{"joinKey": "user_id", "type": "int64"}]
DEFAULTS = {"txn_count": -1.0, "ratio": 0.0, "segment": 7.0}


def feast(name: str, **extra: Any) -> dict[str, Any]:
    source = {"project": PROJECT, "featureView": "user_stats", "name": name, "entityKeys": KEY}
    return {"name": name, "source": {"feast": {**source, **extra}}}


# user_id -> [(time, txn_count, ratio)], three values each, 40 minutes apart.
HISTORY = {
    user: [
        (START + timedelta(minutes=20 * user + 40 * k), 10 * user + k, round(0.1 * user + k, 2))
        for k in range(3)
    ]
    for user in (1, 2, 3)
}


def as_of(user: int, at: datetime) -> tuple[float, float] | None:
    """The newest (txn_count, ratio) written at or before `at`; None before the first."""
    seen = [(t, c, r) for t, c, r in HISTORY[user] if t <= at]
    return (float(seen[-1][1]), seen[-1][2]) if seen else None


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeastRepo]:
    if not feast_built():
        if os.environ.get("DRIFTLINE_RIG", "").lower() == "off":
            pytest.skip("DRIFTLINE_RIG=off and Feast's venv is not built (make rig)")
        pytest.fail("Feast's venv is not built: run `make rig` (tests/rig/feast/build.sh)")
    folder = tmp_path_factory.mktemp("feast-history")
    with RedisServer(log_path=folder / "redis.log") as server:
        feast_repo = FeastRepo(folder / "repo", server.port, project=PROJECT)
        users = [
            {"user_id": u, "txn_count": c, "age": 30, "ratio": r, "amount": 1.0,
             "segment": "gold", "vip": False, "event_timestamp": t}
            for u, values in HISTORY.items() for t, c, r in values
        ]  # fmt: skip
        feast_repo.apply(  # the offline store only: nothing is materialized
            {
                "user_stats": users,
                "merchant_risk": [{"merchant_id": "m", "risk": 0.5, "event_timestamp": START}],
                "user_merchant": [
                    {"user_id": 1, "merchant_id": "m", "pair_count": 1, "event_timestamp": START}
                ],
            }
        )
        yield feast_repo


def model_file(
    folder: Path, name: str, tracking_uri: str, training: dict[str, Any] | None = None
) -> Path:
    doc = model_document(name, tracking_uri=tracking_uri, numeric=("x1",))
    if training is not None:
        doc["spec"]["training"] = training
    doc["spec"]["features"] += [
        feast("txn_count", default=DEFAULTS["txn_count"]),
        feast("ratio"),
        feast("segment", default=DEFAULTS["segment"]),  # a Feast string: the default
    ]
    return write_model_file(folder / f"{name}.yaml", doc)


def entity_rows(n: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    rows = []
    for i in range(n):
        entity = rng.choice(["1", "2", "3", "3", "9", "abc"])  # 9: unknown; abc: no integer
        at = START + timedelta(seconds=rng.randrange(0, int((NOW - START).total_seconds())))
        rows.append(
            {"entity_id": entity, "event_timestamp": at.isoformat(), "x1": float(i),
             "label": i % 2}
        )  # fmt: skip
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def feast_python() -> str:
    return str(feast_venv() / "bin" / "python")


def test_each_row_gets_the_values_as_of_its_time(repo: FeastRepo, tmp_path: Path) -> None:
    model = load_dynamic_model(model_file(tmp_path, "history", "http://127.0.0.1:1"))
    given = entity_rows(300)
    rows, labels = rows_from_feast(
        model, write_jsonl(tmp_path / "labeled.jsonl", given), repo.path, feast_python()
    )
    assert len(rows) == len(given)
    assert labels.tolist() == [float(r["label"]) for r in given]
    defaulted = 0
    for got, row in zip(rows, given, strict=True):
        assert got["x1"] == row["x1"]  # a request feature passes through, in order
        assert got["segment"] == DEFAULTS["segment"]
        entity = row["entity_id"]
        known = as_of(int(entity), datetime.fromisoformat(row["event_timestamp"])) if (
            entity in ("1", "2", "3")
        ) else None  # fmt: skip
        if known is None:
            defaulted += 1
            assert (got["txn_count"], got["ratio"]) == (DEFAULTS["txn_count"], 0.0), row
        else:
            assert (got["txn_count"], pytest.approx(got["ratio"])) == known, row
    assert 50 < defaulted < 250  # unknown users, non-integer ids and rows before the first


def test_a_missing_time_column_and_no_feast_python_are_named(
    repo: FeastRepo, tmp_path: Path
) -> None:
    model = load_dynamic_model(model_file(tmp_path, "history", "http://127.0.0.1:1"))
    rows = [{k: v for k, v in r.items() if k != "event_timestamp"} for r in entity_rows(5)]
    path = write_jsonl(tmp_path / "no-time.jsonl", rows)
    with pytest.raises(DataError, match="event_timestamp"):
        rows_from_feast(model, path, repo.path, feast_python())
    with pytest.raises(DataError, match="DRIFTLINE_TRAINER_FEAST_PYTHON"):
        rows_from_feast(model, path, repo.path, None)
    with pytest.raises(DataError, match="failed"):  # a Python without Feast
        rows_from_feast(model, write_jsonl(tmp_path / "ok.jsonl", entity_rows(5)), repo.path,
                        sys.executable)  # fmt: skip


def test_join_keys_from_other_columns_and_their_errors_are_named(
    repo: FeastRepo, tmp_path: Path
) -> None:
    doc = model_document("keyed", tracking_uri="http://127.0.0.1:1", numeric=("x1",))
    keys = [{"joinKey": "user_id", "type": "int64", "field": "customer"}]
    doc["spec"]["features"] += [feast("txn_count", default=-1, entityKeys=keys)]
    model = load_dynamic_model(write_model_file(tmp_path / "keyed.yaml", doc))
    at = (START + timedelta(hours=2)).isoformat()
    given = [
        {"customer": c, "event_timestamp": at, "x1": 0.0, "label": 0} for c in (1, "2", None, 9)
    ]
    rows, _ = rows_from_feast(
        model, write_jsonl(tmp_path / "keyed.jsonl", given), repo.path, feast_python()
    )
    expected = [as_of(u, START + timedelta(hours=2)) for u in (1, 2)]
    assert [r["txn_count"] for r in rows] == [e[0] for e in expected if e] + [-1.0, -1.0]
    for broken, says in (
        ([{**given[0], "customer": "u-1"}], "row 0, column 'customer': 'u-1' is no int64"),
        ([{k: v for k, v in given[0].items() if k != "customer"}], "'customer' is missing"),
    ):
        with pytest.raises(DataError, match=says):
            rows_from_feast(
                model, write_jsonl(tmp_path / "broken.jsonl", broken), repo.path, feast_python()
            )


def test_the_cli_registers_the_first_version_from_feast(
    repo: FeastRepo,
    tmp_path: Path,
    mlflow_server: MlflowServer,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = model_file(tmp_path, unique, mlflow_server.tracking_uri)
    monkeypatch.setenv("DRIFTLINE_TRAINER_FEAST_PYTHON", feast_python())
    monkeypatch.setenv("DRIFTLINE_TRAINER_CHECKPOINT_DIR", str(tmp_path / "state"))
    entities = write_jsonl(tmp_path / "labeled.jsonl", entity_rows(600))
    argv = ["--model-file", str(path), "bootstrap", "--from-feast", str(entities)]
    assert trainer_main(argv) == 2  # no repository named
    assert "--feast-repo" in capsys.readouterr().err
    code = trainer_main([*argv, "--feast-repo", str(repo.path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.strip().splitlines()[-1] == "1"
    versions = ModelVersions(mlflow_server.tracking_uri, unique)
    info = versions.by_alias(ALIAS_CHAMPION)
    assert info is not None and info.version == "1"


def write_parquet_folder(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """The rows in two Parquet files of one folder (a file the user appends to, in parts)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    half = len(rows) // 2
    for i, part in enumerate((rows[:half], rows[half:])):
        pq.write_table(pa.Table.from_pylist(part), folder / f"part-{i}.parquet")
    return folder


def test_a_scheduled_retrain_from_feast_trains_on_point_in_time_rows_and_publishes(
    repo: FeastRepo,
    tmp_path: Path,
    mlflow_server: MlflowServer,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    window = 2 * 3600.0  # the last two of the history's three hours
    training = {
        "mode": "scheduled",
        "schedule": {"cron": "0 * * * *", "historySeconds": window, "maxRows": 100_000},
    }
    path = model_file(tmp_path, unique, mlflow_server.tracking_uri, training)
    monkeypatch.setenv("DRIFTLINE_TRAINER_FEAST_PYTHON", feast_python())
    monkeypatch.setenv("DRIFTLINE_TRAINER_CHECKPOINT_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DRIFTLINE_TRAINER_GATE_MIN_HOLDOUT", "10")
    given = entity_rows(600)
    entities = write_parquet_folder(tmp_path / "labeled", given)
    settings = TrainerSettings(model_file=path)

    trained: list[Examples] = []
    retrain_on = OnlineLearner.retrain_on

    def spy(self: OnlineLearner, ex: Examples, passes: int) -> None:
        trained.append(ex)
        retrain_on(self, ex, passes)

    monkeypatch.setattr(OnlineLearner, "retrain_on", spy)
    now = NOW.timestamp()
    result = retrain(settings, now=now, feast=FeastHistory(entities, repo.path))
    assert result.version is not None, result.reason

    # The rows it trained on: the window's entity rows, each with its as-of Feast values.
    (ex,) = trained
    inside = [
        i for i, r in enumerate(given) if datetime.fromisoformat(r["event_timestamp"]).timestamp()
        >= now - window
    ]  # fmt: skip
    assert sorted(ex.key.tolist()) == inside and 300 < len(inside) < 500
    names = settings.model.spec.features
    column = {f.name: j for j, f in enumerate(n for n in names if n.type == "numeric")}
    known = 0
    for j, k in enumerate(ex.key.tolist()):
        row = given[k]
        at = datetime.fromisoformat(row["event_timestamp"])
        assert ex.ts[j] == pytest.approx(at.timestamp())
        assert ex.numeric[j, column["x1"]] == row["x1"] and ex.labels[j] == row["label"]
        value = as_of(int(row["entity_id"]), at) if row["entity_id"] in ("1", "2", "3") else None
        got = (float(ex.numeric[j, column["txn_count"]]), float(ex.numeric[j, column["ratio"]]))
        if value is None:
            assert got == (DEFAULTS["txn_count"], 0.0), row
        else:
            known += 1
            assert got[0] == value[0] and got[1] == pytest.approx(value[1]), row
    assert known > 100

    # The same gate and publish path as any scheduled retrain: a candidate with its tags.
    versions = ModelVersions(mlflow_server.tracking_uri, unique)
    candidate = versions.by_alias(ALIAS_CANDIDATE)
    assert candidate is not None and candidate.version == result.version
    tags = candidate.tags
    assert tags[TAG_TRAINING] == "scheduled" and tags[TAG_ROWS] == str(len(inside))
    assert tags[TAG_HISTORY_SOURCE] == "feast:labeled"
    assert json.loads(tags[TAG_OFFSETS]) == {"feast:labeled": [inside[0], inside[-1]]}
    again = retrain(settings, now=now, feast=FeastHistory(entities, repo.path))
    assert again.version is None and "no new rows" in again.reason

    # The CLI names what is missing, and registers nothing.
    argv = ["--model-file", str(path), "retrain", "--from-feast", str(entities)]
    assert trainer_main(argv) == 2
    assert "--feast-repo" in capsys.readouterr().err
    assert trainer_main([*argv, "--feast-repo", str(tmp_path / "nowhere")]) == 2
    assert "not a Feast feature repository" in capsys.readouterr().err
    unlabeled = write_jsonl(
        tmp_path / "unlabeled.jsonl", [{k: v for k, v in r.items() if k != "label"} for r in given]
    )
    argv = ["--model-file", str(path), "retrain", "--feast-repo", str(repo.path)]
    assert trainer_main([*argv, "--from-feast", str(unlabeled)]) == 2
    err = capsys.readouterr().err
    assert "unlabeled.jsonl joined with Feast: columns ['label'] are missing" in err, err
    assert len(versions.model.find_versions({TAG_TRAINING: "scheduled"})) == 1
