"""The `driftline` command.

driftline validate -f model.yaml      check a DynamicModel, name what is wrong
driftline up -f model.yaml            run it on this machine (Ctrl-C stops everything)
driftline status [-f model.yaml]      the loop at a glance
driftline import model.onnx --sample rows.csv   bring a model made elsewhere (version 1)
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import get_args

from driftline.api import SpecError, load_dynamic_model
from driftline.api.spec import ImportFormat
from driftline.common.logs import configure_logging


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        model = load_dynamic_model(args.file)
    except SpecError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: DynamicModel {model.metadata.namespace}/{model.name} is valid")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from driftline.local.first_run import next_steps, serves_nothing_yet
    from driftline.local.runtime import LocalRuntime

    try:
        runtime = LocalRuntime(
            args.file,
            state_dir=args.state_dir,
            parts=args.parts.split(",") if args.parts else None,
            inference_port=args.port,
        )
    except SpecError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with runtime:
        info = runtime.info
        assert info is not None
        print(f"driftline: {info.model} is up; state in {runtime.state_dir}")
        if info.inference_url:
            print(f"  inference  {info.inference_url}/v1/models/{info.model}/predict")
        print(f"  kafka      {info.kafka_bootstrap_servers} ({info.kafka_kind})")
        print(f"  redis      {info.redis_url}")
        print(f"  mlflow     {info.mlflow_tracking_uri}")
        print("  logs       " + str(runtime.state_dir / "logs"))
        if info.inference_url:
            print(f"  outcomes   {info.inference_url}/v1/models/{info.model}/outcomes")
        model = runtime.model
        if serves_nothing_yet(info.mlflow_tracking_uri, model.spec.model.registry.name):
            print()
            print("\n".join(next_steps(model, runtime.model_file, info.mlflow_tracking_uri)))
            print()
        print("Ctrl-C stops every part and server.")
        stop.wait()
        print("driftline: stopping")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from driftline.local.status_cmd import print_status

    return print_status(args.file, args.state_dir)


def _cmd_rollout(args: argparse.Namespace) -> int:
    from driftline.local import rollout_cmd
    from driftline.local.status_cmd import find_state_dir

    if args.model is not None:  # a cluster: annotations on the DynamicModel
        return rollout_cmd.run(
            Path("."), args.action, args.version, args.reason,
            model=args.model, namespace=args.namespace, context=args.context,
        )  # fmt: skip
    state_dir = find_state_dir(args.file, args.state_dir)
    if state_dir is None:
        return 2
    return rollout_cmd.run(state_dir, args.action, args.version, args.reason)


def _cmd_import(args: argparse.Namespace) -> int:
    from driftline.local import import_cmd
    from driftline.local.status_cmd import find_state_dir

    state_dir = find_state_dir(args.file, args.state_dir)
    if state_dir is None:
        return 2
    options: list[str] = []
    if args.sample is not None:
        options += ["--sample", import_cmd.local_or_uri(args.sample)]
    if args.format:
        options += ["--format", args.format]
    options += ["--label-column", args.label_column]
    if args.output:
        options += ["--output", args.output]
    for name in args.trust:
        options += ["--trust", name]
    if args.force:
        options.append("--force")
    if args.signature:
        options += ["--signature", import_cmd.local_or_uri(args.signature)]
    return import_cmd.run(state_dir, args.model, options)


def _cmd_demo(args: argparse.Namespace) -> int:
    from driftline.local.demo import run_demo

    return run_demo(
        scenario=args.scenario,
        out_dir=args.out,
        quick=args.quick,
        seed=args.seed,
        model_file=args.model,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline", description="Models that keep learning after they ship."
    )
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a DynamicModel YAML")
    p.add_argument("-f", "--file", type=Path, required=True)
    p.set_defaults(run=_cmd_validate)

    p = sub.add_parser("up", help="run a DynamicModel on this machine")
    p.add_argument("-f", "--file", type=Path, required=True)
    p.add_argument("--state-dir", type=Path, default=None)
    p.add_argument("--parts", default=None, help="comma-separated subset of parts to run")
    p.add_argument("--port", type=int, default=None, help="inference port (default: free)")
    p.set_defaults(run=_cmd_up)

    p = sub.add_parser("status", help="show the loop of a local run")
    p.add_argument("-f", "--file", type=Path, default=None)
    p.add_argument("--state-dir", type=Path, default=None)
    p.set_defaults(run=_cmd_status)
    p = sub.add_parser(
        "rollout",
        help="approve or abort the running rollout of a local run, or of a model on a "
        "cluster (--model)",
    )
    p.add_argument("action", choices=["approve", "abort"])
    p.add_argument("-f", "--file", type=Path, default=None)
    p.add_argument("--state-dir", type=Path, default=None)
    p.add_argument("--version", default=None, help="the candidate meant (default: the current)")
    p.add_argument("--reason", default="", help="recorded in the rollout's history")
    p.add_argument(
        "--model", default=None, help="a DynamicModel on a cluster: annotate it (kubeconfig)"
    )
    p.add_argument("--namespace", default="default", help="with --model: its namespace")
    p.add_argument("--context", default=None, help="with --model: the kubeconfig context")
    p.set_defaults(run=_cmd_rollout)

    p = sub.add_parser(
        "import",
        help="register a model made elsewhere (ONNX, skops, XGBoost, LightGBM, TorchScript) "
        "as the first version",
    )
    p.add_argument(
        "model",
        help="a path or URI of a .onnx, .skops, XGBoost .json/.ubj, LightGBM .txt or "
        "TorchScript .pt file",
    )
    p.add_argument("-f", "--file", type=Path, default=None)
    p.add_argument("--state-dir", type=Path, default=None)
    p.add_argument(
        "--sample", help="rows (.csv, .parquet, .jsonl; a path or URI): drift reference, parity"
    )
    p.add_argument(
        "--format",
        choices=get_args(ImportFormat),
        help="the model's format (else from its suffix)",
    )
    p.add_argument("--label-column", default="label", help="the sample's label column, if any")
    p.add_argument("--output", help="the model's output to serve (when it has several)")
    p.add_argument("--trust", action="append", default=[], metavar="TYPE", help="for skops")
    p.add_argument("--force", action="store_true", help="replace an existing champion")
    p.add_argument(
        "--signature", help="the model's signature, checked with spec.model.signing (MODEL.sig)"
    )
    p.set_defaults(run=_cmd_import)

    p = sub.add_parser("demo", help="a drifting stream: detected, learned, promoted")
    p.add_argument(
        "--scenario", choices=["drift", "bad-candidate", "migrate", "all"], default="all"
    )
    p.add_argument("--out", type=Path, default=Path("demo-report"))
    p.add_argument("--quick", action="store_true", help="a shorter run (the tests use it)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a variant of manifests/samples/sea-demo.yaml to run instead (the same "
        "features and name; e.g. more monitoring turned on)",
    )
    p.set_defaults(run=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("driftline", args.log_level.upper())
    logging.getLogger("driftline.local.servers").setLevel(logging.WARNING)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
