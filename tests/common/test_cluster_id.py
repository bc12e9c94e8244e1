"""KRaft cluster ids: kafka-storage must read each one as a value, never as an option."""

from __future__ import annotations

import base64

from driftline_testing.apache_kafka import new_cluster_id


def test_cluster_ids_are_uuids_that_never_start_like_an_option() -> None:
    # One plain draw in 64 starts with '-'; 5000 draws would meet about 78 of them.
    ids = [new_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    for cluster_id in ids[:50]:
        assert len(cluster_id) == 22
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
