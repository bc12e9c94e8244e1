"""The e2e traffic: SEA rows to inference, each outcome back to it, a concept switch.

Runs in the cluster (a Job with the services image; e2e/run.sh starts it): posts
rows to the model's plain JSON route, and for every answer sends the true label to
the model's outcomes route with `driftline.client`, as a user's application would
(batched, retried; the route puts each on the outcomes topic). After
`--switch-after` rows the labeling rule changes (SEA concept 0 -> 2 unless
`--concepts` says otherwise), which the serving model cannot know: its live accuracy
falls, the drift monitor sees concept drift, the trainer learns the new rule, and the
rollout promotes its candidate. The log says when the rule switched and, every
`--report-every` rows, how many of the answers were right.

    python traffic.py --model-file /etc/driftline/model.yaml \
        --url http://sea-inference:8080 --switch-after 6000 --rate 200 --seconds 1500
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
import uuid
from pathlib import Path

from driftline.api.resource import load_dynamic_model
from driftline.client import Client, ClientError
from driftline.common.streams import make_stream

log = logging.getLogger("e2e.traffic")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--model-file", type=Path, required=True)
    parser.add_argument("--url", required=True, help="inference base URL")
    parser.add_argument("--switch-after", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=200.0, help="rows per second")
    parser.add_argument("--batch", type=int, default=20, help="rows per request")
    parser.add_argument("--seconds", type=float, default=1500.0, help="stop after this long")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--concepts", default="0,2", help="SEA concepts before and after the switch"
    )
    parser.add_argument("--report-every", type=int, default=2000, help="rows between log lines")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request

    model = load_dynamic_model(args.model_file)
    client = Client(args.url, model.name, batch_seconds=0.5)
    before, after = (int(c) for c in args.concepts.split(","))
    stream = make_stream("sea", seed=args.seed, schedule=[(0, before), (args.switch_after, after)])
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    started = time.monotonic()
    sent = errors = right = answered = 0
    switched = False
    while not stopping and time.monotonic() - started < args.seconds:
        rows = stream.take(args.batch)
        entities = [f"e{uuid.uuid4().hex[:8]}" for _ in range(len(rows))]
        try:
            predictions = client.predict_many(rows.features(), entity_ids=entities)
        except ClientError as exc:  # not ready yet, or a rolling update: try again
            errors += 1
            log.warning("request failed (%s)", exc)
            time.sleep(1.0)
            continue
        client.send_outcomes(
            (p["request_id"], float(label))
            for p, label in zip(predictions, rows.labels, strict=True)
        )
        right += sum(
            p.get("label") == int(label) for p, label in zip(predictions, rows.labels, strict=True)
        )
        answered += len(rows)
        sent += len(rows)
        concept = stream.concept_at(stream.position - 1)
        if not switched and concept == after and args.switch_after > 0:
            switched = True
            log.info("concept switch at row %d (concept %d -> %d)", sent, before, after)
        if sent % args.report_every < args.batch:
            log.info(
                "%d rows sent (concept %d), %d failed requests, accuracy %.3f",
                sent, concept, errors, right / max(answered, 1),
            )  # fmt: skip
            right = answered = 0
        # Pace to the rate: the loop is faster than the target on any cluster.
        ahead = sent / args.rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    client.close()
    log.info(
        "done: %d rows, %d failed requests, %d outcomes sent",
        sent, errors, client.outcomes.sent,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
