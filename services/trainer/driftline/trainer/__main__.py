"""`python -m driftline.trainer [bootstrap ...]`: the online trainer, or its first version.

    python -m driftline.trainer                       # the worker (settings from the environment)
    python -m driftline.trainer bootstrap --stream sea --seed 1 --samples 20000
    python -m driftline.trainer bootstrap --from-file history.csv [--label-column label]
    python -m driftline.trainer import MODEL [--sample rows.csv|rows.parquet|rows.jsonl]
    python -m driftline.trainer retrain               # one scheduled retrain from the history
    python -m driftline.trainer retrain --from-feast labeled.parquet --feast-repo repo/

Settings come from `DRIFTLINE_TRAINER_*` variables (`DRIFTLINE_TRAINER_MODEL_FILE`
is the DynamicModel YAML); `--model-file` overrides that one for convenience.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any, get_args

from driftline.api.resource import SpecError
from driftline.api.spec import ImportFormat
from driftline.common.logs import configure_logging
from driftline.common.registry import configure_mlflow

log = logging.getLogger("driftline.trainer")


def _settings(model_file: Path | None) -> Any:
    from driftline.trainer.settings import TrainerSettings

    overrides: dict[str, Any] = {"model_file": model_file} if model_file else {}
    settings = TrainerSettings(**overrides)
    settings.model  # noqa: B018  (read the spec now: a bad file fails here, clearly)
    return settings


def _prepare(settings: Any) -> None:
    configure_logging("trainer", settings.log_level)
    # MLflow's client retries for minutes by default; the trainer has its own retry loop.
    configure_mlflow(settings.mlflow_timeout, settings.mlflow_retries)
    import torch

    torch.set_num_threads(settings.torch_threads)


def run_worker(settings: Any) -> int:
    from driftline.common.health import serve_health
    from driftline.trainer.worker import CheckpointDirError, TrainerWorker

    _prepare(settings)
    workers = settings.model.spec.training.workers
    if workers > 1 and settings.model.spec.training.mode == "online":
        return run_group(settings, workers)
    worker = TrainerWorker(settings)

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the batch in hand, then checkpoint and exit", signum)
        worker.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    serve_health(settings.metrics_port, worker.heartbeat)
    mode = settings.model.spec.training.mode
    if mode in {"off", "scheduled"}:
        # Idle rather than exit: a supervisor would only restart a process that ends.
        # Neither the operator nor `driftline up` starts the worker in these modes.
        log.info(
            "training.mode is %r: nothing to learn online (scheduled retrains run as "
            "`python -m driftline.trainer retrain`); idle until stopped",
            mode,
        )
        worker.heartbeat.ready = True
        while not worker.stop.wait(10):
            worker.heartbeat.beat()
        return 0
    try:
        worker.run()
    except CheckpointDirError as exc:
        log.error("%s", exc)
        return 2
    return 0


def run_group(settings: Any, workers: int) -> int:
    """`training.workers > 1`: one rank (DRIFTLINE_TRAINER_RANK set), or all of them here."""
    import threading

    from driftline.common.health import Heartbeat, serve_health
    from driftline.trainer.distributed import GroupWorker, Ranks, launch_group
    from driftline.trainer.worker import CheckpointDirError

    stopping = threading.Event()
    worker: Any = None

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: the group finishes its iteration, checkpoints and exits", signum)
        stopping.set()
        if worker is not None:
            worker.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if settings.rank is None:
        return launch_group(settings, stopping)
    heartbeat = Heartbeat()  # served while the rendezvous waits for the other ranks
    serve_health(settings.metrics_port, heartbeat)
    worker = GroupWorker(settings, Ranks.join(settings, workers))
    worker.heartbeat = heartbeat
    if stopping.is_set():
        worker.stop.set()
    try:
        worker.run()
    except CheckpointDirError as exc:
        log.error("%s", exc)
        return 2
    return 1 if worker.broken else 0


def run_bootstrap(settings: Any, args: argparse.Namespace) -> int:
    from driftline.common.features import FeatureLayout
    from driftline.trainer.bootstrap import DataError, bootstrap, rows_from_file, rows_from_stream

    _prepare(settings)
    model = settings.model
    try:
        if args.from_file:
            layout = FeatureLayout.from_features(model.spec.features)
            rows, labels = rows_from_file(args.from_file, layout, args.label_column)
            source = f"file:{args.from_file.name}"
        elif args.from_feast:
            from driftline.trainer.feast_history import rows_from_feast

            if args.feast_repo is None:
                raise DataError("--from-feast needs --feast-repo (the feature repository)")
            rows, labels = rows_from_feast(
                model, args.from_feast, args.feast_repo, settings.feast_python, args.label_column
            )
            source = f"feast:{args.from_feast.name}"
        else:
            rows, labels = rows_from_stream(
                model, args.stream, args.seed, args.samples, args.concept
            )
            source = f"stream:{args.stream}:seed={args.seed}:concept={args.concept}"
        version = bootstrap(settings, rows, labels, force=args.force, source=source)
    except DataError as exc:
        print(f"bootstrap: {exc}", file=sys.stderr)
        return 2
    print(version)
    return 0


def _signature_file(
    settings: Any, args: argparse.Namespace, directory: Path, tracking_uri: str
) -> Path | None:
    """The model's signature as a local file, when the spec names a key to check it with:
    `--signature`, else `<model>.sig`. A default that is not there is refused later only
    when signatures are required; a `--signature` that cannot be read is refused."""
    from driftline.trainer.import_sources import ModelImportError, local_file

    signing = settings.model.spec.model.signing
    if signing is None or (signing.public_key is None and signing.public_key_secret_ref is None):
        return None
    uri = args.signature or f"{args.model}.sig"
    try:
        path = local_file(uri, directory, tracking_uri)
    except ModelImportError:
        if args.signature:
            raise
        return None
    if not path.exists() and args.signature:
        raise ModelImportError(f"{uri}: no such signature file")
    return path  # a local default that is not there is named in the refusal


def run_import(settings: Any, args: argparse.Namespace) -> int:
    import tempfile

    from driftline.common.registry import RegistryError
    from driftline.trainer.import_sources import local_file
    from driftline.trainer.model_import import ModelImportError, existing_champion, import_model

    _prepare(settings)
    tracking_uri = settings.connections.mlflow_tracking_uri
    try:
        champion = existing_champion(settings) if args.if_no_version else None
        if champion is not None:
            # The operator's import Job and `driftline up` run this on every start: a model
            # that has a version already (imported before, or trained since) keeps it.
            print(
                f"{settings.model.spec.model.registry.name} has a champion already (version "
                f"{champion}): nothing imported"
            )
            print(champion)
            return 0
        with tempfile.TemporaryDirectory(prefix="driftline-import-") as tmp:
            model = local_file(args.model, Path(tmp) / "model", tracking_uri)
            sample = (
                local_file(args.sample, Path(tmp) / "sample", tracking_uri) if args.sample else None
            )
            signature = _signature_file(settings, args, Path(tmp) / "signature", tracking_uri)
            done = import_model(
                settings,
                model,
                sample,
                label_column=args.label_column,
                output=args.output,
                trusted=args.trust,
                fmt=args.format,
                force=args.force,
                signature=signature,
            )
    except ModelImportError as exc:
        print(f"import: {exc}", file=sys.stderr)
        return 2
    except RegistryError as exc:
        print(f"import: the registry: {exc}", file=sys.stderr)
        return 1
    print(f"imported {model.name} ({done.fmt}) in {done.seconds:.2f}s")
    print(f"  parity: {done.parity:.2e} on {done.rows} rows (ONNX Runtime vs the original)")
    print(f"  drift reference: {done.reference}")
    print(f"  training state: {done.training_state}")
    print("  aliases: champion, baseline")
    print(done.version)
    return 0


def run_retrain(settings: Any, args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from driftline.common.registry import RegistryError
    from driftline.trainer.bootstrap import DataError
    from driftline.trainer.export import ExportError
    from driftline.trainer.retrain import FeastHistory, retrain

    _prepare(settings)
    entities = args.from_feast or settings.retrain_from_feast
    repo = args.feast_repo or settings.feast_repo
    try:
        feast = None
        if entities is not None:
            if repo is None:
                raise DataError(
                    "--from-feast needs --feast-repo (or DRIFTLINE_TRAINER_FEAST_REPO): "
                    "the feature repository"
                )
            feast = FeastHistory(entities, repo, args.label_column)
        result = retrain(settings, feast=feast)
    except DataError as exc:
        print(f"retrain: {exc}", file=sys.stderr)
        return 2
    except (RegistryError, KafkaException, TimeoutError) as exc:
        print(f"retrain: {exc}", file=sys.stderr)
        return 1  # the next run (or the Job's retry) starts again from nothing
    except ExportError as exc:
        print(f"retrain: not published: {exc}", file=sys.stderr)
        return 1
    print(f"retrain: {result.reason} ({result.rows} rows, offsets {result.offsets})")
    if result.version is not None:
        print(result.version)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m driftline.trainer", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--model-file", type=Path, help="DynamicModel YAML (else $DRIFTLINE_TRAINER_MODEL_FILE)"
    )
    sub = parser.add_subparsers(dest="command")
    boot = sub.add_parser(
        "bootstrap", help="train and register the first version (champion, baseline)"
    )
    source = boot.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from-file", type=Path, help=".csv (header), .jsonl ({features, label}) or .npz"
    )
    source.add_argument(
        "--from-feast",
        type=Path,
        help="labeled entity rows (entity_id, event_timestamp, label, request features) "
        "joined point in time with Feast's offline store",
    )
    source.add_argument(
        "--stream", help="a driftline.common.streams generator: sea, hyperplane, covariate, agrawal"
    )
    boot.add_argument("--feast-repo", type=Path, help="Feast feature repository (--from-feast)")
    boot.add_argument("--seed", type=int, default=0, help="generator seed")
    boot.add_argument("--samples", type=int, default=20_000, help="rows to draw from the generator")
    boot.add_argument("--concept", type=int, default=0, help="the generator's concept (or segment)")
    boot.add_argument("--label-column", default="label", help="label column/array of a file")
    boot.add_argument(
        "--force", action="store_true", help="train a new version even if a champion exists"
    )
    boot.add_argument("--model-file", type=Path, dest="boot_model_file", help=argparse.SUPPRESS)
    imp = sub.add_parser(
        "import", help="register a model made elsewhere as the first version (champion, baseline)"
    )
    imp.add_argument(
        "model",
        help="a path or URI (file://, or what MLflow's artifact stores read: s3://, runs:/...) "
        "of a .onnx, .skops, XGBoost .json/.ubj, LightGBM .txt or TorchScript .pt file",
    )
    imp.add_argument(
        "--sample",
        help="rows (.csv with a header, .parquet or .jsonl; a path or URI): reference, parity",
    )
    imp.add_argument(
        "--format",
        choices=get_args(ImportFormat),
        help="the model's format (else from its suffix)",
    )
    imp.add_argument("--label-column", default="label", help="the sample's label column, if any")
    imp.add_argument("--output", help="the model's output to serve (when it has several)")
    imp.add_argument(
        "--trust", action="append", default=[], metavar="TYPE", help="a type skops may load"
    )
    imp.add_argument("--force", action="store_true", help="replace an existing champion")
    imp.add_argument(
        "--signature",
        help="the model's signature (OpenSSF model signing; a path or URI), checked when "
        "spec.model.signing names a key; default: MODEL.sig",
    )
    imp.add_argument(
        "--if-no-version",
        action="store_true",
        help="import only while the registry has no champion; else say so and exit 0",
    )
    imp.add_argument("--model-file", type=Path, dest="boot_model_file", help=argparse.SUPPRESS)
    again = sub.add_parser(
        "retrain",
        help="train a fresh network on the labeled history (training.schedule) and publish it "
        "as candidate if it passes the gate",
    )
    again.add_argument(
        "--from-feast",
        type=Path,
        help="read the rows from this labeled entity file or Parquet folder (entity keys, "
        "event_timestamp, label, request features) joined point in time with Feast's offline "
        "store, instead of the labeled topic",
    )
    again.add_argument("--feast-repo", type=Path, help="Feast feature repository (--from-feast)")
    again.add_argument("--label-column", default="label", help="the entity file's label column")
    again.add_argument("--model-file", type=Path, dest="boot_model_file", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(getattr(args, "boot_model_file", None) or args.model_file)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ValueError as exc:  # pydantic's ValidationError: a setting is missing or wrong
        print(f"trainer settings: {exc}", file=sys.stderr)
        return 2
    if args.command == "bootstrap":
        return run_bootstrap(settings, args)
    if args.command == "import":
        return run_import(settings, args)
    if args.command == "retrain":
        return run_retrain(settings, args)
    return run_worker(settings)


if __name__ == "__main__":
    sys.exit(main())
