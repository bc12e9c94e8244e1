"""`spec.model.initial`: an import Job (with its identity and network fence) or nothing."""

from __future__ import annotations

from driftline.common.import_command import import_arguments
from driftline.operator.builders import BuildContext, build_children
from driftline.operator.builders.install import namespaced_rules

from .conftest import defaults, sample

INITIAL = {"uri": "https://models.example.com:8443/churn.onnx", "sample": "runs:/abc/rows.csv"}


def import_objects(ctx: BuildContext) -> dict[str, dict[str, object]]:
    return {
        m["kind"]: m
        for m in build_children(ctx).all()
        if m["metadata"]["labels"].get("app.kubernetes.io/component") == "import"
    }


def test_no_initial_model_no_import_objects() -> None:
    assert import_objects(BuildContext(sample("minimal"), defaults())) == {}


def test_the_job_runs_the_trainer_s_import_command_once() -> None:
    model = sample("minimal", model__initial=INITIAL)
    objects = import_objects(BuildContext(model, defaults()))
    assert set(objects) == {"Job", "ServiceAccount", "NetworkPolicy"}
    job: dict[str, object] = objects["Job"]
    pod = job["spec"]["template"]["spec"]  # type: ignore[index]
    (container,) = pod["containers"]
    assert model.spec.model.initial is not None
    expected = ["python", "-m", "driftline.trainer", "import"]
    assert container["command"] == expected + import_arguments(model.spec.model.initial)
    assert container["command"][-1] == "--if-no-version"
    assert container["image"] == defaults().image_for("trainer")
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "churn-import"
    assert not pod["automountServiceAccountToken"]


def test_the_network_fence_lets_out_mlflow_and_the_uri_s_port_and_nothing_in() -> None:
    objects = import_objects(BuildContext(sample("minimal", model__initial=INITIAL), defaults()))
    policy: dict[str, object] = objects["NetworkPolicy"]
    spec = policy["spec"]  # type: ignore[index]
    assert "ingress" not in spec and spec["policyTypes"] == ["Ingress", "Egress"]
    ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
    assert {5000, 443, 8443, 53} <= ports  # MLflow, its artifact store, the model's URI, DNS


def test_a_changed_initial_model_is_a_new_job() -> None:
    """A Job's pod template cannot change: another initial model gets another Job."""
    first = import_objects(BuildContext(sample("minimal", model__initial=INITIAL), defaults()))
    changed = {**INITIAL, "format": "onnx"}
    second = import_objects(BuildContext(sample("minimal", model__initial=changed), defaults()))
    name = first["Job"]["metadata"]["name"]  # type: ignore[index]
    assert name.startswith("churn-import-")
    assert name != second["Job"]["metadata"]["name"]  # type: ignore[index]


def test_the_operator_may_manage_jobs() -> None:
    rules = namespaced_rules()
    assert any(r["apiGroups"] == ["batch"] and "jobs" in r["resources"] for r in rules)
