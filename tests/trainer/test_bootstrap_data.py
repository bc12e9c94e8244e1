"""Reference data for the first version: files and generators, with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from driftline.api.spec import FeatureSpec
from driftline.common.features import FeatureLayout
from driftline.trainer.__main__ import main
from driftline.trainer.bootstrap import DataError, rows_from_file

LAYOUT = FeatureLayout.from_features(
    [FeatureSpec(name="x"), FeatureSpec(name="kind", type="categorical", hash_buckets=4)]
)


def test_csv_jsonl_npz_and_parquet_give_the_same_rows(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("x,kind,label\n1.5,a,1\n,b,0\n")
    (tmp_path / "d.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"features": {"x": 1.5, "kind": "a"}, "label": 1},
                {"features": {"x": None, "kind": "b"}, "label": 0},
            ]
        )
    )
    np.savez(
        tmp_path / "d.npz",
        x=np.array([1.5, np.nan]),
        kind=np.array(["a", "b"]),
        label=np.array([1, 0]),
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"kind": ["a", "b"], "x": [1.5, None], "label": [1, 0], "other": [0, 0]}),
        tmp_path / "d.parquet",
    )
    for name in ("d.csv", "d.jsonl", "d.npz", "d.parquet"):
        rows, labels = rows_from_file(tmp_path / name, LAYOUT)
        numeric, categorical = LAYOUT.arrays(rows)
        assert numeric[0, 0] == 1.5 and np.isnan(numeric[1, 0]), name
        assert categorical.tolist() == [["a"], ["b"]], name
        assert labels.tolist() == [1.0, 0.0], name


def test_file_errors_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("x,label\n1,1\n")
    with pytest.raises(DataError, match=r"columns \['kind'\] are missing"):
        rows_from_file(tmp_path / "d.csv", LAYOUT)
    (tmp_path / "e.csv").write_text("x,kind,label\n1,a,yes\n")
    with pytest.raises(DataError, match=r"e.csv:2: label 'yes' is not a number"):
        rows_from_file(tmp_path / "e.csv", LAYOUT)
    (tmp_path / "f.csv").write_text("x,kind,label\n1,a,1\nmany,b,0\n")
    with pytest.raises(DataError, match=r"f.csv:3: x 'many' is not a number"):
        rows_from_file(tmp_path / "f.csv", LAYOUT)
    with pytest.raises(DataError, match=r"use a \.csv, \.parquet, \.jsonl or \.npz"):
        rows_from_file(tmp_path / "d.xlsx", LAYOUT)
    (tmp_path / "g.parquet").write_text("x,kind\n")
    with pytest.raises(DataError, match=r"g.parquet: not a Parquet file"):
        rows_from_file(tmp_path / "g.parquet", LAYOUT)


def test_a_parquet_sample_without_labels_or_with_a_column_missing(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0, 2.0], "kind": ["a", None]}), tmp_path / "s.parquet")
    rows, labels = rows_from_file(tmp_path / "s.parquet", LAYOUT, require_label=False)
    assert rows == [{"x": 1.0, "kind": "a"}, {"x": 2.0, "kind": None}]
    assert np.isnan(labels).all()
    with pytest.raises(DataError, match=r"columns \['label'\] are missing"):
        rows_from_file(tmp_path / "s.parquet", LAYOUT)
    pq.write_table(pa.table({"x": [1.0]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"columns \['kind'\] are missing"):
        rows_from_file(tmp_path / "t.parquet", LAYOUT, require_label=False)


def test_cli_refuses_a_generator_that_does_not_fit_the_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = {
        "apiVersion": "driftline.io/v1alpha1",
        "kind": "DynamicModel",
        "metadata": {"name": "m"},
        "spec": {
            "model": {"registry": {"trackingUri": "http://127.0.0.1:1", "name": "m"}},
            "features": [{"name": "amount"}],
            "kafka": {"bootstrapServers": "127.0.0.1:1"},
            "redis": {"url": "redis://127.0.0.1:1/0"},
        },
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(model))
    code = main(["--model-file", str(path), "bootstrap", "--stream", "sea", "--samples", "100"])
    assert code == 2
    assert "stream 'sea' produces ['x1', 'x2', 'x3']" in capsys.readouterr().err
    path.write_text("kind: DynamicModel\n")
    assert main(["--model-file", str(path), "bootstrap", "--stream", "sea"]) == 2
