"""A small Python client of a Driftline model: predictions, and the outcomes that teach it.

    from driftline.client import Client

    with Client("http://churn-inference:8080", "churn") as client:
        answer = client.predict({"tenure_months": 7, "plan": "pro"}, entity_id="u-17")
        ...
        client.send_outcome(answer["request_id"], 1)   # buffered, sent in batches

Installed with `pip install "driftline[client]"`; it needs httpx only, no Kafka client.
"""

from driftline.client.http_client import (
    Client,
    ClientError,
    OutcomesNotSentError,
    RequestError,
)

__all__ = ["Client", "ClientError", "OutcomesNotSentError", "RequestError"]
