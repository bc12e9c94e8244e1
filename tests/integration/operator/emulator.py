"""kmock's Kubernetes emulator, filled in where the operator needs it, on a real port.

Used only when the real control plane of the test rig is not built. kmock 0.8 stores
objects and serves watches, but leaves out what an API server adds; this subclass
adds the parts the operator relies on: uid, resourceVersion, creationTimestamp and
generation; generateName; server-side apply that creates a missing object; label selectors on
lists. It does not validate, default, garbage-collect, schedule or run controllers,
so scenarios that need those run against the rig only.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import yaml

APPLY = "application/apply-patch+yaml"

# Discovery: every resource the operator and the tests touch.
RESOURCES: dict[str, dict[str, Any]] = {
    "v1/namespaces": {"kind": "Namespace", "namespaced": False},
    "v1/events": {"kind": "Event", "namespaced": True},
    "v1/secrets": {"kind": "Secret", "namespaced": True},
    "v1/configmaps": {"kind": "ConfigMap", "namespaced": True},
    "v1/persistentvolumeclaims": {"kind": "PersistentVolumeClaim", "namespaced": True},
    "v1/services": {"kind": "Service", "namespaced": True},
    "v1/serviceaccounts": {"kind": "ServiceAccount", "namespaced": True},
    # Listed (never written) to say why a part is unavailable; the emulator runs none.
    "v1/pods": {"kind": "Pod", "namespaced": True},
    "apps/v1/deployments": {
        "kind": "Deployment",
        "namespaced": True,
        "subresources": ["status", "scale"],
    },
    "batch/v1/jobs": {"kind": "Job", "namespaced": True, "subresources": ["status"]},
    "batch/v1/cronjobs": {"kind": "CronJob", "namespaced": True, "subresources": ["status"]},
    "networking.k8s.io/v1/networkpolicies": {"kind": "NetworkPolicy", "namespaced": True},
    "policy/v1/poddisruptionbudgets": {"kind": "PodDisruptionBudget", "namespaced": True},
    "autoscaling/v2/horizontalpodautoscalers": {
        "kind": "HorizontalPodAutoscaler",
        "namespaced": True,
    },
    "driftline.io/v1alpha1/dynamicmodels": {
        "kind": "DynamicModel",
        "namespaced": True,
        "subresources": ["status"],
    },
}
VERBS = ["get", "list", "watch", "create", "patch", "update", "delete"]


def _selected(obj: dict[str, Any], selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class DriftlineEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    _versions = itertools.count(1)

    def _stamp_create(self, data: dict[str, Any]) -> None:
        meta = data.setdefault("metadata", {})
        if "name" not in meta and "generateName" in meta:
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["resourceVersion"] = str(next(self._versions))
        meta["generation"] = 1

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and isinstance(request.data, dict):
            key = (request.resource, request.namespace, request.name)
            if request.action == kmock.action.CREATE:
                self._stamp_create(request.data)
            existing = self.objects[key] if request.name and key in self.objects else None
            alive = existing is not None and not existing.deleted
            if request.action == kmock.action.UPDATE and not alive:
                if request.headers.get("Content-Type", "").startswith(APPLY):
                    # Server-side apply creates what does not exist yet.
                    data = dict(request.data)
                    data.setdefault("metadata", {})["namespace"] = request.namespace
                    self._stamp_create(data)
                    async with self._lock:
                        self.objects[key] = data
                        raw = self.objects[key].last.raw
                        await self._buses[request.resource].put({"type": "ADDED", "object": raw})
                    return aiohttp.web.json_response(raw, status=201)
            elif request.action == kmock.action.UPDATE and existing is not None:
                current = existing.last.raw
                if request.subresource is not None:
                    merged = _merge(
                        current, {request.subresource: request.data.get(request.subresource)}
                    )
                else:
                    merged = _merge(
                        current, {k: v for k, v in request.data.items() if k != "status"}
                    )
                if _same(merged, current):
                    # A patch that changes nothing changes no version (as on a real server).
                    return aiohttp.web.json_response(current)
                meta = request.data.setdefault("metadata", {})
                meta["resourceVersion"] = str(next(self._versions))
                if request.subresource is None and merged.get("spec") != current.get("spec"):
                    meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        return await super()._handle(request)

    async def _serve_list(self, request: kmock.Request) -> Any:
        payload = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector:
            payload["items"] = [o for o in payload["items"] if _selected(o, selector)]
        kind = self.resources[request.resource].kind if request.resource in self.resources else None
        if kind:
            payload["kind"] = f"{kind}List"
        return payload


def _merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = _merge(a.get(k), v)
        return out
    return b


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def strip(o: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in o.get("metadata", {}).items() if k != "resourceVersion"}
        return {**o, "metadata": meta}

    return strip(a) == strip(b)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def running_emulator(folder: Path) -> Iterator[tuple[DriftlineEmulator, Path]]:
    """The emulator on a loopback port in its own thread; yields it and a kubeconfig."""
    emulator = DriftlineEmulator()
    for key, info in RESOURCES.items():
        emulator.resources[key] = {"verbs": VERBS, "subresources": [], **info}
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Event | None = None
    url: list[str] = []

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with emulator, kmock.Server(emulator) as server:
            url.append(str(server.url).rstrip("/"))
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the Kubernetes emulator did not start")
    kubeconfig = folder / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": url[0]}}],
                "users": [{"name": "admin", "user": {"token": "emulator"}}],
                "contexts": [
                    {"name": "emulator", "context": {"cluster": "emulator", "user": "admin"}}
                ],
                "current-context": "emulator",
            }
        )
    )
    try:
        yield emulator, kubeconfig
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
