"""A small Kubernetes REST client: the few calls the operator makes, spelled out.

The operator needs server-side apply with a field manager, list by label, delete,
get and API discovery, on a fixed set of kinds whose paths it knows. An explicit
client over httpx keeps those calls visible (and their errors translated at this
boundary); credentials come from the official client's kubeconfig / in-cluster
loaders, which know every auth method, and the same credentials log kopf in.
"""

from __future__ import annotations

import json
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from driftline.operator.metrics import api_requests_total

log = logging.getLogger(__name__)

APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML: the body is sent as JSON


class KubeError(Exception):
    """A refused or failed API call, with the API server's status, reason and message."""

    def __init__(self, status: int, reason: str, message: str, method: str, path: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{method} {path}: {status} {reason}: {message}")


class NotFoundError(KubeError):
    pass


class ConflictError(KubeError):
    pass


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are."""

    server: str
    ca_path: str | None = None
    insecure: bool = False
    cert_path: str | None = None
    key_path: str | None = None
    configuration: Any = None  # kubernetes.client.Configuration: refreshes tokens

    def token(self) -> str | None:
        if self.configuration is None:
            return None
        header = self.configuration.get_api_key_with_prefix(
            "BearerToken"
        ) or self.configuration.get_api_key_with_prefix("authorization")
        if not header:
            return None
        return str(header).split(" ", 1)[-1]


def load_credentials(kubeconfig: Path | None) -> Credentials:
    """From a kubeconfig file when given, else the pod's service account, else ~/.kube/config."""
    from kubernetes import client, config

    configuration = type.__call__(client.Configuration)
    if kubeconfig is not None:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return Credentials(
        server=str(configuration.host),
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        cert_path=configuration.cert_file,
        key_path=configuration.key_file,
        configuration=configuration,
    )


class Kube:
    """Synchronous calls to one API server (kopf runs sync handlers in threads)."""

    def __init__(self, credentials: Credentials, timeout: float = 30.0) -> None:
        self.credentials = credentials
        verify: ssl.SSLContext | bool
        if credentials.insecure:
            verify = False
        else:
            verify = ssl.create_default_context(cafile=credentials.ca_path)
            if credentials.cert_path and credentials.key_path:
                verify.load_cert_chain(credentials.cert_path, credentials.key_path)
        self._http = httpx.Client(base_url=credentials.server, verify=verify, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": accept}
        token = self.credentials.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        content = None
        if body is not None:
            headers["Content-Type"] = content_type
            content = json.dumps(body)
        try:
            response = self._http.request(
                method, path, params=params, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            api_requests_total.labels(method, "0").inc()
            raise KubeError(0, "Unreachable", str(exc), method, path) from exc
        api_requests_total.labels(method, str(response.status_code)).inc()
        if response.status_code >= 400:
            raise _error(response, method, path)
        data: dict[str, Any] = response.json() if response.content else {}
        return data

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except NotFoundError:
            return None

    def list(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        items: list[dict[str, Any]] = self.request("GET", path, params=params).get("items", [])
        return items

    def apply(
        self, path: str, manifest: dict[str, Any], field_manager: str, force: bool = True
    ) -> dict[str, Any]:
        """Server-side apply: creates the object or sets exactly the fields in `manifest`.

        Fields left out (an HPA's `replicas`) stay with whoever owns them; `force`
        takes back our own fields from anyone who edited them by hand.
        """
        params = {"fieldManager": field_manager, "force": "true" if force else "false"}
        return self.request("PATCH", path, params=params, body=manifest, content_type=APPLY_PATCH)

    def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    def delete(self, path: str) -> bool:
        """Deletes in the background (the garbage collector takes the dependents); False if gone."""
        try:
            self.request("DELETE", path, body={"propagationPolicy": "Background"})
        except NotFoundError:
            return False
        return True

    def served_group_versions(self) -> set[str]:
        """Every `group/version` the API server serves (discovery; any user may read it)."""
        groups = self.request("GET", "/apis").get("groups", [])
        return {v["groupVersion"] for g in groups for v in g.get("versions", [])}


def _error(response: httpx.Response, method: str, path: str) -> KubeError:
    try:
        status = response.json()
        reason, message = str(status.get("reason", "")), str(status.get("message", ""))
    except ValueError:
        reason, message = response.reason_phrase, response.text[:500]
    kind = {404: NotFoundError, 409: ConflictError}.get(response.status_code, KubeError)
    return kind(response.status_code, reason, message, method, path)
