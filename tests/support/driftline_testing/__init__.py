"""Driftline's test support: the rig's servers, throwaway certificates and test models.

Tests and benchmarks import this package; the product never does (an
import-linter contract keeps it so) and no wheel or image carries it
(`tests/test_packaging.py` checks the wheel). It holds:

- `rig`: where `make rig` put its build (tests/rig beside this package);
- `kube`: a real Kubernetes control plane with simulated nodes;
- `apache_kafka`: Apache Kafka itself, single-node KRaft, and `kafka_security`,
  its SASL/TLS listeners with a throwaway CA;
- `brokers.start_kafka`: "a Kafka broker", Apache when the rig has it, else Tansu;
- `models`: small ONNX models that follow the artifact contract.
- `images`: a dockerd of the tests' own and Driftline's images built with it.

The servers `driftline up` itself starts live in `driftline.local.servers`.
"""

from driftline_testing.brokers import start_kafka

__all__ = ["start_kafka"]
