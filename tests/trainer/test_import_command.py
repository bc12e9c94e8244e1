"""`spec.model.initial` as the trainer's import command: the faces' arguments parse."""

from __future__ import annotations

from driftline.api.spec import InitialModelSpec
from driftline.common.import_command import import_arguments
from driftline.trainer.__main__ import build_parser


def test_every_option_of_the_spec_reaches_the_trainer() -> None:
    initial = InitialModelSpec.model_validate(
        {
            "uri": "s3://bucket/pipeline.skops",
            "format": "skops",
            "sample": "rows.parquet",
            "labelColumn": "fraud",
            "output": "probabilities",
            "trust": ["mypkg.Scaler", "mypkg.Other"],
        }
    )
    args = build_parser().parse_args(["import", *import_arguments(initial)])
    assert args.command == "import" and args.model == "s3://bucket/pipeline.skops"
    assert args.format == "skops" and args.sample == "rows.parquet"
    assert args.label_column == "fraud" and args.output == "probabilities"
    assert args.trust == ["mypkg.Scaler", "mypkg.Other"]
    assert args.if_no_version and not args.force


def test_the_least_initial_model() -> None:
    args = build_parser().parse_args(
        ["import", *import_arguments(InitialModelSpec(uri="model.onnx"))]
    )
    assert args.model == "model.onnx" and args.sample is None and args.format is None
    assert args.label_column == "label" and args.trust == [] and args.if_no_version
