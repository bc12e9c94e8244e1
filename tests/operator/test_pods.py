"""Pod templates: restricted security, config and secrets as files, probes, GPU placement."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.operator.builders import build_children
from driftline.operator.builders.context import child_name

from .conftest import defaults, scenarios

SCENARIOS = scenarios()


def deployments(name: str) -> dict[str, dict[str, Any]]:
    children = build_children(SCENARIOS[name]).namespaced
    return {
        m["metadata"]["labels"]["app.kubernetes.io/component"]: m
        for m in children
        if m["kind"] == "Deployment"
    }


def walk(node: Any) -> list[Any]:
    out = [node]
    if isinstance(node, dict):
        for value in node.values():
            out += walk(value)
    elif isinstance(node, list):
        for value in node:
            out += walk(value)
    return out


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_restricted_pod_security(name: str) -> None:
    for part, deployment in deployments(name).items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == child_name(SCENARIOS[name].name, part)
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["command"] == ["python", "-m", f"driftline.{part}"]
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_config_is_a_file_and_secrets_never_plain_env(name: str) -> None:
    ctx = SCENARIOS[name]
    for part, deployment in deployments(name).items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        prefix = f"DRIFTLINE_{part.upper()}_"
        assert env[f"{prefix}MODEL_FILE"] == "/etc/driftline/model.yaml"
        assert env[f"{prefix}SECRETS_DIR"] == "/var/run/secrets/driftline"
        assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in container["env"])
        assert not any(k.lower().endswith(("password", "token")) for k in env)
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        feast = ctx.model.spec.feast
        for backend, secret in (
            ("kafka", ctx.model.spec.kafka.credentials_secret),
            ("redis", ctx.model.spec.redis.credentials_secret),
            # Feast's online store: only inference reads it.
            ("feast", feast.redis.credentials_secret if feast and part == "inference" else None),
        ):
            path = f"/var/run/secrets/driftline/{backend}"
            if secret is None:
                assert path not in mounts
                continue
            assert mounts[path]["readOnly"] is True
            assert volumes[mounts[path]["name"]]["secret"]["secretName"] == secret


def test_probes_follow_each_parts_endpoints() -> None:
    for part, deployment in deployments("minimal").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        live = container["livenessProbe"]["httpGet"]
        ready = container["readinessProbe"]["httpGet"]
        if part == "inference":
            assert (live["path"], ready["path"], live["port"]) == (
                "/v2/health/live",
                "/v2/health/ready",
                "http",
            )
        else:
            assert (live["path"], ready["path"], live["port"]) == ("/healthz", "/readyz", "metrics")


def test_gpu_inference_goes_to_the_gpu_pool_and_nothing_else_does() -> None:
    parts = deployments("fraud-detector")
    inference = parts.pop("inference")["spec"]["template"]["spec"]
    (container,) = inference["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"].startswith("driftline/inference-gpu:")
    assert inference["nodeSelector"] == {"driftline.io/pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in inference[
        "tolerations"
    ]
    for part, deployment in parts.items():
        pod = deployment["spec"]["template"]["spec"]
        assert "tolerations" not in pod and "nodeSelector" not in pod
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"] == [
            {
                "matchExpressions": [
                    {"key": "driftline.io/pool", "operator": "NotIn", "values": ["gpu"]}
                ]
            }
        ]
        assert "nvidia.com/gpu" not in str(pod["containers"][0]["resources"])
        assert pod["containers"][0]["image"] == defaults().image_for(part)
    # A GPU model's joiner still runs from the CPU inference image (it needs no torch).
    assert parts["joiner"]["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "driftline/inference:"
    )


def test_cpu_inference_has_no_gpu_and_workers_no_affinity() -> None:
    for part, deployment in deployments("minimal").items():
        pod = deployment["spec"]["template"]["spec"]
        assert "nvidia.com/gpu" not in str(pod)
        image = pod["containers"][0]["image"]
        # ONNX Runtime, scipy and core libraries, no torch (the drift monitor on its
        # default scipy backend).
        if part in ("inference", "joiner", "drift"):
            assert image.startswith("driftline/inference:")
        else:
            assert image.startswith("driftline/services:")
        if part != "inference":
            assert "affinity" not in pod


def test_a_changed_spec_rolls_the_pods() -> None:
    from driftline.operator.builders import BuildContext

    from .conftest import sample

    a = build_children(BuildContext(sample("minimal")))
    b = build_children(BuildContext(sample("minimal", drift__window=5000)))
    hashes = [
        {
            m["metadata"]["name"]: m["spec"]["template"]["metadata"]["annotations"]
            for m in c.namespaced
            if m["kind"] == "Deployment"
        }
        for c in (a, b)
    ]
    assert all(hashes[0][k] != hashes[1][k] for k in hashes[0])


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_no_object_is_shared_between_manifests(name: str) -> None:
    """A dict shared by two manifests would be changed through both (and YAML aliases it)."""
    seen: dict[int, str] = {}
    for manifest in build_children(SCENARIOS[name]).all():
        for node in walk(manifest):
            if isinstance(node, dict | list) and node:
                assert id(node) not in seen, (
                    f"shared between {seen[id(node)]} and {manifest['kind']}"
                )
                seen[id(node)] = manifest["kind"]


def test_the_trainer_checkpoints_on_a_claim_that_is_never_pruned() -> None:
    from driftline.operator.kinds import kind_of

    children = build_children(SCENARIOS["minimal"]).namespaced
    claim = next(m for m in children if m["kind"] == "PersistentVolumeClaim")
    assert kind_of(claim).prune is False  # `training.mode: off` keeps the checkpoint
    pod = deployments("minimal")["trainer"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim_name = claim["metadata"]["name"]
    assert volumes["checkpoints"] == {
        "name": "checkpoints",
        "persistentVolumeClaim": {"claimName": claim_name},
    }
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["DRIFTLINE_TRAINER_CHECKPOINT_DIR"] == "/var/lib/driftline/trainer"


def test_the_spool_cap_is_a_setting_and_its_volume_a_quarter_larger() -> None:
    from driftline.operator.builders import BuildContext
    from driftline.operator.settings import OperatorSettings

    from .conftest import sample

    settings = OperatorSettings.model_construct(inference_spool_mib=1024)
    children = build_children(BuildContext(sample("minimal"), settings))
    inference = next(
        m
        for m in children.namespaced
        if m["kind"] == "Deployment" and m["metadata"]["name"] == "churn-inference"
    )
    pod = inference["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["DRIFTLINE_INFERENCE_SPOOL_MAX_BYTES"] == str(1024 * 2**20)
    spool = next(v for v in pod["volumes"] if v["name"] == "spool")
    assert spool["emptyDir"]["sizeLimit"] == "1280Mi"


def test_inference_serves_on_after_sigterm_within_its_grace_period() -> None:
    """A deleted inference Pod keeps answering while the Service drops it (a Pod deleted
    mid-stream on the real node refused connections without this), and the delay and
    the drain fit the grace period, so the kubelet never kills it mid-request."""
    from driftline.inference.settings import InferenceSettings
    from driftline.operator.builders import BuildContext
    from driftline.operator.settings import OperatorSettings

    from .conftest import sample

    for settings, delay in (
        (OperatorSettings.model_construct(), "5"),
        (
            OperatorSettings.model_construct(inference_shutdown_delay_seconds=2.5),
            "2.5",
        ),
    ):
        children = build_children(BuildContext(sample("minimal"), settings))
        inference = next(
            m
            for m in children.namespaced
            if m["kind"] == "Deployment" and m["metadata"]["name"] == "churn-inference"
        )
        pod = inference["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["DRIFTLINE_INFERENCE_SHUTDOWN_DELAY_SECONDS"] == delay
    longest = OperatorSettings.model_fields["inference_shutdown_delay_seconds"].metadata
    most = max(m.le for m in longest if hasattr(m, "le") and m.le is not None)
    drain = InferenceSettings.model_fields["drain_timeout_seconds"].default
    assert most + drain <= pod["terminationGracePeriodSeconds"]
    # Only inference serves requests: the other parts get no such variable.
    for name, deployment in deployments("minimal").items():
        env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert (name == "inference") == any(n.endswith("SHUTDOWN_DELAY_SECONDS") for n in env)
