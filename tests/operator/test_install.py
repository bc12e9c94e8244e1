"""The operator's own manifests: least-privilege RBAC, generated and committed."""

from __future__ import annotations

from pathlib import Path

from driftline.operator.builders.install import operator_manifests
from driftline.operator.kinds import CHILD_KINDS
from driftline.operator.manifests import files, to_yaml

from .conftest import REPO, defaults

FORBIDDEN_VERBS = {"escalate", "bind", "impersonate", "*"}


def rules(watch: list[str] | None = None) -> list[dict]:  # type: ignore[type-arg]
    return [
        rule
        for m in operator_manifests(defaults(), watch=watch)
        if m["kind"] in ("ClusterRole", "Role")
        and m["metadata"]["name"].startswith("driftline-operator")
        for rule in m["rules"]
    ]


def test_no_wildcards_and_no_privilege_verbs() -> None:
    for watch in (None, ["ml"]):
        for rule in rules(watch):
            assert "*" not in rule["apiGroups"] and "*" not in rule["resources"]
            assert not FORBIDDEN_VERBS & set(rule["verbs"])


def test_secrets_are_get_only() -> None:
    secret_rules = [r for r in rules() if "secrets" in r["resources"]]
    assert secret_rules == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]


def test_every_child_kind_is_allowed_and_nothing_more() -> None:
    allowed = {(g, r) for rule in rules() for g in rule["apiGroups"] for r in rule["resources"]}
    for kind in CHILD_KINDS:
        assert (kind.group, kind.plural) in allowed
    extras = allowed - {(k.group, k.plural) for k in CHILD_KINDS}
    assert extras == {
        ("driftline.io", "dynamicmodels"),
        ("driftline.io", "dynamicmodels/status"),
        ("driftline.io", "dynamicmodels/finalizers"),
        ("", "events"),
        ("", "secrets"),
        ("", "pods"),
    }


def test_pods_are_list_only() -> None:
    pod_rules = [r for r in rules() if "pods" in r["resources"]]
    assert pod_rules == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]


def test_namespaced_mode_uses_roles_and_a_cluster_role_only_for_cluster_kinds() -> None:
    documents = operator_manifests(defaults(), watch=["ml", "fraud"])
    roles = [d for d in documents if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["fraud", "ml"]
    cluster = [
        d
        for d in documents
        if d["kind"] == "ClusterRole" and d["metadata"]["name"].startswith("driftline-operator")
    ]
    assert [r["resources"] for c in cluster for r in c["rules"]] == [["nodepools"]]


def test_generated_files_are_committed() -> None:
    folder = Path(REPO) / "manifests" / "operator"
    for name, documents in files("driftline-system", []).items():
        assert (folder / name).read_text() == to_yaml(documents), f"run `make manifests` ({name})"


def test_crd_shows_the_promised_columns() -> None:
    """`kubectl get dynamicmodels` columns, as generated into the committed CRD."""
    import yaml

    crd = yaml.safe_load(
        (Path(REPO) / "manifests" / "crd" / "dynamicmodels.driftline.io.yaml").read_text()
    )
    columns = {
        c["name"]: c["jsonPath"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert columns == {
        "Phase": ".status.phase",
        "Stable": ".status.stableVersion",
        "Candidate": ".status.candidateVersion",
        "Canary%": ".status.rollout.weight",
        "Drift": ".status.drift.detected",
        "Age": ".metadata.creationTimestamp",
    }
